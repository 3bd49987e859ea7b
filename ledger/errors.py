"""Domain errors of the ledger. Each carries a stable `code`; only api/ maps codes to HTTP."""
from __future__ import annotations


class LedgerError(Exception):
    code = "ledger_error"

    def __init__(self, detail: str, **context: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context  # str/int/list/dict values are shown to API clients


class InvalidEntryError(LedgerError):
    """An entry that cannot be posted as written: empty, zero or non-integer amounts, and so on."""

    code = "validation_error"


class UnbalancedEntryError(InvalidEntryError):
    """The postings of an entry do not sum to zero in every asset."""


class UnknownAccountError(LedgerError):
    code = "not_found"


class AccountMismatchError(LedgerError):
    """A posting names an account of another asset, or of another customer than its entry's."""

    code = "validation_error"


class BelowBoundError(LedgerError):
    """Posting the entry would take a bounded account below its lower bound."""

    code = "insufficient_funds"


class IdempotencyConflictError(LedgerError):
    """The key was used before with a different request."""

    code = "idempotency_conflict"

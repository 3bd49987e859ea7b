"""Domain errors of the ledger. Each carries a stable `code`; only api/ maps codes to HTTP."""
from __future__ import annotations


class LedgerError(Exception):
    code = "ledger_error"
    # the context a refusal always spells, null when it has no value (a budget's window with no
    # start): part of its answer's shape, the same on every path that renders it. Any other null
    # is left out.
    nulls: tuple[str, ...] = ()

    def __init__(self, detail: str, **context: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context  # str/int/list/dict values are shown to API clients (shown())

    def shown(self) -> dict[str, object]:
        """The context an API client is told (each path renders this: an HTTP problem, the gateway's
        provider-shaped error, a bulk call's item, an event): its str/int/list/dict values, and
        each of `nulls`, null when it has no value."""
        spelt = {k: v for k, v in self.context.items() if isinstance(v, str | int | list | dict)}
        return {**dict.fromkeys(self.nulls), **spelt}


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

"""Domain errors of the wallets, each with a stable `code` (api/ alone maps codes to HTTP)."""
from __future__ import annotations

from ledger.errors import LedgerError
from pricing.errors import PriceBookValidationError


class WalletError(LedgerError):
    code = "wallet_error"


class InsufficientFundsError(WalletError):
    """The live lots plus the allowed overdraft cannot cover a hold, or the wallet is blocked."""

    code = "insufficient_funds"


class ReservationClosedError(WalletError):
    """A settle or release of a reservation that is already settled, released or expired."""

    code = "reservation_closed"


class ForbiddenError(WalletError):
    """A command the key that sent it may not give for this thing (a gateway call's reservation,
    settled or released over HTTP by a key other than an admin's)."""

    code = "forbidden"


class ExtensionTooShortError(WalletError):
    """An extension whose new expiry would not be later than the reservation's current one."""

    code = "extension_too_short"


class NotFoundError(WalletError):
    code = "not_found"


class WalletValidationError(WalletError):
    """A request that cannot be carried out as written; `fields` lists what is wrong."""

    code = "validation_error"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", fields=[{"field": field, "message": message}])


class TextRuleError(WalletValidationError):
    """Free text that pricing.text's rule refuses (a control character, a line or paragraph
    separator): a validation error like any other, told apart where a caller words it its own way
    (the gateway's x-tokentill-dimensions)."""


class NothingKeptError(WalletValidationError):
    """A settle whose usage the route refused, sent only to be answered as the settle kept for
    its body (`Settle.kept_only`), where none is: the route refuses the usage as it read it."""


class ImmutableFieldError(WalletError):
    """A change of a customer's field that never changes (id, currency, billing, its billing
    cycle): changing it would rewrite history. Names the field."""

    code = "immutable_field"

    def __init__(self, field: str) -> None:
        message = "never changes: create another customer"
        super().__init__(f"{field}: {message}", fields=[{"field": field, "message": message}])


class SubMinorAmountError(WalletError):
    """Cash finer than its currency's minor unit: a top-up, grant, invoice payment or overdraft
    limit of half a yen, a tenth of a cent. Names the field, the currency and its decimals."""

    code = "invalid_amount"

    def __init__(self, field: str, message: str, *, currency: str, decimals: int) -> None:
        super().__init__(f"{field}: {message}", fields=[{"field": field, "message": message}],
                         currency=currency, decimals=decimals)


class ConflictError(WalletError):
    """The same id or key was used before for something else."""

    code = "idempotency_conflict"


class PriceVersionConflictError(ConflictError):
    """A price-book version posted where the book holds another (at its effective_from, or under
    its version label): versions never change. Names the field (`effective_from` or `version`). It
    was `idempotency_conflict`, which says a key was reused, though none need have been sent."""

    code = "price_version_conflict"


class CustomerExistsError(ConflictError):
    """`POST /v1/customers` under the id of a customer defined otherwise (the same definition
    answers with it). Names `customer_id`. It was `idempotency_conflict`, which says a key was
    reused, though none need have been sent."""

    code = "customer_exists"


class EndpointDisabledError(WalletError):
    """A re-drive to a disabled webhook endpoint: nothing is queued for one until it is enabled."""

    code = "endpoint_disabled"


class TooManyEventsError(WalletError):
    """A webhook re-drive whose window holds more events to queue than one call may (names the
    count, the limit and the first event past it, `until` and `until_event_id`: a call up to it
    queues exactly the limit)."""

    code = "too_many_events"


class ImplausibleUsageError(WalletError):
    """Usage beyond a plausibility bound (a maximum charge per request, a context window): it
    is refused, not charged, unless an admin forces it; `limit` names the bound."""

    code = "implausible_usage"


class BudgetExceededError(WalletError):
    """A hard budget that matches the reservation cannot take its hold: what its window already
    used and holds plus the hold would pass its limit. The context names the budget, its limit,
    what is used and held, and, for a rolling window, how long until enough of it lapses. A
    window with no start or end (a lifetime's, a request's; a rolling minute's end) is null, as
    the budget's own answer spells it."""

    code = "budget_exceeded"
    nulls = ("window_start", "resets_at")


class TooManyBudgetsError(WalletError):
    """A new budget for a customer that has as many live budgets as one may have (each is matched
    on every reserve of the customer): one must be deleted first. Names the customer and the limit."""

    code = "too_many_budgets"


class OverpaymentError(WalletError):
    """A payment above what is still due on an invoice (or owed on the receivable)."""

    code = "overpayment"


class GrantClosedError(WalletError):
    """A reversal of a lot that has nothing left to give back: expired (its remainder went to
    breakage, or goes there at its expiry), emptied (spent, held or reversed already) or a grant
    revoked in whole (closed for good)."""

    code = "grant_closed"


class GrantNotReversibleError(WalletError):
    """A reversal of a lot tokentill opened itself (a re-rate's, a volume true-up's or a close's
    rounding credit): no top-up's cash or grant's promotion stands behind it to give back to.
    Names the lot and the kind of entry that opened it (`opened_by`)."""

    code = "grant_not_reversible"


class ExceedsRemainingError(WalletError):
    """A reversal of more than what is left of a lot and not held (names available and asked)."""

    code = "exceeds_remaining"


class ExceedsRefundableError(WalletError):
    """A cash refund of more than is the customer's own cash held as credit: what corrections gave
    back of usage it paid in cash, less what it owes (names refundable and asked)."""

    code = "exceeds_refundable"


class CurrencyMismatchError(WalletError):
    """An amount in another currency than the resource it is for."""

    code = "currency_mismatch"


class UnknownPriceBookError(WalletError):
    """A re-rate of a price book that does not exist."""

    code = "unknown_price_book"


class UnknownPriceVersionError(WalletError):
    """A re-rate with a version the price book does not have."""

    code = "unknown_price_version"


class InvalidRangeError(WalletError):
    """A time range that is empty or inverted (`to` must be after `from`)."""

    code = "invalid_range"


class VersionNotInForceError(WalletError):
    """A corrected version that is not the book's version in force throughout the range."""

    code = "version_not_in_force"


# Refusals of a request's body itself (422), whatever was kept before: where its Idempotency-Key
# (or reference, capture id) holds another body, such a body is refused as what it is, not told it
# conflicts (409); only a body that could be carried out is (validation first: 3a57a92, d64bd09).
BODY_REFUSALS = (WalletValidationError, SubMinorAmountError, CurrencyMismatchError, PriceBookValidationError)
# Refusals an Idempotency-Key never keeps (README, Idempotency): those of the request as sent, 422
# naming what is wrong in it, whoever decided it (the body's own rules, the operator's address policy,
# the books a key limited to customers may read). Nothing was done; the client is told to change the
# request, and may send the corrected one under the same key (the same one is decided again). Every
# other refusal (insufficient_funds, budget_exceeded, ...) is kept and replays as first answered.
# An empty or inverted range (`invalid_range`, the client's code unchanged) is decided from the body
# alone, `from` and `to`: a refusal of the request as sent too. A 404 `not_found` is never kept
# either, wherever it is decided (the route before the unit of work, or in it): nothing was done, and
# a client that creates what was missing (a customer, its own id) and sends the call again under its
# key needs it carried out, not told again of a world that changed.
NOT_KEPT = (*BODY_REFUSALS, InvalidRangeError, NotFoundError)
# Outcomes under a key whose answer is not kept: a conflict (the key holds another body's answer)
# and a refusal of the request as sent (NOT_KEPT); one tuple, not built per keyed command.
NO_ANSWER_KEPT = (ConflictError, *NOT_KEPT)

"""The SDK's typed errors: one per problem+json `code`, and SettlementSpooled."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from api.delivery import retry_after
from api.spool import SpoolRecord


class TokentillError(Exception):
    """A problem+json answer from the server."""

    def __init__(self, status: int, code: str, detail: str, body: Mapping[str, Any],
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail, self.body = status, code, detail, body
        self.retry_after = retry_after  # seconds, when the server sent Retry-After

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled whole (a multiprocessing worker's error reaches its parent so): by default
        the class was called again with the message alone, a TypeError."""
        return (type(self), (self.status, self.code, self.detail, self.body, self.retry_after), self.__dict__)


def field(name: str) -> Any:
    """An attribute of a typed error: its problem's field `name` (None where the answer has none)."""
    return property(lambda self: self.body.get(name) if isinstance(self.body, Mapping) else None,
                    doc=f"The problem's `{name}`.")


class InsufficientFunds(TokentillError):
    """The wallet cannot cover the hold (402): whose wallet and which request id, what the hold
    `needed`, the wallet's `available` credit and, with an overdraft limit, its `overdraft_headroom`
    (decimal strings in `currency`; None from a server before them)."""

    customer_id, request_id = field("customer_id"), field("request_id")
    needed, available, overdraft_headroom, currency = (field("needed"), field("available"),
                                                       field("overdraft_headroom"), field("currency"))


class BudgetExceeded(TokentillError):
    """A hard budget refused the reservation (429). Its details are the problem's fields: which
    budget, its window and metric, its limit, what is used and held, what was asked for (money as
    decimal strings, tokens and requests as integers), the window's bounds (`window_start`,
    `resets_at`: None where it has none, as the 429 spells them) and, for a rolling window,
    `retry_after`."""

    budget_id, budget_name, window, metric = field("budget_id"), field("budget_name"), field("window"), field("metric")
    limit, used, held, requested = field("limit"), field("used"), field("held"), field("requested")
    window_start, resets_at = field("window_start"), field("resets_at")


class UnpricedModel(TokentillError):
    """No rule prices the usage: the `model` and the `token_type` without a price."""

    model, token_type = field("model"), field("token_type")


class ValidationFailed(TokentillError):
    """The request was refused as invalid: `fields`, a list of `{"field", "message"}`."""

    fields = field("fields")


class InvalidAmount(ValidationFailed):
    """Cash finer than its currency's minor unit (a top-up of half a yen): a validation failure
    whose `currency` and `decimals` say what the currency takes."""

    currency, decimals = field("currency"), field("decimals")


class ImmutableField(ValidationFailed):
    """`PATCH /v1/customers/{id}` named a field fixed at creation (`currency`, `billing`, ...)."""


class IdempotencyConflict(TokentillError):
    """A key used before with another request: the Idempotency-Key (`key`) or the reserve's `request_id`."""

    key, request_id = field("key"), field("request_id")


class NotFound(TokentillError): ...
class UnknownPriceBook(NotFound): ...
class UnknownPriceVersion(NotFound): ...
class Unauthorized(TokentillError): ...
class Forbidden(TokentillError): ...


class ReservationClosed(TokentillError):
    """The reservation is settled, released or expired: `reservation_id`, `reservation_status`."""

    reservation_id, reservation_status = field("reservation_id"), field("reservation_status")


class ExtensionTooShort(TokentillError):
    """The extension would not end later than the hold's expiry, `expires_at` (UTC, Z)."""

    reservation_id, expires_at = field("reservation_id"), field("expires_at")


class ServiceUnavailable(TokentillError): ...
class NotReady(ServiceUnavailable):
    """`/readyz`: the server is up, its database not (yet) ready."""
class RateLimited(TokentillError): ...


class ImplausibleUsage(TokentillError):
    """Usage (or a hold) past a plausibility bound: which bound (`limit`: max_charge_per_request or
    context_window), its `maximum`, the `value` past it and whose bound it is (`source`)."""

    limit, maximum, value, source = field("limit"), field("maximum"), field("value"), field("source")


class CurrencyMismatch(TokentillError):
    """An amount in another currency than what it is for: the `currency` it is in, and whose it is
    (`customer_id`, `invoice_id`, or the request's `field`), as the refusal names them."""

    currency, customer_id, invoice_id, field = (field("currency"), field("customer_id"), field("invoice_id"),
                                                field("field"))


class Overpayment(TokentillError):
    """A payment above what is still due: the `invoice_id` and its `amount_due` (a decimal string)."""

    invoice_id, amount_due = field("invoice_id"), field("amount_due")


class InvalidRange(TokentillError):
    """An empty or inverted range: its bounds, `from_` and `to` (the problem's `from` and `to`)."""

    from_, to = field("from"), field("to")


class VersionNotInForce(TokentillError):
    """A corrected version not in force throughout the range: the `price_book`, its `version` and
    when that version is in force, `effective_from` to `effective_until` (None: still in force)."""

    price_book, version = field("price_book"), field("version")
    effective_from, effective_until = field("effective_from"), field("effective_until")


class EndpointDisabled(TokentillError): ...


class TooManyBudgets(TokentillError):
    """The customer (`customer_id`) has as many live budgets set by `set_by` as one may (`limit`)."""

    customer_id, set_by, limit = field("customer_id"), field("set_by"), field("limit")


class GrantClosed(TokentillError):
    """The lot (`grant_id`) has nothing left to give back: its `state`, expired, emptied or revoked."""

    grant_id, state = field("grant_id"), field("state")


class GrantNotReversible(TokentillError):
    """The lot (`grant_id`) is credit tokentill opened itself, by the entry of kind `opened_by`."""

    grant_id, opened_by = field("grant_id"), field("opened_by")


class ExceedsRemaining(TokentillError):
    """A reversal of more than what is left of the lot (`grant_id`) and not held: `available` and
    `asked` (decimal strings) in `currency`."""

    grant_id, available, asked, currency = field("grant_id"), field("available"), field("asked"), field("currency")


class ExceedsRefundable(TokentillError):
    """A refund of more than the customer's (`customer_id`) overpaid cash: `refundable` and `asked`
    (decimal strings) in `currency`."""

    customer_id, refundable, asked = field("customer_id"), field("refundable"), field("asked")
    currency = field("currency")


class TooManyEvents(TokentillError): ...
class InvalidCursor(TokentillError): ...
class EncodingIntegrity(TokentillError): ...
class InternalError(TokentillError): ...
# Answered by the HTTP layer before any handler: the request itself was not one the server takes.
class RequestTimeout(TokentillError): ...
class MethodNotAllowed(TokentillError): ...
class Conflict(TokentillError): ...
class PriceVersionConflict(Conflict):
    """`POST /v1/price-books`: the book holds another version at that effective_from or label."""
class CustomerExists(Conflict):
    """`POST /v1/customers`: a customer with that id exists with other settings."""
class PayloadTooLarge(TokentillError): ...
class UnsupportedMediaType(TokentillError): ...
class NotAcceptable(TokentillError): ...
class HeadersTooLarge(TokentillError): ...
class MalformedRequest(TokentillError): ...


ERRORS: dict[str, type[TokentillError]] = {
    "insufficient_funds": InsufficientFunds, "budget_exceeded": BudgetExceeded,
    "unpriced_model": UnpricedModel, "validation_error": ValidationFailed, "invalid_amount": InvalidAmount,
    "idempotency_conflict": IdempotencyConflict, "not_found": NotFound, "unauthorized": Unauthorized,
    "forbidden": Forbidden, "reservation_closed": ReservationClosed, "extension_too_short": ExtensionTooShort,
    "service_unavailable": ServiceUnavailable, "rate_limited": RateLimited,
    "implausible_usage": ImplausibleUsage, "unknown_price_book": UnknownPriceBook,
    "unknown_price_version": UnknownPriceVersion, "not_ready": NotReady, "currency_mismatch": CurrencyMismatch,
    "overpayment": Overpayment, "invalid_range": InvalidRange, "version_not_in_force": VersionNotInForce,
    "endpoint_disabled": EndpointDisabled, "invalid_cursor": InvalidCursor,
    "encoding_integrity": EncodingIntegrity, "internal_error": InternalError, "request_timeout": RequestTimeout,
    "method_not_allowed": MethodNotAllowed, "conflict": Conflict, "payload_too_large": PayloadTooLarge,
    "unsupported_media_type": UnsupportedMediaType, "not_acceptable": NotAcceptable,
    "headers_too_large": HeadersTooLarge, "too_many_budgets": TooManyBudgets, "immutable_field": ImmutableField,
    "grant_closed": GrantClosed, "exceeds_remaining": ExceedsRemaining,
    "exceeds_refundable": ExceedsRefundable, "too_many_events": TooManyEvents,
    "grant_not_reversible": GrantNotReversible, "malformed_request": MalformedRequest,
    "price_version_conflict": PriceVersionConflict, "customer_exists": CustomerExists,
}


# An answer without a code the SDK knows (a proxy's, a load balancer's, a newer server's code) is
# typed by its status, so that `except RateLimited` catches a rate limit in front of the server.
BY_STATUS: dict[int, type[TokentillError]] = {
    401: Unauthorized, 403: Forbidden, 404: NotFound, 405: MethodNotAllowed, 406: NotAcceptable,
    408: RequestTimeout, 409: Conflict, 413: PayloadTooLarge, 415: UnsupportedMediaType, 422: ValidationFailed,
    429: RateLimited, 431: HeadersTooLarge, 500: InternalError, 503: ServiceUnavailable,
}


class SettlementSpooled(Exception):
    """A settle or release not delivered by its deadline (or answered 5xx, or 401): it is in the local
    spool, and is re-sent with the same Idempotency-Key when a client next starts on that spool or
    by `tokentill spool flush`. `__cause__` is the last failure."""

    def __init__(self, record: SpoolRecord, path: Path) -> None:
        super().__init__(f"{record.method} {record.path} not delivered ({record.reason}); spooled to {path}")
        self.record, self.path = record, path

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.record, self.path), self.__dict__)


def raise_for(response: httpx.Response) -> Any:
    """The body of a success; the typed error of anything else, raised (by its code, else by its
    status: BY_STATUS). A success that is not JSON is not tokentill's answer (base_url names
    another web server, or a proxy's page)."""
    try:
        body = response.json()
    except ValueError:
        body = {"code": "http_error", "detail": response.text}
        if response.is_success:
            raise TokentillError(response.status_code, "http_error",
                                 f"the answer is not JSON (is the base URL tokentill's?): {response.text[:200]}",
                                 body) from None
    if response.is_success:
        return body
    code = body.get("code", "http_error") if isinstance(body, dict) else "http_error"
    detail = body.get("detail", "") if isinstance(body, dict) else str(body)
    kind = ERRORS.get(code) or BY_STATUS.get(response.status_code, TokentillError)
    raise kind(response.status_code, code, detail, body, retry_after(response))


def describe(failure: BaseException | httpx.Response) -> str:
    if isinstance(failure, httpx.Response):
        return f"HTTP {failure.status_code}"
    return f"{type(failure).__name__}: {failure}"


def error_of(response: httpx.Response) -> TokentillError:
    """The typed error a failed response stands for, not raised."""
    try:
        raise_for(response)
    except TokentillError as exc:
        return exc
    raise AssertionError("a failed response always raises")

"""The one map from domain error codes to HTTP: every error leaves as RFC 9457 problem+json."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg
from litestar import Request, Response
from litestar.enums import ParamType
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIHeader, OpenAPIResponse, OpenAPIType, Operation, Parameter, Schema

from api.metrics import APP, ITEM_ERRORS
from ledger.db import RetriesExhaustedError, is_unavailable, sqlstate_of
from ledger.errors import LedgerError
from pricing.errors import PricingError
from pricing.text import PATTERN as TEXT_PATTERN
from wallets.core.idempotency import refusal_body

log = logging.getLogger("tokentill.api")

STATUS_BY_CODE = {
    # outcomes: what was done (or found done)
    "reserved": 201, "credited": 201, "created": 201,
    "settled": 200, "captured": 200, "released": 200, "expired": 200, "replayed": 200, "exists": 200,
    "usage_recorded": 200, "duplicate": 200, "lot_expired": 200, "nothing_due": 200, "ok": 200,
    "payment_recorded": 201, "reversed": 201, "refunded": 201, "invoice_finalized": 200, "extended": 200,
    "scheduled": 202,
    # refusals
    "insufficient_funds": 402,
    "budget_exceeded": 429,
    "unpriced_model": 422,
    "implausible_usage": 422,
    "validation_error": 422,
    "invalid_amount": 422,
    "immutable_field": 422,
    "idempotency_conflict": 409,
    "price_version_conflict": 409,
    "customer_exists": 409,
    "not_found": 404,
    "unauthorized": 401,
    "forbidden": 403,
    "reservation_closed": 409,
    "extension_too_short": 409,
    "endpoint_disabled": 409,
    "too_many_events": 422,
    "too_many_budgets": 409,
    "grant_closed": 409,
    "grant_not_reversible": 409,
    "exceeds_remaining": 409,
    "exceeds_refundable": 409,
    "overpayment": 422,
    "currency_mismatch": 422,
    "service_unavailable": 503,
    "invalid_cursor": 400,
    "malformed_request": 400,  # not HTTP/1.1 the parser takes: answered by api/server.py, before any handler
    "not_acceptable": 406,
    "unknown_price_book": 404,
    "unknown_price_version": 404,
    "invalid_range": 422,
    "version_not_in_force": 422,
}
CODE_BY_STATUS = {
    400: "validation_error", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 408: "request_timeout", 409: "conflict",
    413: "payload_too_large", 415: "unsupported_media_type", 422: "validation_error", 429: "rate_limited",
    431: "headers_too_large",
    503: "service_unavailable",
}
TITLES = {
    "insufficient_funds": "Insufficient funds", "validation_error": "Invalid request",
    "idempotency_conflict": "Idempotency key reused with a different request",
    "price_version_conflict": "Another version of the price book is stored there",
    "customer_exists": "A customer with this id exists with other settings",
    "not_found": "Not found", "unauthorized": "Unauthorized", "forbidden": "Forbidden",
    "internal_error": "Internal server error",
}


class FieldProblem(msgspec.Struct):
    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details, with our stable machine `code`."""

    type: str
    title: str
    status: int
    code: str
    detail: str
    instance: str | None = None
    fields: list[FieldProblem] | None = None


DESCRIPTIONS = {
    401: "No key, or an unknown or revoked key", 402: "Insufficient funds", 403: "The key's scope forbids this",
    404: "Not found", 406: "Not available in the Accept header's media types",
    409: "Conflict (idempotency key reused, reservation closed, price-book version taken, customer id taken)",
    413: "Request body too large", 415: "Unsupported content type",
    422: "Invalid request; `fields` names them (`invalid_amount`: cash finer than its currency's minor unit)",
    429: "A budget or limit was exceeded", 503: "Not ready, or too contended right now",
}


# The response headers the document describes where they are sent: Retry-After on every 503
# (RETRY_AFTER_S, `unavailable`, `_http`) and on the 429 of a rolling budget window
# (`_domain_error`); Idempotent-Replayed on the answers of a route that keeps them under an
# Idempotency-Key (api.routes.wire.respond): its 2xx, and the refusals it keeps.
RETRY_AFTER = {
    503: OpenAPIHeader(required=True, schema=Schema(type=OpenAPIType.INTEGER, minimum=0),
                       description="Seconds to wait before trying again"),
    429: OpenAPIHeader(required=False, schema=Schema(type=OpenAPIType.INTEGER, minimum=0),
                       description="A rolling budget window: seconds until enough of it lapses "
                                   "(as `retry_after_seconds`)")}
REPLAYED = OpenAPIHeader(required=False, schema=Schema(type=OpenAPIType.STRING, enum=["true"]),
                         description="`true`: the kept answer of an earlier request with this Idempotency-Key, "
                                     "replayed; absent on a fresh answer")
KEPT_REFUSALS = {"402", "404", "409", "422", "429"}
# The request header of every operation that honours it (api.routes.wire.idempotency reads it).
IDEMPOTENCY_KEY = Parameter(
    name="Idempotency-Key", param_in=ParamType.HEADER, required=False,
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255, pattern=TEXT_PATTERN),
    description="Any string of 1 to 255 characters (spaces around it are dropped) held to the rule of free "
                "text (no control character, line or paragraph separator), one per call. The same "
                "key and the same request again, by a key acting for the same customers (even after a key "
                "rotation), is answered the first answer, refusals included, and does nothing twice; the "
                "same key with another request is 409 `idempotency_conflict`.")


def described(base: type[Operation], idempotent: bool, keyed: bool = False) -> type[Operation]:
    """An Operation class (of `base`) whose responses describe the headers sent with them, and
    (`keyed`) whose parameters name the Idempotency-Key header it honours."""

    @dataclass
    class Described(base):  # type: ignore[valid-type, misc]
        def __post_init__(self) -> None:
            getattr(super(), "__post_init__", lambda: None)()
            if keyed:
                self.parameters = [*(self.parameters or []), IDEMPOTENCY_KEY]
            for status, response in (self.responses or {}).items():
                if not isinstance(response, OpenAPIResponse):
                    continue
                headers = dict(response.headers or {})
                if int(status) in RETRY_AFTER:
                    headers["Retry-After"] = RETRY_AFTER[int(status)]
                if idempotent and (status.startswith("2") or status in KEPT_REFUSALS):
                    headers["Idempotent-Replayed"] = REPLAYED
                response.headers = headers or None

    return Described


def documented(*statuses: int, secured: bool = True, body: bool = False,
               replay: type | None = None, ok: Any = None, idempotent: bool = False,
               keyed: bool | None = None, operation: type[Operation] = Operation) -> dict[str, Any]:
    """Route-handler keyword arguments that document the problem responses a route can give,
    (`replay`) the 200 with that body a creating route answers when the resource already exists,
    (`ok`) the 200 of a route whose handler returns a plain dict, and the headers sent with
    them (`idempotent`: a route that replays kept answers); `keyed`: the route honours an
    Idempotency-Key header (every `idempotent` route does); `operation`: the route's own
    Operation class (see api.renderings.rendered_as)."""
    # A secured route reads the database (its key, at least): under contention it may answer 503.
    # Every /v1 route refuses a query parameter it does not take, or a path value PostgreSQL
    # cannot hold (wire.guard_request): 422; and an Accept header refusing (q=0) every media type
    # the route answers in: 406.
    # A route that honours an Idempotency-Key answers its reuse with another request 409.
    keyed = idempotent if keyed is None else keyed
    codes = set(statuses) | ({401, 403, 406, 422, 503} if secured else set()) | ({413, 415, 422} if body else set()) \
        | ({409} if keyed else set())
    responses: dict[int, ResponseSpec] = {
        status: ResponseSpec(data_container=Problem, media_type="application/problem+json",
                             description=DESCRIPTIONS.get(status, "Error"), generate_examples=False)
        for status in sorted(codes)}
    if ok is not None:
        responses[200] = ResponseSpec(data_container=ok, generate_examples=False,
                                      description="Request fulfilled, document follows")
    if replay is not None:
        responses[200] = ResponseSpec(data_container=replay, generate_examples=False,
                                      description="The same request again: what the first one created")
    kwargs: dict[str, Any] = {"responses": responses, "operation_class": described(operation, idempotent, keyed)}
    if secured:
        kwargs["security"] = [{"bearer": []}]
    return kwargs


class ApiError(Exception):
    """An error raised by the HTTP layer itself (auth, lookups), with a stable code."""

    def __init__(self, code: str, detail: str, status: int | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.code, self.detail, self.extra = code, detail, extra
        self.status = status or STATUS_BY_CODE.get(code, 400)


def problem_body(status: int, code: str, detail: str, request: Request | None = None,
                 **extra: Any) -> dict[str, Any]:
    """The problem document; `extra` in key order, so that it reads the same after a round trip
    through jsonb (a replayed refusal answers the first answer's bytes)."""
    body = {"type": f"https://tokentill.dev/problems/{code}",
            "title": TITLES.get(code, code.replace("_", " ").capitalize()),
            "status": status, "code": code, "detail": detail, **dict(sorted(extra.items()))}
    if request is not None:
        body["instance"] = request.url.path
    return body


def problem(status: int, code: str, detail: str, request: Request | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> Response:
    return Response(problem_body(status, code, detail, request, **extra), status_code=status,
                    media_type="application/problem+json", headers=headers)


def refusal(request: Request, code: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(status, problem document) of a domain refusal's outcome (a code and its refusal body)."""
    status = STATUS_BY_CODE.get(code, 422)
    extra = {k: v for k, v in body.items() if k != "detail"}
    return status, problem_body(status, code, body.get("detail", ""), request, **extra)


def _api_error(request: Request, exc: ApiError) -> Response:
    return problem(exc.status, exc.code, exc.detail, request, **exc.extra)


def _domain_error(request: Request, exc: LedgerError | PricingError) -> Response:
    status, body = refusal(request, exc.code, refusal_body(exc))
    wait = body.get("retry_after_seconds")  # a rolling budget window: when enough of it lapses
    return Response(body, status_code=status, media_type="application/problem+json",
                    headers={"Retry-After": str(wait)} if isinstance(wait, int) else None)


def _validation(request: Request, exc: ValidationException) -> Response:
    fields = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            field = item.get("key") or item.get("source") or "body"
            fields.append({"field": "body" if field == "data" else _sent_as(request, field),
                           "message": item.get("message", "")})
    detail = exc.detail or "invalid request"
    if fields and detail.startswith("Validation failed for "):  # Litestar's own, the request echoed back
        detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields)  # as every other refusal's
    return problem(422, "validation_error", detail, request, fields=fields)


def _sent_as(request: Request, argument: str) -> str:
    """A parameter as the request spells it (`from`, `customer`), not as the handler's argument
    (`start`, `prefix`): Litestar names the argument, which the caller never wrote."""
    handler = request.scope.get("route_handler")
    parameter = getattr(handler, "parsed_fn_signature", None)
    definition = parameter.parameters.get(argument) if parameter is not None else None
    alias = getattr(getattr(definition, "kwarg_definition", None), "name", None)
    return alias if isinstance(alias, str) and alias else argument


def _http(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 400:  # an unreadable body (malformed JSON, say) is invalid input
        return problem(422, "validation_error", exc.detail or "malformed request", request,
                       fields=[{"field": "body", "message": exc.detail or "malformed request"}])
    code = CODE_BY_STATUS.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 503:
        headers.setdefault("Retry-After", str(RETRY_AFTER_S))
    return problem(exc.status_code, code, exc.detail or code, request, headers=headers or None)


# Seconds a client should wait before retrying a 503: the faults behind one (a restart, a full
# pool, a contended database) pass in about that long, and the SDK backs off from there.
RETRY_AFTER_S = 1


def unavailable(detail: str, request: Request | None = None) -> Response:
    """503 service_unavailable with Retry-After: a fault the caller may retry as it is."""
    return problem(503, "service_unavailable", detail, request, headers={"Retry-After": str(RETRY_AFTER_S)})


def _retries(request: Request, exc: RetriesExhaustedError) -> Response:
    return unavailable(str(exc), request)


def _internal(request: Request, exc: Exception, about: str = "") -> Response:
    if is_unavailable(exc):  # the database is down, restarting, unreachable or its pool is full
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return unavailable("the database is unavailable right now; retry shortly", request)
    if _is_data_error(exc):  # the database refused a value (NUL byte, out of range): bad input
        return problem(422, "validation_error", "a value in the request cannot be stored", request,
                       fields=[{"field": "body", "message": str(getattr(exc, "orig", exc)).splitlines()[0]}])
    log.exception("unhandled error on %s %s%s", request.method, request.url.path, about, exc_info=exc)
    return problem(500, "internal_error", "an internal error occurred; it has been logged", request)


def unexpected(request: Request, exc: Exception, about: str) -> Response:
    """The problem a bulk call's item leaves as when it fails for no domain refusal (its fault is
    its own: the other items stand): 503 where the database is unavailable, 422 for a value it
    refuses, else 500 internal_error, logged with `about` (which item: the call's log line alone
    named none of a thousand) and counted (tokentill_bulk_item_errors_total: the call's own 200 is
    no error in tokentill_requests_error_total)."""
    response = _internal(request, exc, f" ({about})")
    if response.status_code >= 500:
        ITEM_ERRORS.labels(request.url.path, response.content["code"], APP).inc()
    return response


def _is_data_error(exc: BaseException) -> bool:
    state = sqlstate_of(exc)
    if state is not None:
        return state.startswith("22")  # class 22: data exception
    seen = exc
    while seen is not None:
        if isinstance(seen, psycopg.DataError):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    LedgerError: _domain_error,
    ValidationException: _validation,
    HTTPException: _http,
    RetriesExhaustedError: _retries,
    Exception: _internal,
}


EXCEPTION_HANDLERS[PricingError] = _domain_error


def error_response(request: Request, exc: Exception) -> Response:
    """The problem response a domain error leaves as."""
    if isinstance(exc, LedgerError | PricingError):
        return _domain_error(request, exc)
    if isinstance(exc, ApiError):
        return _api_error(request, exc)
    raise TypeError(f"not a domain error: {type(exc).__name__}")

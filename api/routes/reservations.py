"""The hot path: reserve before inference, settle (or capture) after it, release if unused."""
from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.params import FromPath

from api.auth import (
    ensure_customer,
    ensure_owner,
    guarded_post,
    key_dimensions,
    principal_of,
    require,
    services_of,
)
from api.errors import ApiError, documented
from api.routes.formats import Amount, Identifier, free_text
from api.routes.inputs import hashed_as_before, prepare_estimate, usage_or_kept, usage_tokens
from api.routes.schemas import (
    ANTHROPIC_USAGE,
    CANONICAL_USAGE,
    ESTIMATE,
    GEMINI_USAGE,
    OPENAI_USAGE,
    Dimensions,
    exactly_one,
    json_body,
    json_object,
)
from api.routes.wire import Answer, amount_in, idempotency, kept_answer, money, respond, shaped, time_out
from ledger.model import request_hash
from pricing.money import plain
from wallets import reports
from wallets.commands import (
    MAX_TTL_SECONDS,
    Extend,
    ExtendResult,
    Release,
    ReleaseResult,
    Reserve,
    ReserveResult,
    Settle,
    SettleResult,
)
from wallets.core.idempotency import Replayed
from wallets.errors import ConflictError, NotFoundError, NothingKeptError, WalletValidationError


class CreateReservationRequest(msgspec.Struct, forbid_unknown_fields=True):  # a typo is a 422
    customer_id: Identifier
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200), free_text()]
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200), free_text()]
    ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_TTL_SECONDS)] = 300
    estimate: Annotated[dict[str, Any], json_object(ESTIMATE)] | None = None
    amount: Amount | None = None
    dimensions: Dimensions = {}
    cache_ttl: Annotated[Literal["5m", "1h"], msgspec.Meta(description=(
        "The call writes its prompt to the provider's cache for this long (Anthropic's cache_control "
        "ttl): its hold prices the prompt at that cache write price where dearer than input, and its "
        "settle takes the cache writes its usage gives in all but not by TTL at it"))] | None = None


class ReservationResponse(msgspec.Struct):
    id: str
    request_id: str
    customer_id: str
    model: str
    status: str
    amount: str
    currency: str
    created_at: str
    expires_at: str


class ExtendRequest(msgspec.Struct, forbid_unknown_fields=True):  # a typo is a 422
    ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_TTL_SECONDS, description=(
        "Hold until this many seconds from now; must end later than the current expiry"))]


class ExtendResponse(msgspec.Struct):
    id: str
    status: str
    expires_at: str


class SettleRequest(msgspec.Struct, forbid_unknown_fields=True):  # a typo is a 422
    usage: Annotated[dict[str, Any], json_object(CANONICAL_USAGE)] | None = None
    openai_usage: Annotated[dict[str, Any], json_object(OPENAI_USAGE)] | None = None
    anthropic_usage: Annotated[dict[str, Any], json_object(ANTHROPIC_USAGE)] | None = None
    final: bool = True
    capture_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200), free_text()] | None = None
    force: Annotated[bool, msgspec.Meta(description=(
        "Admin keys only: charge usage past the plausibility bounds; the charge's trace records it"))] = False
    gemini_usage: Annotated[dict[str, Any], json_object(GEMINI_USAGE)] | None = None


class LineResponse(msgspec.Struct):
    token_type: str | None
    quantity: int
    unit_price: str
    amount: str
    rule_id: str | None
    price_version: str
    kind: str = "usage"
    description: str | None = None  # "input (long context)", "web search", "output (off-peak)"
    override_id: str | None = None  # the customer's contract price, discount or free allowance that priced it


class SettleResponse(msgspec.Struct):
    id: str
    status: str
    charged: str
    released: str
    currency: str
    price_book: str
    price_version: str
    lines: list[LineResponse]
    entry_id: int | None


class ReleaseResponse(msgspec.Struct):
    id: str
    status: str
    released: str
    entry_id: int | None


CreateReservationBody = Annotated[dict[str, Any], json_body(Annotated[CreateReservationRequest, msgspec.Meta(
    extra_json_schema=exactly_one(estimate="object", amount="string"))])]
SettleBody = Annotated[dict[str, Any], json_body(Annotated[SettleRequest, msgspec.Meta(
    extra_json_schema=exactly_one(usage="object", openai_usage="object", anthropic_usage="object",
                                  gemini_usage="object"))])]


def lines_out(lines: list[dict[str, Any]], currency: str) -> list[LineResponse]:
    return [LineResponse(ln["token_type"], ln["quantity"], plain(ln["unit_price"]),
                         money(ln["amount_units"], currency) or "0",
                         ln["rule_id"], ln["price_version"], ln["kind"], ln.get("description"),
                         ln.get("override_id")) for ln in lines]


def _reserved(result: ReserveResult) -> ReservationResponse:
    r = result.reservation
    return ReservationResponse(r.id, r.request_id, r.customer_id, r.model, r.status, money(r.amount, r.currency) or "0",
                               r.currency, time_out(r.created_at) or "", time_out(r.expires_at) or "")


def _settled(result: SettleResult) -> SettleResponse:
    cur = result.currency
    return SettleResponse(result.reservation_id, result.status, money(result.charged, cur) or "0",
                          money(result.released, cur) or "0", cur, result.price_book,
                          result.price_version, lines_out(result.lines, cur), result.entry_id)


def _released(result: ReleaseResult) -> ReleaseResponse:
    return ReleaseResponse(result.reservation_id, result.status, money(result.released, result.currency) or "0",
                           result.entry_id)


def _extended(result: ExtendResult) -> ExtendResponse:
    return ExtendResponse(result.reservation_id, result.status, time_out(result.expires_at) or "")


RESERVED, SETTLED, RELEASED = Answer(_reserved, ReserveResult), Answer(_settled, SettleResult), \
    Answer(_released, ReleaseResult)
EXTENDED = Answer(_extended, ExtendResult)
CACHE_WRITES = {"5m": "cache_write", "1h": "cache_write_1h"}  # a reserve's cache_ttl: the writes' rating type


@guarded_post("/v1/reservations", guards=[require("inference")], tags=["reservations"], status_code=201,
      **documented(402, 404, 409, 429, body=True, replay=ReservationResponse, idempotent=True))
async def create_reservation(
    request: Request,
    data: CreateReservationBody,
) -> Response[ReservationResponse]:
    """Hold credit before a model call: `amount`, or an upper bound priced from `estimate`
    (token counts, or a prompt / messages counted here). The same `request_id` again answers
    200 with its reservation as it is now (a refusal stays the refusal); with another body it is a conflict."""
    data = shaped(data, CreateReservationRequest)
    ensure_customer(request, data.customer_id)
    if (data.estimate is None) == (data.amount is None):
        raise WalletValidationError("estimate", "give either estimate or amount")
    prepared = prepare_estimate(data.model, data.estimate) if data.estimate is not None else None
    body = msgspec.to_builtins(data)
    if data.cache_ttl is None:  # bodies sent before cache_ttl existed hash as they did: their replays match
        del body["cache_ttl"]
    write = CACHE_WRITES.get(data.cache_ttl)  # kept in its estimate, which its settle reads (at_cache_ttl)
    estimate = {**(prepared.stored if prepared else {}), **({"prompt_cache_write": write} if write else {})}
    command = Reserve(
        customer_id=data.customer_id, request_id=data.request_id, model=data.model,
        request_hash=request_hash(body), ttl_seconds=data.ttl_seconds,
        amount=amount_in(data.amount, "amount", positive=False) if data.amount is not None else None,
        prompt_tokens=prepared.prompt_tokens if prepared else None,
        max_output_tokens=prepared.max_output_tokens if prepared else None,
        dimensions=key_dimensions(principal_of(request), data.dimensions),
        estimate=estimate or None, prompt_cache_write=write,
        premiums=("cache_write_1h",) if write == "cache_write_1h" else (),  # its book must price it (premium)
        idem=idempotency(request, body))
    return respond(request, await services_of(request).wallets.submit(command), RESERVED)


@guarded_post("/v1/reservations/{reservation_id:str}/settle", guards=[require("inference")], tags=["reservations"],
      status_code=200, **documented(404, 409, body=True, idempotent=True))  # 422 includes implausible_usage
async def settle(
    request: Request, reservation_id: FromPath[str],
    data: SettleBody,
) -> Response[SettleResponse]:
    """Charge the reported usage: from the hold, then the lots, then the receivable (never for
    lack of funds). `final: false` is a capture that keeps the rest of the hold open. Usage past
    a plausibility bound is `implausible_usage` and the hold stays open, unless an admin forces it."""
    data = shaped(data, SettleRequest)
    forced_by = _forcing_key(request) if data.force else None
    try:
        customer_id = await services_of(request).wallets.owner_of(reservation_id)
    except NotFoundError:  # the body as sent before the reservation it names (422 before 404)
        usage_tokens(data.usage, data.openai_usage, data.anthropic_usage, data.gemini_usage)
        raise
    ensure_owner(request, customer_id, f"reservation {reservation_id}")
    body = _settle_body(data)
    command = Settle(customer_id=customer_id, reservation_id=reservation_id,
                     request_hash=request_hash(body), tokens={}, usage={},
                     final=data.final, capture_id=data.capture_id, forced_by=forced_by,
                     from_caller=principal_of(request).scope != "admin", idem=idempotency(request, body))
    return respond(request, await settle_outcome(services_of(request), data, command), SETTLED)


async def settle_outcome(services: Any, data: SettleRequest, command: Settle) -> Any:
    """`command` submitted with the usage `data` reports (its counts, what to store), or, when
    that usage is refused, answered as the settle kept for it (`usage_or_kept`): under its key,
    else the reservation's final or capture of its body (a keyless settle sent again)."""
    read = await usage_or_kept(
        lambda: usage_tokens(data.usage, data.openai_usage, data.anthropic_usage, data.gemini_usage),
        lambda: _kept_settle(services, command))
    if isinstance(read, tuple):
        return await services.wallets.submit(replace(command, tokens=read[0], usage=read[1]))
    return read


async def _kept_settle(services: Any, command: Settle) -> Replayed | SettleResult | None:
    """The answer kept under the settle's key, else the reservation's settle of its body (the
    lane's, `kept_only`: never rated, nothing kept under the key), else None. Another body kept
    under its key or capture id is None too: a body refused is refused as such (422), validation
    before the conflict (409) only a valid body is told."""
    try:
        kept = await kept_answer(services.db, command.idem, command.customer_id)
        if kept is not None:
            return kept
        return await services.wallets.submit(replace(command, idem=None, kept_only=True))
    except (NothingKeptError, ConflictError):
        return None


def _settle_body(data: SettleRequest) -> dict[str, Any]:
    """What a settle's hash covers: `force` only when given, so settles hash as they always did."""
    body = msgspec.to_builtins(data)
    if not data.force:
        del body["force"]
    return hashed_as_before(body)


def _forcing_key(request: Request) -> str:
    principal = principal_of(request)
    if principal.scope != "admin":
        raise ApiError("forbidden", "only an admin key may force a settle past the plausibility bounds", 403)
    return principal.key_id


@guarded_post("/v1/reservations/{reservation_id:str}/release", guards=[require("inference")], tags=["reservations"],
      status_code=200, **documented(404, 409, 422, idempotent=True))  # 422: a malformed Idempotency-Key
async def release(request: Request, reservation_id: FromPath[str]) -> Response[ReleaseResponse]:
    """Give the whole remaining hold back to the lots it came from."""
    customer_id = await services_of(request).wallets.owner_of(reservation_id)
    ensure_owner(request, customer_id, f"reservation {reservation_id}")
    command = Release(customer_id=customer_id, reservation_id=reservation_id,
                      from_caller=principal_of(request).scope != "admin", idem=idempotency(request, {}))
    return respond(request, await services_of(request).wallets.submit(command), RELEASED)


@guarded_post("/v1/reservations/{reservation_id:str}/extend", guards=[require("inference")], tags=["reservations"],
      status_code=200, **documented(404, 409, body=True, idempotent=True))
async def extend(
    request: Request, reservation_id: FromPath[str],
    data: Annotated[dict[str, Any], json_body(ExtendRequest)],
) -> Response[ExtendResponse]:
    """Keep an open (held or capturing) reservation's hold until `ttl_seconds` from now, for a
    call that runs longer than its TTL: the new expiry must be later than the current one
    (`extension_too_short` otherwise); a settled, released or expired reservation is
    `reservation_closed`. Nothing is posted: the hold stays where it is."""
    asked = shaped(data, ExtendRequest)
    customer_id = await services_of(request).wallets.owner_of(reservation_id)
    ensure_owner(request, customer_id, f"reservation {reservation_id}")
    command = Extend(customer_id=customer_id, reservation_id=reservation_id, ttl_seconds=asked.ttl_seconds,
                     idem=idempotency(request, data))
    return respond(request, await services_of(request).wallets.submit(command), EXTENDED)


class ReservationHold(msgspec.Struct):
    seq: int
    account: str
    amount: str


class ReservationState(msgspec.Struct):
    """A reservation's state (money as decimal strings in its currency) and where its hold came from."""

    id: str
    request_id: str
    customer_id: str
    model: str
    status: Literal["held", "capturing", "settled", "released", "expired"]
    currency: str
    amount: str
    captured: str
    released: str
    charged: str
    captures: int
    dimensions: dict[str, Any]
    estimate: dict[str, Any] | None
    created_at: str
    expires_at: str
    closed_at: str | None
    holds: list[ReservationHold]


class ReservationView(ReservationState):
    """A reservation's state, where its hold came from, its charges and its journal entries (as
    GET /v1/journal gives them)."""

    charges: list[dict[str, Any]]
    entries: list[dict[str, Any]]


@get("/v1/reservations/{reservation_id:str}", guards=[require("inference", "auditor", "customer")],
     tags=["reservations"], **documented(404, ok=ReservationView))
async def get_reservation(state: State, request: Request, reservation_id: FromPath[str]) -> dict[str, Any]:
    """The reservation's state, where its hold came from, its captures and journal entries."""
    now = state.services.wallets.clock()  # past its expiry it reads expired, as extend answers
    view = await state.services.db.read(lambda conn: reports.reservation(conn, reservation_id, now))
    ensure_owner(request, view["customer_id"], f"reservation {reservation_id}")
    return view

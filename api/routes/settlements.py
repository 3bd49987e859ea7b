"""Settle in bulk: up to 1,000 settles in one call, each answered on its own, as
`POST /v1/reservations/{id}/settle` would answer it, and each under its own idempotency key.

An item's key is its `idempotency_key`, or one derived from its reservation, capture and body.
It lives where a single settle's Idempotency-Key lives (per API key, hashed as the single call),
so a settle sent once singly and once in bulk under one key is charged once, and a replay answers
what the first answered. The items go to the wallet engine one by one, where they batch together.
"""
from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated, Any

import msgspec
from litestar import Request, Response
from litestar.datastructures import State

from api.auth import guarded_post, principal_of, require
from api.errors import RETRY_AFTER_S, ApiError, Problem, documented, error_response, problem_body, unexpected
from api.routes.formats import free_text
from api.routes.reservations import SETTLED, SettleRequest, SettleResponse, _settle_body, settle_outcome
from api.routes.schemas import (
    ANTHROPIC_USAGE,
    CANONICAL_USAGE,
    GEMINI_USAGE,
    OPENAI_USAGE,
    exactly_one,
    json_body,
    json_object,
    msgspec_schema,
)
from api.routes.wire import COMPOSED, answered, composed, idempotency, respond, shaped
from ledger.db import RetriesExhaustedError, is_unavailable
from ledger.errors import LedgerError
from ledger.model import request_hash
from pricing.errors import PricingError
from pricing.text import PATTERN as TEXT_PATTERN
from wallets.commands import Settle
from wallets.errors import WalletValidationError

MAX_SETTLES = 1000
LOOKUPS = 8  # reservation owners looked up at once (the rest wait, rather than queue on the pool)
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class SettleItem(msgspec.Struct, forbid_unknown_fields=True):  # a typo is a 422
    reservation_id: Text
    usage: Annotated[dict[str, Any], json_object(CANONICAL_USAGE)] | None = None
    openai_usage: Annotated[dict[str, Any], json_object(OPENAI_USAGE)] | None = None
    anthropic_usage: Annotated[dict[str, Any], json_object(ANTHROPIC_USAGE)] | None = None
    final: bool = True
    capture_id: Annotated[Text, free_text()] | None = None
    # 1 to 255 characters once stripped of spaces, free text, as the header (wire.checked_key)
    idempotency_key: Annotated[str, msgspec.Meta(extra_json_schema={"minLength": 1, "maxLength": 255,
                                                                    "pattern": TEXT_PATTERN}, description=(
        "As a single settle's Idempotency-Key (the same key either way is one settle), stripped of spaces "
        "around it; when absent, one is derived from the reservation, the capture and the body"))] | None = None
    gemini_usage: Annotated[dict[str, Any], json_object(GEMINI_USAGE)] | None = None


SettleItems = Annotated[list[Annotated[SettleItem, msgspec.Meta(extra_json_schema=exactly_one(
    usage="object", openai_usage="object", anthropic_usage="object", gemini_usage="object"))]],
    msgspec.Meta(max_length=MAX_SETTLES)]
SettlementsBody = Annotated[list[Any], json_body(SettleItems)]


class SettlementResult(msgspec.Struct):
    """One item's answer: what its single settle would answer (status and body), in item order."""

    reservation_id: str | None
    idempotency_key: str | None
    status: int
    replayed: bool
    body: Annotated[dict[str, Any], msgspec.Meta(extra_json_schema={
        "description": "The settle's answer (status 200), else its problem document (a 503's "
                       "`retry_after_seconds`: the seconds a whole call's Retry-After would ask)",
        "oneOf": [msgspec_schema(SettleResponse), msgspec_schema(Problem)]})]


class SettlementsResponse(msgspec.Struct):
    results: list[SettlementResult]


class _Answer(msgspec.Struct):
    """SettlementResult as sent: the body is the JSON a single settle answers (or stored), as is."""

    reservation_id: str | None
    idempotency_key: str | None
    status: int
    replayed: bool
    body: msgspec.Raw


def derived_key(item: SettleItem, body: dict[str, Any]) -> str:
    """The key of an item sent without one: the same settle always derives the same key, another
    body (a corrected settle after a refusal, another capture) another key."""
    text = msgspec.json.encode([item.reservation_id, item.capture_id, body], order="sorted")
    return "settle-" + hashlib.sha256(text).hexdigest()


def _reservation_of(raw: Any) -> str | None:
    """The reservation an item names, answered under it even when the item is malformed (a client maps
    answers back by it): a string's, else None."""
    named = raw.get("reservation_id") if isinstance(raw, dict) else None
    return named if isinstance(named, str) else None


def _problem(request: Request, exc: Exception, raw: Any, key: str | None) -> _Answer:
    if isinstance(exc, LedgerError | PricingError | ApiError):
        response = error_response(request, exc)
        status, body = response.status_code, response.content
    else:  # the database is down, or a batch spent its retry budget: this item may be sent again, after
        # the wait a whole call's 503 asks (Retry-After), in its body: an item has no headers
        status, body = 503, problem_body(503, "service_unavailable", "the database is unavailable right now; "
                                         "retry shortly", request, retry_after_seconds=RETRY_AFTER_S)
    return _Answer(_reservation_of(raw), key, status, False, msgspec.Raw(msgspec.json.encode(body)))


async def _settle_one(state: State, request: Request, raw: Any, lookups: asyncio.Semaphore) -> _Answer:
    item: SettleItem | None = None
    key: str | None = None
    try:
        item = shaped(raw, SettleItem)
        if not item.final and item.capture_id is None and item.idempotency_key is None:
            # its derived key would be every same-usage capture's: the second taken for a replay, uncharged
            raise WalletValidationError("capture_id", "a capture (final: false) in bulk needs its capture_id "
                                        "(or an idempotency_key), to be told apart from another of the same usage")
        data = SettleRequest(item.usage, item.openai_usage, item.anthropic_usage, item.final, item.capture_id,
                             gemini_usage=item.gemini_usage)
        body = _settle_body(data)
        key = item.idempotency_key.strip() if item.idempotency_key is not None else derived_key(item, body)
        path = f"/v1/reservations/{item.reservation_id}/settle"
        idem = idempotency(request, body, key=key, path=path, field="idempotency_key")
        async with lookups:
            customer_id = await state.services.wallets.owner_of(item.reservation_id)
        if not principal_of(request).may_see(customer_id):
            raise ApiError("forbidden", f"this key may not settle reservation {item.reservation_id}", 403)
        outcome = await settle_outcome(state.services, data, Settle(
            customer_id=customer_id, reservation_id=item.reservation_id, request_hash=request_hash(body),
            tokens={}, usage={}, final=item.final, capture_id=item.capture_id,
            from_caller=principal_of(request).scope != "admin", idem=idem))
    except (LedgerError, PricingError, ApiError, RetriesExhaustedError) as exc:
        return _problem(request, exc, raw, key)
    except Exception as exc:
        if is_unavailable(exc):
            return _problem(request, exc, raw, key)
        # a fault that is no domain refusal (a bug, a constraint the database holds): this item's own
        # 500 (logged, naming it), as the engine isolated it by halving; raised, it made the whole
        # call a 500 though the other items had settled
        response = unexpected(request, exc, f"reservation {_reservation_of(raw)!r}, idempotency key {key!r}")
        return _Answer(_reservation_of(raw), key, response.status_code, False,
                       msgspec.Raw(msgspec.json.encode(response.content)))
    status, text, replayed = answered(request, outcome, SETTLED)
    return _Answer(item.reservation_id, key, status, replayed, msgspec.Raw(text))


@guarded_post("/v1/settlements", guards=[require("inference")], tags=["reservations"], status_code=200,
      **documented(body=True, idempotent=True))
async def settle_many(state: State, request: Request, data: SettlementsBody) -> Response[SettlementsResponse]:
    """Up to 1,000 settles, each answered on its own in `results`, in order, with the status and
    body its `POST /v1/reservations/{id}/settle` would answer: a refusal (not found, closed,
    forbidden, implausible, invalid) is that item's, and the others go ahead. Each item has its
    own idempotency key (`idempotency_key`, or one derived from it): a replay answers what the
    first answered, and a settle sent singly and in bulk under one key is charged once."""
    items: list[Any] = shaped(data, Annotated[list[Any], msgspec.Meta(max_length=MAX_SETTLES)])
    idem = idempotency(request, data)
    replay = await state.services.wallets.claim(idem) if idem is not None else None
    if replay is not None:
        return respond(request, replay, COMPOSED)
    lookups = asyncio.Semaphore(LOOKUPS)
    answers = await asyncio.gather(*(_settle_one(state, request, raw, lookups) for raw in items))
    response = composed({"results": answers})
    if idem is not None and all(answer.status < 500 for answer in answers):  # a 503 item may be sent again
        return respond(request, await state.services.wallets.remember(idem, response), COMPOSED)
    if idem is not None:
        await state.services.wallets.release(idem)
    return respond(request, response, COMPOSED)

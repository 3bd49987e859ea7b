"""A customer's price overrides (contract prices, discounts, free allowances): an admin appends
a version effective from a time (default now); the customer's keys, inference and auditor keys
read the current version and the history. Validated whole before the transaction (pricing),
then against the customer's price book (its models) inside it."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, put
from litestar.datastructures import State
from litestar.params import FromPath

from api.auth import require
from api.errors import documented
from api.routes.formats import POSITIVE_AMOUNT, PRICE, DateTime, documented_as, free_text
from api.routes.schemas import json_body
from api.routes.wire import Answer, amount_in, bound_in, idempotency, refused_in_words, respond, shaped, time_out
from pricing.books import TOKEN_TYPES
from pricing.override_versions import MAX_ITEMS, parse_overrides
from wallets import price_overrides
from wallets.core.idempotency import CREATED, EXISTS
from wallets.errors import WalletValidationError

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=100), free_text()]
Model = Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="a model, or a pattern with `*`"),
                  free_text()]
Price = Annotated[str, msgspec.Meta(pattern=PRICE, description="per 1,000,000 tokens (per call for `request`)")]
Percent = Annotated[str, msgspec.Meta(pattern=PRICE, description="a decimal string, more than 0 and at most 100")]
# the pattern documented, enforced by amount_in in the handler in the words every amount is refused in
# (msgspec's quoted the whole expression: "Expected `str` matching regex '^(?:[1-9]...'")
Amount = Annotated[str, documented_as(POSITIVE_AMOUNT, "money per billing period, more than 0")]
TokenType = Literal[TOKEN_TYPES]  # type: ignore[valid-type]


class ContractPriceRequest(msgspec.Struct, forbid_unknown_fields=True):
    id: Id
    price: Price
    model: Model | None = None
    token_type: TokenType | None = None


class DiscountRequest(msgspec.Struct, forbid_unknown_fields=True):
    id: Id
    percent: Percent
    model: Model | None = None
    token_type: TokenType | None = None


class FreeAllowanceRequest(msgspec.Struct, forbid_unknown_fields=True):
    id: Id
    amount: Amount


class PutPriceOverridesRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The whole set of overrides in force from `effective_from` (default now) until the next
    version: an empty set ends them. Ids are unique across the three lists."""

    effective_from: DateTime | None = None
    contract_prices: Annotated[list[ContractPriceRequest], msgspec.Meta(max_length=MAX_ITEMS)] = []
    discounts: Annotated[list[DiscountRequest], msgspec.Meta(max_length=MAX_ITEMS)] = []
    free_allowances: Annotated[list[FreeAllowanceRequest], msgspec.Meta(max_length=MAX_ITEMS)] = []


class PriceOverridesVersionResponse(msgspec.Struct):
    customer_id: str
    version: int
    effective_from: str
    created_at: str
    contract_prices: list[Any]
    discounts: list[Any]
    free_allowances: list[Any]


class PriceOverridesResponse(msgspec.Struct):
    customer_id: str
    current: PriceOverridesVersionResponse | None  # in force now
    versions: list[PriceOverridesVersionResponse]  # oldest first


def _version(v: price_overrides.StoredOverrides) -> PriceOverridesVersionResponse:
    return PriceOverridesVersionResponse(**price_overrides.view(v, time_out))


ADDED = Answer(lambda added: _version(added.stored), price_overrides.AddedOverrides,
               lambda added: CREATED if added.created else EXISTS)
Body = Annotated[dict[str, Any], json_body(PutPriceOverridesRequest)]


@put("/v1/customers/{customer_id:str}/price-overrides", guards=[require()], tags=["price books"],
     status_code=201, **documented(404, body=True, replay=PriceOverridesVersionResponse, idempotent=True))
async def put_price_overrides(state: State, request: Request, customer_id: FromPath[str],
                              data: Body) -> Response[PriceOverridesVersionResponse]:
    """Append a version of the customer's overrides (admin). 201 with it; the same overrides as
    the latest version answer 200 with that version at its own `effective_from`, or without one
    while it is in force (one scheduled later is not in force "now": 422 on `effective_from`).
    Usage is rated with the version in force at its own time, so a version never changes what
    earlier usage was charged: `effective_from` must be after the latest version's."""
    try:
        body = shaped(data, PutPriceOverridesRequest)
    except WalletValidationError as shape_error:  # "01", "-0": in words, not the schema's pattern
        refused_in_words(shape_error, data, parse_overrides)
    at = bound_in(body.effective_from, "effective_from")  # finer than a microsecond: the next one
    for i, allowance in enumerate(body.free_allowances):
        amount_in(allowance.amount, f"free_allowances[{i}].amount")
    parse_overrides(data)  # every bad field at once, before any transaction
    outcome = await state.services.wallets.add_overrides(customer_id, data, at, idempotency(request, data))
    return respond(request, outcome, ADDED)


@get("/v1/customers/{customer_id:str}/price-overrides", guards=[require("inference", "auditor", "customer")],
     tags=["price books"], **documented(404))
async def get_price_overrides(state: State, customer_id: FromPath[str]) -> PriceOverridesResponse:
    """The customer's versions, oldest first, and the one in force now (null: none)."""
    versions = await state.services.db.read(lambda conn: price_overrides.get_versions(conn, customer_id))
    now = datetime.now(UTC)
    current = next((v for v in reversed(versions) if v.effective_from <= now), None)
    return PriceOverridesResponse(customer_id, _version(current) if current else None,
                                  [_version(v) for v in versions])


ROUTES = [put_price_overrides, get_price_overrides]

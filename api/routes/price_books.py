"""Price books: post a version (creating the book on first use), read a book's versions.

A version is parsed and validated before any transaction (in a worker thread when it is big),
and the transaction only stores it."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter

from api.auth import require
from api.errors import documented
from api.routes import cursors
from api.routes.formats import AMOUNT_TEXT, IDENTIFIER, POSITIVE_AMOUNT, PRICE, DateTime, free_text
from api.routes.schemas import BIGINT, MAX_DIMENSION_TEXT, Dimension, json_body
from api.routes.wire import (
    Answer,
    bound_in,
    idempotency,
    refused_in_words,
    respond,
    shaped,
    time_in,
    time_out,
    time_param,
)
from ledger.db import lock_key
from pricing.books import (
    MAX_CONTEXT_WINDOW,
    MAX_MATCH_DIMENSIONS,
    MAX_MODEL,
    MAX_RULE_ID,
    MAX_RULES,
    MAX_TIERS,
    TIER_MODES,
    TOKEN_TYPES,
    PriceVersion,
)
from pricing.parse import parse_version
from pricing.units import FORMAT_1_TYPES
from wallets import books
from wallets.core.idempotency import CREATED, EXISTS
from wallets.errors import NotFoundError, WalletValidationError
from wallets.price_import import import_genai_prices
from wallets.service import run_once

Price = Annotated[str, msgspec.Meta(pattern=PRICE, description="A decimal string (never a JSON number)")]
# what pricing takes as a plausibility bound: a price, positive, with at most 9 decimals
MaxCharge = Annotated[str, msgspec.Meta(pattern=POSITIVE_AMOUNT, description="More than 0: " + AMOUNT_TEXT)]
ContextWindow = Annotated[int, msgspec.Meta(ge=1, le=MAX_CONTEXT_WINDOW, description=(
    "The most input + output tokens one call can have; a settle beyond it is implausible_usage"))]
IN_THREAD_ABOVE = 200  # rules: a bigger version is parsed off the event loop
DimensionName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_DIMENSION_TEXT,  # as a usage's (schemas)
                                             extra_json_schema={"not": {"const": "model"}}), free_text()]
_OPEN_TIER = {"anyOf": [{"not": {"required": ["up_to"]}}, {"properties": {"up_to": {"type": "null"}}}]}
_PRICE_OR_TIERS = {"oneOf": [
    {"required": ["price"], "properties": {
        "price": {"not": {"type": "null"}}, "tiers": {"anyOf": [{"type": "null"}, {"maxItems": 0}]},
        "tier_mode": {"not": {"const": "volume"}}}},
    {"required": ["tiers"], "properties": {"tiers": {"type": "array", "minItems": 1}, "price": {"type": "null"}}},
]}


class TierRequest(msgspec.Struct, forbid_unknown_fields=True):
    price: Price
    up_to: Annotated[int, msgspec.Meta(ge=1, le=BIGINT - 1)] | None = None


class PromptTierRequest(msgspec.Struct, forbid_unknown_fields=True):
    above: Annotated[int, msgspec.Meta(ge=0, le=BIGINT - 1)]
    price: Price


HHMM = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
Hours = msgspec.defstruct("Hours", [("from", HHMM), ("to", HHMM)], forbid_unknown_fields=True)


class RuleRequest(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_RULE_ID), free_text()]
    token_type: Literal[TOKEN_TYPES]  # type: ignore[valid-type]
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_MODEL), free_text()] | None = None
    price: Price | None = None
    match: Annotated[dict[DimensionName, Dimension], msgspec.Meta(max_length=MAX_MATCH_DIMENSIONS)] | None = None
    tiers: Annotated[list[TierRequest], msgspec.Meta(max_length=MAX_TIERS, extra_json_schema={
        "description": "Ascending `up_to`; only the last tier is open (`up_to` null).",
        "contains": _OPEN_TIER, "maxContains": 1})] | None = None
    tier_mode: Literal[TIER_MODES] | None = None  # type: ignore[valid-type]
    source: Annotated[str, free_text()] | None = None
    context_window: ContextWindow | None = None
    prompt_tiers: Annotated[list[PromptTierRequest], msgspec.Meta(max_length=MAX_TIERS, description=(
        "Format 2: every unit of a call at `price` once its prompt passes `above` tokens"))] | None = None
    hours: Annotated[Hours, msgspec.Meta(description="Format 2: a daily UTC window, `to` excluded")] | None = None  # type: ignore[valid-type]
    label: Annotated[str, msgspec.Meta(min_length=1, max_length=60), free_text()] | None = None
    source_date: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")] | None = None


class PriceBookRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A version of a book: unique rule ids, and no two rules that could tie for one usage; at
    most 10,000 rules, 64 distinct sets of match dimension names and 200 model patterns.
    `max_charge_per_request` and `context_window` bound what one call may be charged."""

    id: Annotated[str, msgspec.Meta(pattern=IDENTIFIER)]
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
    effective_from: DateTime
    rules: Annotated[list[Annotated[RuleRequest, msgspec.Meta(extra_json_schema=_PRICE_OR_TIERS)]],
                     msgspec.Meta(max_length=MAX_RULES)]
    version: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    max_charge_per_request: MaxCharge | None = None
    context_window: ContextWindow | None = None
    format: Literal[1, 2] | None = None
    unpriced: Literal["error", "zero"] | None = None


# pricing.rule_fields.format_errors: without "format": 2, no unpriced policy but "error", and no
# rule with a format 2 token type or field
_FORMAT_1_RULE = {"properties": {
    "token_type": {"enum": list(FORMAT_1_TYPES)}, "prompt_tiers": {"anyOf": [{"type": "null"}, {"maxItems": 0}]},
    "hours": {"type": "null"}, "label": {"type": "null"}, "source_date": {"type": "null"}}}
_FORMAT_2_OR_NOT_USED = {"anyOf": [
    {"required": ["format"], "properties": {"format": {"const": 2}}},
    {"properties": {"unpriced": {"enum": [None, "error"]}, "rules": {"items": _FORMAT_1_RULE}}},
]}
PriceBookBody = Annotated[dict[str, Any], json_body(Annotated[PriceBookRequest, msgspec.Meta(
    extra_json_schema=_FORMAT_2_OR_NOT_USED)])]


class PriceVersionResponse(msgspec.Struct, omit_defaults=True):
    """A version of a book; `rules` as posted (left out of a book's `versions` unless `rules=true`)."""

    id: str
    currency: str
    version: str
    effective_from: str
    created_at: str
    rule_count: int
    rules: list[Any] | None = None
    max_charge_per_request: str | None = None
    context_window: int | None = None
    format: int | None = None
    unpriced: str | None = None


class PriceBookResponse(msgspec.Struct):
    """A book: `current`, the version in force at `at` (default: now; null before its first),
    with its rules; `versions`, a page of its versions oldest first, without their rules unless
    `rules=true`; `next_cursor`, null on the last page."""

    id: str
    currency: str
    current: PriceVersionResponse | None
    versions: list[PriceVersionResponse]
    next_cursor: str | None


def _valid(data: dict[str, Any]) -> PriceVersion:
    """The body, parsed, once valid. The schema's checks come first, so that pricing never reads a
    shape it cannot (a list for `match`, say); where they fail, pricing's own list every bad field
    (wire.refused_in_words)."""
    try:
        shaped(data, PriceBookRequest)
        time_in(data["effective_from"], "effective_from")
    except WalletValidationError as shape_error:
        refused_in_words(shape_error, data, parse_version)
    return parse_version(data)


async def _parsed(data: dict[str, Any]) -> PriceVersion:
    rules = data.get("rules")
    if isinstance(rules, list) and len(rules) > IN_THREAD_ABOVE:
        return await asyncio.to_thread(_valid, data)
    return _valid(data)


def _version(v: books.StoredVersion) -> PriceVersionResponse:
    return PriceVersionResponse(v.book_id, v.currency, v.version, time_out(v.effective_from) or "",
                                time_out(v.created_at) or "", v.rules_in_it, v.rules,
                                v.plausibility.get("max_charge_per_request"), v.plausibility.get("context_window"),
                                v.plausibility.get("format"), v.plausibility.get("unpriced"))


def _added(added: books.AddedVersion) -> str:
    return CREATED if added.created else EXISTS


ADDED = Answer(lambda added: _version(added.version), books.AddedVersion, _added)


@post("/v1/price-books", guards=[require()], tags=["price books"], status_code=201,
      **documented(409, body=True, replay=PriceVersionResponse, idempotent=True))
async def post_price_book(
    state: State, request: Request,
    data: PriceBookBody,
) -> Response[PriceVersionResponse]:
    """Create a book, or add a version to it. Versions never change: posting the same version
    again answers 200 with it; another version at the same `effective_from` is refused. More
    than 10,000 rules is a validation error naming `rules` (see the README's limits)."""
    version = await _parsed(data)
    outcome = await run_once(state.services.db, idempotency(request, data),
                             lambda conn: books.add_version(conn, data, version),
                             locks=[lock_key("price-book:" + str(data.get("id")))], code_of=_added)
    return respond(request, outcome, ADDED)


WithRules = Annotated[bool, QueryParameter(name="rules", description=(
    "true: each listed version carries its rules (the whole history, a page at a time)"))]
PAGE_LISTING = "price-book-versions"


@get("/v1/price-books/{book_id:str}", guards=[require("auditor", "inference")], tags=["price books"],
     description=(
         "The book: `current` is the version in force at `at` (default: now; null before its first version) "
         "with its rules; `versions` lists its versions oldest first, `limit` at a time (page on with "
         "`cursor` = the last page's `next_cursor`, null on the last page), each with `rule_count` but "
         "without its rules unless `rules=true` (then a page ends before it would pass 10,000 rules). "
         "One version with its rules: "
         "`GET /v1/price-books/{id}/versions/{version}`."),
     **documented(400, 404))
async def get_price_book(state: State, book_id: FromPath[str], at: Annotated[str | None, time_param("at")] = None,
                         rules: WithRules = False, cursor: cursors.Cursor = None,
                         limit: cursors.Limit = cursors.PAGE) -> PriceBookResponse:
    """A book: the version in force at `at` (default: now) with its rules as `current`, and its
    versions oldest first, a page at a time (`limit`, default 100; page on with `next_cursor`),
    each without its rules (`rule_count` says how many) unless `rules=true` (a page of at most
    10,000 rules then, one version at least). One version with its rules:
    `GET /v1/price-books/{id}/versions/{version}`."""
    when = time_in(at, "at") or datetime.now(UTC)
    filters = [book_id, rules]
    after = None if cursor is None else _after(cursors.decode_position(cursor, PAGE_LISTING, filters))
    page = await state.services.db.read(
        lambda conn: books.book_page(conn, book_id, at=when, after=after, limit=limit, rules=rules))
    more = None if page.more is None else cursors.encode_position(PAGE_LISTING, filters, [page.more.isoformat()])
    return PriceBookResponse(page.book_id, page.currency, None if page.current is None else _version(page.current),
                             [_version(v) for v in page.versions], more)


def _after(position: list[Any]) -> datetime:
    """A version cursor's position: the last listed version's effective_from."""
    try:
        if len(position) == 1 and isinstance(position[0], str):
            at = datetime.fromisoformat(position[0])
            if at.tzinfo is not None:
                return at
    except ValueError:
        pass
    raise cursors.invalid("not a cursor of this listing")


@get("/v1/price-books/{book_id:str}/versions/{version:path}", guards=[require("auditor", "inference")],
     tags=["price books"], description="One version of the book, by its `version` label, with all its rules.",
     **documented(404))
async def get_price_version(state: State, book_id: FromPath[str], version: FromPath[PurePosixPath]
                            ) -> PriceVersionResponse:
    """One version of a book, by its `version` label (which may hold a `/`), with all its rules."""
    label = str(version).removeprefix("/")
    return _version(await state.services.db.read(lambda conn: books.get_version(conn, book_id, label)))


class ImportPricesRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Create or version books from a price data source bundled with the server (no network)."""

    source: Literal["genai-prices"]
    provider: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    effective_from: DateTime | None = None


class ImportedBookResponse(msgspec.Struct):
    book: str
    models: int
    rules: int
    created: Annotated[list[str], msgspec.Meta(description=(
        "the effective_from of each version posted, in UTC with a Z (2030-01-01T00:00:00.000001Z)"))]
    unchanged: bool
    conflicts: list[str]
    not_expressed: dict[str, str]


class ImportPricesResponse(msgspec.Struct):
    books: list[ImportedBookResponse]


@post("/v1/price-books/import", guards=[require()], tags=["price books"], status_code=200,
      **documented(404, body=True))
async def import_price_books(state: State, data: Annotated[dict[str, Any], json_body(ImportPricesRequest)]
                             ) -> ImportPricesResponse:
    """`tokentill prices import` over HTTP: one book per provider (`genai-<provider>`), created
    with the snapshot's dated versions, or versioned from `effective_from` (default: now) where
    its prices changed; the same data again creates nothing. Admin only."""
    request = shaped(data, ImportPricesRequest)
    wallets = state.services.wallets
    at = bound_in(request.effective_from, "effective_from")  # None: now, as the import takes it (behind a fence)
    reports = await import_genai_prices(state.services.db, request.provider, request.model, at,
                                        wallets.clock().date().isoformat(), wallets.clock)
    if not reports:
        of = f" of provider {request.provider}" if request.provider else ""
        raise NotFoundError(f"genai-prices has no model {request.model}{of}" if request.model
                            else f"genai-prices has no provider {request.provider}")
    return ImportPricesResponse([ImportedBookResponse(**r.as_dict()) for r in reports])

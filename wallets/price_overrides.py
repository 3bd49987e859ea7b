"""A customer's price overrides in the database (migration 0032): versions are appended, each
effective after the one before, and never change. A process keeps each customer's parsed
history by its count of versions (versions are only ever added, so the count names what it
holds); a wallet batch learns the count with the wallet's own load, in the same round trip,
and a customer without overrides costs nothing more.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.model import request_hash
from pricing.books import is_pattern, model_rank
from pricing.errors import PriceBookValidationError, field_error, wire_time
from pricing.override_versions import OverrideHistory, history, parse_overrides
from pricing.overrides import Overrides
from pricing.units import NOT_TOKENS
from wallets.errors import NotFoundError

MAX_CUSTOMERS = 10_000  # customers whose history a process keeps


@dataclass(frozen=True, slots=True)
class StoredOverrides:
    customer_id: str
    version: int
    effective_from: datetime
    body: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AddedOverrides:
    stored: StoredOverrides
    created: bool  # False: the same overrides were the latest version already


_VERSIONS = text("""
SELECT customer_id, version, effective_from, body, created_at FROM price_overrides
 WHERE lane = ledger_lane(:c) AND customer_id = :c ORDER BY version
""")


async def stored_versions(conn: AsyncConnection, customer_id: str) -> list[StoredOverrides]:
    """A customer's versions, oldest first."""
    rows = await conn.execute(_VERSIONS, {"c": customer_id})
    return [StoredOverrides(r.customer_id, r.version, r.effective_from, r.body, r.created_at) for r in rows]


async def get_versions(conn: AsyncConnection, customer_id: str) -> list[StoredOverrides]:
    """The versions of a customer that exists (404 otherwise)."""
    await _book_of(conn, customer_id)
    return await stored_versions(conn, customer_id)


def normalized(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body as stored: the three lists, each item without its absent (null) fields."""
    return {name: [{k: v for k, v in item.items() if v is not None} for item in body.get(name) or []]
            for name in ("contract_prices", "discounts", "free_allowances")}


async def _book_of(conn: AsyncConnection, customer_id: str) -> str | None:
    row = (await conn.execute(text("SELECT price_book FROM customers WHERE id = :c"), {"c": customer_id})).first()
    if row is None:
        raise NotFoundError(f"no customer {customer_id}", customer_id=customer_id)
    return row.price_book


async def check_models(conn: AsyncConnection, customer_id: str, body: Mapping[str, Any]) -> None:
    """Refuse a model whose tokens no rule of the customer's price book prices (a contract price or
    a discount for it would never apply; a rule for every model of a type that counts no tokens,
    a request fee, a tool call, audio seconds or characters, does not make one known:
    pricing.units.NOT_TOKENS; one naming the model does, a request fee too):
    `validation_error` naming each such field."""
    book_id = await _book_of(conn, customer_id)
    scoped = [(f"{name}[{i}].model", item["model"]) for name in ("contract_prices", "discounts")
              for i, item in enumerate(body.get(name) or []) if item.get("model") and not is_pattern(item["model"])]
    if not scoped:
        return
    models: set[str | None] = set()
    if book_id:
        rows = await conn.execute(text("""SELECT DISTINCT r->>'model' AS model FROM price_book_versions v
                                            CROSS JOIN LATERAL jsonb_array_elements(v.rules) r
                                           WHERE v.book_id = :b AND (r->>'model' IS NOT NULL
                                                  OR NOT r->>'token_type' = ANY(CAST(:not_tokens AS text[])))"""),
                                    {"b": book_id, "not_tokens": sorted(NOT_TOKENS)})
        models = {r.model for r in rows}
    errors = [field_error(where, f"no rule of price book {book_id} prices model {model!r}" if book_id
                          else f"customer {customer_id} has no price book to override")
              for where, model in scoped if not any(model_rank(m, model) is not None for m in models)]
    if errors:
        raise PriceBookValidationError(errors)


async def add_version(conn: AsyncConnection, customer_id: str, body: Mapping[str, Any],
                      effective_from: datetime | None, now: datetime) -> AddedOverrides:
    """Append a version taking effect at `effective_from` (default `now`, or just after the latest
    usage charged ahead of it: an event timed ahead of the clock keeps the version that rated it),
    after every earlier one. The same overrides again, at the latest version's time or with no time
    while that version is in force, are that version."""
    parse_overrides(body)
    await check_models(conn, customer_id, body)
    stored = normalized(body)
    digest = request_hash(stored)
    last = (await conn.execute(text(
        """SELECT version, effective_from, body_hash FROM price_overrides
            WHERE lane = ledger_lane(:c) AND customer_id = :c ORDER BY version DESC LIMIT 1"""),
        {"c": customer_id})).first()
    at = effective_from or now
    if effective_from is None:  # "now", after any usage event timed ahead of the clock and charged already
        ahead = (await conn.execute(text(
            """SELECT max(occurred_at) FROM charges WHERE lane = ledger_lane(:c) AND customer_id = :c
                 AND occurred_at > created_at AND occurred_at >= :at"""), {"c": customer_id, "at": at})).scalar()
        if ahead is not None:
            at = ahead + timedelta(microseconds=1)
    # the same set is that version at its own time, or "now" when it is in force by then; one
    # scheduled later is not in force now, so "now" is refused below as for any other set
    same = last is not None and bytes(last.body_hash) == digest
    if same and (at == last.effective_from if effective_from is not None else last.effective_from <= at):
        return AddedOverrides(next(v for v in await stored_versions(conn, customer_id)
                                   if v.version == last.version), created=False)
    if last is not None and at <= last.effective_from:
        raise PriceBookValidationError("effective_from", (
            f"must be after {wire_time(last.effective_from)}, when version {last.version} takes effect: "
            "versions take effect in order, and what rated earlier usage never changes"))
    row = (await conn.execute(text(
        """INSERT INTO price_overrides (lane, customer_id, version, effective_from, body, body_hash)
           VALUES (ledger_lane(:c), :c, :v, :at, CAST(:body AS jsonb), :h) RETURNING created_at"""),
        {"c": customer_id, "v": (last.version if last else 0) + 1, "at": at, "body": json.dumps(stored),
         "h": digest})).one()
    return AddedOverrides(StoredOverrides(customer_id, (last.version if last else 0) + 1, at, stored,
                                          row.created_at), created=True)


async def load_history(conn: AsyncConnection, customer_id: str) -> OverrideHistory | None:
    """The customer's history as stored now (None: no version)."""
    found = await stored_versions(conn, customer_id)
    return history([(v.version, v.effective_from, v.body) for v in found]) if found else None


class OverrideCache:
    """Each customer's parsed history, by its count of versions; bounded."""

    def __init__(self, *, max_customers: int = MAX_CUSTOMERS) -> None:
        self._histories: OrderedDict[str, tuple[int, OverrideHistory]] = OrderedDict()
        self._max = max_customers

    async def get(self, conn: AsyncConnection, customer_id: str, versions: int) -> OverrideHistory | None:
        """The history of `versions` versions (None: the customer has none)."""
        if versions == 0:
            return None
        cached = self._histories.get(customer_id)
        if cached is not None and cached[0] == versions:
            self._histories.move_to_end(customer_id)
            return cached[1]
        found = await load_history(conn, customer_id) or OverrideHistory(())
        self._histories[customer_id] = (len(found.versions), found)
        self._histories.move_to_end(customer_id)
        while len(self._histories) > self._max:
            self._histories.popitem(last=False)
        return found


def overrides_at(found: OverrideHistory | None, at: datetime) -> tuple[int | None, Overrides | None]:
    """(version, overrides) in force at `at`, or (None, None)."""
    version = found.at(at) if found is not None else None
    return (version.version, version.overrides) if version is not None else (None, None)


def view(v: StoredOverrides, fmt: Any) -> dict[str, Any]:
    """A version on the wire; `fmt` renders times."""
    return {"customer_id": v.customer_id, "version": v.version, "effective_from": fmt(v.effective_from),
            "created_at": fmt(v.created_at), **{k: list(v.body.get(k, [])) for k in (
                "contract_prices", "discounts", "free_allowances")}}


__all__ = ["AddedOverrides", "OverrideCache", "StoredOverrides", "add_version", "get_versions", "overrides_at",
           "stored_versions", "view"]

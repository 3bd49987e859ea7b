"""Re-rating, as the API uses it: check a request (book, corrected version, range), find the
customers and billing periods whose charges it touches, and either preview the difference
(nothing changes) or apply it: a RerateCharges command per customer and period, through the
engine (one transaction per lane, under the lane's writer lock, the customers' locks and the
credit note issuer's numbering lock), as closes run. The rules are wallets/core/rerating.py.

The same book, version, range and customer filter is the same re-rate, as long as the price
overrides of the customers it covers stay as they are (`RerateSpec.overrides`, migration 0033):
applying it again, at once or later, moves nothing more and answers what the first did (the
answer is read from the adjustments recorded, whoever applied them). After another override
version over the range, it is a new re-rate, which corrects what that version changed."""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.db import Database
from pricing.errors import wire_time
from pricing.money import format_money
from wallets.billing import UNEXPECTED
from wallets.books import BookCache
from wallets.core.billing import as_issued
from wallets.core.commands import RerateCharges
from wallets.core.rerate_true_ups import KIND as TRUE_UP
from wallets.core.rerate_true_ups import TrueUpFix
from wallets.core.rerating import Correction, rerated_period, type_rows
from wallets.engine import DOMAIN_ERRORS, Engine, rerate_input
from wallets.errors import (
    ConflictError,
    InvalidRangeError,
    NotFoundError,
    UnknownPriceBookError,
    UnknownPriceVersionError,
    VersionNotInForceError,
)
from wallets.periods import Cycle

log = logging.getLogger("tokentill.rerating")
CHUNK = 256  # commands per engine call: one transaction per lane among them


@dataclass(frozen=True, slots=True)
class RerateSpec:
    book_id: str
    version: str
    range_from: datetime
    range_to: datetime
    customer_id: str | None = None
    overrides: str = ""  # a digest of the override versions it rates with ('' : none; see `with_overrides`)

    def __post_init__(self) -> None:
        # the range in UTC: the same instants in another offset are the same re-rate (its id)
        object.__setattr__(self, "range_from", self.range_from.astimezone(UTC))
        object.__setattr__(self, "range_to", self.range_to.astimezone(UTC))

    @property
    def customer_filter(self) -> str:
        return self.customer_id or ""

    def rerate_id(self) -> str:
        """The re-rate's id: a digest of what it is (so the same request is the same re-rate)."""
        raw = "\x1f".join((self.book_id, self.version, self.range_from.isoformat(), self.range_to.isoformat(),
                           self.customer_filter, *([self.overrides] if self.overrides else [])))
        return "rr_" + hashlib.sha256(raw.encode()).hexdigest()[:24]

    def view(self) -> dict[str, Any]:
        return {"price_book": self.book_id, "version": self.version, "from": wire_time(self.range_from),
                "to": wire_time(self.range_to), "customer_id": self.customer_id}


async def check(conn: AsyncConnection, spec: RerateSpec) -> None:
    """Refuse what cannot be re-rated: an empty or inverted range, an unknown book or version, a
    version that is not the book's version in force throughout the range."""
    if spec.range_to <= spec.range_from:
        raise InvalidRangeError("the range is empty or inverted: `to` must be after `from`",
                                **{"from": wire_time(spec.range_from), "to": wire_time(spec.range_to)})
    rows = (await conn.exec_driver_sql(
        "SELECT version, effective_from FROM price_book_versions WHERE book_id = %s ORDER BY effective_from",
        (spec.book_id,))).all()
    if not rows:
        raise UnknownPriceBookError(f"no price book {spec.book_id}", price_book=spec.book_id)
    index = next((i for i, r in enumerate(rows) if r[0] == spec.version), None)
    if index is None:
        raise UnknownPriceVersionError(f"price book {spec.book_id} has no version {spec.version}",
                                       price_book=spec.book_id, version=spec.version)
    starts, ends = rows[index][1], rows[index + 1][1] if index + 1 < len(rows) else None
    if starts > spec.range_from or (ends is not None and ends < spec.range_to):
        raise VersionNotInForceError(
            f"version {spec.version} of {spec.book_id} is in force from {wire_time(starts)}"
            + (f" until {wire_time(ends)}" if ends is not None else "") + ", not throughout the range",
            price_book=spec.book_id, version=spec.version, effective_from=wire_time(starts),
            effective_until=wire_time(ends) if ends is not None else None)
    if spec.customer_id is not None and (await conn.exec_driver_sql(
            "SELECT 1 FROM customers WHERE id = %s", (spec.customer_id,))).first() is None:
        raise NotFoundError(f"no customer {spec.customer_id}", customer_id=spec.customer_id)


async def with_overrides(conn: AsyncConnection, spec: RerateSpec) -> RerateSpec:
    """`spec` named by the price overrides it rates with: the latest override version taking
    effect before the range ends of each customer with charges in it ('' when none has any)."""
    rows = (await conn.exec_driver_sql(
        """SELECT o.customer_id, max(o.version) FROM price_overrides o
            WHERE o.effective_from < %s AND o.customer_id IN (
                  SELECT c.customer_id FROM charges c
                   WHERE c.price_book = %s AND c.occurred_at >= %s AND c.occurred_at < %s
                     AND (%s::text IS NULL OR c.customer_id = %s))
            GROUP BY 1 ORDER BY 1""",
        (spec.range_to, spec.book_id, spec.range_from, spec.range_to, spec.customer_id, spec.customer_id))).all()
    if not rows:
        return spec
    raw = "\x1f".join(f"{cid}:{version}" for cid, version in rows)
    return replace(spec, overrides=hashlib.sha256(raw.encode()).hexdigest()[:24])


async def billed(conn: AsyncConnection, spec: RerateSpec) -> list[tuple[str, str, tuple[str, ...]]]:
    """(customer, billing period, the periods of their usage times) of every charge of the book
    whose usage time is in range, by the period it was billed in (a late charge's is after its
    usage time's): apply corrects each invoice's charges in one entry, with one note if finalized."""
    rows = await conn.exec_driver_sql(
        """SELECT customer_id, coalesce(billed, usage), array_agg(DISTINCT usage ORDER BY usage) FROM (
               SELECT c.customer_id,
                      coalesce(c.period, (SELECT j.metadata ->> 'period' FROM journal_entries j
                                           WHERE j.lane = c.lane AND j.id = c.entry_id)) AS billed,
                      wallets_period_label(c.occurred_at, cu.time_zone, cu.billing_anchor_day) AS usage
                 FROM charges c JOIN customers cu ON cu.id = c.customer_id
                WHERE c.price_book = %s AND c.occurred_at >= %s AND c.occurred_at < %s
                  AND (%s::text IS NULL OR c.customer_id = %s)) x
            GROUP BY 1, 2 ORDER BY 1, 2""",
        (spec.book_id, spec.range_from, spec.range_to, spec.customer_id, spec.customer_id))
    return [(cid, period, tuple(sources)) for cid, period, sources in rows]


async def affected(conn: AsyncConnection, spec: RerateSpec) -> list[tuple[str, str, Cycle]]:
    """(customer, billing period, cycle) of every charge of the book whose usage time is in range."""
    rows = await conn.exec_driver_sql(
        """SELECT c.customer_id, wallets_period_label(c.occurred_at, cu.time_zone, cu.billing_anchor_day),
                  cu.time_zone, cu.billing_anchor_day
             FROM charges c JOIN customers cu ON cu.id = c.customer_id
            WHERE c.price_book = %s AND c.occurred_at >= %s AND c.occurred_at < %s
              AND (%s::text IS NULL OR c.customer_id = %s)
            GROUP BY 1, 2, 3, 4 ORDER BY 1, 2""",
        (spec.book_id, spec.range_from, spec.range_to, spec.customer_id, spec.customer_id))
    return [(cid, period, Cycle(tz, anchor)) for cid, period, tz, anchor in rows]


def _command(spec: RerateSpec, rerate_id: str, customer_id: str, period: str,
             sources: tuple[str, ...] = ()) -> RerateCharges:
    return RerateCharges(customer_id=customer_id, rerate_id=rerate_id, book_id=spec.book_id, version=spec.version,
                         range_from=spec.range_from, range_to=spec.range_to, period=period, sources=sources)


async def preview(db: Database, books: BookCache, spec: RerateSpec) -> dict[str, Any]:
    """The exact difference per customer, model and token type, computed by the rule apply runs
    on the same records; nothing changes. A customer's period the rule cannot rate is listed in
    `errors`, as apply lists it."""
    await db.read(lambda conn: check(conn, spec))
    spec = await db.read(lambda conn: with_overrides(conn, spec))
    rerate_id = spec.rerate_id()

    async def work(conn: AsyncConnection) -> tuple[dict[str, list[Correction]], dict[str, list[TrueUpFix]],
                                                    list[dict[str, Any]], str]:
        found: dict[str, list[Correction]] = {}
        fixes: dict[str, list[TrueUpFix]] = {}
        errors: list[dict[str, Any]] = []
        for cid, period, cycle in await affected(conn, spec):
            data = await rerate_input(conn, books, _command(spec, rerate_id, cid, period), cycle)
            if data is None:
                continue
            try:
                xs, fs = rerated_period(data, spec.range_from, spec.range_to)
            except DOMAIN_ERRORS as error:  # as apply: this customer's period is listed, the others go on
                errors.append({"customer_id": cid, "period": period, "code": error.code, "detail": str(error)})
                continue
            found.setdefault(cid, []).extend(xs)
            fixes.setdefault(cid, []).extend(fs)
        return found, fixes, errors, await _book_currency(conn, spec.book_id)

    found, fixes, errors, cur = await db.read(work)
    customers = [_customer_view(cid, len(xs), type_rows(xs, fixes.get(cid, ()), every=True), cur)
                 for cid, xs in sorted(found.items()) if xs]
    return {"mode": "preview", "rerate_id": rerate_id, **spec.view(), **_totals(customers, cur), "credit_notes": [],
            "errors": errors}


async def apply(db: Database, engine: Engine, spec: RerateSpec, idempotency_key: str | None) -> dict[str, Any]:
    """Post the adjustments (one entry per customer and period the charges were billed in) and
    the credit notes (one per finalized invoice that carried corrected charges); the same re-rate
    again moves nothing and answers the same."""
    await db.read(lambda conn: check(conn, spec))
    spec = await db.read(lambda conn: with_overrides(conn, spec))
    rerate_id = await db.run(lambda conn: _record(conn, spec, idempotency_key))
    todo = await db.read(lambda conn: billed(conn, spec))
    commands = [_command(spec, rerate_id, cid, period, sources) for cid, period, sources in todo]
    errors = []
    for i in range(0, len(commands), CHUNK):
        chunk = commands[i:i + CHUNK]
        for command, outcome in zip(chunk, await engine.execute(chunk), strict=True):
            if isinstance(outcome, BaseException):  # this customer's period is left as it was
                log.error("re-rating %s %s failed: %s", command.customer_id, command.period, outcome)
                # a refusal says why; an unexpected error (a lane's lost connection, a constraint's
                # text) only that it happened: its text, which may show internals, is in the log
                known = isinstance(outcome, DOMAIN_ERRORS)
                errors.append({"customer_id": command.customer_id, "period": command.period,
                               "code": getattr(outcome, "code", "error") if known else "internal_error",
                               "detail": str(outcome) if known else UNEXPECTED})
    return {**await db.read(lambda conn: applied(conn, rerate_id)), "errors": errors}


async def _record(conn: AsyncConnection, spec: RerateSpec, key: str | None) -> str:
    """The re-rate's record (created once); an Idempotency-Key used for another re-rate is a conflict."""
    rerate_id = spec.rerate_id()
    if key is not None:
        other = (await conn.exec_driver_sql("SELECT id FROM rerates WHERE idempotency_key = %s", (key,))).scalar()
        if other is not None and other != rerate_id:
            raise ConflictError(f"Idempotency-Key {key!r} was used for another re-rate", rerate_id=other)
    await conn.exec_driver_sql(
        """INSERT INTO rerates (id, book_id, version, range_from, range_to, customer_filter, overrides,
                                idempotency_key)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
        (rerate_id, spec.book_id, spec.version, spec.range_from, spec.range_to, spec.customer_filter,
         spec.overrides, key))
    return rerate_id


async def applied(conn: AsyncConnection, rerate_id: str) -> dict[str, Any]:
    """What re-rate `rerate_id` changed, from its recorded adjustments: per customer, model and
    token type, its entries and its credit notes."""
    spec = (await conn.exec_driver_sql(
        "SELECT book_id, version, range_from, range_to, customer_filter FROM rerates WHERE id = %s",
        (rerate_id,))).first()
    if spec is None:
        raise NotFoundError(f"no re-rate {rerate_id}", rerate_id=rerate_id)
    rows = await conn.exec_driver_sql(
        """SELECT a.customer_id, l.model, l.token_type, sum(l.old)::text, sum(l.new)::text
             FROM charge_adjustments a CROSS JOIN LATERAL (
                  SELECT x ->> 0 AS model, x ->> 1 AS token_type, (x ->> 2)::numeric AS old, 0 AS new
                    FROM jsonb_array_elements(a.old_lines) x
                  UNION ALL
                  SELECT x ->> 0, x ->> 1, 0, (x ->> 2)::numeric FROM jsonb_array_elements(a.new_lines) x) l
            WHERE a.rerate_id = %s GROUP BY 1, 2, 3""", (rerate_id,))
    per: dict[str, dict[tuple[str, str], list[int]]] = {}
    for cid, model, token_type, old, new in rows:
        per.setdefault(cid, {})[(model, token_type)] = [int(old), int(new)]
    # the corrections of closed periods' volume true-ups its entries posted (their metadata's `true_ups`),
    # and those of its commands whose lines netted 0, which posted no entry (migration 0064)
    for cid, true_ups in await conn.exec_driver_sql(
            """SELECT j.customer_id, j.metadata -> 'true_ups' FROM journal_entries j
                WHERE (j.lane, j.id) IN (SELECT DISTINCT lane, entry_id FROM charge_adjustments
                                          WHERE rerate_id = %s AND entry_id IS NOT NULL)
                  AND j.metadata ? 'true_ups'
               UNION ALL
               SELECT customer_id, true_ups FROM rerate_true_ups WHERE rerate_id = %s""", (rerate_id, rerate_id)):
        for _, _, model, old, new in true_ups:
            row = per.setdefault(cid, {}).setdefault((model, TRUE_UP), [0, 0])
            row[0] += int(old)
            row[1] += int(new)
    counts = dict((await conn.exec_driver_sql(
        "SELECT customer_id, count(*) FROM charge_adjustments WHERE rerate_id = %s GROUP BY 1",
        (rerate_id,))).all())
    entries: dict[str, list[int]] = {}
    for cid, entry_id in await conn.exec_driver_sql(
            """SELECT DISTINCT customer_id, entry_id FROM charge_adjustments
                WHERE rerate_id = %s AND entry_id IS NOT NULL ORDER BY 1, 2""", (rerate_id,)):
        entries.setdefault(cid, []).append(int(entry_id))
    customers, cur = [], await _book_currency(conn, spec.book_id)
    for cid, by_type in sorted(per.items()):
        lines = [{"model": m, "token_type": t, "old_amount": o, "new_amount": n, "delta": n - o}
                 for (m, t), (o, n) in sorted(by_type.items())]
        customers.append({**_customer_view(cid, int(counts.get(cid, 0)), lines, cur),
                          "entry_ids": entries.get(cid, [])})
    notes = await conn.exec_driver_sql(
        """SELECT id, number, kind, customer_id, invoice_id, total::text, currency FROM credit_notes
            WHERE rerate_id = %s ORDER BY seq""", (rerate_id,))
    book_id, version, range_from, range_to, customer_filter = spec
    view = RerateSpec(book_id, version, range_from, range_to, customer_filter or None).view()
    return {"mode": "apply", "rerate_id": rerate_id, **view, **_totals(customers, cur),
            "credit_notes": [{"id": i, "number": n, "kind": k, "customer_id": c, "invoice_id": inv,
                              "total": format_money(int(t), nc)} for i, n, k, c, inv, t, nc in notes]}


def _totals(customers: list[dict[str, Any]], currency: str) -> dict[str, Any]:
    """The customers' views (their exact deltas dropped) and the re-rate's total delta."""
    total = sum(c.pop("delta_units") for c in customers)
    return {"customers": customers, "delta": format_money(total, currency)}


async def _book_currency(conn: AsyncConnection, book_id: str) -> str:
    """The currency of the re-rated book: every customer it prices is in it."""
    found = await conn.exec_driver_sql("SELECT currency FROM price_books WHERE id = %s", (book_id,))
    return found.scalar_one()


def _customer_view(customer_id: str, charges: int, rows: Sequence[dict[str, Any]], cur: str) -> dict[str, Any]:
    """A customer's part of a re-rate from every (model, token type) row of its corrected charges
    (and true-ups), those left as they were too: its old and new amounts are what they stood at
    before and after, all lines counted (so new - old is its delta); `lines` lists the rows that changed."""
    old, new = sum(r["old_amount"] for r in rows), sum(r["new_amount"] for r in rows)
    return {"customer_id": customer_id, "charges": charges, "old_amount": format_money(old, cur),
            "new_amount": format_money(new, cur), "delta": format_money(new - old, cur), "delta_units": new - old,
            "lines": [{"model": r["model"], "token_type": r["token_type"],
                       "old_amount": format_money(r["old_amount"], cur),
                       "new_amount": format_money(r["new_amount"], cur),
                       "delta": format_money(r["delta"], cur)} for r in rows if r["delta"]]}


# ------------------------------------------------------------------------------------------
# Credit notes, as documents: frozen content, its hash.

_NOTE = """SELECT n.content, encode(n.content_hash, 'hex') AS content_hash, n.entry_id, n.customer_id,
                  n.issued_at, n.seq, n.id
             FROM credit_notes n"""
NotePosition = tuple[datetime, int, str]  # issued_at, seq, id: a note's place in its customer's list


async def credit_note(conn: AsyncConnection, note_id: str) -> dict[str, Any]:
    row = (await conn.exec_driver_sql(_NOTE + " WHERE n.id = %s", (note_id,))).first()
    if row is None:
        raise NotFoundError(f"no credit note {note_id}", credit_note_id=note_id)
    return _note(row)


async def credit_note_owner(conn: AsyncConnection, note_id: str) -> str:
    owner = (await conn.exec_driver_sql("SELECT customer_id FROM credit_notes WHERE id = %s", (note_id,))).scalar()
    if owner is None:
        raise NotFoundError(f"no credit note {note_id}", credit_note_id=note_id)
    return owner


async def credit_notes(conn: AsyncConnection, customer_id: str, after: NotePosition | None = None,
                       limit: int | None = None) -> tuple[dict[str, Any], NotePosition | None]:
    """Up to `limit` (None: all) of the customer's credit and debit notes, oldest first (issued_at,
    seq, id), those after the position `after`; and the last one's position when more follow."""
    if (await conn.exec_driver_sql("SELECT 1 FROM customers WHERE id = %s", (customer_id,))).first() is None:
        raise NotFoundError(f"no customer {customer_id}", customer_id=customer_id)
    start, seq, note_id = after or (None, None, None)
    rows = list(await conn.exec_driver_sql(
        _NOTE + " WHERE n.customer_id = %s AND (%s::timestamptz IS NULL OR (n.issued_at, n.seq, n.id) > (%s, %s, %s))"
        " ORDER BY n.issued_at, n.seq, n.id LIMIT %s",
        (customer_id, start, start, seq, note_id, None if limit is None else limit + 1)))
    more = limit is not None and len(rows) > limit
    rows = rows[:limit] if more else rows
    return ({"customer_id": customer_id, "credit_notes": [_note(r) for r in rows]},
            (rows[-1].issued_at, rows[-1].seq, rows[-1].id) if more else None)


def _note(row: Any) -> dict[str, Any]:
    return {**as_issued(row.content), "content_hash": row.content_hash, "entry_id": row.entry_id}




__all__ = ["RerateSpec", "applied", "apply", "check", "credit_note", "credit_note_owner", "credit_notes", "preview"]

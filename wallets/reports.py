"""Reads for people: a reservation with its holds, captures and entries; the trace of one
charge back to its prices and rules; usage grouped by model, token type and dimensions."""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pricing.errors import wire_time
from pricing.money import format_money, plain
from wallets import chart
from wallets.core.reservations import status_at
from wallets.errors import NotFoundError, WalletValidationError


def money(units: Any, currency: str) -> str | None:
    return None if units is None else format_money(int(units), currency)


def when(value: datetime | None) -> str | None:
    return None if value is None else wire_time(value)


_ENTRIES = text("""
SELECT j.id, j.key, j.kind, j.occurred_at, j.metadata,
       coalesce((SELECT jsonb_agg(jsonb_build_array(a.code, p.amount, a.asset) ORDER BY p.id)
                   FROM postings p JOIN accounts a ON a.id = p.account_id
                  WHERE p.lane = j.lane AND p.entry_id = j.id),
                '[]'::jsonb) AS postings
  FROM journal_entries j
 WHERE j.lane = ledger_entry_lane(CAST(:customer AS text)) AND (j.key = ANY(:keys) OR j.id = ANY(:ids))
 ORDER BY j.id
""")


async def entries(conn: AsyncConnection, customer_id: str, keys: list[str], ids: Sequence[int] = ()
                  ) -> list[dict[str, Any]]:
    """The journal entries with these keys or ids in `customer_id`'s lane (an entry id is unique
    within its lane alone), with their postings (in that lane)."""
    rows = await conn.execute(_ENTRIES, {"customer": customer_id, "keys": keys, "ids": list(ids)})
    return [{"id": r.id, "key": r.key, "kind": r.kind, "occurred_at": when(r.occurred_at),
             "metadata": r.metadata,
             "postings": [{"account": code, "amount": money(amount, asset)} for code, amount, asset in r.postings]}
            for r in rows]


def _lines(lines: list[dict[str, Any]], currency: str) -> list[dict[str, Any]]:
    return [{"kind": ln["kind"], "model": ln.get("model"), "token_type": ln["token_type"],
             "quantity": ln["quantity"], "unit_price": plain(ln["unit_price"]),
             "amount": money(ln["amount_units"], currency), "exact_amount": plain(ln.get("exact")),
             "rule_id": ln["rule_id"], "price_version": ln["price_version"],
             "tier": ln.get("tier"), "override_id": ln.get("override_id"), "description": ln.get("description"),
             # the version of the customer's price overrides that priced the line (GET …/price-overrides)
             **({"overrides_version": ln["overrides_version"]} if "overrides_version" in ln else {})}
            for ln in lines]


_CHARGES = text("""
SELECT c.*, v.rules AS version_rules, (SELECT u.currency FROM customers u WHERE u.id = c.customer_id) AS currency,
       (SELECT jsonb_agg(jsonb_build_object('corrected_version', a.corrected_version,
                         'overrides_version', nullif(a.overrides_version, 0), 'rerate_id', a.rerate_id,
                         'old_amount', a.old_amount, 'new_amount', a.new_amount, 'entry_id', a.entry_id,
                         'credit_note', n.number) ORDER BY a.id)
          FROM charge_adjustments a LEFT JOIN credit_notes n ON n.id = a.credit_note_id
         WHERE a.lane = c.lane AND a.charge_id = c.id) AS adjustments
  FROM charges c LEFT JOIN price_book_versions v ON v.book_id = c.price_book AND v.version = c.price_version
 WHERE {where} ORDER BY c.id
""")


def _charge(r: Any) -> dict[str, Any]:
    cur = r.currency
    used = {ln["rule_id"] for ln in r.lines}
    return {"seq": r.seq, "reservation_id": r.reservation_id, "event_id": r.event_id,  # what it charged
            "capture_id": r.capture_id, "final": r.final, "model": r.model,
            "occurred_at": when(r.occurred_at), "usage": r.usage, "dimensions": r.dimensions,
            "price_book": r.price_book, "price_version": r.price_version,
            "rules": [rule for rule in (r.version_rules or []) if rule.get("id") in used],
            "lines": _lines(r.lines, cur), "charged": money(r.charged, cur), "from_hold": money(r.from_hold, cur),
            "from_lots": money(r.from_lots, cur), "from_receivable": money(r.from_receivable, cur),
            "released": money(r.released, cur), "entry_id": r.entry_id, "recorded_at": when(r.created_at),
            "funding": [{"account": account, "amount": money(int(amount), cur)}
                        for account, amount in r.funding or ()],
            # re-rates that corrected it, oldest first: what it stood at before and after each
            "adjustments": [{**a, "old_amount": money(int(a["old_amount"]), cur),
                             "new_amount": money(int(a["new_amount"]), cur)} for a in r.adjustments or ()]}


def _adjustment_entries(charges: list[Any]) -> list[int]:
    return [a["entry_id"] for c in charges for a in c.adjustments or () if a["entry_id"] is not None]


async def reservation(conn: AsyncConnection, reservation_id: str, now: datetime | None = None) -> dict[str, Any]:
    """A reservation's view; given `now`, one held or capturing past its expiry is `expired`
    (reservations.status_at) before the expiry job has given its hold back."""
    r = (await conn.execute(text(
        """SELECT r.*, c.currency FROM reservations r JOIN customers c ON c.id = r.customer_id
            WHERE r.id = :id"""), {"id": reservation_id})).first()
    if r is None:
        raise NotFoundError(f"no reservation {reservation_id}", reservation_id=reservation_id)
    holds = await conn.execute(text(
        "SELECT seq, account_code, amount FROM reservation_holds WHERE reservation_id = :id ORDER BY seq"),
        {"id": r.id})
    charges = list(await conn.execute(text(_CHARGES.text.format(where="c.reservation_id = :id")), {"id": r.id}))
    keys = [f"reserve:{r.id}", f"release:{r.id}", f"expire:{r.id}",
            *(f"settle:{r.id}:{n}" for n in range(r.captures))]
    return {
        "id": r.id, "request_id": r.request_id, "customer_id": r.customer_id, "model": r.model,
        "status": r.status if now is None else status_at(r.status, r.expires_at, now),
        "currency": r.currency, "amount": money(r.amount, r.currency),
        "captured": money(r.captured, r.currency),
        "released": money(r.released, r.currency), "charged": money(r.charged, r.currency), "captures": r.captures,
        "dimensions": r.dimensions, "estimate": r.estimate, "created_at": when(r.created_at),
        "expires_at": when(r.expires_at), "closed_at": when(r.closed_at),
        "holds": [{"seq": h.seq, "account": h.account_code, "amount": money(h.amount, r.currency)} for h in holds],
        "charges": [_charge(c) for c in charges],
        "entries": await entries(conn, r.customer_id, keys, _adjustment_entries(charges)),
    }


_FIND = text("""
SELECT 'reservation' AS kind, id, customer_id FROM reservations
 WHERE request_id = :r AND (CAST(:c AS text[]) IS NULL OR customer_id = ANY(CAST(:c AS text[])))
UNION ALL
SELECT 'usage_event', event_id, customer_id FROM usage_events
 WHERE event_id = :r AND (CAST(:c AS text[]) IS NULL OR customer_id = ANY(CAST(:c AS text[])))
""")


async def charge_trace(conn: AsyncConnection, request_id: str, customers: Sequence[str] | None,
                       now: datetime | None = None) -> dict[str, Any]:
    """Everything about one request: its reservation and/or usage event, the usage, the price
    book version and the rules and unit prices applied, the amounts, and the journal entries.

    Request ids and event ids are per customer: only `customers`' are looked at (None: every
    customer's), and an id that several of them used needs one named (the caller narrows
    `customers` to it). What other customers did with the id changes nothing in the answer.
    A customer's reservation and usage event of one id are both traced: `kind` is reservation,
    `usage_event` is there too, and `charges` and `entries` hold both's (each charge names its
    `reservation_id` or `event_id`), so no charge the id names is left out."""
    found = (await conn.execute(_FIND, {"r": request_id, "c": None if customers is None else list(customers)})).all()
    if len({row.customer_id for row in found}) > 1:
        raise WalletValidationError("customer_id", f"request {request_id} exists for several customers; name one")
    if not found:
        raise NotFoundError(f"no reservation or usage event {request_id}", request_id=request_id)
    customer_id = found[0].customer_id
    traced = {"request_id": request_id, "customer_id": customer_id, "kind": "usage_event",
              "charges": [], "entries": []}
    reserved = [row for row in found if row.kind == "reservation"]
    if reserved:
        view = await reservation(conn, reserved[0].id, now)
        traced.update(kind="reservation", charges=view["charges"], entries=view["entries"],
                      reservation={k: v for k, v in view.items() if k not in ("charges", "entries")})
    if any(row.kind == "usage_event" for row in found):
        event, charges, entries = await _event_trace(conn, customer_id, request_id)
        traced["usage_event"] = event
        traced["charges"] = [*traced["charges"], *charges]
        known = {e["id"] for e in traced["entries"]}
        traced["entries"] = sorted([*traced["entries"], *(e for e in entries if e["id"] not in known)],
                                   key=lambda e: e["id"])
    return traced


async def _event_trace(conn: AsyncConnection, customer_id: str, event_id: str
                       ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """A customer's usage event of this id: the event, its charges and their journal entries."""
    event = (await conn.execute(text("SELECT * FROM usage_events WHERE customer_id = :c AND event_id = :r"),
                                {"c": customer_id, "r": event_id})).one()
    charges = list(await conn.execute(text(_CHARGES.text.format(where="c.customer_id = :c AND c.event_id = :r")),
                                      {"c": customer_id, "r": event_id}))
    entry_ids = [event.entry_id] if event.entry_id is not None else []
    entry_ids += _adjustment_entries(charges)
    return ({"event_id": event.event_id, "model": event.model, "occurred_at": when(event.occurred_at),
             "usage": event.usage, "dimensions": event.dimensions, "recorded_at": when(event.created_at)},
            [_charge(c) for c in charges], await entries(conn, customer_id, [], entry_ids))


async def currency_of(conn: AsyncConnection, customer_id: str | None = None, invoice_id: str | None = None,
                      customers: Sequence[str] = ()) -> str | None:
    """The currency of a customer, or of an invoice (None: none such, or, for a key limited to
    `customers`, an invoice not one of theirs): what a refused cash amount's limit is told in."""
    if invoice_id is not None:
        row = (await conn.execute(text("SELECT customer_id, currency FROM invoices WHERE id = :id"),
                                  {"id": invoice_id})).first()
        return None if row is None or (customers and row.customer_id not in customers) else row.currency
    return (await conn.execute(text("SELECT currency FROM customers WHERE id = :c"), {"c": customer_id})).scalar()


async def ensure_book_visible(conn: AsyncConnection, book_id: str, customers: Sequence[str]) -> None:
    """A key limited to `customers` sees the price books they are priced with; any other book is
    answered as missing, exactly as a book that does not exist is."""
    used = (await conn.execute(text("SELECT 1 FROM customers WHERE price_book = :b AND id = ANY(:c) LIMIT 1"),
                               {"b": book_id, "c": list(customers)})).first()
    if used is None:
        raise NotFoundError(f"no price book {book_id}", book=book_id)


GROUPS = {"model": "c.model", "token_type": "l->>'token_type'", "kind": "l->>'kind'", "rule_id": "l->>'rule_id'",
          "price_version": "c.price_version", "day": "to_char(c.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
          "month": "to_char(c.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM')"}
# The same groups over the daily rollups (migration 0018): days are UTC days, as `day` is here.
ROLLED = {"model": "r.model", "token_type": "r.token_type", "kind": "r.kind", "rule_id": "r.rule_id",
          "price_version": "r.price_version", "day": "to_char(r.day, 'YYYY-MM-DD')",
          "month": "to_char(r.day, 'YYYY-MM')"}
# `day` and `month` in a time zone other than UTC, read from the charges (the rollups keep UTC days)
LOCAL = {"day": "to_char(c.occurred_at AT TIME ZONE :tz, 'YYYY-MM-DD')",
         "month": "to_char(c.occurred_at AT TIME ZONE :tz, 'YYYY-MM')"}
_LINE_KEY = {"token_type": 4, "kind": 2, "rule_id": 1}  # a rollup level's bit per part left out
# a usage dimension's name as a group (api.routes.formats.DIMENSION_NAME): 1 to 200 characters, any
# but a comma or a control character, no space at either end
_DIMENSION = re.compile(r"[^\s,\x00-\x1f\x7f](?:[^,\x00-\x1f\x7f]{0,198}[^\s,\x00-\x1f\x7f])?")
# a row's own fields (and the CSV's `currency` column): a group of one of these names would be
# overwritten by the row's sum of that name, so no group may be named so
ROW_FIELDS = ("quantity", "amount", "charges", "currency")
MAX_GROUPS = 16  # names a report groups by: each a column and a GROUP BY term of its query
_DAY = timedelta(days=1)


def _rollup_level(group_by: list[str]) -> int | None:
    """The rollup rows that answer these groups exactly (those rolled up over the parts of the
    line key the groups leave out: each counts every charge with a line under it once), None
    when a group is a usage dimension, which only the charges know. The rows are always by
    token type, as the report is (`unit_groups`; the rollups keep levels 0-3, migration 0056)."""
    if not set(group_by) <= ROLLED.keys():
        return None
    return sum(bit for part, bit in _LINE_KEY.items() if part not in unit_groups(group_by))


def _midnight(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, at.day, tzinfo=UTC)


Span = tuple[datetime | None, datetime | None]


def usage_plan(start: datetime | None, end: datetime | None, group_by: list[str]
               ) -> tuple[int | None, tuple[date | None, date | None] | None, list[Span]]:
    """How a usage report is read: the rollup level and its whole UTC days [first, stop) (None
    bounds: open), and the ranges [from, to) of raw charges around them (everything raw when the
    groups or the range leave the rollups no whole day)."""
    level = _rollup_level(group_by)
    first = None if start is None else _midnight(start) + (_DAY if _midnight(start) != start else timedelta())
    stop = None if end is None else _midnight(end)
    if level is None or (first is not None and stop is not None and first >= stop):
        return None, None, [(start, end)]
    raw = [*([(start, first)] if start is not None and start < first else []),
           *([(stop, end)] if end is not None and stop < end else [])]
    return level, (first and first.date(), stop and stop.date()), raw


def unit_groups(group_by: list[str]) -> list[str]:
    """The groups a usage report's rows are keyed by: those asked for, and the token type last
    when they leave it out, so that no row adds quantities of different units (input tokens,
    output tokens, calls, seconds, pages)."""
    return group_by if "token_type" in group_by else [*group_by, "token_type"]


async def usage(conn: AsyncConnection, customer_id: str, start: datetime | None, end: datetime | None,
                group_by: list[str], time_zone: str = "UTC", limit: int | None = None,
                after: list[str | None] | None = None) -> dict[str, Any]:
    """Quantities and amounts of the customer's rated lines, grouped by `group_by` and always by
    token type (`unit_groups`); any other group name is a usage dimension (feature, api_key, …),
    save the row's own fields (`ROW_FIELDS`), refused, as is a group named twice or more than
    `MAX_GROUPS` names.
    Amounts sum to the revenue the entries posted, re-rates' adjustments included.
    Whole UTC days come from the daily rollups where the groups allow it, with the charges not
    folded into them yet, the rest (partial days at the edges, usage dimensions) from the
    charges: the answer is the same either way. `day` and `month` are those of `time_zone` (an
    IANA name), from the charges when it is not UTC. With `limit`, at most that many rows, those
    whose group keys come after `after` (the last row's of the page before), and `next`, the
    last row's keys when more may follow."""
    if len(group_by) > MAX_GROUPS:
        raise WalletValidationError("group_by", f"at most {MAX_GROUPS} names, not {len(group_by)}")
    for n, name in enumerate(group_by):
        if name in ROW_FIELDS:
            raise WalletValidationError("group_by", f"cannot group by {name!r}: a row's own field has that name")
        if name in group_by[:n]:  # a second column of the same key (the CSV's header named it twice)
            raise WalletValidationError("group_by", f"names {name!r} twice")
    group_by = unit_groups(group_by)
    local = time_zone != "UTC" and not LOCAL.keys().isdisjoint(group_by)
    exprs, rolled, params = [], [], {"c": customer_id, "tz": time_zone}
    typed = set()  # the dimensions' groups: their JSON text (1, "1", true, "true" apart, as rating has them)
    for i, name in enumerate(group_by):
        if local and name in LOCAL:
            exprs.append(f"{LOCAL[name]} AS g{i}")
        elif name in GROUPS:
            exprs.append(f"{GROUPS[name]} AS g{i}")
            rolled.append(f"{ROLLED[name]} AS g{i}")
        elif _DIMENSION.fullmatch(name):
            params[f"d{i}"] = name
            exprs.append(f"CAST(c.dimensions -> CAST(:d{i} AS text) AS text) AS g{i}")
            typed.add(i)
        else:
            raise WalletValidationError("group_by", f"cannot group by {name!r}")
    groups = ", ".join(f"g{i}" for i in range(len(exprs)))
    select = groups + ", " if exprs else ""
    group = f" GROUP BY {groups}" if exprs else ""
    level, days, raw = (None, None, [(start, end)]) if local else usage_plan(start, end, group_by)
    # A discount's line restates the quantity of the usage it discounts: rows that mix kinds
    # count the usage lines' quantity only (rows of one kind count their own).
    used = "" if "kind" in group_by else " FILTER (WHERE l->>'kind' = 'usage')"
    parts = []
    for k, (lo, hi) in enumerate(raw):
        params.update({f"lo{k}": lo, f"hi{k}": hi})
        parts.append(f"""
        SELECT {", ".join([*exprs, ""])} sum((l->>'quantity')::bigint){used}::numeric AS quantity,
               sum((l->>'amount_units')::numeric) AS amount, count(DISTINCT c.id) AS charges
          FROM charges c CROSS JOIN LATERAL jsonb_array_elements(c.lines) l
         WHERE c.customer_id = :c
           AND (CAST(:lo{k} AS timestamptz) IS NULL OR c.occurred_at >= :lo{k})
           AND (CAST(:hi{k} AS timestamptz) IS NULL OR c.occurred_at < :hi{k}){group}""")
    if days is not None:
        # amounts and charges from the level of the groups; quantities, when they leave kind
        # out, from the level that keeps it (its usage rows), as the lines' are counted above
        quantities = level & ~_LINE_KEY["kind"]
        params.update(level=level, quantities=quantities, first=days[0], stop=days[1])
        kinds = "" if quantities == level else " AND r.kind = 'usage'"
        parts.append(f"""
        SELECT {", ".join([*rolled, ""])} sum(r.quantity) FILTER (WHERE r.level = :quantities{kinds}) AS quantity,
               sum(r.amount) FILTER (WHERE r.level = :level) AS amount,
               sum(r.charges) FILTER (WHERE r.level = :level) AS charges
          FROM usage_rollups r
         WHERE r.lane = ledger_lane(:c) AND r.customer_id = :c AND r.level IN (:level, :quantities)
           AND (CAST(:first AS date) IS NULL OR r.day >= :first)
           AND (CAST(:stop AS date) IS NULL OR r.day < :stop){group}""")
        # the charges of those days not folded into the rollups yet (migration 0026), from their lines
        parts.append(f"""
        SELECT {", ".join([*exprs, ""])} sum((l->>'quantity')::bigint){used}::numeric AS quantity,
               sum((l->>'amount_units')::numeric) AS amount, count(DISTINCT c.id) AS charges
          FROM usage_unfolded u
         CROSS JOIN LATERAL (SELECT * FROM charges q  -- a primary-key probe per queued charge
                              WHERE q.lane = u.lane AND q.id = u.charge_id LIMIT 1) c
         CROSS JOIN LATERAL jsonb_array_elements(c.lines) l
         WHERE u.lane = ledger_lane(:c) AND u.customer_id = :c
           AND (CAST(:first AS date) IS NULL OR (c.occurred_at AT TIME ZONE 'UTC')::date >= :first)
           AND (CAST(:stop AS date) IS NULL OR (c.occurred_at AT TIME ZONE 'UTC')::date < :stop){group}""")
    # what re-rates moved of the charges in range (migration 0019's adjustments), by the charge's
    # own keys: lines of kind `rerate_adjustment`, no quantity, counted as charges only in rows
    # of their own (grouped by kind), so that the amounts are what the charges stand at now; an
    # adjustment keys a free allowance's lines by their kind (`rerating.by_type`), which the
    # report keys as the charge's line does, by no token type: one row for the allowance
    counted = "count(DISTINCT c.id)" if "kind" in group_by else "0"
    parts.append(f"""
        SELECT {", ".join([*exprs, ""])} 0::numeric AS quantity, sum((l->>'amount_units')::numeric) AS amount,
               {counted} AS charges
          FROM (SELECT q.id, d.model, q.price_version, q.occurred_at, q.dimensions,
                       jsonb_build_object('token_type', d.token_type, 'kind', 'rerate_adjustment',
                                          'amount_units', d.delta) AS l
                  FROM charge_adjustments a
                  JOIN charges q ON q.lane = a.lane AND q.id = a.charge_id
                 CROSS JOIN LATERAL (
                       SELECT x ->> 0 AS model, NULLIF(x ->> 1, 'free_allowance') AS token_type,
                              sum(s.sign * (x ->> 2)::numeric) AS delta
                         FROM (VALUES (-1, a.old_lines), (1, a.new_lines)) s (sign, lines)
                        CROSS JOIN LATERAL jsonb_array_elements(s.lines) x
                        GROUP BY 1, 2 HAVING sum(s.sign * (x ->> 2)::numeric) <> 0) d
                 WHERE a.customer_id = :c AND a.lane = ledger_lane(:c)
                   AND (CAST(:lo AS timestamptz) IS NULL OR q.occurred_at >= :lo)
                   AND (CAST(:hi AS timestamptz) IS NULL OR q.occurred_at < :hi)) c{group}""")
    params.update(lo=start, hi=end)
    # a page's order and position: each key non-null first, as ORDER BY's NULLS LAST, in one tuple
    order = ", ".join(f"g{i} IS NULL, coalesce(g{i}, '')" for i in range(len(exprs)))
    having = " HAVING sum(amount) IS NOT NULL"
    if after is not None:
        params.update({f"a{i}": value for i, value in enumerate(after)})
        position = ", ".join(f"CAST(:a{i} AS text) IS NULL, coalesce(CAST(:a{i} AS text), '')"
                             for i in range(len(exprs)))
        having += f" AND ({order}) > ({position})"
    page = "" if limit is None else f" LIMIT {int(limit) + 1}"
    rows = (await conn.execute(text(f"""
        SELECT {select} sum(quantity) AS quantity, sum(amount) AS amount, sum(charges) AS charges
          FROM ({" UNION ALL ".join(parts)}) p{group}{having} ORDER BY {order}{page}"""), params)).all()
    more = limit is not None and len(rows) > limit
    rows = rows[:limit] if more else rows
    exists = (await conn.execute(text("SELECT currency FROM customers WHERE id = :c"),
                                 {"c": customer_id})).first()
    if exists is None:
        raise NotFoundError(f"no customer {customer_id}", customer_id=customer_id)
    out = []
    for row in rows:
        item = {name: _value(getattr(row, f"g{i}"), i in typed) for i, name in enumerate(group_by)}
        item.update(quantity=int(row.quantity or 0), amount=money(row.amount, exists.currency),
                    charges=int(row.charges))
        out.append(item)
    return {"customer_id": customer_id, "from": when(start), "to": when(end), "group_by": group_by,
            "time_zone": time_zone, "currency": exists.currency, "rows": out,
            "next": [getattr(rows[-1], f"g{i}") for i in range(len(group_by))] if more else None}


def _value(key: str | None, typed: bool) -> Any:
    """A group key as the answer gives it: a dimension's value as it was sent (its JSON text)."""
    return json.loads(key) if typed and key is not None else key


_OPEN = text("""
SELECT id, request_id, model, status, amount, captured, amount - captured - released AS held, captures,
       created_at, expires_at, (SELECT currency FROM customers WHERE id = :c) AS currency
  FROM reservations
 WHERE lane = ledger_lane(:c) AND customer_id = :c AND status = ANY(CAST(:open AS text[]))
   AND (CAST(:before_at AS timestamptz) IS NULL
        OR created_at < CAST(:before_at AS timestamptz)
        OR created_at = CAST(:before_at AS timestamptz) AND id > :after_id)
 ORDER BY created_at DESC, id LIMIT :limit
""")


async def open_reservations(conn: AsyncConnection, customer_id: str, limit: int,
                            after: tuple[datetime, str] | None = None) -> list[dict[str, Any]]:
    """The customer's reservations that still hold credit, newest first (then by id), at most
    `limit`, those after `after` (the created_at and id of the last one of the page before).
    `held` is what each still holds (its hold less what was captured or released), `amount`
    the hold it opened with."""
    before_at, after_id = after if after is not None else (None, "")
    rows = await conn.execute(_OPEN, {"c": customer_id, "open": list(chart.OPEN_STATUSES), "limit": limit,
                                      "before_at": before_at, "after_id": after_id})
    return [{"id": r.id, "request_id": r.request_id, "model": r.model, "status": r.status,
             "amount": money(r.amount, r.currency), "held": money(r.held, r.currency),
             "captured": money(r.captured, r.currency),
             "captures": r.captures, "created_at": when(r.created_at),
             "expires_at": when(r.expires_at)} for r in rows]


async def is_top_up(conn: AsyncConnection, customer_id: str, lot_id: str) -> bool:
    """Whether `lot_id` is a lot that a top-up of the customer's opened (spent or not)."""
    found = await conn.execute(text(
        "SELECT 1 FROM lots WHERE lane = ledger_lane(:c) AND id = :l AND customer_id = :c AND kind = 'topup'"),
        {"c": customer_id, "l": lot_id})
    return found.first() is not None


async def currencies(conn: AsyncConnection, visible: Sequence[str] | None) -> list[str]:
    """The currencies of the customers a key sees (None: all), in order."""
    rows = await conn.execute(text(
        """SELECT DISTINCT currency FROM customers
            WHERE CAST(:v AS text[]) IS NULL OR id = ANY(CAST(:v AS text[])) ORDER BY currency"""),
        {"v": None if visible is None else list(visible)})
    return [r.currency for r in rows]


async def customer_ids(conn: AsyncConnection, visible: Sequence[str] | None, prefix: str, limit: int,
                       after: str = "") -> list[str]:
    """Ids of the customers a key sees (None: all), those starting with `prefix`, in order, at
    most `limit` of those after `after` (the last id of the page before)."""
    rows = await conn.execute(text(
        """SELECT id FROM customers
            WHERE (CAST(:v AS text[]) IS NULL OR id = ANY(CAST(:v AS text[])))
              AND left(id, length(:p)) = :p AND id > :after ORDER BY id LIMIT :limit"""),
        {"v": None if visible is None else list(visible), "p": prefix, "limit": limit, "after": after})
    return [r.id for r in rows]

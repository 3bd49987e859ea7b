"""Loading wallets into plain values, and writing a batch's effects back in one statement.

Every read here runs inside the command's own SERIALIZABLE transaction, after the customers'
advisory locks were taken, so what is loaded is what the commands act on.

A batch works in one lane (ledger.lanes; the engine sets `LANE` around it): every statement
names it (`lane = %(lane)s`), so PostgreSQL prunes the other lanes' partitions and the batch
reads and writes no page another lane's batch does. Each row's lane is its customer's.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.db import Lead
from ledger.lanes import lane_count, lane_of
from ledger.model import AccountSpec
from wallets import chart
from wallets.core.invoicing import CONTRACT
from wallets.core.state import InvoiceDue, RefundOnRecord, ReversalOnRecord, TopUpOnRecord, Unapplied
from wallets.model import Budget, BudgetHold, Customer, Hold, Lot, Reservation, Wallet
from wallets.periods import Cycle, Period

# The lane of the batch being run (set by the engine); None outside a wallet batch.
LANE: ContextVar[int | None] = ContextVar("tokentill_lane", default=None)

# Everything a batch needs, in one round trip: each part is a JSON array (or object). Idempotency
# records are read from the lane's partition, and from `idempotency_keys` (the records kept
# before lanes, and those of calls outside any lane).
_LOAD = """
WITH kept AS MATERIALIZED (  -- each key's kept answer: a primary-key probe per key, never a scan
    SELECT w.scope, w.key, k.request_hash, k.status, k.response
      FROM unnest(%(scopes)s::text[], %(keys)s::text[]) AS w(scope, key)
     CROSS JOIN LATERAL (
         SELECT r.request_hash, r.status, r.response FROM idempotency_records r
          WHERE r.lane = %(lane)s AND r.scope = w.scope AND r.key = w.key
         UNION ALL
         SELECT o.request_hash, o.status, o.response FROM idempotency_keys o
          WHERE o.scope = w.scope AND o.key = w.key
         LIMIT 1) k
), want_reservations AS (
    SELECT r.* FROM reservations r WHERE r.lane = %(lane)s AND r.id = ANY(%(reservations)s::text[])
    UNION ALL  -- the reservation a reserve's kept answer names: its replay answers it as it is now
    SELECT r.* FROM kept k CROSS JOIN LATERAL (
         SELECT r.* FROM reservations r WHERE r.lane = %(lane)s AND r.id = k.response -> 'body' ->> 'id'
          LIMIT 1) r
     WHERE starts_with(k.scope, 'reserve:') AND k.response ->> 'code' = 'reserved'
       AND NOT r.id = ANY(%(reservations)s::text[])
), wanted_lots AS MATERIALIZED (  -- the lots the batch names: by a command, or as a hold's source
    SELECT %(lot_codes)s::text[] || coalesce(array_agg(h.account_code), '{}') AS codes
      FROM reservation_holds h WHERE h.lane = %(lane)s AND h.reservation_id = ANY(%(reservations)s::text[])
)
SELECT
  (SELECT coalesce(jsonb_agg(jsonb_build_object(
          'id', c.id, 'name', c.name, 'currency', c.currency, 'billing', c.billing,
          'price_book', c.price_book, 'overdraft_limit', c.overdraft_limit,
          'low_balance_threshold', c.low_balance_threshold, 'low_balance_alerted', c.low_balance_alerted,
          'blocked', c.blocked, 'created_at', c.created_at,
          'book_versions', (SELECT count(*) FROM price_book_versions v WHERE v.book_id = c.price_book),
          'override_versions', (SELECT count(*) FROM price_overrides o
                                 WHERE o.lane = %(lane)s AND o.customer_id = c.id),
          'book_changes', (SELECT jsonb_agg(jsonb_build_array(x.changed_at, x.changes -> 'price_book' ->> 'old')
                                            ORDER BY x.seq)
                             FROM customer_changes x WHERE x.lane = %(lane)s AND x.customer_id = c.id
                                  AND x.changes -> 'price_book' IS NOT NULL),
          'max_charge_per_request', c.max_charge_per_request,
          'time_zone', c.time_zone, 'billing_anchor_day', c.billing_anchor_day, 'grace_seconds', c.grace_seconds,
          'payment_terms_days', c.payment_terms_days, 'open_period_start', c.open_period_start,
          'reserved', (SELECT b.credits - b.debits FROM accounts a JOIN account_balances b ON b.account_id = a.id
                        WHERE b.lane = %(lane)s AND a.code = %(reserved_before)s || c.id || %(reserved_after)s),
          'receivable', (SELECT b.debits - b.credits FROM accounts a JOIN account_balances b ON b.account_id = a.id
                          WHERE b.lane = %(lane)s AND a.code = %(receivable_before)s || c.id || %(receivable_after)s))),
          '[]'::jsonb)
     FROM customers c WHERE c.id = ANY(%(customers)s::text[])) AS customers,
  (SELECT coalesce(jsonb_agg(jsonb_build_array(
          l.id, l.customer_id, l.account_code, l.kind, l.granted, l.priority, l.expires_at, l.created_at,
          l.reason, l.reference, b.credits - b.debits, l.expired_at IS NOT NULL,
          CASE WHEN l.account_code = ANY(%(lot_codes)s::text[])
               THEN (SELECT j.kind FROM journal_entries j WHERE j.lane = %(lane)s AND j.id = l.entry_id) END,
          l.revoked_at IS NOT NULL, l.empty)),
          '[]'::jsonb)
     FROM (  -- a customer's spent lots are not read (migration 0072): its live ones by their index
           -- (lots_customer_money: unexpired, not empty), then the others the batch names: a lot a
           -- command names, even empty or swept (an expiry, a reversal), and one a hold came from, even
           -- swept (a settle bills its kind, a release goes to breakage); disjoint, so no dedupe
           SELECT l.*, false AS wanted FROM lots l
            WHERE l.lane = %(lane)s AND l.customer_id = ANY(%(customers)s::text[])
              AND l.expired_at IS NULL AND NOT l.empty
           UNION ALL
           SELECT l.*, true FROM (SELECT DISTINCT unnest(w.codes) AS code FROM wanted_lots w) w
            CROSS JOIN LATERAL (SELECT l.* FROM lots l  -- a unique-key probe each
                                 WHERE l.lane = %(lane)s AND l.account_code = w.code LIMIT 1) l
            WHERE l.customer_id = ANY(%(customers)s::text[]) AND NOT (l.expired_at IS NULL AND NOT l.empty)) l
     CROSS JOIN LATERAL (SELECT b.credits, b.debits FROM account_balances b  -- a primary-key probe each
                          WHERE b.lane = %(lane)s AND b.account_id = l.account_id LIMIT 1) b
    WHERE l.wanted OR b.credits > b.debits  -- a live lot is kept when it has money, or is named
       OR l.account_code = ANY((SELECT w.codes FROM wanted_lots w)::text[]))
          AS lots,
  (SELECT coalesce(jsonb_agg((to_jsonb(r) - 'lane') || jsonb_build_object(
          'holds', (SELECT jsonb_agg(jsonb_build_array(h.seq, h.account_code, h.amount) ORDER BY h.seq)
                      FROM reservation_holds h WHERE h.lane = %(lane)s AND h.reservation_id = r.id),
          'final_charge', (SELECT to_jsonb(c) - 'lane' FROM charges c
                            WHERE c.lane = %(lane)s AND c.reservation_id = r.id AND c.final),
          -- the release entry of a released reservation, told by a release sent again (a unique-key probe)
          'release_entry', CASE WHEN r.status = 'released' THEN
                           (SELECT j.id FROM journal_entries j WHERE j.lane = %(lane)s
                               AND j.customer_id = r.customer_id AND j.key = 'release:' || r.id) END,
          'captures_by_id', (SELECT jsonb_object_agg(c.capture_id, to_jsonb(c) - 'lane') FROM charges c
                              WHERE c.lane = %(lane)s AND c.reservation_id = r.id
                                AND c.capture_id = ANY(%(captures)s::text[])),
          'budget_holds', (SELECT jsonb_agg(jsonb_build_array(x.budget_id, x.window_start, x.metric, x.held, x.used))
                             FROM reservation_budgets x WHERE x.lane = %(lane)s AND x.reservation_id = r.id))),
          '[]'::jsonb)
     FROM want_reservations r) AS reservations,
  (SELECT coalesce(jsonb_agg(jsonb_build_object(
          'budget', to_jsonb(b) - 'lane', 'customer_zone', c.time_zone,
          'windows', (SELECT jsonb_agg(jsonb_build_array(w.window_start, w.used, w.held)) FROM budget_windows w
                       WHERE w.lane = %(lane)s AND w.budget_id = b.id
                         AND (b.window_kind = 'lifetime' OR w.window_start > %(now)s::timestamptz
                              - CASE b.window_kind WHEN 'minute' THEN interval '61 seconds'
                                                   ELSE interval '33 days' END)))), '[]'::jsonb)
     FROM budgets b JOIN customers c ON c.id = b.customer_id
    WHERE b.lane = %(lane)s AND b.customer_id = ANY(%(customers)s::text[]) AND b.deleted_at IS NULL) AS budgets,
  (SELECT coalesce(jsonb_agg(jsonb_build_array(k.scope, k.key, k.request_hash, k.status, k.response)), '[]'::jsonb)
     FROM kept k) AS idempotency,
  (SELECT coalesce(jsonb_agg(jsonb_build_array(e.customer_id, e.event_id, e.request_hash)), '[]'::jsonb)
     FROM usage_events e JOIN unnest(%(event_customers)s::text[], %(event_ids)s::text[]) AS w(customer_id, event_id)
       ON e.lane = %(lane)s AND e.customer_id = w.customer_id AND e.event_id = w.event_id) AS events,
  (SELECT coalesce(jsonb_object_agg(t.customer_id, t.held), '{}'::jsonb) FROM (
     SELECT r.customer_id, sum(least(h.amount, r.amount - r.captured)) AS held
       FROM reservations r JOIN reservation_holds h ON h.lane = %(lane)s AND h.reservation_id = r.id
      WHERE r.lane = %(lane)s AND r.customer_id = ANY(%(credit_held_for)s::text[])
        AND r.status = ANY(%(open_statuses)s::text[])
        AND h.account_code = %(receivable_before)s || r.customer_id || %(receivable_after)s
      GROUP BY r.customer_id) t) AS credit_held,
  -- ids for the entries the batch may post (one a command at most): known before it posts, the
  -- rows naming them go with ledger_post in one round trip
  (SELECT coalesce(array_agg(nextval('journal_entries_id_seq')), '{}')
     FROM generate_series(1, %(new_entries)s::int)) AS entry_ids
"""


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def _opt_int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _bytes(value: str) -> bytes:
    return bytes.fromhex(value[2:])  # bytea in JSON: "\\x…"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    request_hash: bytes
    status: int
    body: Any


@dataclass(slots=True)
class Loaded:
    wallets: dict[str, Wallet]
    idempotency: dict[tuple[str, str], StoredResponse]
    events: dict[tuple[str, str], bytes]  # (customer id, event id) -> request hash
    missing_reservations: set[str] = field(default_factory=set)
    entry_ids: list[int] = field(default_factory=list)  # allocated for the batch's entries, unused yet


def _customer(c: dict[str, Any]) -> Wallet:
    customer = Customer(c["id"], c["name"], c["currency"], c["billing"], c["price_book"],
                        _opt_int(c["overdraft_limit"]), _opt_int(c["low_balance_threshold"]),
                        c["low_balance_alerted"], c["blocked"], _time(c["created_at"]),  # type: ignore[arg-type]
                        c["book_versions"], _opt_int(c["max_charge_per_request"]),
                        Cycle(c["time_zone"], c["billing_anchor_day"]), _time(c["open_period_start"]),
                        c["grace_seconds"], c["payment_terms_days"], c.get("override_versions") or 0,
                        tuple((_time(at), book) for at, book in c.get("book_changes") or ()))  # type: ignore[misc]
    return Wallet(customer, {}, _int(c["reserved"]), _int(c["receivable"]))


def _reservation(row: dict[str, Any]) -> Reservation:
    r = Reservation(
        id=row["id"], customer_id=row["customer_id"], request_id=row["request_id"],
        request_hash=_bytes(row["request_hash"]), model=row["model"], amount=int(row["amount"]),
        status=row["status"], created_at=_time(row["created_at"]),  # type: ignore[arg-type]
        expires_at=_time(row["expires_at"]),  # type: ignore[arg-type]
        holds=[Hold(seq, code, int(amount)) for seq, code, amount in (row["holds"] or [])],
        dimensions=row["dimensions"] or {}, estimate=row["estimate"], captured=int(row["captured"]),
        released=int(row["released"]), charged=int(row["charged"]), captures=row["captures"],
        closed_at=_time(row["closed_at"]),
    )
    r.release_entry = row.get("release_entry")
    if row["final_charge"]:
        r.final_charge = row["final_charge"]
        r.final_hash = _bytes(row["final_charge"]["request_hash"])
    for capture_id, charge in (row["captures_by_id"] or {}).items():
        r.capture_ids[capture_id] = (_bytes(charge["request_hash"]), charge)
    for budget_id, start, metric, held, used in row["budget_holds"] or []:
        r.budget_holds[budget_id] = BudgetHold(budget_id, _time(start), metric, int(held), int(used))  # type: ignore[arg-type]
    return r


def budget(row: dict[str, Any], customer_zone: str | None = None) -> Budget:
    """A budget from its row (as JSON); its time zone: its own, else its customer's, else UTC."""
    return Budget(row["id"], row["customer_id"], row["name"], row["api_key"], row["model"], row["dimensions"] or {},
                  row["window_kind"], row["metric"], int(row["limit_units"]), row["mode"],
                  tuple(row["thresholds"] or ()), row["time_zone"] or customer_zone or "UTC",
                  _time(row["created_at"]), row.get("set_by", "operator"))  # type: ignore[arg-type]


def budget_hold_row(reservation_id: str, bh: BudgetHold) -> dict[str, Any]:
    return {"reservation_id": reservation_id, "budget_id": bh.budget_id, "window_start": bh.window_start,
            "metric": bh.metric, "held": bh.held, "used": bh.used}


async def load(conn: AsyncConnection, customer_ids: Iterable[str], *,
               reservation_ids: Iterable[str] = (), capture_ids: Iterable[str] = (),
               lot_codes: Iterable[str] = (), idempotency: Iterable[tuple[str, str]] = (),
               events: Iterable[tuple[str, str]] = (), credit_held_for: Iterable[str] = (),
               now: datetime | None = None, new_entries: int = 0) -> Loaded:
    """The wallets of `customer_ids` (live lots, balances, the named reservations) and the
    stored idempotent responses and usage events (by customer and event id) the commands refer
    to, in one round trip; and `new_entries` journal entry ids from the entries' sequence."""
    customers = sorted(set(customer_ids))
    params = _load_params(customers, reservation_ids=reservation_ids, capture_ids=capture_ids,
                          lot_codes=lot_codes, idempotency=idempotency, events=events,
                          credit_held_for=credit_held_for, now=now, new_entries=new_entries)
    row = (await conn.exec_driver_sql(_load_sql(await _lane(conn, customers)), params)).one()
    return loaded_from(row, params)


def load_lead(lane: int, customer_ids: Iterable[str], **needs: Any) -> tuple[Lead, dict[str, Any]]:
    """The same read as `load` (same arguments after the lane), as a Lead for the batch's lock +
    BEGIN round trip (ledger.db.Database.run), and the parameters `loaded_from` takes with its row."""
    params = _load_params(sorted(set(customer_ids)), **needs)
    name, create, order, types = _load_function(lane)
    return Lead(name, create, tuple(params[p] for p in order), types), params


def loaded_from(row: Any, params: dict[str, Any]) -> Loaded:
    """The Loaded of a load's row (`load`'s, or a lead's: a tuple in the load's column order)."""
    if isinstance(row, tuple) and not hasattr(row, "customers"):
        row = _LoadRow(*row)
    wanted, held_for = params["reservations"], params["credit_held_for"]
    loaded = Loaded({c["id"]: _customer(c) for c in row.customers}, {}, {}, entry_ids=list(row.entry_ids))
    for lot_id, cid, code, kind, granted, priority, expires_at, created_at, reason, reference, balance, swept, \
            opened_by, revoked, empty in row.lots:
        loaded.wallets[cid].lots[code] = Lot(lot_id, code, kind, int(granted), priority, _time(expires_at),
                                             _time(created_at), int(balance), swept, reason, reference,  # type: ignore[arg-type]
                                             opened_by, revoked, empty)
    for item in row.budgets:
        b = budget(item["budget"], item["customer_zone"])
        b.windows = {_time(start): [int(used), int(held)] for start, used, held in item["windows"] or []}  # type: ignore[misc]
        loaded.wallets[b.customer_id].budgets[b.id] = b
    reservations = [_reservation(r) for r in row.reservations]
    loaded.missing_reservations = set(wanted) - {r.id for r in reservations}
    for r in reservations:
        if r.customer_id in loaded.wallets:
            loaded.wallets[r.customer_id].reservations[r.id] = r
    for cid in held_for:
        if cid in loaded.wallets:
            loaded.wallets[cid].credit_held = int(row.credit_held.get(cid, 0))
    for scope, key, digest, status, response in row.idempotency:
        loaded.idempotency[(scope, key)] = StoredResponse(_bytes(digest), status, response)
    loaded.events = {(cid, event_id): _bytes(digest) for cid, event_id, digest in row.events}
    return loaded


class _LoadRow(NamedTuple):
    customers: Any
    lots: Any
    reservations: Any
    budgets: Any
    idempotency: Any
    events: Any
    credit_held: Any
    entry_ids: Any


def _load_params(customers: list[str], *, reservation_ids: Iterable[str] = (), capture_ids: Iterable[str] = (),
                 lot_codes: Iterable[str] = (), idempotency: Iterable[tuple[str, str]] = (),
                 events: Iterable[tuple[str, str]] = (), credit_held_for: Iterable[str] = (),
                 now: datetime | None = None, new_entries: int = 0) -> dict[str, Any]:
    pairs = sorted(set(idempotency))
    event_pairs = sorted(set(events))
    return {"customers": customers, "reservations": sorted(set(reservation_ids)),
            "captures": sorted(set(capture_ids)),
            "lot_codes": sorted(set(lot_codes)), "scopes": [s for s, _ in pairs], "keys": [k for _, k in pairs],
            "event_customers": [c for c, _ in event_pairs], "event_ids": [e for _, e in event_pairs],
            "credit_held_for": sorted(set(credit_held_for)), "now": now or datetime.now(UTC),
            "new_entries": new_entries, **chart.SQL_PARAMETERS}


def _load_function(lane: int) -> tuple[str, str, list[str], tuple[str, ...]]:
    """The lane's load as a session's temporary PL/pgSQL function: its name (the text's digest in
    it), its CREATE, the parameters' names in its order, and their types. Its plan is generic
    (one a session) and names the lane's partitions only, the lane being written in its text."""
    found = _LOAD_FUNCTIONS.get(lane)
    if found is None:
        text, order, types = load_statement(lane)
        digest = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
        name = f"tokentill_load_{int(lane)}_{digest}"
        create = (f"CREATE OR REPLACE FUNCTION pg_temp.{name}({', '.join(types)}) RETURNS TABLE ("
                  + ", ".join(f"o_{column} {kind}" for column, kind in _LOAD_COLUMNS)
                  + ") LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $load$ BEGIN RETURN QUERY "
                  + text + "; END $load$")
        found = _LOAD_FUNCTIONS[lane] = (name, create, order, types)
    return found


def load_statement(lane: int) -> tuple[str, list[str], tuple[str, ...]]:
    """The lane's load as the text its function runs (parameters as $1, $2, ...), the parameters'
    names in that order, and their types."""
    text = _load_sql(lane)
    order = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", text)))
    for i, name in enumerate(order, 1):
        text = text.replace(f"%({name})s", f"${i}")
    return text, order, tuple(_LOAD_TYPES[name] for name in order)


_LOAD_FUNCTIONS: dict[int, tuple[str, str, list[str], tuple[str, ...]]] = {}
# The load's parameters' and columns' types (its columns in _LoadRow's order).
_LOAD_TYPES = {"reservations": "text[]", "customers": "text[]", "captures": "text[]", "lot_codes": "text[]",
               "scopes": "text[]", "keys": "text[]", "event_customers": "text[]", "event_ids": "text[]",
               "credit_held_for": "text[]", "open_statuses": "text[]", "now": "timestamptz", "new_entries": "int",
               "reserved_before": "text", "reserved_after": "text", "receivable_before": "text",
               "receivable_after": "text"}
_LOAD_COLUMNS = [*((column, "jsonb") for column in ("customers", "lots", "reservations", "budgets", "idempotency",
                                                     "events", "credit_held")), ("entry_ids", "bigint[]")]


def _load_sql(lane: int | None) -> str:
    """The load with its lane written in, so the plan names one lane's partitions: with the lane
    as a parameter a cached generic plan would name every lane's, and each execution would lock
    them all (PostgreSQL locks a cached plan's relations before pruning them)."""
    sql = _LOAD_BY_LANE.get(lane)
    if sql is None:
        sql = _LOAD_BY_LANE[lane] = _LOAD.replace("%(lane)s", "NULL" if lane is None else str(int(lane)))
    return sql


_LOAD_BY_LANE: dict[int | None, str] = {}


async def _lane(conn: AsyncConnection, customers: list[str]) -> int | None:
    """The lane of the batch: the engine's, or that of the customers read (all of one lane)."""
    lane = LANE.get()
    if lane is None and customers:
        lanes = await lane_count(conn)
        found = {lane_of(c, lanes) for c in customers}
        if len(found) > 1:
            raise ValueError(f"customers of {len(found)} lanes in one batch: {customers}")
        lane = found.pop()
    return lane


# ------------------------------------------------------------------------------------------
# Writing: one statement, one data-modifying CTE per table that has rows. Every row goes to
# the batch's lane ({lane}), and every update names it.

_WRITES: dict[str, str] = {
    "lots": """INSERT INTO lots (lane, id, customer_id, kind, account_id, account_code, granted, priority,
                   expires_at, reason, reference, entry_id, created_at, empty, paid_receivable)
               SELECT {lane}, r.id, r.customer_id, r.kind, a.id, r.account_code, r.granted, r.priority,
                      r.expires_at, r.reason, r.reference, r.entry_id, r.created_at, coalesce(r.empty, false),
                      coalesce(r.paid_receivable, false)
                 FROM jsonb_to_recordset({p}::jsonb) AS r(id text, customer_id text, kind text,
                      account_code text, granted numeric, priority smallint, expires_at timestamptz,
                      reason text, reference text, entry_id bigint, created_at timestamptz, empty boolean,
                      paid_receivable boolean)
                 JOIN accounts a ON a.code = r.account_code""",
    "lot_expiries": """UPDATE lots SET expired_at = r.expired_at, expired_amount = r.amount,
                              expiry_entry_id = r.entry_id
                 FROM jsonb_to_recordset({p}::jsonb) AS r(id text, expired_at timestamptz,
                      amount numeric, entry_id bigint)
                WHERE lots.lane = {lane} AND lots.id = r.id""",
    "lot_revocations": """UPDATE lots SET revoked_at = r.revoked_at, empty = coalesce(r.empty, lots.empty)
                 FROM jsonb_to_recordset({p}::jsonb) AS r(id text, revoked_at timestamptz, empty boolean)
                WHERE lots.lane = {lane} AND lots.id = r.id""",
    # the `empty` mark of each other lot whose balance crossed 0 in the batch (Batch._lot_marks)
    "lot_marks": """UPDATE lots SET empty = r.empty
                 FROM jsonb_to_recordset({p}::jsonb) AS r(id text, empty boolean)
                WHERE lots.lane = {lane} AND lots.id = r.id""",
    "reservations": """INSERT INTO reservations (lane, id, customer_id, request_id, request_hash, model,
                   amount, captured, released, charged, captures, status, dimensions, estimate,
                   entry_id, created_at, expires_at, closed_at, hold_prompt_tokens, hold_output_tokens)
               SELECT {lane}, r.id, r.customer_id, r.request_id, decode(r.request_hash, 'base64'), r.model,
                      r.amount, r.captured, r.released, r.charged, r.captures, r.status,
                      r.dimensions, r.estimate, r.entry_id, r.created_at, r.expires_at, r.closed_at,
                      r.hold_prompt_tokens, r.hold_output_tokens
                 FROM jsonb_to_recordset({p}::jsonb) AS r(id text, customer_id text, request_id text,
                      request_hash text, model text, amount numeric, captured numeric,
                      released numeric, charged numeric, captures int, status text, dimensions jsonb,
                      estimate jsonb, entry_id bigint, created_at timestamptz,
                      expires_at timestamptz, closed_at timestamptz, hold_prompt_tokens bigint,
                      hold_output_tokens bigint)""",
    "reservation_updates": """UPDATE reservations SET captured = r.captured, released = r.released,
                      charged = r.charged, captures = r.captures, status = r.status,
                      closed_at = r.closed_at, expires_at = r.expires_at
                 FROM jsonb_to_recordset({p}::jsonb) AS r(id text, captured numeric,
                      released numeric, charged numeric, captures int, status text,
                      closed_at timestamptz, expires_at timestamptz)
                WHERE reservations.lane = {lane} AND reservations.id = r.id""",
    "holds": """INSERT INTO reservation_holds (lane, reservation_id, seq, account_code, amount)
               SELECT {lane}, r.reservation_id, r.seq, r.account_code, r.amount
                 FROM jsonb_to_recordset({p}::jsonb) AS r(reservation_id text, seq smallint,
                      account_code text, amount numeric)""",
    "usage_events": """INSERT INTO usage_events (lane, event_id, customer_id, request_hash, model,
                   occurred_at, usage, dimensions, entry_id)
               SELECT {lane}, r.event_id, r.customer_id, decode(r.request_hash, 'base64'), r.model,
                      r.occurred_at, r.usage, r.dimensions, r.entry_id
                 FROM jsonb_to_recordset({p}::jsonb) AS r(event_id text, customer_id text,
                      request_hash text, model text, occurred_at timestamptz, usage jsonb,
                      dimensions jsonb, entry_id bigint)""",
    "charges": """INSERT INTO charges (lane, customer_id, reservation_id, event_id, request_id, seq,
                   capture_id, final, request_hash, model, occurred_at, usage, dimensions,
                   price_book, price_version, lines, charged, from_hold, from_lots,
                   from_receivable, released, funding, entry_id, period)
               SELECT {lane}, r.customer_id, r.reservation_id, r.event_id, r.request_id, r.seq,
                      r.capture_id, r.final, decode(r.request_hash, 'base64'), r.model, r.occurred_at,
                      r.usage, r.dimensions, r.price_book, r.price_version, r.lines, r.charged,
                      r.from_hold, r.from_lots, r.from_receivable, r.released, r.funding, r.entry_id, r.period
                 FROM jsonb_to_recordset({p}::jsonb) AS r(customer_id text, reservation_id text,
                      event_id text, request_id text, seq int, capture_id text, final boolean,
                      request_hash text, model text, occurred_at timestamptz, usage jsonb,
                      dimensions jsonb, price_book text, price_version text, lines jsonb,
                      charged numeric, from_hold numeric, from_lots numeric,
                      from_receivable numeric, released numeric, funding jsonb, entry_id bigint,
                      period text)""",
    "budget_windows": """INSERT INTO budget_windows (lane, budget_id, window_start, used, held)
               SELECT {lane}, r.budget_id, r.window_start, r.used, r.held
                 FROM jsonb_to_recordset({p}::jsonb) AS r(budget_id text, window_start timestamptz,
                      used numeric, held numeric)
               ON CONFLICT (lane, budget_id, window_start)
               DO UPDATE SET used = budget_windows.used + EXCLUDED.used, held = budget_windows.held + EXCLUDED.held""",
    "reservation_budgets": """INSERT INTO reservation_budgets (lane, reservation_id, budget_id, window_start, metric,
                   held, used)
               SELECT {lane}, r.reservation_id, r.budget_id, r.window_start, r.metric, r.held, r.used
                 FROM jsonb_to_recordset({p}::jsonb) AS r(reservation_id text, budget_id text,
                      window_start timestamptz, metric text, held numeric, used numeric)""",
    "reservation_budget_updates": """UPDATE reservation_budgets SET held = r.held, used = r.used
                 FROM jsonb_to_recordset({p}::jsonb) AS r(reservation_id text, budget_id text, held numeric,
                      used numeric)
                WHERE reservation_budgets.lane = {lane} AND reservation_budgets.reservation_id = r.reservation_id
                  AND reservation_budgets.budget_id = r.budget_id""",
    "outbox": """INSERT INTO outbox (lane, topic, customer_id, dedup_key, payload)
               SELECT {lane}, r.topic, r.customer_id, r.dedup_key, r.payload
                 FROM jsonb_to_recordset({p}::jsonb) AS r(topic text, customer_id text,
                      dedup_key text, payload jsonb)
               ON CONFLICT (lane, dedup_key) DO NOTHING""",
    "idempotency": """INSERT INTO idempotency_records (lane, scope, key, request_hash, status, response)
               SELECT {lane}, r.scope, r.key, decode(r.request_hash, 'base64'), r.status, r.response
                 FROM jsonb_to_recordset({p}::jsonb) AS r(scope text, key text,
                      request_hash text, status smallint, response jsonb)""",
    # What the batch added to each customer's billing period (rollup items, usage counters), one
    # row per customer and period, folded into period_rollups and usage_counters later (migration
    # 0029: `wallets_fold_usage`).
    "period_deltas": """INSERT INTO period_deltas (lane, customer_id, period, items, quantities, amounts, books,
                   rules, counts)
               SELECT {lane}, r.customer_id, r.period, r.items, r.quantities, r.amounts, r.books, r.rules,
                      r.counts
                 FROM jsonb_to_recordset({p}::jsonb) AS r(customer_id text, period text, items text[],
                      quantities numeric[], amounts numeric[], books text[], rules text[], counts numeric[])""",
    "invoices": """INSERT INTO invoices (id, lane, customer_id, period, period_start, period_end, issuer, year, seq,
                   number, currency, total, amount_due, due_at, content, content_hash, true_up_entry_id,
                   finalized_at)
               SELECT r.id, {lane}, r.customer_id, r.period, r.period_start, r.period_end, r.issuer, r.year,
                      r.seq, r.number, r.currency, r.total, r.amount_due, r.due_at, r.content,
                      sha256(convert_to(r.content::text, 'UTF8')), r.entry_id, r.finalized_at
                 FROM jsonb_to_recordset({p}::jsonb) AS r(id text, customer_id text, period text,
                      period_start timestamptz, period_end timestamptz, issuer text, year int, seq bigint,
                      number text, currency text, total numeric, amount_due numeric, due_at timestamptz,
                      content jsonb, entry_id bigint, finalized_at timestamptz)
                ORDER BY r.seq""",
    "invoice_payments": """INSERT INTO invoice_payments (id, lane, invoice_id, customer_id, amount, reference,
                   entry_id, created_at)
               SELECT r.id, {lane}, r.invoice_id, r.customer_id, r.amount, r.reference, r.entry_id, r.created_at
                 FROM jsonb_to_recordset({p}::jsonb) AS r(id text, invoice_id text, customer_id text,
                      amount numeric, reference text, entry_id bigint, created_at timestamptz)""",
    "credit_notes": """INSERT INTO credit_notes (id, lane, customer_id, invoice_id, rerate_id, kind, issuer, year,
                   seq, number, currency, total, entry_id, content, content_hash, issued_at)
               SELECT r.id, {lane}, r.customer_id, r.invoice_id, r.rerate_id, r.kind, r.issuer, r.year, r.seq,
                      r.number, r.currency, r.total, r.entry_id, r.content,
                      sha256(convert_to(r.content::text, 'UTF8')), r.issued_at
                 FROM jsonb_to_recordset({p}::jsonb) AS r(id text, customer_id text, invoice_id text,
                      rerate_id text, kind text, issuer text, year int, seq bigint, number text, currency text,
                      total numeric, entry_id bigint, content jsonb, issued_at timestamptz)
                ORDER BY r.seq""",
    "charge_adjustments": """INSERT INTO charge_adjustments (lane, charge_id, corrected_version,
                   overrides_version, allowance_moves, rerate_id, customer_id, period, old_amount, new_amount,
                   old_lines, new_lines, old_rules, new_rules, entry_id, credit_note_id, created_at)
               SELECT {lane}, r.charge_id, r.corrected_version, r.overrides_version, r.allowance_moves, r.rerate_id,
                      r.customer_id, r.period, r.old_amount, r.new_amount, r.old_lines, r.new_lines, r.old_rules,
                      r.new_rules, r.entry_id, r.credit_note_id, r.created_at
                 FROM jsonb_to_recordset({p}::jsonb) AS r(charge_id bigint, corrected_version text,
                      overrides_version int, allowance_moves jsonb, rerate_id text, customer_id text, period text,
                      old_amount numeric, new_amount numeric, old_lines jsonb, new_lines jsonb, old_rules jsonb,
                      new_rules jsonb, entry_id bigint, credit_note_id text, created_at timestamptz)""",
    "rerate_true_ups": """INSERT INTO rerate_true_ups (lane, rerate_id, customer_id, period, true_ups, payer_rows,
                                                   created_at)
               SELECT {lane}, r.rerate_id, r.customer_id, r.period, r.true_ups, r.payer_rows, r.created_at
                 FROM jsonb_to_recordset({p}::jsonb) AS r(rerate_id text, customer_id text, period text,
                      true_ups jsonb, payer_rows jsonb, created_at timestamptz)""",
    # numbered once per statement from the adjustments' sequence (migration 0090): verify reads the
    # re-rates a close counted as those whose adjustments' ids are below its record's, as the lane's
    # lock orders them; their dates (the servers' clocks) put one 3 ms ahead after the close
    "true_up_charges": """INSERT INTO true_up_charges (lane, customer_id, period, rule_id, charge_id, rerate_id, units,
                                                 created_at, adjustment_seq)
               SELECT {lane}, r.customer_id, r.period, x.rule_id, x.charge_id, r.rerate_id, x.units, r.created_at,
                      (SELECT nextval(pg_get_serial_sequence('charge_adjustments', 'id')))
                 FROM jsonb_to_recordset({p}::jsonb) AS r(customer_id text, period text, rerate_id text,
                      created_at timestamptz, rules text[], charges bigint[], units numeric[])
                CROSS JOIN LATERAL unnest(r.rules, r.charges, r.units) AS x(rule_id, charge_id, units)""",
    # numbered once per statement (migration 0085: the batch's true-ups share the number) and dated by
    # the database's clock: verify orders each payer's true-ups by the number, as the lane's lock
    # orders the batches; a clock (a server's, the database's stepped back) put a re-rate before
    # the one it followed
    "true_up_payers": """INSERT INTO true_up_payers (lane, customer_id, period, rerate_id, charge_id, payer, units,
                                                created_at, written)
               SELECT {lane}, r.customer_id, r.period, r.rerate_id, x.charge_id, x.payer, x.units,
                      statement_timestamp(), (SELECT nextval('true_up_payers_written'))
                 FROM jsonb_to_recordset({p}::jsonb) AS r(customer_id text, period text, rerate_id text,
                      charges bigint[], payers text[], units numeric[])
                CROSS JOIN LATERAL unnest(r.charges, r.payers, r.units) AS x(charge_id, payer, units)""",
    # One row per customer: two UPDATEs of one row in one statement keep only one of them (a
    # close that also flagged a low balance lost its period's advance, and closed it again).
    "customers": """UPDATE customers
                  SET low_balance_alerted = coalesce(r.low_balance_alerted, customers.low_balance_alerted),
                      blocked = coalesce(r.blocked, customers.blocked),
                      open_period_start = CASE WHEN r.advanced THEN r.open_period_start
                                               ELSE customers.open_period_start END,
                      next_close_at = CASE WHEN r.advanced THEN r.next_close_at ELSE customers.next_close_at END
                 FROM jsonb_to_recordset({p}::jsonb) AS r(id text, low_balance_alerted boolean,
                      blocked boolean, advanced boolean, open_period_start timestamptz, next_close_at timestamptz)
                WHERE customers.lane = {lane} AND customers.id = r.id""",
}


async def load_period_usage(conn: AsyncConnection, pairs: Iterable[tuple[str, str]]
                            ) -> dict[tuple[str, str, str], dict[str, int]]:
    """Units rated so far per (customer, period, book) and rule, for graduated tiers: the folded
    counters plus the unfolded deltas (migration 0029), in one snapshot."""
    wanted = sorted(set(pairs))
    found: dict[tuple[str, str, str], dict[str, int]] = {}
    if not wanted:
        return found
    lane = int(await _lane(conn, sorted({c for c, _ in wanted})) or 0)  # written in, as in the load
    rows = await conn.exec_driver_sql(
        f"""WITH w AS (SELECT * FROM unnest(%s::text[], %s::text[]) AS w(customer_id, period))
            SELECT customer_id, period, book_id, rule_id, sum(quantity)::text FROM (
                SELECT u.customer_id, u.period, u.book_id, u.rule_id, u.quantity
                  FROM usage_counters u JOIN w ON u.lane = {lane} AND u.customer_id = w.customer_id
                                               AND u.period = w.period
                UNION ALL
                SELECT d.customer_id, d.period, unnest(d.books), unnest(d.rules), unnest(d.counts)
                  FROM period_deltas d JOIN w ON d.lane = {lane} AND d.customer_id = w.customer_id
                                               AND d.period = w.period) c
             GROUP BY 1, 2, 3, 4""",
        ([c for c, _ in wanted], [p for _, p in wanted]))
    for cid, period, book_id, rule_id, quantity in rows:
        found.setdefault((cid, period, book_id), {})[rule_id] = int(quantity)
    return found


async def kept_events(conn: AsyncConnection, pairs: Iterable[tuple[str, str]]
                      ) -> dict[tuple[str, str], tuple[datetime, bytes, bool]]:
    """When each recorded usage event of these (customer, event id) occurred, as kept (to the
    microsecond), its request hash, and whether it was created before every hash read its time as
    the instant (ledger_settings.instant_hashes_since, migration 0080): only such an event may hold
    the hash of its text as sent."""
    wanted = sorted(set(pairs))
    if not wanted:
        return {}
    rows = await conn.exec_driver_sql(  # a usage batch's customers may be of several lanes
        """SELECT e.customer_id, e.event_id, e.occurred_at, e.request_hash, e.created_at < s.instant_hashes_since
             FROM unnest(%s::text[], %s::text[]) AS w(customer_id, event_id)
             JOIN customers c ON c.id = w.customer_id
             JOIN usage_events e ON e.lane = c.lane AND e.customer_id = w.customer_id AND e.event_id = w.event_id
            CROSS JOIN ledger_settings s""",
        ([c for c, _ in wanted], [e for _, e in wanted]))
    return {(cid, event_id): (at, bytes(digest), older) for cid, event_id, at, digest, older in rows}


async def kept_key(conn: AsyncConnection, scope: str, key: str) -> tuple[bytes, bool] | None:
    """The request hash kept under an Idempotency-Key (where `load` reads it: the batch's lane,
    then `idempotency_keys`), and whether it was created before every hash read its times as
    instants (migration 0080): only then may it hold the hash of a batch as sent; None: none kept."""
    row = (await conn.exec_driver_sql(
        """SELECT k.request_hash, k.created_at < s.instant_hashes_since
             FROM (SELECT r.request_hash, r.created_at FROM idempotency_records r
                    WHERE r.lane = %s AND r.scope = %s AND r.key = %s
                   UNION ALL
                   SELECT o.request_hash, o.created_at FROM idempotency_keys o WHERE o.scope = %s AND o.key = %s
                   LIMIT 1) k
            CROSS JOIN ledger_settings s""",
        (await _lane(conn, []), scope, key, scope, key))).first()
    return None if row is None else (bytes(row[0]), row[1])


async def load_rollups(conn: AsyncConnection, since: Iterable[tuple[str, str]]
                       ) -> dict[str, dict[str, dict[str, tuple[int, int]]]]:
    """Each customer's rollups of the periods from `since` (customer, period) on: the folded rows
    plus the unfolded deltas (migration 0029), in one snapshot."""
    first: dict[str, str] = {}
    for cid, period in since:  # a customer's earliest period: each row is read (and summed) once
        first[cid] = min(period, first.get(cid, period))
    wanted = sorted(first.items())
    found: dict[str, dict[str, dict[str, tuple[int, int]]]] = {c: {} for c, _ in wanted}
    if not wanted:
        return found
    lane = int(await _lane(conn, sorted(found)) or 0)
    rows = await conn.exec_driver_sql(
        f"""WITH w AS (SELECT * FROM unnest(%s::text[], %s::text[]) AS w(customer_id, period))
            SELECT customer_id, period, item, sum(quantity)::text, sum(amount)::text FROM (
                SELECT r.customer_id, r.period, r.item, r.quantity, r.amount
                  FROM period_rollups r JOIN w ON r.lane = {lane} AND r.customer_id = w.customer_id
                                               AND r.period >= w.period
                UNION ALL
                SELECT d.customer_id, d.period, unnest(d.items), unnest(d.quantities), unnest(d.amounts)
                  FROM period_deltas d JOIN w ON d.lane = {lane} AND d.customer_id = w.customer_id
                                               AND d.period >= w.period) r
             GROUP BY 1, 2, 3""",
        ([c for c, _ in wanted], [p for _, p in wanted]))
    for cid, period, item, quantity, amount in rows:
        found[cid].setdefault(period, {})[item] = (int(quantity), int(amount))
    return found


async def last_seqs(conn: AsyncConnection, table: Literal["invoices", "credit_notes"],
                    keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The last number of each (issuer, year) among invoices or credit notes (each has its own
    gapless numbering): read under the issuer's lock."""
    found = {}
    for issuer, year in sorted(set(keys)):
        last = (await conn.exec_driver_sql(f"SELECT max(seq) FROM {table} WHERE issuer = %s AND year = %s",
                                           (issuer, year))).scalar()
        found[(issuer, year)] = int(last or 0)
    return found


_INVOICES_DUE = """SELECT i.id, i.customer_id, i.number, i.currency, i.amount_due::text,
                          coalesce((SELECT jsonb_object_agg(p.reference, jsonb_build_array(p.amount, p.entry_id))
                                      FROM invoice_payments p WHERE p.invoice_id = i.id), '{}'::jsonb),
                          i.period_start
                     FROM invoices i"""


def _due(rows: Iterable[Any]) -> dict[str, InvoiceDue]:
    """Each payment's [amount, entry id] by reference: the amount paid, and the entry a payment
    named again tells (the same rows, read by the same probe)."""
    return {r[0]: InvoiceDue(r[0], r[1], r[2], r[3], int(r[4]), {k: int(v[0]) for k, v in r[5].items()}, r[6],
                             {k: int(v[1]) for k, v in r[5].items() if v[1] is not None})
            for r in rows}


async def load_invoices(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, InvoiceDue]:
    """Finalized invoices as a payment sees them: amount due and payments by reference."""
    return _due(await conn.exec_driver_sql(_INVOICES_DUE + " WHERE i.id = ANY(%s::text[])", (sorted(set(ids)),)))


async def load_open_invoices(conn: AsyncConnection, customers: Iterable[str]) -> dict[str, InvoiceDue]:
    """The customers' finalized invoices not paid in full yet (what a prepaid top-up pays off)."""
    sql = _INVOICES_DUE + """ WHERE i.customer_id = ANY(%s::text[]) AND i.amount_due > 0
                                AND i.amount_due > coalesce((SELECT sum(p.amount) FROM invoice_payments p
                                                              WHERE p.invoice_id = i.id), 0)"""
    return _due(await conn.exec_driver_sql(sql, (sorted(set(customers)),)))


async def load_unapplied(conn: AsyncConnection, customers: Iterable[str]) -> dict[str, tuple[Unapplied, ...]]:
    """What each customer's top-ups paid off its receivable and no invoice records yet (it paid
    usage not invoiced then), per top-up, oldest first: what its close applies to the new invoice.
    Only a top-up that paid the receivable can have any: those lots are marked when written
    (`paid_receivable`, migration 0073), and their index is read, not every top-up of the customer."""
    wanted = sorted(set(customers))
    if not wanted:
        return {}
    lane = int(await _lane(conn, wanted) or 0)
    rows = await conn.exec_driver_sql(
        f"""SELECT t.customer_id, t.id, t.entry_id, t.created_at,
                   (t.paid - coalesce((SELECT sum(p.amount) FROM invoices i
                                         JOIN invoice_payments p ON p.invoice_id = i.id
                                        WHERE i.customer_id = t.customer_id AND p.entry_id = t.entry_id), 0))::text
              FROM (SELECT l.customer_id, l.id, l.entry_id, l.created_at,
                           (SELECT -sum(p.amount) FROM postings p JOIN accounts a ON a.id = p.account_id
                             WHERE p.lane = l.lane AND p.entry_id = l.entry_id
                               AND a.code = %s || l.customer_id || %s) AS paid
                      FROM lots l JOIN journal_entries j ON j.lane = l.lane AND j.id = l.entry_id AND j.kind = 'topup'
                     WHERE l.lane = {lane} AND l.customer_id = ANY(%s::text[]) AND l.kind = 'topup'
                       AND l.paid_receivable) t
             WHERE t.paid > 0
             ORDER BY t.entry_id""", (*chart.RECEIVABLE_CODE, wanted))
    found: dict[str, list[Unapplied]] = {}
    for cid, lot_id, entry_id, at, left in rows:
        if int(left) > 0:
            found.setdefault(cid, []).append(Unapplied(int(entry_id), f"topup:{lot_id}", int(left), at))
    return {cid: tuple(x) for cid, x in found.items()}


async def load_cash(conn: AsyncConnection, customers: Iterable[str]) -> dict[str, int]:
    """For each customer: the cash its entries brought in (top-ups, invoice payments) less what
    they paid out (refunds), its entries' postings to the platform's cash accounts (what a cash
    refund may pay back at most). The kinds that move cash are named: their partial index
    (migration 0051) keeps the customer's usage entries out of the read."""
    wanted = sorted(set(customers))
    if not wanted:
        return {}
    lane = int(await _lane(conn, wanted) or 0)
    rows = await conn.exec_driver_sql(
        f"""SELECT j.customer_id, sum(p.amount)::text
              FROM journal_entries j
              JOIN postings p ON p.lane = j.lane AND p.entry_id = j.id
              JOIN accounts a ON a.id = p.account_id
             WHERE j.lane = {lane} AND j.customer_id = ANY(%s::text[]) AND a.code = %s || a.asset
               AND j.kind IN ('topup', 'invoice_payment', 'grant_reversal', 'credit_refund')
             GROUP BY j.customer_id""", (wanted, chart.cash_account("")))
    return {cid: int(total) for cid, total in rows}


async def load_refunds(conn: AsyncConnection, wanted: Iterable[tuple[str, str]]
                       ) -> dict[tuple[str, str], RefundOnRecord]:
    """The cash refunds of overpaid credit posted under these (customer, reference) pairs."""
    pairs = sorted(set(wanted))
    if not pairs:
        return {}
    lane = int(await _lane(conn, sorted({c for c, _ in pairs})) or 0)
    rows = await conn.exec_driver_sql(
        f"""SELECT j.customer_id, w.ref, j.metadata ->> 'refund_id', j.id, coalesce(j.metadata ->> 'reason', ''),
                   j.metadata -> 'lots',
                   (SELECT -sum(p.amount) FROM postings p JOIN accounts a ON a.id = p.account_id
                     WHERE p.lane = j.lane AND p.entry_id = j.id AND a.code = %s || a.asset)::text
              FROM unnest(%s::text[], %s::text[]) AS w(cid, ref)
              JOIN journal_entries j ON j.lane = {lane} AND j.customer_id = w.cid AND j.kind = 'credit_refund'
                                    AND j.metadata ->> 'reference' = w.ref""",
        (chart.cash_account(""), [c for c, _ in pairs], [r for _, r in pairs]))
    return {(cid, ref): RefundOnRecord(refund_id, int(entry_id), int(amount), reason,
                                       tuple((lot_id, int(part)) for lot_id, part in lots or ()))
            for cid, ref, refund_id, entry_id, reason, lots, amount in rows}


async def load_reversals(conn: AsyncConnection, wanted: Iterable[tuple[str, str]]
                         ) -> dict[tuple[str, str], ReversalOnRecord]:
    """The first refund of a top-up each customer posted under each of these references (the
    processor's refund id), through the cash kinds' partial index (migration 0051)."""
    pairs = sorted(set(wanted))
    if not pairs:
        return {}
    lane = int(await _lane(conn, sorted({c for c, _ in pairs})) or 0)
    rows = await conn.exec_driver_sql(
        f"""SELECT DISTINCT ON (j.customer_id, w.ref) j.customer_id, w.ref, j.id, j.metadata ->> 'lot_id',
                   coalesce(j.metadata ->> 'reason', ''),
                   (SELECT -sum(p.amount) FROM postings p JOIN accounts a ON a.id = p.account_id
                     WHERE p.lane = j.lane AND p.entry_id = j.id AND a.code = %s || a.asset)::text
              FROM unnest(%s::text[], %s::text[]) AS w(cid, ref)
              JOIN journal_entries j ON j.lane = {lane} AND j.customer_id = w.cid AND j.kind = 'grant_reversal'
                                    AND j.metadata ->> 'reversal' = 'refund' AND j.metadata ->> 'reference' = w.ref
             ORDER BY j.customer_id, w.ref, j.id""",
        (chart.cash_account(""), [c for c, _ in pairs], [r for _, r in pairs]))
    return {(cid, ref): ReversalOnRecord(int(entry_id), lot_id, int(amount), reason)
            for cid, ref, entry_id, lot_id, reason, amount in rows}


async def load_topups(conn: AsyncConnection, wanted: Iterable[tuple[str, str]]
                      ) -> dict[tuple[str, str], TopUpOnRecord]:
    """The first top-up each customer was credited under each of these payment references, and
    its lot as it is now. Read through the cash kinds' partial index (migration 0051): a
    customer's top-ups, never its usage entries."""
    pairs = sorted(set(wanted))
    if not pairs:
        return {}
    lane = int(await _lane(conn, sorted({c for c, _ in pairs})) or 0)
    rows = await conn.exec_driver_sql(
        f"""SELECT DISTINCT ON (j.customer_id, w.ref) j.customer_id, w.ref, j.id,
                   (SELECT sum(p.amount) FROM postings p JOIN accounts a ON a.id = p.account_id
                     WHERE p.lane = j.lane AND p.entry_id = j.id AND a.code = %s || a.asset)::text,
                   l.id, l.account_code, l.granted::text, l.priority, l.expires_at, l.created_at, l.reason,
                   l.reference, (b.credits - b.debits)::text, l.expired_at IS NOT NULL
              FROM unnest(%s::text[], %s::text[]) AS w(cid, ref)
              JOIN journal_entries j ON j.lane = {lane} AND j.customer_id = w.cid AND j.kind = 'topup'
                                    AND j.metadata ->> 'reference' = w.ref
              LEFT JOIN lots l ON l.lane = j.lane AND l.id = j.metadata ->> 'lot_id'
              LEFT JOIN account_balances b ON b.lane = l.lane AND b.account_id = l.account_id
             ORDER BY j.customer_id, w.ref, j.id""",
        (chart.cash_account(""), [c for c, _ in pairs], [r for _, r in pairs]))
    found: dict[tuple[str, str], TopUpOnRecord] = {}
    for cid, ref, entry_id, amount, lot_id, code, granted, priority, expires_at, created_at, reason, reference, \
            balance, swept in rows:
        lot = None if lot_id is None else Lot(lot_id, code, "topup", int(granted), priority, expires_at, created_at,
                                              int(balance or 0), swept, reason, reference)
        found[(cid, ref)] = TopUpOnRecord(int(entry_id), int(amount), lot)
    return found


async def load_openers(conn: AsyncConnection, w: Wallet, now: datetime) -> None:
    """Set which entry opened each of `w`'s loaded lots (`Lot.opened_by`): the load reads it only
    for the lots a command names."""
    if not w.lots:
        return
    named = await load(conn, [w.customer.id], now=now, lot_codes=sorted(w.lots))
    for code, lot in named.wallets[w.customer.id].lots.items():
        if code in w.lots:
            w.lots[code].opened_by = lot.opened_by


async def load_corrections(conn: AsyncConnection, periods: Iterable[tuple[str, str]]
                           ) -> dict[str, tuple[Unapplied, ...]]:
    """For each (customer, open period): what the customer's re-rates whose entries are billed in
    that period gave back off its receivable and no invoice records as paid yet, by entry (named
    by the entry's credit note, if its corrected period was invoiced, else by the re-rate)."""
    wanted = sorted(set(periods))
    if not wanted:
        return {}
    lane = int(await _lane(conn, [c for c, _ in wanted]) or 0)
    rows = await conn.exec_driver_sql(
        f"""WITH w AS (SELECT * FROM unnest(%s::text[], %s::text[]) AS w(customer_id, period)),
                 -- the customer's re-rate entries billed in the period (journal_entries_rerates), each
                 -- with its re-rate (one: the entry's key names it), from one of its adjustments; every
                 -- adjustment of the customer was read before (195 ms at 70,969, under the lane's lock)
                 e AS (SELECT w.customer_id, j.id AS entry_id, x.rerate_id, w.period
                         FROM w JOIN journal_entries j ON j.lane = {lane} AND j.customer_id = w.customer_id
                                                      AND j.kind = 'rerate_adjustment'
                                                      AND j.metadata ->> 'period' = w.period
                        CROSS JOIN LATERAL (SELECT a.rerate_id FROM charge_adjustments a
                                              JOIN rerates r ON r.id = a.rerate_id
                                             WHERE a.entry_id = j.id AND a.lane = {lane}
                                               AND a.customer_id = w.customer_id LIMIT 1) x)
            SELECT t.customer_id, t.reference, t.entry_id,
                   (t.paid - coalesce((SELECT sum(p.amount) FROM invoices i
                                         JOIN invoice_payments p ON p.invoice_id = i.id
                                        WHERE i.customer_id = t.customer_id AND p.entry_id = t.entry_id), 0))::text
              FROM (SELECT e.customer_id, e.entry_id,
                           coalesce((SELECT 'credit-note:' || min(n.number) FROM credit_notes n
                                      WHERE n.lane = {lane} AND n.entry_id = e.entry_id
                                     HAVING count(*) > 0), 'rerate:' || e.rerate_id) AS reference,
                           (SELECT -sum(p.amount) FROM postings p JOIN accounts a ON a.id = p.account_id
                             WHERE p.lane = {lane} AND p.entry_id = e.entry_id
                               AND a.code = %s || e.customer_id || %s) AS paid
                      FROM e JOIN journal_entries j ON j.lane = {lane} AND j.id = e.entry_id
                                                   AND j.kind = 'rerate_adjustment'
                                                   AND j.metadata ->> 'period' = e.period) t
             WHERE t.paid > 0
             ORDER BY t.entry_id""",
        ([c for c, _ in wanted], [p for _, p in wanted], *chart.RECEIVABLE_CODE))
    found: dict[str, list[Unapplied]] = {}
    for cid, reference, entry_id, left in rows:
        if int(left) > 0:
            found.setdefault(cid, []).append(Unapplied(int(entry_id), reference, int(left), None))
    return {cid: tuple(x) for cid, x in found.items()}


async def load_rerate_charges(conn: AsyncConnection, customer_id: str, book_id: str, start: datetime,
                              end: datetime, other_books: bool = False) -> list[dict[str, Any]]:
    """The customer's charges priced with `book_id` (`other_books`: with any other book) whose usage
    time is in [start, end), by usage time, each with the period it was billed in (its entry's: a
    late one's is later than its usage time's) and the amounts and versions (book's, overrides') of
    the re-rates that adjusted it (oldest first)."""
    lane = int(await _lane(conn, [customer_id]) or 0)
    rows = await conn.exec_driver_sql(
        f"""SELECT c.id, c.occurred_at, c.model, c.dimensions, c.usage, c.lines, c.charged::text,
                   c.from_receivable::text, c.funding, c.seq,
                   coalesce((SELECT j.metadata ->> 'period' FROM journal_entries j
                              WHERE j.lane = c.lane AND j.id = c.entry_id), c.period) AS billed_in,
                   (SELECT jsonb_agg(jsonb_build_array(a.corrected_version, a.new_lines, a.overrides_version,
                                                      a.allowance_moves, a.new_rules)
                                      ORDER BY a.id)
                      FROM charge_adjustments a WHERE a.lane = c.lane AND a.charge_id = c.id) AS adjustments
              FROM charges c
             WHERE c.lane = {lane} AND c.customer_id = %s AND c.price_book {'<>' if other_books else '='} %s
               AND c.occurred_at >= %s AND c.occurred_at < %s
             ORDER BY c.occurred_at, c.id""", (customer_id, book_id, start, end))
    return [dict(r._mapping) for r in rows]


# The rule a charge's line `l` counts for now, by the rules its last re-rate rated the charge's
# token types with (`m.new_rules`, last_rules; kept since migration 0087): its usage at the book's
# price (and a discount of it) under the token type, a contract price's under CONTRACT and the token
# type (rerating.usage_rules); not kept (no re-rate, or one before 0087), the rule that charged it.
# The close lists what paid each rule by it (rule_funding), and verify ties the close's record of
# each charge by it too (wallets.audit._CLOSE_ROWS): one definition.
RULE_NOW = (f"coalesce(m.new_rules ->> (CASE WHEN l ->> 'kind' = 'usage' AND l ->> 'override_id' IS NOT NULL "
            f"THEN '{CONTRACT}' ELSE '' END || coalesce(l ->> 'token_type', l ->> 'kind')), l ->> 'rule_id')")


def last_rules(before: str = "TRUE", kept: bool = True) -> str:
    """SQL: the last re-rate of a charge `c` (`before`: of those its condition on the adjustment `a`
    holds for, e.g. written before a close) as `m`: `moved` (true, or NULL for none) and the rules
    it rated the charge with (`new_rules`; NULL where not kept, or `kept` False: a schema before 0087);
    in the charge's lane: a charge id is unique within its lane alone."""
    rules = "a.new_rules" if kept else "NULL::jsonb AS new_rules"
    return f"""LEFT JOIN LATERAL (SELECT true AS moved, {rules} FROM charge_adjustments a
                                 WHERE a.lane = c.lane AND a.charge_id = c.id AND ({before})
                                 ORDER BY a.id DESC LIMIT 1) m ON true"""


async def rule_funding(conn: AsyncConnection, customer_id: str, period: Period
                       ) -> dict[str, tuple[tuple[int, str | None, int, int | None, int | None, str | None, int],
                                            ...]]:
    """What paid the customer's charges of `period`'s own usage (its usage time in it: a late
    charge of an earlier period billed in it is not, its close never trues it up) billed in it,
    by the rules that rate them (a charge rated by two rules is listed under each; a charge a re-rate
    moved, under those its last re-rate rated it with, where kept: migration 0087): rule id ->
    (charge id, account, amount, units, charged) (the receivable's under None when its funding was
    not recorded; units and charged: the rule's usage lines at the book's price on the charge, what
    the true-up prices again at the tier reached; None once a re-rate moved the charge; version: the
    book version those lines name, which prices them where two versions tier the rule; discounted:
    what the rule's discount lines took off the charge, negative). The usage
    time also bounds the index scan to the period (charges_customer)."""
    lane = int(await _lane(conn, [customer_id]) or 0)
    rows = await conn.exec_driver_sql(
        f"""SELECT r.rule_id, c.id, f ->> 0, sum((f ->> 1)::numeric)::text, r.units::text, r.charged::text, r.version,
                   r.discounted::text, m.moved IS NOT NULL
              FROM charges c
             -- its last re-rate, if any (one probe a charge): the rules it rated its token types with
             -- (kept since 0087) name the rule each line counts for now
             {last_rules()}
             CROSS JOIN LATERAL (
                 SELECT {RULE_NOW} AS rule_id,
                        coalesce(sum((l ->> 'quantity')::numeric) FILTER (WHERE l ->> 'kind' = 'usage'
                                 AND l ->> 'override_id' IS NULL), 0) AS units,
                        coalesce(sum((l ->> 'amount_units')::numeric) FILTER (WHERE l ->> 'kind' = 'usage'
                                 AND l ->> 'override_id' IS NULL), 0) AS charged,
                        min(l ->> 'price_version') FILTER (WHERE l ->> 'kind' = 'usage'
                                 AND l ->> 'override_id' IS NULL) AS version,
                        coalesce(sum((l ->> 'amount_units')::numeric) FILTER (WHERE l ->> 'kind' = 'discount'), 0)
                            AS discounted
                   FROM jsonb_array_elements(c.lines) l WHERE l ->> 'rule_id' IS NOT NULL GROUP BY 1) r
             CROSS JOIN LATERAL jsonb_array_elements(coalesce(
                 c.funding, jsonb_build_array(jsonb_build_array(NULL, c.from_receivable)))) f
             WHERE c.lane = {lane} AND c.customer_id = %s AND c.period = %s
               AND c.occurred_at >= %s AND c.occurred_at < %s
               AND coalesce((SELECT j.metadata ->> 'period' FROM journal_entries j
                              WHERE j.lane = c.lane AND j.id = c.entry_id), c.period) = %s
             GROUP BY r.rule_id, c.id, f ->> 0, r.units, r.charged, r.version, r.discounted, m.moved
             ORDER BY 1, 2, 3""",
        (customer_id, period.label, period.start, period.end, period.label))
    out: dict[str, list[tuple[int, str | None, int, int | None, int | None, str | None, int]]] = {}
    for rule_id, charge_id, account, amount, units, charged, version, discounted, moved in rows:
        out.setdefault(rule_id, []).append((int(charge_id), account, int(amount),
                                            None if moved else int(units), None if moved else int(charged),
                                            version, int(discounted)))
    return {rule_id: tuple(paid) for rule_id, paid in out.items()}


async def rerated_charges(conn: AsyncConnection, customer_id: str, period: Period
                          ) -> tuple[tuple[str, tuple[dict[str, Any], ...], str, tuple[tuple[str, str, int], ...],
                                           dict[str, str] | None, int], ...]:
    """The customer's charges of `period`'s own usage billed in it (rule_funding's) that a re-rate
    moved, wherever the re-rate was billed: (model, its lines as charged, the book version its last
    re-rate rated it with, that re-rate's amounts by model and token type, the rules it rated them
    with by token type: None, not kept before migration 0087, the charge's id). A close counts their
    units under the version and the rule they stand at now (invoicing.rerated_moves), and gives each
    its own part of that rule's money back (invoicing.moved_funding)."""
    lane = int(await _lane(conn, [customer_id]) or 0)
    # driven by the customer's adjustments of `period`'s usage (an adjustment names its charge's
    # usage period: charge_adjustments_period, so all of a charge's adjustments are there), each
    # charge's last (the greatest id: DISTINCT ON, its adjustments read once; a max(id) probe per
    # adjustment read a charge's k adjustments k times: 30,000 charges re-rated 3 times, 663,736
    # buffers, 282 ms, against 210,229, 166 ms), then the charge by its key (LIMIT 1: a probe
    # each; planned generically with the period's filters in it, it walked the customer's charges
    # of the period for each): a period no re-rate moved reads no charge. Before, every charge of
    # the period was tested for adjustments, re-rated or not (30,000 charges, none re-rated:
    # 33,334 buffers, 174 ms; 100 re-rated: 153,334, 428 ms)
    rows = await conn.exec_driver_sql(
        f"""SELECT c.model, c.lines, a.corrected_version, a.new_lines, a.new_rules, c.id
              FROM (SELECT DISTINCT ON (a.charge_id) a.charge_id, a.corrected_version, a.new_lines, a.new_rules
                      FROM charge_adjustments a WHERE a.customer_id = %s AND a.lane = {lane} AND a.period = %s
                     ORDER BY a.charge_id, a.id DESC) a
             CROSS JOIN LATERAL (SELECT c.id, c.model, c.lines, c.customer_id, c.period, c.occurred_at, c.entry_id
                                   FROM charges c WHERE c.lane = {lane} AND c.id = a.charge_id LIMIT 1) c
             WHERE c.customer_id = %s AND c.period = %s AND c.occurred_at >= %s AND c.occurred_at < %s
               AND coalesce((SELECT j.metadata ->> 'period' FROM journal_entries j
                              WHERE j.lane = {lane} AND j.id = c.entry_id), c.period) = %s
             ORDER BY c.occurred_at, c.id""",
        (customer_id, period.label, customer_id, period.label, period.start, period.end, period.label))
    return tuple((model, tuple(lines), version, tuple((m, t, int(a)) for m, t, a in new_lines), rules, int(charge_id))
                 for model, lines, version, new_lines, rules, charge_id in rows)


async def paid_left(conn: AsyncConnection, customer_id: str, period: Period) -> dict[str, dict[str, int]]:
    """What each account still has in the charges billed in each period that billed a charge of
    `period`'s usage (its own; later ones for its late charges), whatever their usage period or
    book: what it paid of them less what their corrections so far gave it back (plus what they
    took from it): that period's close's volume true-up and the re-rate entries correcting its
    charges (one per re-rate and billing period, of one or more usage periods). A re-rate of
    charges billed in one period reads that period's (the same under each of its usage periods),
    whichever of them it corrects: what an entry gave back of a charge it does not correct is
    counted all the same. A later re-rate gives a lot back at most this (rerating.room_left)."""
    lane = int(await _lane(conn, [customer_id]) or 0)
    params = {"customer": customer_id, "label": period.label, "start": period.start, "end": period.end}
    # the periods billing `period`'s usage first, by its time (charges_customer): given as values to
    # the statement below, the planner finds their charges by period (charges_billed); read in it
    # (IN, or = ANY of a subquery), it guessed a share of the customer's whole history, and read all
    # of it (354 ms under the lane's lock at 300,000 charges, 12,236 of them the period's)
    params["billed"] = [billed for billed, in await conn.exec_driver_sql(
        f"""SELECT DISTINCT coalesce(c.period, %(label)s) FROM charges c
             WHERE c.lane = {lane} AND c.customer_id = %(customer)s
               AND c.occurred_at >= %(start)s AND c.occurred_at < %(end)s""", params)]
    if not params["billed"]:  # no charge of `period`'s usage: none billed, none corrected
        return {}
    rows = await conn.exec_driver_sql(
        f"""WITH bs AS (SELECT unnest(%(billed)s::text[]) AS billed),
            e AS (SELECT DISTINCT a.entry_id AS id, coalesce(c.period, a.period) AS billed
                    FROM charge_adjustments a JOIN charges c ON c.lane = a.lane AND c.id = a.charge_id
                   WHERE a.customer_id = %(customer)s AND a.lane = {lane} AND a.entry_id IS NOT NULL
                     AND coalesce(c.period, a.period) = ANY (%(billed)s::text[])
                  UNION
                  SELECT j.id, bs.billed FROM bs JOIN journal_entries j
                      ON j.lane = {lane} AND j.customer_id = %(customer)s
                     AND j.key = 'true-up:' || %(customer)s || ':' || bs.billed)
            SELECT billed, code, sum(amount)::text FROM (
                SELECT e.billed, a.code, p.amount
                  FROM e JOIN postings p ON p.lane = {lane} AND p.entry_id = e.id JOIN accounts a ON a.id = p.account_id
                UNION ALL  -- the charges billed in those periods, and those of no period of `period`'s
                           -- usage (by its time): an OR of the two read every charge of the customer
                SELECT c.period, f ->> 0, (f ->> 1)::numeric
                  FROM charges c CROSS JOIN LATERAL jsonb_array_elements(c.funding) f
                 WHERE c.lane = {lane} AND c.customer_id = %(customer)s AND c.period = ANY (%(billed)s::text[])
                UNION ALL
                SELECT %(label)s, f ->> 0, (f ->> 1)::numeric
                  FROM charges c CROSS JOIN LATERAL jsonb_array_elements(c.funding) f
                 WHERE c.lane = {lane} AND c.customer_id = %(customer)s AND c.period IS NULL
                   AND c.occurred_at >= %(start)s AND c.occurred_at < %(end)s) x
             GROUP BY 1, 2""", params)
    out: dict[str, dict[str, int]] = {}
    for billed, code, amount in rows:  # 0 included: nothing left to give back
        out.setdefault(billed, {})[code] = int(amount)
    return out


async def load_payers(conn: AsyncConnection, w: Wallet, accounts: Iterable[str], now: datetime,
                      closed_with: bool = False) -> None:
    """Loads into `w` the lots among `accounts` (what paid charges) it does not hold (spent now):
    money a re-rate or a close's volume true-up gives back may go back to them. With `closed_with`
    (a re-rate's: what it takes back is bounded by it), of those closed now (swept, revoked,
    expired), what went where their money went for them (Lot.closed_with: two statements, only
    when one is closed; the close and the upcoming invoice take nothing back and read neither)."""
    accounts = set(accounts)
    codes = sorted(a for a in accounts if a not in w.lots)
    if codes:
        more = await load(conn, [w.customer.id], now=now, lot_codes=codes)
        for code, lot in more.wallets[w.customer.id].lots.items():
            w.lots.setdefault(code, lot)
    closed = sorted(a for a in accounts if a in w.lots and not w.lots[a].live(now)) if closed_with else []
    if not closed:
        return
    lane = int(await _lane(conn, [w.customer.id]) or 0)
    params = {"customer": w.customer.id, "codes": closed}
    # what each held when it closed: a sweep's remainder (expired_amount), a whole revocation's
    # amount (the last reversal debiting it: the one that closed it); one expired and not swept
    # yet, its balance (the sweep moves it)
    rows = await conn.exec_driver_sql(
        f"""SELECT l.account_code, CASE WHEN l.revoked_at IS NOT NULL THEN coalesce((
                   SELECT p.amount FROM postings p JOIN journal_entries j ON j.lane = p.lane AND j.id = p.entry_id
                    WHERE p.lane = l.lane AND p.account_id = l.account_id AND p.amount > 0
                      AND j.kind = 'grant_reversal'
                    ORDER BY p.entry_id DESC LIMIT 1), 0)
                   ELSE coalesce(l.expired_amount, 0) END,
                   l.expires_at, (
                   SELECT max(p.entry_id) FROM postings p
                     JOIN journal_entries j ON j.lane = p.lane AND j.id = p.entry_id
                    WHERE p.lane = l.lane AND p.account_id = l.account_id
                      AND j.kind = CASE WHEN l.revoked_at IS NOT NULL THEN 'grant_reversal' ELSE 'grant_expiry' END)
             FROM lots l WHERE l.lane = {lane} AND l.customer_id = %(customer)s
              AND l.account_code = ANY(%(codes)s::text[])""", params)
    held, expired_at, closings = {}, [], []
    for code, amount, expired, closing in rows:
        held[code] = int(amount)
        expired_at.extend([expired] if expired is not None else [])
        closings.extend([closing] if closing is not None else [])
    # then what closes' true-ups and re-rates gave there for each since (given back to it: revoked
    # again, to breakage) less what they took from there for it (entry metadata `closed_lots`,
    # money_back.closed_moves): the customer's re-rate and close entries since the first of them
    # closed (one before a lot closed moved nothing there for it; the whole history was read, every
    # re-rate's and close's). An expired lot is closed for an entry dated at or past its expiry
    # (closed_moves compares it with the entry's own time: journal_entries_corrections, 0084); a
    # revoked (swept) one for an entry after its revocation's (sweep's): a later id, the correction
    # saw it revoked, swept, whatever the servers' clocks read (journal_entries_corrections_by_id,
    # 0086). Read by date from a day (chain.DATED_AHEAD) before the revocation (expiry), one dated
    # by a clock more than a day behind it was left out. An
    # entry written before the key (December 2026) with postings on promotions (breakage) moved
    # them for lots revoked (expired) by then among the payers of the charges it corrected (its charge_adjustments, its
    # true_up_charges): all for the one such lot; among several, not known, so each counts what it
    # took from there, none what it gave (each is bounded by no more than went there for it)
    params |= {"promotions": chart.promotions_account(w.customer.currency),
               "breakage": chart.breakage_account(w.customer.currency),
               "expired": min(expired_at, default="infinity"),
               "after": min(closings, default=None)}
    moved = await conn.exec_driver_sql(
        f"""WITH j AS (SELECT j.id, j.kind, j.occurred_at, j.metadata FROM journal_entries j
                    WHERE j.lane = {lane} AND j.customer_id = %(customer)s
                      AND j.kind IN ('rerate_adjustment', 'volume_true_up')
                      AND (j.occurred_at >= %(expired)s::timestamptz OR j.id > %(after)s::bigint)),
            old AS (SELECT j.id, j.kind, j.occurred_at, j.metadata, a.code = %(promotions)s AS revoked,
                           -sum(p.amount) AS units
                      FROM j JOIN postings p ON p.lane = {lane} AND p.entry_id = j.id
                      JOIN accounts a ON a.id = p.account_id
                     WHERE NOT j.metadata ? 'closed_lots' AND a.code IN (%(promotions)s, %(breakage)s)
                     GROUP BY 1, 2, 3, 4, 5),
            payers AS (SELECT o.id, o.units, l.account_code AS code,
                              count(*) OVER (PARTITION BY o.id, o.revoked) AS n
                         FROM old o JOIN lots l ON l.lane = {lane} AND l.customer_id = %(customer)s
                          AND (l.revoked_at IS NOT NULL) = o.revoked
                          AND (l.expires_at <= o.occurred_at OR o.id > (
                              SELECT max(p.entry_id) FROM postings p
                                JOIN journal_entries r ON r.lane = p.lane AND r.id = p.entry_id
                               WHERE p.lane = l.lane AND p.account_id = l.account_id
                                 AND r.kind = CASE WHEN l.revoked_at IS NOT NULL THEN 'grant_reversal'
                                                   ELSE 'grant_expiry' END))
                        WHERE EXISTS (
                            SELECT 1 FROM charges c
                             WHERE c.lane = {lane} AND c.customer_id = %(customer)s
                               AND c.funding @> jsonb_build_array(jsonb_build_array(l.account_code))
                               AND c.id IN (SELECT a.charge_id FROM charge_adjustments a
                                             WHERE o.kind = 'rerate_adjustment' AND a.customer_id = %(customer)s
                                               AND a.lane = {lane} AND a.entry_id = o.id
                                            UNION ALL
                                            SELECT t.charge_id FROM true_up_charges t
                                             WHERE t.lane = {lane} AND t.customer_id = %(customer)s
                                               AND t.rerate_id IS NOT DISTINCT FROM o.metadata ->> 'rerate_id'
                                               AND (o.kind = 'rerate_adjustment'
                                                    OR t.period = o.metadata ->> 'period'))))
            SELECT code, sum(units)::text FROM (
                SELECT m.key AS code, m.value::numeric AS units
                  FROM j CROSS JOIN LATERAL jsonb_each_text(j.metadata -> 'closed_lots') m
                UNION ALL
                SELECT code, CASE WHEN n = 1 THEN units ELSE least(units, 0) END FROM payers) x
             WHERE code = ANY(%(codes)s::text[]) GROUP BY 1""", params)
    since = {code: int(units) for code, units in moved}
    for code in closed:
        lot = w.lots[code]
        base = held.get(code, 0) if lot.swept or lot.revoked else lot.balance
        lot.closed_with = base + since.get(code, 0)


async def true_ups_posted(conn: AsyncConnection, customer_id: str, period: str) -> dict[str, int]:
    """What the volume true-ups of `period` (its close's, and re-rates' corrections of it, wherever
    billed) stand at, by rule, at the book's price (not a discount's share): rule id -> units. Read
    from the rollups billed in `period` and later (each is billed in the period open when posted,
    never before `period`): every period's of the customer were read before."""
    lane = int(await _lane(conn, [customer_id]) or 0)
    prefix = f'line:["{period}","volume_true_up",'  # wallets.core.billing.line_item's, of that period
    rows = await conn.exec_driver_sql(
        f"""SELECT l ->> 4, sum(amount)::text FROM (
                SELECT substr(item, 6)::jsonb AS l, amount FROM (
                    SELECT item, amount FROM period_rollups
                     WHERE lane = {lane} AND customer_id = %s AND period >= %s
                    UNION ALL
                    SELECT unnest(items), unnest(amounts) FROM period_deltas
                     WHERE lane = {lane} AND customer_id = %s AND period >= %s) r
                 WHERE left(item, length(%s)) = %s) x
             WHERE l ->> 4 IS NOT NULL AND l ->> 7 IS NULL GROUP BY 1""",
        (customer_id, period, customer_id, period, prefix, prefix))
    return {rule_id: int(amount) for rule_id, amount in rows}


async def true_up_shares(conn: AsyncConnection, customer_id: str, period: str) -> tuple[int, dict[str, int]]:
    """What `period`'s true-ups stand at in all (a discount's share included), and what of them its
    close and re-rates gave each free allowance (its `free_allowance` lines of no price version):
    (units, allowance id -> units), wherever billed."""
    lane = int(await _lane(conn, [customer_id]) or 0)
    prefix = f'line:["{period}",'  # wallets.core.billing.line_item's, of that period
    rows = await conn.exec_driver_sql(
        f"""SELECT l ->> 1, l ->> 7, sum(amount)::text FROM (
                SELECT substr(item, 6)::jsonb AS l, amount FROM (
                    SELECT item, amount FROM period_rollups
                     WHERE lane = {lane} AND customer_id = %s AND period >= %s
                    UNION ALL
                    SELECT unnest(items), unnest(amounts) FROM period_deltas
                     WHERE lane = {lane} AND customer_id = %s AND period >= %s) r
                 WHERE left(item, length(%s)) = %s) x
             WHERE l ->> 1 = 'volume_true_up'
                OR (l ->> 1 = 'free_allowance' AND l ->> 7 IS NOT NULL AND l -> 8 = 'null'::jsonb)
             GROUP BY 1, 2""",
        (customer_id, period, customer_id, period, prefix, prefix))
    total, given = 0, {}
    for kind, override_id, amount in rows:
        if kind == "volume_true_up":
            total += int(amount)
        else:
            given[override_id] = int(amount)
    return total, given


async def true_up_given(conn: AsyncConnection, customer_id: str, period: str) -> dict[str, dict[int, int]]:
    """What the volume true-ups of `period` gave back of each of its charges so far, by rule: its
    close's and the re-rates' correcting it, with or without an entry, as true_up_charges keeps
    them (migration 0068; a rule kept with nothing given back: a row without a charge): rule id ->
    charge id -> units. A rule not kept is not there (a close before 0068): its re-rate shares the
    money back over the money of all its charges, as before."""
    lane = int(await _lane(conn, [customer_id]) or 0)
    rows = await conn.exec_driver_sql(
        f"""SELECT rule_id, charge_id, units::text FROM true_up_charges
             WHERE lane = {lane} AND customer_id = %(customer)s AND period = %(period)s""",
        {"customer": customer_id, "period": period})
    out: dict[str, dict[int, int]] = {}
    for rule_id, charge_id, amount in rows:
        given = out.setdefault(rule_id, {})
        if charge_id is not None:
            given[int(charge_id)] = given.get(int(charge_id), 0) + int(amount)
    return out


async def true_up_payers(conn: AsyncConnection, customer_id: str, period: str) -> dict[int, dict[str, int]]:
    """What each payer got back of each charge of `period` from its volume true-ups so far (their
    close's and the re-rates' correcting it, every rule), as true_up_payers keeps them (migration
    0082): charge id -> account -> units. Only the charges whose split is known: a charge a true-up
    gave back (or took back) something of with no rows there (written before 0082) is left out, and
    the re-rate reads it by its total as before (store.true_up_given)."""
    lane = int(await _lane(conn, [customer_id]) or 0)
    rows = await conn.exec_driver_sql(
        f"""SELECT true, rerate_id, charge_id, NULL, sum(units)::text FROM true_up_charges
             WHERE lane = {lane} AND customer_id = %(customer)s AND period = %(period)s AND charge_id IS NOT NULL
             GROUP BY rerate_id, charge_id
            UNION ALL
            SELECT false, rerate_id, charge_id, payer, sum(units)::text FROM true_up_payers
             WHERE lane = {lane} AND customer_id = %(customer)s AND period = %(period)s
             GROUP BY rerate_id, charge_id, payer""",
        {"customer": customer_id, "period": period})
    whole: dict[tuple[str | None, int], int] = {}  # (true-up, charge) -> what it gave back of it, every rule
    split: set[tuple[str | None, int]] = set()  # the (true-up, charge) pairs kept by payer
    out: dict[int, dict[str, int]] = {}
    for is_whole, rerate_id, charge_id, payer, units in rows:
        key = (rerate_id, int(charge_id))
        if is_whole:
            whole[key] = int(units)
            out.setdefault(key[1], {})
        else:
            split.add(key)
            got = out.setdefault(key[1], {})
            if payer is not None:
                got[payer] = got.get(payer, 0) + int(units)
    unknown = {key[1] for key, units in whole.items() if units and key not in split}
    return {charge: got for charge, got in out.items() if charge not in unknown}


async def finalized_invoices(conn: AsyncConnection, customer_id: str, periods: Sequence[str]
                             ) -> dict[str, tuple[str, str]]:
    """The customer's finalized invoices of `periods`: period -> (id, number)."""
    rows = await conn.exec_driver_sql(
        "SELECT period, id, number FROM invoices WHERE customer_id = %s AND period = ANY(%s)",
        (customer_id, list(periods)))
    return {period: (invoice_id, number) for period, invoice_id, number in rows}


async def noted_so_far(conn: AsyncConnection, invoice_ids: Iterable[str]) -> dict[str, tuple[int, int, int]]:
    """Of each finalized invoice of `invoice_ids`: (what its close's rounding added to its amount
    due: content `amount_due_rounding`, 0 on an invoice finalized before; its credit and debit
    notes' exact totals so far; what they moved: each one's `amount`, its total where issued before
    notes had one). A re-rate's note moves the running total rounded once (rerating.note_money)."""
    ids = sorted(set(invoice_ids))
    if not ids:
        return {}
    unit = 10 ** chart.ASSET_SCALE
    rows = await conn.exec_driver_sql(
        f"""SELECT i.id, coalesce((i.content ->> 'amount_due_rounding')::numeric * {unit}, 0)::numeric(38, 0)::text,
                   coalesce(sum(n.total), 0)::numeric(38, 0)::text,
                   coalesce(sum(coalesce((n.content ->> 'amount')::numeric * {unit}, n.total)), 0)::numeric(38, 0)::text
              FROM invoices i LEFT JOIN credit_notes n ON n.invoice_id = i.id
             WHERE i.id = ANY(%s) GROUP BY i.id, i.content""", (ids,))
    return {invoice_id: (int(r), int(t), int(m)) for invoice_id, r, t, m in rows}


def dumps(value: Any) -> str:
    """Rows as JSON for jsonb_to_recordset: datetimes as RFC 3339, bytes as base64."""
    return _ENCODER.encode(value).decode()


_ENCODER = msgspec.json.Encoder()


_LEGACY_IDEMPOTENCY = """INSERT INTO idempotency_keys (scope, key, request_hash, status, response)
               SELECT r.scope, r.key, decode(r.request_hash, 'base64'), r.status, r.response
                 FROM jsonb_to_recordset({p}::jsonb) AS r(scope text, key text,
                      request_hash text, status smallint, response jsonb)"""


# The usage report's figures of some charges (`source`), per customer, UTC day, model, price
# version and token type, and per every subset of the rest of the line key (level: a bit per part
# left out, 2 kind, 1 rule; 3 every line of a token type), by the report's own expressions
# (wallets/reports.py). The report always groups by token type (`reports.unit_groups`), so the
# levels that leave it out (4-7) are neither kept nor read (migration 0056). The rollups hold it
# for every charge folded (migration 0026: `wallets_fold_usage`).
USAGE_AGGREGATE = """
SELECT c.customer_id, (c.occurred_at AT TIME ZONE 'UTC')::date AS day, c.model, c.price_version,
       l ->> 'token_type' AS token_type, l ->> 'kind' AS kind, l ->> 'rule_id' AS rule_id,
       GROUPING(l ->> 'token_type', l ->> 'kind', l ->> 'rule_id') AS level,
       sum((l ->> 'quantity')::bigint)::numeric AS quantity, sum((l ->> 'amount_units')::numeric) AS amount,
       count(DISTINCT c.id) AS charges
  FROM {source} c CROSS JOIN LATERAL jsonb_array_elements(c.lines) l
 GROUP BY c.customer_id, (c.occurred_at AT TIME ZONE 'UTC')::date, c.model, c.price_version, l ->> 'token_type',
          CUBE (l ->> 'kind', l ->> 'rule_id')"""
USAGE_KEY = "customer_id, day, level, model, price_version, token_type, kind, rule_id"


async def fold_usage(conn: AsyncConnection) -> int:
    """Fold the batch's lane's queued charges into the usage rollups and its period deltas into
    the period rollups and usage counters (one statement); returns how many charges.
    Every reader is exact before and after: each adds what is still queued itself."""
    lane = LANE.get()
    if lane is None:
        raise ValueError("usage is folded in a lane")
    return int((await conn.exec_driver_sql("SELECT wallets_fold_usage(%s::smallint)", (lane,))).scalar_one())


async def counters_kept_queued(conn: AsyncConnection) -> int:
    """How many usage counters (customer, period, book, rule) their queued period deltas would take
    below 0 with their folded row: the fold leaves their customers' periods queued and warns
    (migration 0060), the same test as its own, over every lane."""
    found = await conn.exec_driver_sql(
        """SELECT count(*) FROM (
               SELECT lane, customer_id, period, book_id, rule_id, sum(quantity) AS quantity
                 FROM (SELECT lane, customer_id, period, unnest(books) AS book_id, unnest(rules) AS rule_id,
                              unnest(counts) AS quantity FROM period_deltas
                        WHERE (lane, customer_id, period) IN (
                              SELECT lane, customer_id, period FROM period_deltas WHERE 0 > ANY (counts))) x
                GROUP BY 1, 2, 3, 4, 5 HAVING sum(quantity) < 0) s
         WHERE s.quantity + coalesce((
               SELECT u.quantity FROM usage_counters u
                WHERE u.lane = s.lane AND u.customer_id = s.customer_id AND u.period = s.period
                  AND u.book_id = s.book_id AND u.rule_id = s.rule_id), 0) < 0""")
    return int(found.scalar_one())


def write_statement(rows: dict[str, list[dict[str, Any]]], *, first: tuple[str, tuple[Any, ...]] | None = None
                    ) -> tuple[str, tuple[Any, ...]] | None:
    """The one statement that writes every table's rows, in dependency order, in the batch's lane
    (the charges' trigger queues them for the usage rollups), and its parameters; None when there is
    nothing to run. Outside a wallet batch only idempotency records are written, unpartitioned.

    `first`, a query and its parameters, runs in the same statement and its rows are the
    statement's (a wallet batch's ledger_post call: the rows' foreign keys are checked when the
    statement ends, after the entries they name were posted)."""
    lane = LANE.get()
    parts: list[str] = []
    params: list[Any] = []
    if first is not None:
        parts.append(f"w_first AS ({first[0]})")
        params.extend(first[1])
    for table, sql in _WRITES.items():
        if rows.get(table):
            if lane is None:
                if table != "idempotency":
                    raise ValueError(f"{table} rows are written in a lane")
                sql = _LEGACY_IDEMPOTENCY
            parts.append(f"w_{table} AS ({sql.format(p='%s', lane=int(lane or 0))})")
            params.append(dumps(rows[table]))
    if not parts:
        return None
    return "WITH " + ",\n".join(parts) + (" SELECT * FROM w_first" if first is not None else " SELECT 1"), \
        tuple(params)


async def write(conn: AsyncConnection, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Write every table's rows in one statement (one round trip); see `write_statement`."""
    statement = write_statement(rows)
    if statement is not None:
        await conn.exec_driver_sql(*statement)


async def open_accounts(conn: AsyncConnection, specs: list[AccountSpec]) -> None:
    """Open lot accounts in one statement (their balance rows come from the ledger's trigger)."""
    if not specs:
        return
    await conn.exec_driver_sql(
        """INSERT INTO accounts (code, type, asset, customer_id, lower_bound)
           SELECT r.code, r.type, r.asset, r.customer_id, r.lower_bound
             FROM jsonb_to_recordset(%s::jsonb) AS r(code text, type text, asset text,
                  customer_id text, lower_bound numeric)""",
        (dumps([{"code": s.code, "type": s.type.value, "asset": s.asset, "customer_id": s.customer_id,
                 "lower_bound": s.lower_bound} for s in specs]),))


def reservation_row(r: Reservation, entry_id: int | None) -> dict[str, Any]:
    return {"id": r.id, "customer_id": r.customer_id, "request_id": r.request_id,
            "request_hash": r.request_hash, "model": r.model, "amount": r.amount,
            "captured": r.captured, "released": r.released, "charged": r.charged,
            "captures": r.captures, "status": r.status, "dimensions": r.dimensions,
            "estimate": r.estimate, "entry_id": entry_id, "created_at": r.created_at,
            "expires_at": r.expires_at, "closed_at": r.closed_at,
            "hold_prompt_tokens": (r.hold_tokens or (None, None))[0],
            "hold_output_tokens": (r.hold_tokens or (None, None))[1]}


def reservation_update(r: Reservation) -> dict[str, Any]:
    return {"id": r.id, "captured": r.captured, "released": r.released, "charged": r.charged,
            "captures": r.captures, "status": r.status, "closed_at": r.closed_at, "expires_at": r.expires_at}


def hold_rows(r: Reservation) -> list[dict[str, Any]]:
    return [{"reservation_id": r.id, "seq": h.seq, "account_code": h.account, "amount": h.amount}
            for h in r.holds]


def customer_update(w: Wallet, flagged: bool, period: tuple[datetime, datetime] | None) -> dict[str, Any]:
    """A customer's one update row: its alert flags (when `flagged`; None keeps them) and its
    open period's start and next close (when advanced)."""
    c = w.customer
    return {"id": c.id, "low_balance_alerted": c.low_balance_alerted if flagged else None,
            "blocked": c.blocked if flagged else None, "advanced": period is not None,
            "open_period_start": period[0] if period else None, "next_close_at": period[1] if period else None}


__all__ = ["Loaded", "StoredResponse", "chart", "fold_usage", "load", "open_accounts", "write"]

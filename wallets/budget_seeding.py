"""Reads what a budget made part-way through its window finds there, and writes it as the window's
first counts (the rule: wallets.core.budget_seeds). Runs in the unit of work that makes the budget,
under its lane's writer lock: no batch moves the calls between the read and the write."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from wallets import store
from wallets.core.budget_seeds import PastCall, seeds
from wallets.core.budgets import window_end
from wallets.core.rerating import charged_tokens
from wallets.model import Budget

_OPEN = ("held", "capturing")
_TOKENS = ("tokens", "input_tokens", "output_tokens")

# the customer's reservations held in the window, and for token budgets what their charges rated
_RESERVATIONS = """
SELECT r.id, r.model, r.dimensions, r.created_at, r.status, r.amount - r.captured - r.released, r.charged,
       r.captures, {tokens}
  FROM reservations r
 WHERE r.lane = %(lane)s AND r.customer_id = %(customer)s AND r.created_at >= %(start)s
   AND r.created_at < %(end)s"""
_CHARGE_USAGE = """(SELECT coalesce(jsonb_agg(jsonb_build_array(c.usage, c.lines)), '[]'::jsonb) FROM charges c
                     WHERE c.lane = r.lane AND c.reservation_id = r.id)"""
# its usage events of the window, by their own time, with their charges
_EVENTS = """
SELECT c.event_id, c.model, c.dimensions, c.occurred_at, c.charged, c.usage, c.lines
  FROM charges c
 WHERE c.lane = %(lane)s AND c.customer_id = %(customer)s AND c.event_id IS NOT NULL
   AND c.occurred_at >= %(start)s AND c.occurred_at < %(end)s"""


async def count_before(conn: AsyncConnection, lane: int, b: Budget, now: datetime) -> None:
    """Count in the new budget `b` what its window at `now` held and used before it was made."""
    found = seeds(b, [], now)
    if found is None:
        return
    start = found[0]
    end = window_end(b, start) if b.window != "lifetime" else None
    params = {"lane": lane, "customer": b.customer_id, "start": start, "end": end or datetime.max.replace(
        tzinfo=start.tzinfo)}
    tokens = b.metric in _TOKENS
    calls: list[PastCall] = []
    rows = await conn.exec_driver_sql(_RESERVATIONS.format(tokens=_CHARGE_USAGE if tokens else "NULL"), params)
    for rid, model, dimensions, at, status, left, charged, captures, usages in rows:
        counts: dict[str, int] = {}
        for usage, lines in usages or []:
            for kind, n in charged_tokens(usage, lines).items():
                counts[kind] = counts.get(kind, 0) + n
        is_open = status in _OPEN
        calls.append(PastCall(rid, model, dimensions or {}, at, int(left) if is_open else 0, int(charged), counts,
                              int(captures), is_open, is_open or status == "expired"))
    for event_id, model, dimensions, at, charged, usage, lines in await conn.exec_driver_sql(_EVENTS, params):
        calls.append(PastCall(f"event:{event_id}", model, dimensions or {}, at, 0, int(charged),
                              charged_tokens(usage, lines) if tokens else {}, 1, False, False))
    start, rows_of = seeds(b, calls, now) or (start, [])
    if not rows_of:
        return
    await conn.exec_driver_sql(
        "INSERT INTO budget_windows (lane, budget_id, window_start, used, held) VALUES (%s, %s, %s, %s, %s)",
        (lane, b.id, start, sum(r.used for r in rows_of), sum(r.held for r in rows_of)))
    await conn.exec_driver_sql(
        """INSERT INTO reservation_budgets (lane, reservation_id, budget_id, window_start, metric, held, used)
           SELECT %s, r.key, %s, %s, %s, r.held, r.used
             FROM jsonb_to_recordset(%s::jsonb) AS r(key text, held numeric, used numeric)""",
        (lane, b.id, start, b.metric, store.dumps([{"key": r.key, "held": r.held, "used": r.used}
                                                     for r in rows_of])))

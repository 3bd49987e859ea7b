"""Budget counts that come from outside a reservation's hold: what a budget made part-way through
its window finds there, written as the window's first counts (the rule: wallets.core.budget_seeds;
in the unit of work that makes the budget, under its lane's writer lock: no batch moves the calls
between the read and the write), and what a re-rate moves (wallets.core.budget_rerates; in the
transaction of the re-rate's adjustments)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from pricing.units import TYPE_OF_FIELD
from wallets import store
from wallets.core.budget_rerates import Counted, moves
from wallets.core.budget_seeds import PastCall, seeds
from wallets.core.budgets import ROLLING, matches, window_end, window_start
from wallets.core.commands import Command, RerateCharges
from wallets.core.decision import OutboxEvent
from wallets.core.rerating import charged_tokens
from wallets.core.state import State
from wallets.model import Budget

_OPEN = ("held", "capturing")
_MOVABLE = "('held', 'capturing', 'expired')"
_TOKENS = ("tokens", "input_tokens", "output_tokens")

# the customer's reservations held in the window ({which}: all of them, or those a charge may still
# move), and for token budgets what their charges rated
_RESERVATIONS = """
SELECT r.id, r.model, r.dimensions, r.created_at, r.status, r.amount - r.captured - r.released, r.charged,
       r.captures, {tokens}, r.hold_prompt_tokens, r.hold_output_tokens
  FROM reservations r
 WHERE r.lane = %(lane)s AND r.customer_id = %(customer)s AND r.created_at >= %(start)s
   AND r.created_at < %(end)s{which}"""
_CHARGE_USAGE = """(SELECT coalesce(jsonb_agg(jsonb_build_array(c.usage, c.lines)), '[]'::jsonb) FROM charges c
                     WHERE c.lane = r.lane AND c.reservation_id = r.id)"""
# the closed ones, summed by scope: (model, dimensions, charged, how many were charged)
_CLOSED = f"""
SELECT r.model, r.dimensions, sum(r.charged), count(*) FILTER (WHERE r.captures > 0)
  FROM reservations r
 WHERE r.lane = %(lane)s AND r.customer_id = %(customer)s AND r.created_at >= %(start)s
   AND r.created_at < %(end)s AND r.status NOT IN {_MOVABLE}
 GROUP BY 1, 2"""
# its usage events of the window, by their own time, with their charges
_EVENTS = """
SELECT c.event_id, c.model, c.dimensions, c.occurred_at, c.charged, c.usage, c.lines
  FROM charges c
 WHERE c.lane = %(lane)s AND c.customer_id = %(customer)s AND c.event_id IS NOT NULL
   AND c.occurred_at >= %(start)s AND c.occurred_at < %(end)s"""
_EVENT_SUMS = """
SELECT c.model, c.dimensions, sum(c.charged), count(*)
  FROM charges c
 WHERE c.lane = %(lane)s AND c.customer_id = %(customer)s AND c.event_id IS NOT NULL
   AND c.occurred_at >= %(start)s AND c.occurred_at < %(end)s
 GROUP BY 1, 2"""
# a charge's counts (x.usage, x.lines) as rows (field: a canonical usage field's name, else a usage
# line's token type; name; n), which _token_type names as rerating.charged_tokens does
_TOKENS_OF_CHARGE = """CROSS JOIN LATERAL (
     SELECT true AS field, e.key AS name, e.value::text::numeric AS n
       FROM jsonb_each(x.usage -> 'canonical') e
      WHERE jsonb_typeof(x.usage -> 'canonical') = 'object' AND e.value::text ~ '^-?[0-9]+$'
     UNION ALL
     SELECT false, l ->> 'token_type', (l ->> 'quantity')::numeric
       FROM jsonb_array_elements(CASE WHEN jsonb_typeof(x.usage -> 'canonical') = 'object' THEN '[]'::jsonb
                                      ELSE x.lines END) l
      WHERE l ->> 'kind' = 'usage' AND coalesce(l ->> 'token_type', 'request') NOT IN ('', 'request')) t"""
# a token budget's closed reservations and usage events, their charges' tokens summed in the
# database by scope (rerating.charged_tokens' rule: a charge's canonical usage's whole counts by
# field, named to their rating token types after (pricing.units.TYPE_OF_FIELD); else its usage lines'
# quantities by token type, the request aside): each call was read into Python with its charges'
# JSON, 20-25 s for 200,000 calls and 100,000 events under the lane's lock
_CLOSED_TOKENS = f"""
SELECT x.model, x.dimensions, t.field, t.name, sum(t.n)
  FROM (SELECT r.model, r.dimensions, c.usage, c.lines
          FROM reservations r JOIN charges c ON c.lane = r.lane AND c.reservation_id = r.id
         WHERE r.lane = %(lane)s AND r.customer_id = %(customer)s AND r.created_at >= %(start)s
           AND r.created_at < %(end)s AND r.status NOT IN {_MOVABLE}
        UNION ALL
        SELECT c.model, c.dimensions, c.usage, c.lines
          FROM charges c
         WHERE c.lane = %(lane)s AND c.customer_id = %(customer)s AND c.event_id IS NOT NULL
           AND c.occurred_at >= %(start)s AND c.occurred_at < %(end)s) x
 {_TOKENS_OF_CHARGE}
 GROUP BY 1, 2, 3, 4"""
# the re-rates of the window's calls (a money budget counts each call as they left it), with the
# scope and time of the call each corrects and whether a charge may still move that call; those of
# periods named from %(since)s on (`_since`, migration 0069), each with its charge and call by their
# keys (LIMIT 1: a probe each, never a hash of the lane's partitions). Before, the customer's every
# adjustment was read, and the lane's whole charges and reservations partitions hashed for them
# (856 ms at 70,969 adjustments, under the lane's lock)
_ADJUSTMENTS = f"""
SELECT coalesce(c.reservation_id, 'event:' || c.event_id), a.id, a.new_amount - a.old_amount,
       coalesce(r.model, c.model), coalesce(r.dimensions, c.dimensions), coalesce(r.created_at, c.occurred_at),
       coalesce(r.status IN {_MOVABLE}, false)
  FROM charge_adjustments a
 CROSS JOIN LATERAL (SELECT c.reservation_id, c.event_id, c.model, c.dimensions, c.occurred_at FROM charges c
                      WHERE c.lane = %(lane)s AND c.id = a.charge_id LIMIT 1) c
  LEFT JOIN LATERAL (SELECT r.model, r.dimensions, r.created_at, r.status FROM reservations r
                      WHERE r.lane = %(lane)s AND r.id = c.reservation_id LIMIT 1) r ON true
 WHERE a.customer_id = %(customer)s AND a.lane = %(lane)s AND a.period >= %(since)s
   AND coalesce(r.created_at, c.occurred_at) >= %(start)s AND coalesce(r.created_at, c.occurred_at) < %(end)s
 ORDER BY a.id"""


async def alert(conn: AsyncConnection, customer_id: str, events: Iterable[OutboxEvent]) -> None:
    """Write the alerts of a budget made, changed or moved (once each: the outbox keeps one per key)."""
    for event in events:
        await conn.exec_driver_sql(
            """INSERT INTO outbox (lane, topic, customer_id, dedup_key, payload)
               SELECT lane, %s, id, %s, %s::jsonb FROM customers WHERE id = %s
               ON CONFLICT (lane, dedup_key) DO NOTHING""",
            (event.topic, event.dedup_key, store.dumps(event.payload), customer_id))


async def count_before(conn: AsyncConnection, lane: int, b: Budget, now: datetime) -> None:
    """Count in the new budget `b` what its window at `now` held and used before it was made."""
    found = seeds(b, [], now)
    if found is None:
        return
    start = found[0]
    if b.metric == "money":  # the re-rates it counts from here on (count_rerates): those after these
        await conn.exec_driver_sql(
            """UPDATE budgets SET seeded_through = (SELECT coalesce(max(a.id), 0) FROM charge_adjustments a
                                                     WHERE a.customer_id = %s AND a.lane = %s)
                WHERE lane = %s AND id = %s""", (b.customer_id, lane, lane, b.id))
    end = window_end(b, start) if b.window != "lifetime" else None
    params = {"lane": lane, "customer": b.customer_id, "start": start, "end": end or datetime.max.replace(
        tzinfo=start.tzinfo)}
    if b.window == "minute":  # the seconds less than a minute from this one, either way (as _live counts)
        params["start"] = start - ROLLING + timedelta(seconds=1)
    params["since"] = _since(params["start"])
    if b.window == "minute":
        calls = await _each_call(conn, params)
        if b.metric == "money":
            calls = await _with_rerates(conn, params, calls)
    elif b.metric in _TOKENS:
        calls = await _each_call(conn, params, summed=True)
    else:
        calls = await _summed(conn, params, b.metric == "money")
    if end is not None:  # the calls timed ahead of the clock into a window after this one, one by one
        calls += await _ahead(conn, {**params, "start": params["end"], "end": datetime.max.replace(tzinfo=UTC)},
                              b.metric == "money")
    start, rows_of = seeds(b, calls, now) or (start, [])
    if not rows_of:
        return
    windows: dict[datetime, list[int]] = {}
    for r in rows_of:
        w = windows.setdefault(r.start or start, [0, 0])
        w[0], w[1] = w[0] + r.used, w[1] + r.held
    await conn.exec_driver_sql(
        """INSERT INTO budget_windows (lane, budget_id, window_start, used, held)
           SELECT %s, %s, w.start, w.used, w.held
             FROM jsonb_to_recordset(%s::jsonb) AS w(start timestamptz, used numeric, held numeric)""",
        (lane, b.id, store.dumps([{"start": s, "used": u, "held": h} for s, (u, h) in sorted(windows.items())])))
    await conn.exec_driver_sql(
        """INSERT INTO reservation_budgets (lane, reservation_id, budget_id, window_start, metric, held, used)
           SELECT %s, r.key, %s, r.start, %s, r.held, r.used
             FROM jsonb_to_recordset(%s::jsonb) AS r(key text, start timestamptz, held numeric, used numeric)""",
        (lane, b.id, b.metric, store.dumps([{"key": r.key, "start": r.start or start, "held": r.held,
                                              "used": r.used} for r in rows_of])))


def _token_type(field: bool, name: str | None) -> str | None:
    """The rating token type of a _TOKENS_OF_CHARGE row (None: a count charged_tokens leaves out)."""
    token_type = TYPE_OF_FIELD.get(name or "") if field else name
    return None if token_type is None or token_type == "request" else token_type


async def _each_call(conn: AsyncConnection, params: dict[str, Any], *, summed: bool = False) -> list[PastCall]:
    """The window's calls one by one, with the tokens their charges rated (a token budget); with
    `summed`, those a charge may still move, and the rest's tokens summed by scope (_CLOSED_TOKENS)."""
    calls: list[PastCall] = []
    rows = await conn.exec_driver_sql(_RESERVATIONS.format(
        tokens=_CHARGE_USAGE, which=f" AND r.status IN {_MOVABLE}" if summed else ""), params)
    for rid, model, dimensions, at, status, left, charged, captures, usages, prompt, output in rows:
        counts: dict[str, int] = {}
        for usage, lines in usages or []:
            for kind, n in charged_tokens(usage, lines).items():
                counts[kind] = counts.get(kind, 0) + n
        is_open = status in _OPEN
        calls.append(PastCall(rid, model, dimensions or {}, at, int(left) if is_open else 0, int(charged), counts,
                              int(captures), is_open, is_open or status == "expired",
                              hold_tokens=(_opt(prompt), _opt(output))))
    if summed:
        scopes: dict[tuple[str, str], tuple[str, Any, dict[str, int]]] = {}
        for model, dimensions, field, name, n in await conn.exec_driver_sql(_CLOSED_TOKENS, params):
            token_type = _token_type(field, name)
            if token_type is None:
                continue
            scope = scopes.setdefault((model, store.dumps(dimensions or {})), (model, dimensions or {}, {}))
            scope[2][token_type] = scope[2].get(token_type, 0) + int(n)
        return calls + [PastCall("", model, dimensions, params["start"], 0, 0, tokens, 0, False, False)
                        for model, dimensions, tokens in scopes.values()]
    return calls + await _events(conn, params)


async def _events(conn: AsyncConnection, params: dict[str, Any]) -> list[PastCall]:
    """The usage events timed in [start, end), one by one, with the tokens their charges rated."""
    return [PastCall(f"event:{event_id}", model, dimensions or {}, at, 0, int(charged), charged_tokens(usage, lines),
                     1, False, False)
            for event_id, model, dimensions, at, charged, usage, lines in await conn.exec_driver_sql(_EVENTS, params)]


async def _ahead(conn: AsyncConnection, params: dict[str, Any], money: bool) -> list[PastCall]:
    """The calls from `start` on, after the budget's current window: the usage events timed ahead of
    the clock (by up to 300 s) and the reservations a host whose clock runs ahead held (its hold's
    time is its clock's), one by one, and, for money, with their re-rates so far. Each counts in its
    own window, as in a budget made before it. Before, a budget made at 23:59:55 counted none of the
    holds a host 20 s ahead took at 00:00:10 (by its clock) in the next day, and an event re-rated
    from $0.70 to $1.40 counted $0.70 there."""
    calls = await _each_call(conn, params)
    return await _with_rerates(conn, params, calls) if money and calls else calls  # most windows: none ahead


async def _with_rerates(conn: AsyncConnection, params: dict[str, Any], calls: list[PastCall]) -> list[PastCall]:
    """`calls` (one by one) with the re-rates of their charges so far (a money rolling minute, or the
    calls ahead of the window)."""
    adjusted: dict[str, list[tuple[int, int]]] = {}
    for key, adjustment_id, delta, *_ in await conn.exec_driver_sql(_ADJUSTMENTS, params):
        adjusted.setdefault(key, []).append((int(adjustment_id), int(delta)))
    return [replace(c, adjusted=tuple(adjusted.get(c.key, ()))) for c in calls]


def _since(start: datetime) -> str:
    """The earliest period an adjustment of a call made from `start` on names: a charge's adjustment
    names the period of its usage (before ff96269, the later one billing it), a period is named by
    the local month it starts in and lasts a month, so a call's is named for its own local month or
    the one before; local time is within a day of UTC."""
    day = (start - timedelta(days=1)).astimezone(UTC)
    year, month = (day.year, day.month - 1) if day.month > 1 else (day.year - 1, 12)
    return f"{year:04d}-{month:02d}"


def _opt(n: Any) -> int | None:
    return None if n is None else int(n)


async def _summed(conn: AsyncConnection, params: dict[str, Any], money: bool) -> list[PastCall]:
    """The window's calls for a money or request budget: those a charge may still move one by one,
    the closed reservations and the usage events summed by scope (model and dimensions) in the
    database (a lifetime budget over 200,000 closed calls read each into Python: 5 s in the
    transaction holding the lane's lock), and, for money, the re-rates of the calls as they left them."""
    calls: list[PastCall] = []
    adjusted: dict[str, list[tuple[int, int]]] = {}
    if money:
        for key, adjustment_id, delta, model, dimensions, at, movable in await conn.exec_driver_sql(
                _ADJUSTMENTS, params):
            if movable:
                adjusted.setdefault(key, []).append((int(adjustment_id), int(delta)))
            else:  # a closed call's difference, counted beside what it was charged (summed below)
                calls.append(PastCall(key, model, dimensions or {}, at, 0, 0, {}, 0, False, False,
                                      ((int(adjustment_id), int(delta)),)))
    rows = await conn.exec_driver_sql(_RESERVATIONS.format(tokens="NULL", which=f" AND r.status IN {_MOVABLE}"),
                                      params)
    for rid, model, dimensions, at, status, left, charged, captures, *_ in rows:
        is_open = status in _OPEN
        calls.append(PastCall(rid, model, dimensions or {}, at, int(left) if is_open else 0, int(charged), {},
                              int(captures), is_open, True, tuple(adjusted.get(rid, ()))))
    for query in (_CLOSED, _EVENT_SUMS):
        for model, dimensions, charged, charges in await conn.exec_driver_sql(query, params):
            calls.append(PastCall("", model, dimensions or {}, params["start"], 0, int(charged or 0), {},
                                  int(charges), False, False, calls=int(charges)))
    return calls


# the adjustments of a re-rate (of one customer) and the money budget rows of the calls they correct,
# that this re-rate has not moved yet
_ADJUSTED = """
SELECT a.id, a.new_amount - a.old_amount, x.budget_id, x.window_start, a.lane
  FROM charge_adjustments a
  JOIN charges c ON c.lane = a.lane AND c.id = a.charge_id
  JOIN reservation_budgets x ON x.lane = a.lane AND x.metric = 'money'
       AND x.reservation_id = coalesce(c.reservation_id, 'event:' || c.event_id)
 WHERE a.rerate_id = %(rerate)s AND a.customer_id = %(customer)s
   AND NOT EXISTS (SELECT 1 FROM reservation_budgets y WHERE y.lane = a.lane AND y.budget_id = x.budget_id
                      AND y.reservation_id = 'rerate:' || a.id)
 ORDER BY a.id, x.budget_id"""


# the adjustments of a re-rate (of one customer) made after a money budget made mid-window was counted
# (seeded_through, migration 0058), of calls with no row of their own in it: those its before: row
# counted if in its window and scope (closed before it was made), with the call's scope and time
_ADJUSTED_BEFORE = """
SELECT a.id, a.new_amount - a.old_amount, y.budget_id, y.window_start, coalesce(r.model, c.model),
       coalesce(r.dimensions, c.dimensions), coalesce(r.created_at, c.occurred_at), a.lane
  FROM charge_adjustments a
  JOIN charges c ON c.lane = a.lane AND c.id = a.charge_id
  LEFT JOIN reservations r ON r.lane = c.lane AND r.id = c.reservation_id
  JOIN budgets b ON b.lane = a.lane AND b.customer_id = a.customer_id AND b.metric = 'money'
       AND b.deleted_at IS NULL AND a.id > b.seeded_through
  JOIN reservation_budgets y ON y.lane = b.lane AND y.budget_id = b.id AND y.reservation_id = 'before:' || b.id
 WHERE a.rerate_id = %(rerate)s AND a.customer_id = %(customer)s
   AND NOT EXISTS (SELECT 1 FROM reservation_budgets x WHERE x.lane = a.lane AND x.budget_id = b.id
                      AND x.reservation_id IN (coalesce(c.reservation_id, 'event:' || c.event_id), 'rerate:' || a.id))
 ORDER BY a.id, b.id"""


async def count_rerates(conn: AsyncConnection, commands: Iterable[Command], now: datetime) -> None:
    """Move the money budgets' current windows by what the re-rate commands of a batch adjusted of
    the charges they counted (in a call's own row, or in the before: row of a budget made after
    the call closed), in the batch's transaction (after its writes, under its lane's lock):
    the adjustments and the budget moves they make land together or not at all. Each move is kept
    once (its row's key), so applying a re-rate again also finishes what an earlier tokentill, which
    moved them in a later transaction, left undone, and moves nothing twice."""
    for rerate_id, customer_id in sorted({(c.rerate_id, c.customer_id) for c in commands
                                          if isinstance(c, RerateCharges)}):
        params = {"rerate": rerate_id, "customer": customer_id}
        own = list(await conn.exec_driver_sql(_ADJUSTED, params))
        before = list(await conn.exec_driver_sql(_ADJUSTED_BEFORE, params))
        if not own and not before:
            continue
        lane = (own or before)[0][-1]
        found = [Counted(int(i), int(d), b, s) for i, d, b, s, _ in own]
        w = (await store.load(conn, [customer_id], now=now)).wallets[customer_id]
        for i, d, budget_id, start, model, dimensions, at, _ in before:
            b = w.budgets.get(budget_id)
            if b is not None and window_start(b, at) == start and matches(b, model, dimensions or {}):
                found.append(Counted(int(i), int(d), budget_id, start))
        found.sort(key=lambda c: (c.adjustment_id, c.budget_id))
        done, alerts = moves(State(customer_id, None), w.budgets, found, w.customer.currency, now)
        for m in done:
            await conn.exec_driver_sql(
                """INSERT INTO reservation_budgets (lane, reservation_id, budget_id, window_start, metric, held,
                                                    used) VALUES (%s, %s, %s, %s, 'money', 0, %s)""",
                (lane, m.key, m.budget_id, m.window_start, m.delta))
            await conn.exec_driver_sql(
                "UPDATE budget_windows SET used = used + %s WHERE lane = %s AND budget_id = %s AND window_start = %s",
                (m.delta, lane, m.budget_id, m.window_start))
        await alert(conn, customer_id, alerts)

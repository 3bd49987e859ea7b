"""A money or request budget made part-way through its window sums its closed calls and usage
events in the database by scope (budget_seeding._summed: _CLOSED, _EVENT_SUMS, and for money the
closed calls' re-rates), where the calls a charge may still move are read one by one: what it seeds
must be what the straightforward read seeds, each call and event one by one with its re-rates
(budget_seeding._each_call and _with_rerates, as a rolling minute reads them), for any history:
calls of every status in and out of the window and the budget's scope, another customer's, usage
events, re-rates of either of periods before and after the earliest one read (`_since`).

The production queries run unchanged against temporary tables of the same names, which shadow the
real ones in the transaction (pg_temp is searched first), filled with the drawn rows."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wallets import store
from wallets.budget_seeding import _each_call, _since, _summed, _with_rerates
from wallets.core.budget_seeds import seeds
from wallets.core.budgets import window_end, window_start
from wallets.model import Budget

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
_TABLES = """
CREATE TEMP TABLE reservations (id text, lane smallint, customer_id text, model text, dimensions jsonb,
    created_at timestamptz, status text, amount numeric, captured numeric, released numeric, charged numeric,
    captures int, hold_prompt_tokens bigint, hold_output_tokens bigint) ON COMMIT DROP;
CREATE TEMP TABLE charges (id bigint, lane smallint, customer_id text, reservation_id text, event_id text,
    model text, dimensions jsonb, occurred_at timestamptz, charged numeric, usage jsonb, lines jsonb) ON COMMIT DROP;
CREATE TEMP TABLE charge_adjustments (id bigint, lane smallint, customer_id text, charge_id bigint, period text,
    old_amount numeric, new_amount numeric) ON COMMIT DROP;
"""

_at = st.integers(0, 70 * 24 * 3600).map(lambda s: NOW - timedelta(seconds=s))  # back to mid-September
_scope = st.tuples(st.sampled_from(["m1", "m2"]), st.sampled_from([{}, {"tier": "a"}, {"tier": "b"}]))
_money = st.integers(0, 10**9)
_adjustments = st.lists(st.tuples(st.sampled_from(["2026-08", "2026-10", "2026-11"]), st.integers(-10**6, 10**6)),
                        max_size=2)
call = st.fixed_dictionaries({
    "customer": st.sampled_from(["cx", "cx", "cx", "other"]), "scope": _scope, "at": _at,
    "status": st.sampled_from(["held", "capturing", "settled", "released", "expired"]),
    "amount": _money, "captured": _money, "charged": _money, "captures": st.sampled_from([0, 0, 1, 2]),
    "adjustments": _adjustments})
event = st.fixed_dictionaries({"customer": st.sampled_from(["cx", "cx", "other"]), "scope": _scope, "at": _at,
                               "charged": _money, "adjustments": _adjustments})
budget = st.tuples(st.sampled_from(["lifetime", "month", "day"]), st.sampled_from(["money", "requests"]),
                   st.sampled_from([None, "m1"]), st.sampled_from([{}, {"tier": "a"}]))


def _rows(calls: list[dict[str, Any]], events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    reservations, charges, adjustments = [], [], []
    for n, c in enumerate(calls):
        rid = f"r{n}"
        model, dimensions = c["scope"]
        reservations.append({"id": rid, "lane": 3, "customer_id": c["customer"], "model": model,
                             "dimensions": dimensions, "created_at": c["at"], "status": c["status"],
                             "amount": c["amount"] + c["captured"], "captured": c["captured"], "released": 0,
                             "charged": c["charged"], "captures": c["captures"]})
        if c["captures"]:
            charges.append({"id": len(charges) + 1, "lane": 3, "customer_id": c["customer"], "reservation_id": rid,
                            "model": model, "dimensions": dimensions, "occurred_at": c["at"],
                            "charged": c["charged"], "usage": {}, "lines": []})
            adjustments += [(charges[-1], period, delta) for period, delta in c["adjustments"]]
    for n, e in enumerate(events):
        model, dimensions = e["scope"]
        charges.append({"id": len(charges) + 1, "lane": 3, "customer_id": e["customer"], "event_id": f"e{n}",
                        "model": model, "dimensions": dimensions, "occurred_at": e["at"], "charged": e["charged"],
                        "usage": {}, "lines": []})
        adjustments += [(charges[-1], period, delta) for period, delta in e["adjustments"]]
    made = [{"id": i + 1, "lane": 3, "customer_id": charge["customer_id"], "charge_id": charge["id"],
             "period": period, "old_amount": 10**9, "new_amount": 10**9 + delta}
            for i, (charge, period, delta) in enumerate(adjustments)]
    return {"reservations": reservations, "charges": charges, "charge_adjustments": made}


async def _both(db, rows: dict[str, list[dict[str, Any]]], b: Budget):
    async def work(conn):
        await conn.exec_driver_sql(_TABLES)
        for table, items in rows.items():
            await conn.exec_driver_sql(
                f"INSERT INTO {table} SELECT * FROM jsonb_populate_recordset(NULL::{table}, %s::jsonb)",
                (store.dumps(items),))
        start = window_start(b, NOW)
        params = {"lane": 3, "customer": "cx", "start": start,
                  "end": window_end(b, start) or datetime.max.replace(tzinfo=UTC), "since": _since(start)}
        summed = await _summed(conn, dict(params), b.metric == "money")
        one_by_one = await _each_call(conn, dict(params))
        if b.metric == "money":
            one_by_one = await _with_rerates(conn, dict(params), one_by_one)
        return seeds(b, summed, NOW), seeds(b, one_by_one, NOW)

    return await db.run(work)


def _budget(window: str, metric: str, model: str | None, dimensions: dict[str, str]) -> Budget:
    return Budget(id="b1", customer_id="cx", name="", api_key=None, model=model, dimensions=dimensions,
                  window=window, metric=metric, limit=10**18, mode="soft", thresholds=(), time_zone="UTC",
                  created_at=NOW)


def _sorted(found):
    start, rows = found or (None, [])
    return start, sorted(rows, key=lambda r: (r.key, r.start or NOW, r.held, r.used))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(calls=st.lists(call, max_size=8), events=st.lists(event, max_size=4), shape=budget)
def test_the_database_sums_seed_what_each_call_read_one_by_one_seeds(loop_db, calls, events, shape):
    loop, db = loop_db
    summed, one_by_one = loop.run_until_complete(_both(db, _rows(calls, events), _budget(*shape)))
    assert _sorted(summed) == _sorted(one_by_one)


def test_a_hand_worked_history_seeds_its_sums(loop_db):
    """November's month money budget of model m1: a settled call of $3 (re-rated -$1 in November's
    period, +$5 in August's: before the earliest period read, so not counted), a released one
    that charged nothing, an open hold of $2 that charged $1, an event of $4, a settled call of
    m2 and one of October, and another customer's: used 3 - 1 + 4 = 6 in the before: row, the
    open hold its own row (held 2, used 1). A requests budget: 2 charged calls closed (the settled
    call and the event), the open one used 1 (its capture: no longer held)."""
    loop, db = loop_db
    u = 10**9
    nov, octo = datetime(2026, 11, 10, tzinfo=UTC), datetime(2026, 10, 10, tzinfo=UTC)
    base = {"customer": "cx", "scope": ("m1", {}), "at": nov, "amount": 0, "adjustments": []}
    calls = [{**base, "status": "settled", "captured": 3 * u, "charged": 3 * u, "captures": 1,
              "adjustments": [("2026-11", -u), ("2026-08", 5 * u)]},
             {**base, "status": "released", "captured": 0, "charged": 0, "captures": 0},
             {**base, "status": "held", "amount": 2 * u, "captured": u, "charged": u, "captures": 1},
             {**base, "scope": ("m2", {}), "status": "settled", "captured": 7 * u, "charged": 7 * u, "captures": 1},
             {**base, "at": octo, "status": "settled", "captured": 9 * u, "charged": 9 * u, "captures": 1},
             {**base, "customer": "other", "status": "settled", "captured": 8 * u, "charged": 8 * u, "captures": 1}]
    events = [{"customer": "cx", "scope": ("m1", {}), "at": nov, "charged": 4 * u, "adjustments": []}]
    rows = _rows(calls, events)
    nov_1 = datetime(2026, 11, 1, tzinfo=UTC)
    for metric, before, own in (("money", 6 * u, (2 * u, u)), ("requests", 2, (0, 1))):
        summed, one_by_one = loop.run_until_complete(_both(db, rows, _budget("month", metric, "m1", {})))
        assert summed[0] == nov_1
        assert sorted((r.key, r.held, r.used) for r in summed[1]) == [("before:b1", 0, before), ("r2", *own)], metric
        assert _sorted(summed) == _sorted(one_by_one)

"""A budget made part-way through its window counts what the window already holds and used: the
calls charged since it began, the holds still open (and their settles), the usage events of its
time, as a budget made before them would have; not the earlier windows', nor other scopes'."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from wallet_kit import Kit, usd

from tests.integration.plan_reads import explained, rows_read
from wallets.budget_seeding import count_before
from wallets.budgets import BudgetSpec
from wallets.errors import BudgetExceededError
from wallets.model import Budget


async def _budget(kit: Kit, cid: str, **spec):
    return await kit.service.budgets.create(BudgetSpec(customer_id=cid, **spec))


async def test_a_daily_budget_made_at_three_counts_the_days_charges_holds_and_events_before_it(shared_kit: Kit):
    kit, clock = shared_kit, shared_kit.clock
    cid = await kit.customer("midday")
    await kit.top_up(cid, "100.00")
    clock.now = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)  # yesterday (in UTC): another window
    yesterday = await kit.reserve(cid, "y1", amount="5.00")
    await kit.settle(cid, yesterday.reservation.id, input_tokens=5000)  # $5.00
    clock.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    settled = await kit.reserve(cid, "d1", amount="7.00")
    await kit.settle(cid, settled.reservation.id, input_tokens=6000)  # $6.00 ($1.00 per 1,000 in)
    released = await kit.reserve(cid, "d2", amount="4.00")
    await kit.release(cid, released.reservation.id)  # counts nothing
    open_hold = await kit.reserve(cid, "d3", amount="2.00")  # still held at 15:00
    await kit.usage_event(cid, "e1", output_tokens=500)  # $1.00 ($2.00 per 1,000 out)
    clock.now = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    view = await _budget(kit, cid, window="day", metric="money", limit=usd("10.00"), thresholds=(50, 80, 95))
    # 6.00 + 1.00 used, 2.00 held: 9.00 of 10.00, where it said 0 and let 10.00 more through today
    assert (view.used, view.held) == (usd("7.00"), usd("2.00"))
    with pytest.raises(BudgetExceededError) as refused:
        await kit.reserve(cid, "d4", amount="1.50")
    assert (refused.value.context["used"], refused.value.context["held"]) == ("7.00", "2.00")
    await kit.reserve(cid, "d5", amount="1.00")  # exactly to the limit
    # the hold open before the budget settles in it: 2.00 held becomes 1.50 used
    await kit.settle(cid, open_hold.reservation.id, input_tokens=1500)
    now = await kit.service.budgets.get(view.budget.id)
    assert (now.used, now.held) == (usd("8.50"), usd("1.00"))
    # made at 90 %: the 50 and 80 % thresholds it stands past alerted once, on creation (9.00 of
    # it); 95 % when the 1.00 hold took it to 10.00
    rows = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT payload->>'threshold', payload->>'used', payload->>'held' FROM outbox "
        "WHERE customer_id = :c AND topic = 'budget.threshold_crossed' ORDER BY id"), {"c": cid}))
    assert [tuple(r) for r in rows] == [("50", "7.00", "2.00"), ("80", "7.00", "2.00"), ("95", "7.00", "3.00")]
    # a budget of another model counts none of it
    other = await _budget(kit, cid, window="day", metric="money", limit=usd("10.00"), model="other-*")
    assert (other.used, other.held) == (0, 0)
    assert (await kit.verify()).ok


async def test_a_budget_made_over_holds_past_its_limit_is_made_and_refuses_the_next_hold(shared_kit: Kit):
    kit, clock = shared_kit, shared_kit.clock
    clock.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    cid = await kit.customer("over")
    await kit.top_up(cid, "100.00")
    held = await kit.reserve(cid, "o1", amount="12.00")
    view = await _budget(kit, cid, window="month", metric="money", limit=usd("10.00"))
    assert (view.used, view.held) == (0, usd("12.00"))
    lifetime = await _budget(kit, cid, window="lifetime", metric="money", limit=usd("100.00"), mode="soft")
    assert (lifetime.used, lifetime.held) == (0, usd("12.00"))
    with pytest.raises(BudgetExceededError):
        await kit.reserve(cid, "o2", amount="0.01")
    await kit.release(cid, held.reservation.id)
    assert (await kit.service.budgets.get(view.budget.id)).held == 0
    await kit.reserve(cid, "o2", amount="10.00")
    assert (await kit.verify()).ok


async def test_request_and_token_budgets_made_mid_day_count_the_days_calls_and_tokens(shared_kit: Kit):
    kit, clock = shared_kit, shared_kit.clock
    clock.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    cid = await kit.customer("calls")
    await kit.top_up(cid, "100.00")
    first = await kit.reserve(cid, "c1", amount="5.00")
    await kit.settle(cid, first.reservation.id, input_tokens=1200, output_tokens=300)
    await kit.reserve(cid, "c2", amount="1.00")  # open: one request held
    await kit.usage_event(cid, "ce1", input_tokens=100)
    clock.now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    calls = await _budget(kit, cid, window="day", metric="requests", limit=3)
    assert (calls.used, calls.held) == (2, 1)
    with pytest.raises(BudgetExceededError):
        await kit.reserve(cid, "c3", amount="1.00")
    tokens = await _budget(kit, cid, window="day", metric="tokens", limit=10_000)
    assert (tokens.used, tokens.held) == (1600, 0)
    inputs = await _budget(kit, cid, window="day", metric="input_tokens", limit=10_000)
    assert inputs.used == 1300
    assert (await kit.verify()).ok


async def test_a_new_york_day_made_on_the_25_hour_day_counts_its_calls_from_local_midnight(shared_kit: Kit):
    kit, clock = shared_kit, shared_kit.clock
    cid = await kit.customer("dst")
    await kit.top_up(cid, "100.00")
    # November 1st 2026 in New York: 00:00 EDT (04:00 UTC) to 00:00 EST on the 2nd (05:00 UTC), 25 hours
    for at, amount in ((datetime(2026, 11, 1, 3, 59, tzinfo=UTC), "1.00"),  # 23:59 EDT, October 31st
                       (datetime(2026, 11, 1, 4, 0, tzinfo=UTC), "2.00"),  # 00:00 EDT: the day's first
                       (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), "4.00"),  # 01:30 EDT
                       (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), "8.00")):  # 01:30 EST, the hour again
        clock.now = at
        await kit.reserve(cid, f"n{at.hour}{at.minute}", amount=amount)
    clock.now = datetime(2026, 11, 2, 4, 30, tzinfo=UTC)  # 23:30 EST, still November 1st
    view = await _budget(kit, cid, window="day", metric="money", limit=usd("20.00"), time_zone="America/New_York")
    assert (view.window_start, view.resets_at) == (datetime(2026, 11, 1, 4, 0, tzinfo=UTC),
                                                   datetime(2026, 11, 2, 5, 0, tzinfo=UTC))
    assert (view.used, view.held) == (0, usd("14.00"))
    assert (await kit.verify()).ok


async def test_a_lifetime_budget_over_30000_closed_calls_sums_them_in_the_database_exactly(kit: Kit):
    # a lifetime budget read each of the customer's calls into Python under its lane's lock (200,000
    # closed calls: 5 s, past the 5 s a writer's transaction may stay idle; 3ec8d8c measured it);
    # now the closed ones are summed in the database: the sums must stay exact over many calls
    # (how long it takes is a benchmark's business, not this test's)
    clock = kit.clock
    clock.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    cid = await kit.customer("long")
    await kit.top_up(cid, "100.00")
    first = await kit.reserve(cid, "l1", amount="1.00")
    await kit.settle(cid, first.reservation.id, input_tokens=10)  # $0.01 ($1.00 per 1,000 in)
    released = await kit.reserve(cid, "l2", amount="1.00")
    await kit.release(cid, released.reservation.id)  # no charge: counts no request
    open_hold = await kit.reserve(cid, "l3", amount="2.00")
    await kit.usage_event(cid, "le", output_tokens=5)  # $0.01 ($2.00 per 1,000 out)

    async def clone(conn) -> None:  # 30,000 more closed calls as the first, in the weeks before
        cols = [c for (c,) in await conn.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'reservations' "
            "AND table_schema = current_schema() ORDER BY ordinal_position"))]
        picked = ", ".join({"id": "id || '-' || g", "request_id": "request_id || '-' || g",
                            "created_at": "created_at - g * interval '10 seconds'"}.get(c, c) for c in cols)
        await conn.execute(text("ALTER TABLE reservations DISABLE TRIGGER USER"))
        await conn.execute(text(f"INSERT INTO reservations ({', '.join(cols)}) SELECT {picked} FROM reservations, "
                                f"generate_series(1, 30000) g WHERE id = :r"), {"r": first.reservation.id})
        await conn.execute(text("ALTER TABLE reservations ENABLE TRIGGER USER"))
        await conn.execute(text("ANALYZE reservations"))

    await kit.db.run(clone)
    money = await _budget(kit, cid, window="lifetime", metric="money", limit=usd("100000.00"))
    # 30,001 calls of $0.01 and the event's $0.01 used, the open $2.00 held
    assert (money.used, money.held) == (usd("300.02"), usd("2.00"))
    requests = await _budget(kit, cid, window="lifetime", metric="requests", limit=1_000_000)
    assert (requests.used, requests.held) == (30_002, 1)  # the released call charged nothing
    await kit.settle(cid, open_hold.reservation.id, input_tokens=1000)  # $1.00: the open hold's row moves
    assert (await kit.service.budgets.get(money.budget.id)).used == usd("301.02")


async def test_a_day_budget_made_later_counts_a_call_and_an_event_at_its_exact_start_and_not_a_microsecond_before(
        shared_kit: Kit):
    # New York's November 23rd begins at 05:00 UTC (EST): an event and a call at that instant are the
    # day's, one a microsecond before is the 22nd's, as a budget made before them would count them
    kit, clock = shared_kit, shared_kit.clock
    cid = await kit.customer("edge-start")
    await kit.top_up(cid, "100.00")
    start = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
    await kit.usage_event(cid, "before", output_tokens=1000, at=start - timedelta(microseconds=1))  # $2.00
    await kit.usage_event(cid, "at", output_tokens=500, at=start)  # $1.00
    clock.now = start - timedelta(microseconds=1)
    late = await kit.reserve(cid, "late", amount="4.00")
    await kit.settle(cid, late.reservation.id, input_tokens=4000)  # $4.00 on the 22nd
    clock.now = start
    first = await kit.reserve(cid, "first", amount="3.00")
    await kit.settle(cid, first.reservation.id, input_tokens=3000)  # $3.00 on the 23rd
    clock.now = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)  # 15:00 in New York
    view = await _budget(kit, cid, window="day", metric="money", limit=usd("10.00"), time_zone="America/New_York")
    assert (view.used, view.held) == (usd("4.00"), 0)  # 1.00 + 3.00
    assert (await kit.verify()).ok


async def test_a_token_budget_made_while_holds_are_open_counts_their_tokens_at_once(shared_kit: Kit):
    # a money budget counted an open hold at once, a token budget only once it settled: with 1,000 and
    # 450 tokens held and 150 used, a 2,100-token hard day made took a 600-token hold (750, not 2,200)
    kit, clock = shared_kit, shared_kit.clock
    clock.now = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    cid = await kit.customer("openh")
    await kit.top_up(cid, "100.00")
    first = await kit.reserve(cid, "t1", input_tokens=1000)  # 1,000 tokens held
    second = await kit.reserve(cid, "t2", input_tokens=400, max_output_tokens=200)  # 600 held
    await kit.settle(cid, second.reservation.id, input_tokens=100, output_tokens=50, final=False,
                     capture_id="cap1")  # 150 used, 600 - 150 = 450 still held
    await kit.reserve(cid, "t0", amount="1.00")  # an amount alone: no tokens to count
    clock.now = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    day = await _budget(kit, cid, window="day", metric="tokens", limit=2100)
    assert (day.used, day.held) == (150, 1000 + 450)
    outputs = await _budget(kit, cid, window="day", metric="output_tokens", limit=1000)
    assert (outputs.used, outputs.held) == (50, 200 - 50)  # the capture's 50 output came off its 200
    with pytest.raises(BudgetExceededError) as refused:  # 150 + 1,450 + 600 = 2,200 > 2,100
        await kit.reserve(cid, "t3", input_tokens=600)
    assert (refused.value.context["used"], refused.value.context["held"]) == (150, 1450)
    await kit.reserve(cid, "t4", input_tokens=500)  # 2,100: exactly the limit
    # the hold open before the budget settles in it: its 1,000 held become 800 used
    await kit.settle(cid, first.reservation.id, input_tokens=800)
    now = await kit.service.budgets.get(day.budget.id)
    assert (now.used, now.held) == (150 + 800, 450 + 500)
    assert (await kit.verify()).ok


async def test_a_rolling_minute_made_at_half_past_counts_what_the_last_minute_held_and_used(shared_kit: Kit):
    # a rolling minute counted from when it was made: a 1,500-token minute made at 12:00:30, after
    # 12:00:10 used 800 and 12:00:20 held 300, counted 0 and took a 500-token hold (1,600 in a minute)
    kit, clock = shared_kit, shared_kit.clock
    cid = await kit.customer("minute")
    await kit.top_up(cid, "100.00")
    clock.now = datetime(2026, 11, 24, 11, 59, 30, tzinfo=UTC)  # a minute before 12:00:30: lapsed by then
    old = await kit.reserve(cid, "m0", input_tokens=5000)
    await kit.settle(cid, old.reservation.id, input_tokens=5000)
    clock.now = datetime(2026, 11, 24, 12, 0, 10, tzinfo=UTC)
    used = await kit.reserve(cid, "m1", input_tokens=1000)
    await kit.settle(cid, used.reservation.id, input_tokens=800)  # 800 used in 12:00:10's second
    clock.now = datetime(2026, 11, 24, 12, 0, 20, tzinfo=UTC)
    held = await kit.reserve(cid, "m2", input_tokens=300)  # 300 held in 12:00:20's
    clock.now = datetime(2026, 11, 24, 12, 0, 30, tzinfo=UTC)
    tpm = await _budget(kit, cid, window="minute", metric="tokens", limit=1500)
    assert (tpm.used, tpm.held) == (800, 300)
    rpm = await _budget(kit, cid, window="minute", metric="requests", limit=3)
    assert (rpm.used, rpm.held) == (1, 1)
    # in money: 800 input tokens charged $0.80 ($1.00 per 1,000), 300 held $0.30
    money = await _budget(kit, cid, window="minute", metric="money", limit=usd("5.00"))
    assert (money.used, money.held) == (usd("0.80"), usd("0.30"))
    with pytest.raises(BudgetExceededError) as refused:  # 800 + 300 + 500 = 1,600 > 1,500
        await kit.reserve(cid, "m3", input_tokens=500)
    # 12:00:10's 800 lapse at 12:01:10, 40 s on; then 300 + 500 fit
    assert (refused.value.context["used"], refused.value.context["held"]) == (800, 300)
    assert refused.value.context["retry_after_seconds"] == 40
    await kit.reserve(cid, "m4", input_tokens=400)  # 1,500: exactly the limit; 3 requests
    with pytest.raises(BudgetExceededError):  # a fourth request in the minute
        await kit.reserve(cid, "m5", input_tokens=0)
    await kit.settle(cid, held.reservation.id, input_tokens=100)  # in 12:00:20's second: 300 held -> 100 used
    now = await kit.service.budgets.get(tpm.budget.id)
    assert (now.used, now.held) == (800 + 100, 400)
    clock.now = datetime(2026, 11, 24, 12, 1, 10, tzinfo=UTC)  # 12:00:10 has lapsed: 100 used, 400 held
    now = await kit.service.budgets.get(tpm.budget.id)
    assert (now.used, now.held) == (100, 400)
    await kit.reserve(cid, "m6", input_tokens=1000)  # 1,500 again; the requests: 12:00:20's, :30's and this
    assert (await kit.verify()).ok


@pytest.mark.parametrize("column", ["hold_prompt_tokens", "hold_output_tokens"])
async def test_the_database_refuses_a_reservation_holding_fewer_than_0_tokens(shared_kit: Kit, column):
    # 0062 adds the CHECKs NOT VALID (no scan of every reservation under an exclusive lock): a row
    # written since is checked all the same
    kit = shared_kit
    cid = await kit.customer(f"neg-{column}")
    await kit.top_up(cid, "10.00")
    held = await kit.reserve(cid, "n1", input_tokens=100, max_output_tokens=10)

    async def tamper(conn):
        await conn.execute(text(f"UPDATE reservations SET {column} = -1 WHERE id = :r"),
                           {"r": held.reservation.id})

    with pytest.raises(Exception, match=f"reservations_{column}_check"):
        await kit.db.run(tamper)
    rows = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT hold_prompt_tokens, hold_output_tokens FROM reservations WHERE id = :r"),
        {"r": held.reservation.id}))
    assert [tuple(r) for r in rows] == [(100, 10)]


async def test_a_month_budget_made_mid_month_reads_the_months_calls_not_the_customers_history(kit: Kit):
    """Five calls settled in September, five in October, two in November and one held: a month
    requests budget made on November 10th counts November's two charged calls used and the open one
    held, and reads only November's three reservations (once for the calls a charge may still move,
    once for the closed ones: 6 rows at most). Before, no index led by the customer and the time, so
    it read all 13 of the customer's reservations twice (26; at 200,000 a seq scan of the lane's
    partition, 130 and 116 ms under its lock)."""
    clock = kit.clock
    cid = await kit.customer("history")
    await kit.top_up(cid, "100.00")
    for day, calls in ((datetime(2026, 9, 10, 9, 0, tzinfo=UTC), 5), (datetime(2026, 10, 10, 9, 0, tzinfo=UTC), 5),
                       (datetime(2026, 11, 10, 9, 0, tzinfo=UTC), 2)):
        clock.now = day
        for n in range(calls):
            call = await kit.reserve(cid, f"h{day.month}-{n}", amount="1.00")
            await kit.settle(cid, call.reservation.id, input_tokens=10)  # $0.01: charged, counts a request
    await kit.reserve(cid, "h-open", amount="2.00", ttl_seconds=3600)
    clock.now = now = datetime(2026, 11, 10, 9, 30, tzinfo=UTC)
    lane = await kit.service.engine.lane_of(cid)
    made = Budget(id="bud-history", customer_id=cid, name="", api_key=None, model=None, dimensions={},
                  window="month", metric="requests", limit=100, mode="soft", thresholds=(), time_zone="UTC",
                  created_at=now)

    _, spy = await explained(kit.db, lambda conn: count_before(conn, lane, made, now),
                             analyze=("reservations", "charges"), writes=False)

    [(_, budget_id, windows)] = [params for sql, params in spy.skipped if "INSERT INTO budget_windows" in sql]
    assert budget_id == "bud-history"
    assert json.loads(windows) == [{"start": "2026-11-01T00:00:00Z", "used": 2, "held": 1}]  # November's
    assert rows_read(spy.plans, "reservations") <= 6


async def test_a_lifetime_token_budget_sums_the_closed_calls_tokens_in_the_database(kit: Kit):
    """A call of 10 input tokens settled ($0.01), cloned 3,000 times in the weeks before with its
    charge (1,000 of the clones' charges without their canonical usage, as charges stored before it:
    their usage lines count), a released call, a hold still open (of an amount: no tokens kept), and
    a usage event of 5 output tokens. A lifetime input-token budget counts 3,001 x 10 = 30,010 used,
    a tokens budget 30,015 (the event's 5 too), none held; and each reads back from the database the
    open hold and a row per scope and counted field of the rest (3: the canonical input tokens, the
    usage lines' input, the event's canonical output tokens), where each call was a row with its
    charges' JSON (3,004 rows; 200,000 calls and 100,000 events: 15-25 s under the lane's lock)."""
    clock = kit.clock
    clock.now = now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    cid = await kit.customer("long-tokens")
    await kit.top_up(cid, "100.00")
    first = await kit.reserve(cid, "t1", amount="1.00")
    await kit.settle(cid, first.reservation.id, input_tokens=10)
    released = await kit.reserve(cid, "t2", amount="1.00")
    await kit.release(cid, released.reservation.id)
    await kit.reserve(cid, "t3", amount="2.00")
    await kit.usage_event(cid, "te", output_tokens=5)

    async def clone(conn) -> None:
        for table, key in (("reservations", "id"), ("charges", "reservation_id")):
            cols = [c for (c,) in await conn.execute(text(
                "SELECT column_name FROM information_schema.columns WHERE table_name = :t "
                "AND table_schema = current_schema() ORDER BY ordinal_position"), {"t": table})
                    if (table, c) != ("charges", "id")]  # a charge's own id is the next
            picked = ", ".join({key: f"{key} || '-' || g", "request_id": "request_id || '-' || g",
                                "created_at": "created_at - g * interval '10 seconds'",
                                "occurred_at": "occurred_at - g * interval '10 seconds'",
                                "usage": "CASE WHEN g <= 1000 THEN usage - 'canonical' ELSE usage END"}.get(c, c)
                               for c in cols)
            await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            await conn.execute(text(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {picked} FROM {table}, "
                                    f"generate_series(1, 3000) g WHERE {key} = :r"), {"r": first.reservation.id})
            await conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
            await conn.execute(text(f"ANALYZE {table}"))

    await kit.db.run(clone)
    lane = await kit.service.engine.lane_of(cid)
    for metric, used in (("input_tokens", 30_010), ("tokens", 30_015)):
        made = Budget(id=f"bud-{metric}", customer_id=cid, name="", api_key=None, model=None, dimensions={},
                      window="lifetime", metric=metric, limit=1_000_000, mode="soft", thresholds=(),
                      time_zone="UTC", created_at=now)
        _, spy = await explained(kit.db, lambda conn, made=made: count_before(conn, lane, made, now),
                                 analyze=("reservations", "charges"), writes=False)
        [(_, _, windows)] = [params for sql, params in spy.skipped if "INSERT INTO budget_windows" in sql]
        assert json.loads(windows) == [{"start": "1970-01-01T00:00:00Z", "used": used, "held": 0}], metric
        assert sum(plan["Actual Rows"] for plan in spy.plans) <= 4, metric  # the open hold, and the 3 sums


async def test_a_budget_made_after_a_usage_event_timed_into_its_next_window_counts_it_there(shared_kit: Kit):
    # a usage event may be timed up to 300 s ahead of the server's clock; a budget made after it counted
    # only its current window, so an event timed into the next day (or more than 60 s ahead, in a
    # rolling minute) was never counted in that window, where a budget made before it counted it
    kit, clock = shared_kit, shared_kit.clock
    cid = await kit.customer("ahead")  # UTC
    await kit.top_up(cid, "100.00")
    clock.now = datetime(2026, 11, 24, 23, 58, tzinfo=UTC)
    await kit.usage_event(cid, "next-day", input_tokens=700, at=datetime(2026, 11, 25, 0, 2, tzinfo=UTC))
    clock.now = datetime(2026, 11, 24, 23, 58, 30, tzinfo=UTC)
    day = await _budget(kit, cid, window="day", metric="tokens", limit=1000)
    money = await _budget(kit, cid, window="day", metric="money", limit=usd("10.00"))
    calls = await _budget(kit, cid, window="day", metric="requests", limit=10)
    tpm = await _budget(kit, cid, window="minute", metric="tokens", limit=1000)
    assert [(v.used, v.held) for v in (day, money, calls, tpm)] == [(0, 0)] * 4  # nothing on the 24th
    clock.now = datetime(2026, 11, 25, 0, 2, 30, tzinfo=UTC)  # 00:02:00's second is in the minute
    # 700 input tokens: 700 tokens, $0.70 at $1.00 per 1,000, one request, in the 25th and its 00:02:00
    assert [(await kit.service.budgets.get(v.budget.id)).used for v in (day, money, calls, tpm)] == \
        [700, usd("0.70"), 1, 700]
    with pytest.raises(BudgetExceededError) as refused:  # 700 + 400 = 1,100 > 1,000 (the day's and the minute's)
        await kit.reserve(cid, "a1", input_tokens=400)
    assert refused.value.context["used"] == 700
    await kit.reserve(cid, "a2", input_tokens=300)  # 1,000: exactly the limit
    assert (await kit.verify()).ok

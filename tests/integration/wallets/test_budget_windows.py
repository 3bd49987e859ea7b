"""Acceptance 2 of issue 12, with a stepped clock through the engine and PostgreSQL: a rolling
minute admits again as the window slides, a calendar month in America/New_York rolls over at
local midnight, and a hold that spans a rollover is counted where it was held and returned there
exactly."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from wallet_kit import Kit, usd

from wallets.budgets import BudgetSpec
from wallets.commands import RecordUsage
from wallets.errors import BudgetExceededError
from wallets.service import CustomerSpec


async def _budget(kit: Kit, cid: str, **spec) -> str:
    view = await kit.service.budgets.create(BudgetSpec(customer_id=cid, **spec))
    return view.budget.id


async def _window(kit: Kit, budget_id: str, start: datetime) -> tuple[int, int]:
    row = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT used::bigint, held::bigint FROM budget_windows WHERE budget_id = :b AND window_start = :s"),
        {"b": budget_id, "s": start}))
    return tuple(row.one())


async def test_a_tokens_per_minute_budget_admits_again_as_the_window_slides(shared_kit: Kit):
    kit, clock = shared_kit, shared_kit.clock
    clock.now = datetime(2026, 11, 23, 12, 0, 0, 500000, tzinfo=UTC)
    cid = await kit.customer("tpm")
    await kit.top_up(cid, "100.00")
    budget_id = await _budget(kit, cid, window="minute", metric="tokens", limit=1000)
    first = await kit.reserve(cid, "t1", input_tokens=600)
    clock.advance(seconds=10)
    with pytest.raises(BudgetExceededError) as refused:
        await kit.reserve(cid, "t2", input_tokens=600)
    assert refused.value.context["retry_after_seconds"] == 50  # the 12:00:00 second lapses at 12:01:00
    assert (refused.value.context["used"], refused.value.context["held"]) == (0, 600)
    clock.now = datetime(2026, 11, 23, 12, 0, 59, 900000, tzinfo=UTC)
    with pytest.raises(BudgetExceededError):
        await kit.reserve(cid, "t2", input_tokens=600)
    clock.now = datetime(2026, 11, 23, 12, 1, 0, 500000, tzinfo=UTC)
    second = await kit.reserve(cid, "t2", input_tokens=600)
    # the first hold, still open, lapsed with its second: settling it counts there, not now
    await kit.settle(cid, first.reservation.id, input_tokens=100)
    assert await _window(kit, budget_id, datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)) == (100, 0)
    view = await kit.service.budgets.get(budget_id)
    assert (view.used, view.held) == (0, 600)
    await kit.release(cid, second.reservation.id)
    assert (await kit.service.budgets.get(budget_id)).held == 0


async def test_a_new_york_month_rolls_at_local_midnight_and_a_spanning_hold_returns_where_it_was_held(
        shared_kit: Kit):
    kit, clock = shared_kit, shared_kit.clock
    november = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)  # Nov 1 00:00 EDT (DST ends at 02:00 that day)
    december = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)  # Dec 1 00:00 EST
    clock.now = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)  # Nov 30 19:30 in New York: December in UTC
    cid = await kit.customer("month")
    await kit.top_up(cid, "1000.00")
    budget_id = await _budget(kit, cid, window="month", metric="money", limit=usd("10.00"),
                              time_zone="America/New_York")
    spanning = await kit.reserve(cid, "m1", amount="8.00")
    view = await kit.service.budgets.get(budget_id)
    assert (view.window_start, view.resets_at, view.held) == (november, december, usd("8.00"))
    clock.now = datetime(2026, 12, 1, 4, 59, 59, tzinfo=UTC)  # 23:59:59 in New York
    with pytest.raises(BudgetExceededError) as refused:
        await kit.reserve(cid, "m2", amount="3.00")
    assert refused.value.context["resets_at"] == "2026-12-01T05:00:00Z"  # Z, as the API spells times
    assert "retry_after_seconds" not in refused.value.context  # a calendar window
    clock.now = december  # local midnight: a new month
    await kit.reserve(cid, "m2", amount="3.00")
    # the November hold settles in December for $5.00: November counts it, December is untouched
    await kit.settle(cid, spanning.reservation.id, input_tokens=5000)
    assert await _window(kit, budget_id, november) == (usd("5.00"), 0)
    assert await _window(kit, budget_id, december) == (0, usd("3.00"))
    view = await kit.service.budgets.get(budget_id)
    assert (view.window_start, view.used, view.held) == (december, 0, usd("3.00"))
    assert (await kit.verify()).ok


async def test_raw_sql_cannot_take_a_hard_budget_past_its_limit_or_rewrite_what_was_counted(kit: Kit):
    cid = await kit.customer("guard")
    await kit.top_up(cid, "100.00")
    hard = await _budget(kit, cid, window="lifetime", metric="money", limit=usd("10.00"))
    soft = await _budget(kit, cid, window="lifetime", metric="money", limit=usd("10.00"), mode="soft")
    held = await kit.reserve(cid, "g1", amount="6.00")
    refused = [
        ("UPDATE budget_windows SET held = held + 5000000000 WHERE budget_id = :b", hard),  # 11.00 held
        ("UPDATE budget_windows SET held = held + 5000000000, used = used + 1 WHERE budget_id = :b", hard),
        ("UPDATE budget_windows SET used = -1 WHERE budget_id = :b", soft),
        ("DELETE FROM budget_windows WHERE budget_id = :b", soft),
        ("UPDATE reservation_budgets SET held = held + 1 WHERE budget_id = :b", soft),
        ("UPDATE reservation_budgets SET used = used - 1 WHERE budget_id = :b", soft),
        ("DELETE FROM reservation_budgets WHERE budget_id = :b", soft),
        ("UPDATE budgets SET window_kind = 'day' WHERE id = :b", soft),
        ("DELETE FROM budgets WHERE id = :b", soft),
        ("TRUNCATE budget_windows CASCADE", soft),
        ("TRUNCATE reservation_budgets_l0, reservation_budgets_l1", soft),
    ]
    for sql, budget_id in refused:
        with pytest.raises(Exception, match=r"budget|reservation_budgets|never"):
            await kit.db.run(lambda conn, q=sql, b=budget_id: conn.execute(text(q), {"b": b}))
    assert await _window(kit, hard, datetime(1970, 1, 1, tzinfo=UTC)) == (0, usd("6.00"))
    # a soft budget's window may grow by hand, but verify names it: it no longer equals its holds
    await kit.db.run(lambda conn: conn.execute(text(
        "UPDATE budget_windows SET held = held + 1 WHERE budget_id = :b"), {"b": soft}))
    report = await kit.verify()
    assert not report.ok
    assert [c.name for c in report.checks if not c.ok] == ["budgets"]
    assert soft in next(c.detail for c in report.checks if not c.ok)
    await kit.release(cid, held.reservation.id)


async def test_a_soft_budget_alerts_each_threshold_once_per_window_and_again_in_the_next(shared_kit: Kit):
    kit, clock = shared_kit, shared_kit.clock
    clock.now = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
    cid = await kit.customer("alerts")
    await kit.top_up(cid, "100.00")
    await _budget(kit, cid, window="day", metric="money", limit=usd("1.00"), mode="soft",
                              thresholds=(50, 100), time_zone="Europe/Paris")
    for request_id, amount in (("a1", "0.60"), ("a2", "0.60"), ("a3", "0.60")):  # 50 %, 100 %, nothing new
        await kit.reserve(cid, request_id, amount=amount)
    clock.now = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)  # midnight in Paris: a new day
    for request_id in ("b1", "b2"):
        await kit.reserve(cid, request_id, amount="0.60")
    rows = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT payload FROM outbox WHERE customer_id = :c AND topic = 'budget.threshold_crossed' ORDER BY id"),
        {"c": cid}))
    payloads = [p for (p,) in rows]
    alerts = [(p["window_start"], p["threshold"], p["held"]) for p in payloads]
    # every time of an event's data as the API spells times (Z), like the webhook's own timestamp:
    # created_at said +00:00 beside a window_start in Z
    assert {p["created_at"] for p in payloads} == {"2026-11-23T20:00:00Z", "2026-11-23T23:00:00Z"}
    assert alerts == [("2026-11-22T23:00:00Z", 50, "0.60"), ("2026-11-22T23:00:00Z", 100, "1.20"),
                      ("2026-11-23T23:00:00Z", 50, "0.60"), ("2026-11-23T23:00:00Z", 100, "1.20")]


async def test_a_budget_without_a_time_zone_follows_its_customers(kit: Kit):
    """A budget with no time zone of its own counts in its customer's: customers carry a
    `time_zone` (their billing cycle's, migration 0017), UTC unless set at creation."""
    utc = await kit.customer("utc")
    utc_budget = await _budget(kit, utc, window="day", metric="requests", limit=5)
    assert (await kit.service.budgets.get(utc_budget)).budget.time_zone == "UTC"
    cid = f"zone-{kit.tag}"
    await kit.service.create_customer(CustomerSpec(cid, "zone", "USD", "prepaid", kit.book, 0, None,
                                                   time_zone="Asia/Tokyo"))
    await kit.top_up(cid, "10.00")
    tokyo_budget = await _budget(kit, cid, window="day", metric="requests", limit=5)
    kit.clock.now = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)  # Nov 24 01:00 in Tokyo
    view = await kit.service.budgets.get(tokyo_budget)
    assert (view.budget.time_zone, view.window_start) == ("Asia/Tokyo", datetime(2026, 11, 23, 15, 0, tzinfo=UTC))
    await kit.reserve(cid, "z1", amount="1.00")
    assert (await kit.service.budgets.get(tokyo_budget)).held == 1


async def test_a_settle_after_the_rollover_that_takes_the_held_window_past_a_threshold_alerts_there(
        shared_kit: Kit):
    """A hold counts in the window it was taken in, and so does its settle: the settle that takes
    that window past a threshold after it rolled over crosses it there, and says so. It alerted
    only while the window was still the current one: a request held at 23:00 and settled after
    midnight for more than the day's limit passed it without a word."""
    kit, clock = shared_kit, shared_kit.clock
    november = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)  # Nov 1 00:00 in New York
    clock.now = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)  # Nov 30 23:00 in New York
    cid = await kit.customer("late")
    await kit.top_up(cid, "100.00")
    budget_id = await _budget(kit, cid, window="month", metric="money", limit=usd("10.00"), mode="soft",
                              thresholds=(50, 100, 200), time_zone="America/New_York")
    held = await kit.reserve(cid, "l1", amount="4.00")  # 40 %: no alert yet
    clock.now = datetime(2026, 12, 1, 5, 30, tzinfo=UTC)  # December in New York
    await kit.settle(cid, held.reservation.id, input_tokens=12000)  # $12.00, counted in November
    assert await _window(kit, budget_id, november) == (usd("12.00"), 0)
    # a post-hoc usage event of November, reported in December, counts there too
    await kit.service.submit(RecordUsage(customer_id=cid, event_id="late-e1", model="model-x",
                                        occurred_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
                                        request_hash=b"late-e1", tokens={"input": 9000}, usage={"input": 9000}))
    assert await _window(kit, budget_id, november) == (usd("21.00"), 0)
    rows = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT payload FROM outbox WHERE customer_id = :c AND topic = 'budget.threshold_crossed' ORDER BY id"),
        {"c": cid}))
    alerts = [(p["threshold"], p["window_start"], p["resets_at"], p["used"], p["held"]) for (p,) in rows]
    assert alerts == [(50, "2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z", "12.00", "0.00"),
                      (100, "2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z", "12.00", "0.00"),
                      (200, "2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z", "21.00", "0.00")]
    assert (await kit.verify()).ok


async def test_a_hold_of_a_month_with_a_daylight_saving_hour_more_settled_the_day_after_alerts_there(
        shared_kit: Kit):
    """October in Berlin lasts 31 days and an hour (the clocks go back). A hold of October settled
    on November 1st at 23:30, 32 days and 30 minutes after October began, takes October past its
    threshold: it alerts there, as a 31-day month's hold settled the day after it ended does. The
    load read 32 days back and the rule looked no further, so it passed 100 % without a word."""
    kit, clock = shared_kit, shared_kit.clock
    october = datetime(2026, 9, 30, 22, 0, tzinfo=UTC)  # Oct 1 00:00 in Berlin (CEST)
    clock.now = datetime(2026, 10, 31, 22, 30, tzinfo=UTC)  # Oct 31 23:30 in Berlin (CET)
    cid = await kit.customer("berlin-dst")
    await kit.top_up(cid, "100.00")
    budget_id = await _budget(kit, cid, window="month", metric="money", limit=usd("10.00"), mode="soft",
                              thresholds=(100,), time_zone="Europe/Berlin")
    held = await kit.reserve(cid, "b1", amount="4.00")
    clock.now = datetime(2026, 11, 1, 22, 30, tzinfo=UTC)  # Nov 1 23:30 in Berlin
    await kit.settle(cid, held.reservation.id, input_tokens=12000)  # $12.00, counted in October
    assert await _window(kit, budget_id, october) == (usd("12.00"), 0)
    rows = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT payload FROM outbox WHERE customer_id = :c AND topic = 'budget.threshold_crossed' ORDER BY id"),
        {"c": cid}))
    assert [(p["threshold"], p["window_start"], p["used"]) for (p,) in rows] == [
        (100, "2026-09-30T22:00:00Z", "12.00")]
    assert (await kit.verify()).ok


async def test_a_rolling_minute_counts_the_holds_of_a_process_whose_clock_runs_ahead(shared_kit: Kit):
    """Processes on several hosts disagree on the time by a little: holds another process wrote in
    a second that is still to come here count now (they were counted nowhere: the rule and the
    database summed the 60 seconds up to this one, and 900 + 200 tokens passed a limit of 1,000)."""
    kit, clock = shared_kit, shared_kit.clock
    cid = await kit.customer("skew")
    await kit.top_up(cid, "100.00")
    budget_id = await _budget(kit, cid, window="minute", metric="tokens", limit=1000)
    clock.now = datetime(2026, 11, 23, 12, 0, 1, 50000, tzinfo=UTC)  # the process 100 ms ahead
    await kit.reserve(cid, "ahead", input_tokens=900)
    clock.now = datetime(2026, 11, 23, 12, 0, 0, 950000, tzinfo=UTC)  # this one, still in the second before
    with pytest.raises(BudgetExceededError) as refused:
        await kit.reserve(cid, "behind", input_tokens=200)
    assert (refused.value.context["held"], refused.value.context["retry_after_seconds"]) == (900, 61)
    # the database refuses it too: a hold in the earlier second that takes the minute past the limit
    with pytest.raises(Exception, match="past its hard limit"):
        await kit.db.run(lambda conn: conn.execute(text(
            "INSERT INTO budget_windows (lane, budget_id, window_start, used, held) "
            "SELECT lane, id, '2026-11-23T12:00:00Z', 0, 200 FROM budgets WHERE id = :b"), {"b": budget_id}))

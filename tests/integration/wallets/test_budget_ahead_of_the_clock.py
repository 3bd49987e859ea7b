"""Calls timed ahead of the clock count, move and alert in their own budget window: a usage event
may be timed up to 300 s ahead (23:58 posts one of 00:02 the next day), and a host whose clock runs
ahead holds at its own time. model-x: $1.00 per 1,000 input tokens (wallet_kit.BOOK)."""
from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text
from wallet_kit import BOOK, Clock, Kit, usd

from wallets import books, rerating
from wallets.budgets import BudgetSpec
from wallets.errors import BudgetExceededError

EVE = datetime(2026, 11, 24, 23, 58, tzinfo=UTC)
AHEAD = datetime(2026, 11, 25, 0, 2, tzinfo=UTC)  # 4 minutes ahead of EVE, in the next day
NEXT_DAY = "2026-11-25T00:00:00Z"


async def _budget(kit: Kit, cid: str, **spec):
    return (await kit.service.budgets.create(BudgetSpec(customer_id=cid, **spec))).budget.id


async def _alerts(kit: Kit, cid: str) -> dict[str, list[tuple[str, str, str]]]:
    """The customer's budget.threshold_crossed events by budget: (threshold, used, window_start)."""
    rows = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT payload->>'budget_id', payload->>'threshold', payload->>'used', payload->>'window_start' "
        "FROM outbox WHERE customer_id = :c AND topic = 'budget.threshold_crossed' ORDER BY id"), {"c": cid}))
    found: dict[str, list[tuple[str, str, str]]] = {}
    for budget_id, *alert in rows:
        found.setdefault(budget_id, []).append(tuple(alert))
    return found


async def test_a_usage_event_timed_into_a_later_window_alerts_that_window_s_thresholds(shared_kit: Kit):
    # 700 tokens of a 1,000 limit are 70 %: past 50 % (500), short of 80 % (800), in the day of the
    # 25th and the minute of 00:02:00. A budget made after the event (seeded there since 038c122)
    # never alerted, nor did a rolling minute made before it (a second 4 minutes ahead was no window)
    kit, clock = shared_kit, shared_kit.clock
    cid = await kit.customer("alerts")
    await kit.top_up(cid, "100.00")
    clock.now = EVE
    day_before = await _budget(kit, cid, window="day", metric="tokens", limit=1000, thresholds=(50, 80))
    tpm_before = await _budget(kit, cid, window="minute", metric="tokens", limit=1000, thresholds=(50, 80))
    await kit.usage_event(cid, "e", input_tokens=700, at=AHEAD)
    clock.now = datetime(2026, 11, 24, 23, 58, 30, tzinfo=UTC)
    day_after = await _budget(kit, cid, window="day", metric="tokens", limit=1000, thresholds=(50, 80))
    tpm_after = await _budget(kit, cid, window="minute", metric="tokens", limit=1000, thresholds=(50, 80))
    alerts = await _alerts(kit, cid)
    for day in (day_before, day_after):
        assert alerts.get(day) == [("50", "700", NEXT_DAY)], day
    for tpm in (tpm_before, tpm_after):
        assert alerts.get(tpm) == [("50", "700", "2026-11-25T00:02:00Z")], tpm
    assert (await kit.verify()).ok


async def test_a_rerate_of_a_usage_event_timed_ahead_moves_its_later_window(shared_kit: Kit):
    # the event's 700 input tokens: $0.70 at $1.00 per 1,000, re-rated at 23:58 to $2.00 per 1,000:
    # $1.40, a difference of $0.70, in the day of the 25th. A $2.00 hard day made before the re-rate
    # kept $0.70 there (the window not yet current was not moved), one made after it seeded $0.70
    kit, clock = shared_kit, shared_kit.clock
    cid = await kit.customer("rerated")
    await kit.top_up(cid, "100.00")
    clock.now = EVE
    before = await _budget(kit, cid, window="day", metric="money", limit=usd("2.00"), thresholds=(50,))
    await kit.usage_event(cid, "e", input_tokens=700, at=AHEAD)
    await kit.db.run(lambda conn: books.add_version(conn, {
        **BOOK, "id": kit.book, "version": "v2", "effective_from": "2026-11-01T00:00:00Z",
        "rules": [{**BOOK["rules"][0], "price": "2000"}, BOOK["rules"][1]]}))
    done = await rerating.apply(kit.db, kit.service.engine, rerating.RerateSpec(
        kit.book, "v2", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC), cid), None)
    assert (done["delta"], done["errors"]) == ("0.70", [])
    after = await _budget(kit, cid, window="day", metric="money", limit=usd("2.00"), thresholds=(50,))
    clock.now = datetime(2026, 11, 25, 0, 2, 30, tzinfo=UTC)
    assert [(await kit.service.budgets.get(b)).used for b in (before, after)] == [usd("1.40")] * 2
    # 50 % of $2.00 is $1.00: $0.70 stood under it, $1.40 past it, in the 25th's window
    alerts = await _alerts(kit, cid)
    assert (alerts.get(before), alerts.get(after)) == ([("50", "1.40", NEXT_DAY)],) * 2
    try:  # 1.40 + 0.70 = 2.10 > 2.00
        await kit.reserve(cid, "r1", amount="0.70")
    except BudgetExceededError as refused:
        assert refused.context["used"] == "1.40"
    else:
        raise AssertionError("a hold past the limit was taken")
    await kit.reserve(cid, "r2", amount="0.60")  # 1.40 + 0.60 = 2.00: the limit exactly
    assert (await kit.verify()).ok


async def test_holds_of_a_host_whose_clock_runs_ahead_count_in_their_window_in_a_budget_made_after_them(
        shared_kit: Kit):
    # a host 20 s ahead holds at 00:00:10 by its clock (23:59:50 here): 600 input tokens held ($0.60),
    # and 300 held then settled at 200 ($0.20). Budgets made here at 23:59:55 counted none of it in the
    # 25th, where the holds counted (on_reserve: the window of the holding host's now)
    kit, clock = shared_kit, shared_kit.clock
    cid = await kit.customer("fast")
    await kit.top_up(cid, "100.00")
    fast = Kit(kit.db, kit.tag, Clock(datetime(2026, 11, 25, 0, 0, 10, tzinfo=UTC)))
    open_hold = await fast.reserve(cid, "h", input_tokens=600)
    closed = await fast.reserve(cid, "s", input_tokens=300)
    await fast.settle(cid, closed.reservation.id, input_tokens=200)
    clock.now = datetime(2026, 11, 24, 23, 59, 55, tzinfo=UTC)
    tokens = await _budget(kit, cid, window="day", metric="tokens", limit=1000)
    money = await _budget(kit, cid, window="day", metric="money", limit=usd("10.00"))
    clock.now = datetime(2026, 11, 25, 0, 0, 20, tzinfo=UTC)
    figures = [(v.used, v.held) for v in [await kit.service.budgets.get(b) for b in (tokens, money)]]
    assert figures == [(200, 600), (usd("0.20"), usd("0.60"))]
    try:  # 200 + 600 + 201 = 1,001 > 1,000
        await kit.reserve(cid, "r1", input_tokens=201)
    except BudgetExceededError as refused:
        assert (refused.context["used"], refused.context["held"]) == (200, 600)
    else:
        raise AssertionError("a hold past the limit was taken")
    # the open hold settles in its window of the new budgets too: 600 held becomes 500 used
    await kit.settle(cid, open_hold.reservation.id, input_tokens=500)
    figures = [(v.used, v.held) for v in [await kit.service.budgets.get(b) for b in (tokens, money)]]
    assert figures == [(700, 0), (usd("0.70"), 0)]
    await kit.reserve(cid, "r2", input_tokens=300)  # 700 + 300 = 1,000: the limit exactly
    assert (await kit.verify()).ok

"""The budget rules without PostgreSQL: scope matching, windows (rolling, calendar in a time
zone, across DST), what holds and charges count, Retry-After, thresholds once per window, and a
property: whatever the history, a hard budget never admits a hold past its limit and every
window equals what its reservations hold and used."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from wallet_memory import CID, T0, MemoryWallet, usd

from wallets.commands import RecordUsage
from wallets.core import budgets as rules
from wallets.errors import BudgetExceededError
from wallets.model import Budget, Reservation


def budget(window: str = "lifetime", metric: str = "money", limit: int = usd("10.00"), mode: str = "hard",
           **kw) -> Budget:
    fields = {"api_key": None, "model": None, "dimensions": {}, "thresholds": (), "time_zone": "UTC", **kw}
    return Budget(kw.get("id", f"bud-{window}-{metric}"), CID, "", fields["api_key"], fields["model"],
                  fields["dimensions"], window, metric, limit, mode, tuple(fields["thresholds"]),
                  fields["time_zone"], T0)


def with_budgets(*budgets: Budget, **wallet) -> MemoryWallet:
    mw = MemoryWallet(**wallet)
    mw.top_up("1000.00")
    for b in budgets:
        mw.wallet.budgets[b.id] = b
    return mw


def test_a_budget_matches_only_within_every_narrowing_it_has():
    b = budget(api_key="k1", model="gpt-4o*", dimensions={"feature": "search"})
    assert rules.matches(b, "gpt-4o-mini", {"api_key": "k1", "feature": "search", "end_user": "u1"})
    assert not rules.matches(b, "gpt-4o-mini", {"api_key": "k2", "feature": "search"})
    assert not rules.matches(b, "o3", {"api_key": "k1", "feature": "search"})
    assert not rules.matches(b, "gpt-4o", {"api_key": "k1"})
    assert rules.matches(budget(), "anything", {})


def test_calendar_windows_start_at_local_midnight_across_daylight_saving():
    month = budget("month", time_zone="America/New_York")
    day = budget("day", time_zone="America/New_York")
    just_before = datetime(2026, 12, 1, 4, 59, 59, tzinfo=UTC)  # Nov 30 23:59:59 EST
    assert rules.window_start(month, just_before) == datetime(2026, 11, 1, 4, 0, tzinfo=UTC)  # EDT then
    assert rules.window_end(month, rules.window_start(month, just_before)) == datetime(2026, 12, 1, 5, tzinfo=UTC)
    assert rules.window_start(month, just_before + timedelta(seconds=1)) == datetime(2026, 12, 1, 5, tzinfo=UTC)
    assert rules.window_start(day, datetime(2026, 3, 8, 12, tzinfo=UTC)) == datetime(2026, 3, 8, 5, tzinfo=UTC)
    assert rules.window_end(day, datetime(2026, 3, 8, 5, tzinfo=UTC)) == datetime(2026, 3, 9, 4, tzinfo=UTC)  # 23 h
    assert rules.window_start(budget("minute"), datetime(2026, 1, 1, 0, 0, 5, 999999, tzinfo=UTC)) == \
        datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)


def test_what_holds_and_charges_count_in_each_metric():
    assert rules.hold_quantity("money", 700, 100, 20) == 700
    assert [rules.hold_quantity(m, 700, 100, 20) for m in ("tokens", "input_tokens", "output_tokens")] == \
        [120, 100, 20]
    assert rules.hold_quantity("requests", 700, None, None) == 1
    assert rules.hold_quantity("tokens", 700, None, None) is None
    tokens = {"input": 10, "cached_input": 5, "cache_write": 1, "output": 7, "reasoning": 3, "request": 1}
    assert [rules.actual_quantity(m, 99, tokens, first=True) for m in rules.METRICS] == [99, 26, 16, 10, 1]
    assert rules.actual_quantity("requests", 99, tokens, first=False) == 0


def test_a_rolling_minute_says_when_enough_of_it_lapses():
    b = budget("minute", "tokens", 1000)
    now = datetime(2026, 1, 1, 12, 0, 30, 250000, tzinfo=UTC)
    b.windows = {now.replace(second=0, microsecond=0): [0, 300], now.replace(second=10, microsecond=0): [200, 0],
                 now.replace(second=20, microsecond=0): [0, 400], datetime(2026, 1, 1, 11, 59, tzinfo=UTC): [999, 0]}
    assert rules.counted(b, now) == (200, 700)  # 11:59:00 left the window long ago
    assert rules.retry_after(b, now, 300) == 30  # the 12:00:00 second lapses at 12:01:00
    assert rules.retry_after(b, now, 301) == 40
    assert rules.retry_after(b, now, 901) is None  # more than the window holds: waiting cannot help
    assert rules.retry_after(budget("month"), now, 1) is None


def test_a_hard_budget_refuses_and_keeps_nothing_a_soft_one_alerts_once_per_threshold():
    hard = budget(id="hard", limit=usd("1.00"))
    soft = budget(id="soft", limit=usd("1.00"), mode="soft", thresholds=(50, 100))
    mw = with_budgets(soft)
    first = mw.reserve("0.60")
    mw.reserve("0.60")
    assert [(e["topic"], e["payload"]["threshold"]) for e in mw.outbox] == [
        ("budget.threshold_crossed", 50), ("budget.threshold_crossed", 100)]
    mw.release(first.reservation.id)
    mw.reserve("0.60")  # crosses 100 % again in the same window: the same outbox key, once
    assert len({e["dedup_key"] for e in mw.outbox}) == 2
    mw = with_budgets(hard)
    refused = mw.reserve("1.01", request_id="r")
    assert isinstance(refused, BudgetExceededError)
    assert (refused.context["limit"], refused.context["requested"], refused.context["budget_id"]) == \
        ("1.00", "1.01", "hard")
    assert mw.reserved == 0 and not mw.loaded.idempotency  # nothing held, the request id stays free
    assert mw.reserve("1.00", request_id="r").reservation.amount == usd("1.00")


def test_a_per_request_cap_refuses_one_large_hold_and_counts_nothing_across_requests():
    cap = budget("request", "money", usd("1.00"), id="cap", thresholds=(90,))
    mw = with_budgets(cap)
    assert isinstance(mw.reserve("1.01"), BudgetExceededError)
    for _ in range(3):
        r = mw.reserve("0.95")
        assert not mw.wallet.reservations[r.reservation.id].budget_holds
    assert cap.windows == {}
    crossed = [e for e in mw.outbox if e["topic"] == "budget.threshold_crossed"]
    assert len(crossed) == 3 and len({e["dedup_key"] for e in crossed}) == 3  # once per request
    assert [e["topic"] for e in mw.outbox].count("budget.exceeded") == 1


def test_each_request_a_per_request_cap_refuses_alerts_once_and_a_rolling_minute_once_a_clock_minute():
    """A per-request cap's window is the request (README: "once per window: ... one request"), but a
    refusal has no reservation, and its budget.exceeded was keyed by the clock minute: two requests
    of $1.01 under a $1.00 cap, refused in one minute, alerted once, the second silent. Keyed by the
    request id now: requests a and b are 2 alerts, a sent again (the same request) no third. A
    rolling minute's refusals alert once per clock minute (its window has no fixed start): 2
    refusals at T0 are 1 alert, one at T0 + 60 s a 2nd."""
    mw = with_budgets(budget("request", "money", usd("1.00"), id="cap"))
    for request_id in ("a", "b", "a"):
        assert isinstance(mw.reserve("1.01", request_id=request_id), BudgetExceededError)
    assert len({e["dedup_key"] for e in mw.outbox if e["topic"] == "budget.exceeded"}) == 2
    mw = with_budgets(budget("minute", "money", usd("1.00"), id="rpm"))
    for request_id in ("a", "b"):
        assert isinstance(mw.reserve("1.01", request_id=request_id), BudgetExceededError)
    assert len({e["dedup_key"] for e in mw.outbox if e["topic"] == "budget.exceeded"}) == 1
    mw.advance(seconds=60)
    assert isinstance(mw.reserve("1.01", request_id="c"), BudgetExceededError)
    assert len({e["dedup_key"] for e in mw.outbox if e["topic"] == "budget.exceeded"}) == 2


def test_a_capture_replaces_part_of_the_hold_and_the_final_settle_returns_the_rest():
    tokens = budget("lifetime", "tokens", 10_000)
    mw = with_budgets(tokens)
    r = mw.reserve(input_tokens=1000, max_output_tokens=3000).reservation
    mw.settle(r.id, input_tokens=1000, output_tokens=200, final=False)
    bh = mw.wallet.reservations[r.id].budget_holds[tokens.id]
    assert (bh.held, bh.used) == (2800, 1200) and rules.counted(tokens, mw.now) == (1200, 2800)
    mw.settle(r.id, output_tokens=300)
    assert rules.counted(tokens, mw.now) == (1500, 0)


OPS = st.lists(st.tuples(st.sampled_from(["reserve", "settle", "release", "wait"]), st.integers(0, 50),
                         st.integers(0, 3000)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_no_history_takes_a_hard_budget_past_its_limit_and_windows_equal_their_holds(ops):
    money = budget(id="money", limit=usd("5.00"))
    tpm = budget("minute", "tokens", 6000, id="tpm")
    mw = with_budgets(money, tpm)
    opened: list[str] = []
    for op, pick, size in ops:
        if op == "wait":
            mw.advance(seconds=size / 100)
        elif op == "reserve":
            before = {b.id: sum(rules.counted(b, mw.now)) for b in (money, tpm)}
            result = mw.reserve(input_tokens=size, max_output_tokens=pick * 10)
            if not isinstance(result, Exception):
                opened.append(result.reservation.id)
                r = mw.wallet.reservations[result.reservation.id]
                assert before["money"] + r.amount <= money.limit
                assert before["tpm"] + size + pick * 10 <= tpm.limit
            else:
                assert isinstance(result, BudgetExceededError)
        elif opened:
            rid = opened[pick % len(opened)]
            r = mw.wallet.reservations[rid]
            if op == "settle" and r.is_open:
                mw.settle(rid, input_tokens=size // 2, output_tokens=pick)
            elif op == "release" and r.is_open:
                mw.release(rid)
        _windows_equal_their_reservations(mw, money, tpm)


def _windows_equal_their_reservations(mw: MemoryWallet, *budgets: Budget) -> None:
    for b in budgets:
        expected: dict[datetime, list[int]] = {}
        for r in mw.wallet.reservations.values():
            bh = r.budget_holds.get(b.id)
            if bh is not None:
                window = expected.setdefault(bh.window_start, [0, 0])
                window[0] += bh.used
                window[1] += bh.held
                _consistent(r, bh, b)
        assert {s: w for s, w in b.windows.items() if w != [0, 0]} == {s: w for s, w in expected.items()
                                                                         if w != [0, 0]}


def _consistent(r: Reservation, bh, b: Budget) -> None:
    if not r.is_open:
        assert bh.held == 0
    if b.metric == "money":
        assert (bh.held, bh.used) == (r.hold_left, r.charged)


# zones whose midnight some day does not exist (Santiago, Asuncion, Havana, Beirut, Sao Paulo
# before 2019) or comes twice, half- and quarter-hour offsets, a 30-minute DST (Lord Howe)
ODD_ZONES = ("America/Santiago", "America/Asuncion", "America/Havana", "Asia/Beirut", "America/Sao_Paulo",
             "Asia/Tehran", "Australia/Lord_Howe", "Pacific/Chatham", "Asia/Kathmandu", "Africa/Cairo")


@given(st.sampled_from(ODD_ZONES), st.sampled_from(("day", "month")),
       st.datetimes(min_value=datetime(2010, 1, 1), max_value=datetime(2030, 1, 1)))
@settings(max_examples=400, deadline=None)
def test_calendar_windows_tile_time_in_zones_whose_midnight_is_skipped_or_doubled(zone, window, naive):
    b = budget(window, time_zone=zone)
    at = naive.replace(tzinfo=UTC)
    start = rules.window_start(b, at)
    end = rules.window_end(b, start)
    assert start <= at < end  # every instant in exactly one window: no gap, no overlap at a rollover
    assert rules.window_start(b, end) == end and rules.window_start(b, end - timedelta(microseconds=1)) == start


@given(st.dictionaries(st.integers(0, 70), st.tuples(st.integers(0, 50), st.integers(0, 50)), max_size=6),
       st.integers(1, 200), st.integers(1, 100), st.integers(0, 999_999))
@settings(max_examples=400, deadline=None)
def test_retry_after_is_the_first_second_at_which_the_hold_fits(windows, limit, q, micros):
    now = datetime(2026, 12, 3, 10, 0, 0, micros, tzinfo=UTC)
    b = budget("minute", "tokens", limit)
    b.windows = {now.replace(microsecond=0) - timedelta(seconds=ago): list(w) for ago, w in windows.items()}
    used, held = rules.counted(b, now)
    excess = used + held + q - limit
    if excess <= 0:
        return

    def fits(at: datetime) -> bool:
        return sum(rules.counted(b, at)) + q <= limit

    wait = rules.retry_after(b, now, excess)
    if wait is None:
        assert q > limit  # only a hold larger than the limit never fits
        return
    assert fits(now + timedelta(seconds=wait)) and (wait == 1 or not fits(now + timedelta(seconds=wait - 1)))


def _documented(topic: str) -> set[str]:
    """The `data` fields the README's table of events gives `topic`, beside the four every event has."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith(f"| `{topic}`"))
    return set(re.findall(r"`([a-z_]+)`", row.split("|")[2])) | {"id", "type", "customer_id", "created_at"}


def test_the_budget_events_carry_the_fields_the_readme_documents():
    mw = with_budgets(budget("month", limit=usd("1.00"), thresholds=(50,), id="a"),
                      budget("minute", "tokens", 100, id="b"))
    mw.reserve("0.60", input_tokens=10)
    assert isinstance(mw.reserve("0.60", input_tokens=10), BudgetExceededError)
    assert isinstance(mw.reserve("0.10", input_tokens=95), BudgetExceededError)
    payloads = {}
    for e in mw.outbox:
        payloads.setdefault((e["topic"], "retry_after_seconds" in e["payload"]), e["payload"])
    assert set(payloads) == {("budget.threshold_crossed", False), ("budget.exceeded", False),
                             ("budget.exceeded", True)}
    assert set(payloads["budget.threshold_crossed", False]) == _documented("budget.threshold_crossed")
    assert set(payloads["budget.exceeded", True]) == _documented("budget.exceeded")
    assert set(payloads["budget.exceeded", False]) == _documented("budget.exceeded") - {"retry_after_seconds"}


def _crossed(mw: MemoryWallet) -> list[tuple[int, str, str]]:
    return [(e["payload"]["threshold"], e["payload"]["window_start"], e["payload"]["used"]) for e in mw.outbox
            if e["topic"] == "budget.threshold_crossed"]


def test_a_settle_after_a_31_day_months_rollover_alerts_in_the_month_it_was_held_in():
    """A settle counted in its hold's rolled-over window alerts there while the load has that
    window (32 days back); the rule stopped at 31 days, so a hold of a 31-day month settled just
    after the month ended (31 days and 30 minutes after it began) passed 100 % without a word,
    where one of a 30-day month alerted."""
    mw = with_budgets(budget("month", limit=usd("10.00"), mode="soft", thresholds=(100,)))
    mw.now = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    held = mw.reserve("4.00").reservation
    mw.now = datetime(2027, 1, 1, 0, 30, tzinfo=UTC)
    mw.settle(held.id, input_tokens=12_000)  # $12.00, counted in December
    assert _crossed(mw) == [(100, "2026-12-01T00:00:00Z", "12.00")]


def test_a_late_usage_event_alerts_in_its_own_day_even_when_that_day_counted_nothing_before():
    """A post-hoc usage event counts in the window of its own time; reported the next day for a
    day that had counted nothing, it took that day past its threshold without a word (the rule
    only looked at windows that already had a row)."""
    mw = with_budgets(budget("day", limit=usd("10.00"), mode="soft", thresholds=(50,)))
    mw.now = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    tokens = {"input": 6000}
    mw.run(RecordUsage(customer_id=CID, event_id="late", request_hash=b"late", model="model-x",
                       occurred_at=datetime(2026, 11, 23, 12, 0, tzinfo=UTC), tokens=tokens, usage=tokens))
    assert _crossed(mw) == [(50, "2026-11-23T00:00:00Z", "6.00")]


def test_several_refusing_budgets_give_a_retry_after_at_which_every_one_of_them_fits():
    out = budget("minute", "output_tokens", 1000, id="a-out")
    inp = budget("minute", "input_tokens", 1000, id="b-in")
    mw = with_budgets(out, inp)
    mw.reserve(max_output_tokens=900)  # 12:00:00: lapses at 12:01:00
    mw.advance(seconds=45)
    mw.reserve(input_tokens=900)  # 12:00:45: lapses at 12:01:45
    mw.advance(seconds=5)
    refused = mw.reserve(input_tokens=500, max_output_tokens=500)  # a-out frees in 10 s, b-in only in 55 s
    assert isinstance(refused, BudgetExceededError)
    assert (refused.context["budget_id"], refused.context["retry_after_seconds"]) == ("b-in", 55)
    mw.advance(seconds=10)
    assert isinstance(mw.reserve(input_tokens=500, max_output_tokens=500), BudgetExceededError)  # b-in still
    mw.advance(seconds=45)
    assert mw.reserve(input_tokens=500, max_output_tokens=500).reservation


def test_a_rolling_refusal_gives_no_retry_after_when_a_calendar_budget_refuses_the_hold_too():
    tpm = budget("minute", "tokens", 1000, id="a-tpm")
    day = budget("day", "tokens", 1000, id="b-day")
    mw = with_budgets(tpm, day)
    mw.reserve(input_tokens=900)
    mw.advance(seconds=30)
    refused = mw.reserve(input_tokens=200)  # the TPM frees in 30 s, the day only at midnight
    assert isinstance(refused, BudgetExceededError)
    assert refused.context["budget_id"] == "b-day" and "retry_after_seconds" not in refused.context


def test_a_rolling_minutes_alert_names_the_window_its_figures_are_of_the_current_one():
    """A rolling minute's threshold event pairs the figures of the minute at the moment it crossed
    (what `counted` sums at `now`) with a `window_start`, which the budget's answer spells as now's
    second. A settle or a late usage event named the second its hold or event was counted in
    instead: a settle at 12:00:30 of a hold of 12:00:00 said window_start 12:00:00 beside the used of
    the minute at 12:00:30. Worked by hand: a soft 1,000-token minute at 50 %; 100 tokens held at
    12:00:00 (10 %), settled at 12:00:30 at 100 in + 500 out = 600 used (60 %): 50 % crossed, in the
    window the budget's answer calls 12:00:30. At 12:01:30 that 600 (second 12:00:00) has lapsed;
    a usage event of 12:01:10 for 500 input tokens takes the minute from 0 to 500 (50 %), crossed
    again (a new clock minute), in the window of 12:01:30, not 12:01:10."""
    tpm = budget("minute", "tokens", 1000, mode="soft", thresholds=(50,))
    mw = with_budgets(tpm)
    r = mw.reserve(input_tokens=100).reservation
    mw.advance(seconds=30)
    mw.settle(r.id, input_tokens=100, output_tokens=500)
    assert rules.budget_view(tpm, "USD", mw.now).window_start == datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)
    mw.advance(seconds=60)
    tokens = {"input": 500}
    mw.run(RecordUsage(customer_id=CID, event_id="e1", request_hash=b"e1", model="model-x",
                       occurred_at=mw.now - timedelta(seconds=20), tokens=tokens, usage=tokens))
    assert rules.counted(tpm, mw.now) == (500, 0)
    assert [(t, start, used) for t, start, used in _crossed(mw)] == [
        (50, "2026-11-23T12:00:30Z", 600), (50, "2026-11-23T12:01:30Z", 500)]

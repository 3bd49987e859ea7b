"""A property of the budget alerts, without PostgreSQL: whatever the history (holds, captures,
settles above and below the hold, releases, expiries and late settles after them, usage events of
now or of hours before, across days and a month's end in New York), each soft budget's window
alerts each threshold it reached, once, and none it did not reach."""
from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from wallet_memory import CID, MemoryWallet, usd

from tests.unit.wallets.test_budget_rules import budget
from wallets.commands import RecordUsage
from wallets.core.commands import ExpireReservation
from wallets.core.state import wire_time

THRESHOLDS = (10, 50, 80, 100, 150)
OPS = st.lists(st.tuples(st.sampled_from(["reserve", "settle", "capture", "release", "expire", "usage", "late",
                                          "minutes", "hours"]), st.integers(0, 50), st.integers(0, 3000)),
               max_size=50)


def _budgets() -> list:
    return [budget("day", limit=usd("5.00"), mode="soft", thresholds=THRESHOLDS, id="a-day",
                   time_zone="America/New_York"),
            budget("month", limit=usd("9.00"), mode="soft", thresholds=THRESHOLDS, id="b-month"),
            budget("day", "tokens", 5000, mode="soft", thresholds=THRESHOLDS, id="c-tokens"),
            budget("lifetime", "requests", 6, mode="soft", thresholds=THRESHOLDS, id="d-requests")]


def _run(mw: MemoryWallet, op: str, pick: int, size: int, n: int, opened: list[str]) -> None:
    if op in ("minutes", "hours"):
        mw.advance(**{op: size if op == "minutes" else size / 100})
    elif op == "reserve":
        held = mw.reserve(input_tokens=size, max_output_tokens=pick * 10, ttl_seconds=3600)
        if hasattr(held, "reservation"):
            opened.append(held.reservation.id)
    elif op in ("usage", "late"):  # late: reported up to 50 hours after it happened
        tokens = {"input": size, "output": pick}
        mw.run(RecordUsage(customer_id=CID, event_id=f"e{n}", request_hash=b"e%d" % n, model="model-x",
                           occurred_at=mw.now - timedelta(hours=pick if op == "late" else 0), tokens=tokens,
                           usage=tokens))
    elif opened:
        rid = opened[pick % len(opened)]
        r = mw.wallet.reservations[rid]
        if op == "settle" and r.status != "settled":  # after an expiry too: a late settle
            mw.settle(rid, input_tokens=size, output_tokens=pick * 3)
        elif op == "capture" and r.status != "settled":
            mw.settle(rid, input_tokens=size // 3, output_tokens=pick, final=False, capture_id=f"c{n}")
        elif op == "release" and r.is_open:
            mw.release(rid)
        elif op == "expire" and r.is_open:
            mw.advance(seconds=3601)
            mw.run(ExpireReservation(customer_id=CID, reservation_id=rid))


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_each_window_alerts_every_threshold_it_reached_once_and_no_other(ops):
    budgets = _budgets()
    mw = MemoryWallet()
    mw.top_up("1000.00")
    for b in budgets:
        mw.wallet.budgets[b.id] = b
    opened: list[str] = []
    peak: dict[tuple[str, object], int] = {}  # (budget, window start) -> the most it counted after a command
    for n, (op, pick, size) in enumerate(ops):
        _run(mw, op, pick, size, n, opened)
        for b in budgets:
            for start, (used, held) in b.windows.items():
                peak[b.id, start] = max(peak.get((b.id, start), 0), used + held)
    by_id = {b.id: b for b in budgets}
    reached: dict[tuple[str, str | None], set[int]] = {}
    for (budget_id, start), most in peak.items():
        b = by_id[budget_id]
        marks = {t for t in THRESHOLDS if most * 100 >= t * b.limit}
        if marks:
            reached[budget_id, None if b.window == "lifetime" else wire_time(start)] = marks
    alerted: dict[tuple[str, str | None], list[int]] = {}
    kept = {e["dedup_key"]: e["payload"] for e in reversed(mw.outbox) if e["topic"] == "budget.threshold_crossed"}
    for p in kept.values():  # the outbox keeps one event per key: the first
        alerted.setdefault((p["budget_id"], p["window_start"]), []).append(p["threshold"])
    assert {w: sorted(t) for w, t in alerted.items()} == {w: sorted(t) for w, t in reached.items()}

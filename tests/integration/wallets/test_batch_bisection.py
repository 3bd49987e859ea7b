"""A wallet batch that fails for a reason other than a domain refusal is bisected: each half
runs as a transaction of its own, so the good commands commit and the bad one fails alone. Each
command runs in as few transactions as that takes, and none runs again once committed."""
from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text
from wallet_kit import Kit, usd

from ledger.lanes import lane_count, lane_of
from wallets.commands import RecordUsage, TopUp
from wallets.core.decide import RULES
from wallets.engine import Engine


def counting_top_ups(bad: set[str], monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count every time a top-up is decided, by its reference; those in `bad` raise RuntimeError
    (no domain refusal: the batch fails)."""
    real, seen = RULES[TopUp], Counter()

    def rule(state: Any, cmd: Any, now: datetime, book: Any) -> Any:
        seen[cmd.reference] += 1
        if cmd.reference in bad:
            raise RuntimeError(f"broken for the test: {cmd.reference}")
        return real(state, cmd, now, book)

    monkeypatch.setitem(RULES, TopUp, rule)
    return seen


async def _top_ups(kit: Kit, engine: Engine, customers: list[str]) -> list[Any]:
    """One top-up of $1.00 per customer, `t0`, `t1`, ..., submitted at once (one batch)."""
    return await asyncio.gather(*(engine.submit(TopUp(customer_id=cid, amount=usd("1.00"), reference=f"t{n}"))
                                  for n, cid in enumerate(customers)), return_exceptions=True)


async def _posted(kit: Kit, customers: list[str]) -> Counter[str]:
    rows = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT customer_id FROM journal_entries WHERE kind = 'topup' AND customer_id = ANY(:c)"), {"c": customers}))
    return Counter(r.customer_id for r in rows)


async def test_a_batch_of_eight_with_one_bad_command_runs_each_in_as_few_transactions_as_bisection_needs(
        kit: Kit, monkeypatch: pytest.MonkeyPatch):
    engine = Engine(kit.db, clock=kit.clock)
    cid = await kit.customer("bisect", billing="postpaid", overdraft=None)
    await engine.lane_of(cid)  # the lane count known: the commands queue in their lane's one batch
    real, seen = RULES[RecordUsage], Counter()

    def rule(state: Any, cmd: Any, now: datetime, book: Any) -> Any:
        seen[cmd.event_id] += 1
        if cmd.event_id == "e7":
            raise RuntimeError("broken for the test")
        return real(state, cmd, now, book)

    monkeypatch.setitem(RULES, RecordUsage, rule)
    tokens = {"input": 1000, "output": 0}
    outcomes = await asyncio.gather(*(engine.submit(RecordUsage(
        customer_id=cid, event_id=f"e{n}", request_hash=b"h", model="model-x", occurred_at=kit.clock.now,
        tokens=tokens, usage=tokens)) for n in range(8)), return_exceptions=True)
    assert [isinstance(o, RuntimeError) for o in outcomes] == [False] * 7 + [True], outcomes
    # 0-7 fail; 0-3 commit; 4-7 fail; 4-5 commit; 6-7 fail; 6 commits; 7 fails alone
    assert seen == {"e0": 2, "e1": 2, "e2": 2, "e3": 2, "e4": 3, "e5": 3, "e6": 4, "e7": 4}, seen
    charged = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT event_id FROM charges WHERE customer_id = :c ORDER BY event_id"), {"c": cid}))
    assert [r.event_id for r in charged] == [f"e{n}" for n in range(7)]


async def test_a_first_batch_over_two_lanes_does_not_run_again_what_one_lane_committed(
        kit: Kit, monkeypatch: pytest.MonkeyPatch):
    """Before the lane count is known, a fresh engine's first batch takes commands of any lane
    and runs them as one transaction per lane: when a later lane's fails, what an earlier one
    committed must not be bisected and run again (a top-up without an idempotency key posted twice)."""
    lanes = await kit.db.read(lane_count)
    customers: dict[int, str] = {}
    n = 0
    while len(customers) < 2:
        cid = await kit.customer(f"l{n}")
        customers.setdefault(lane_of(cid, lanes), cid)
        n += 1
    first, second = (customers[lane] for lane in sorted(customers)[:2])
    seen = counting_top_ups({"t3"}, monkeypatch)
    engine = Engine(kit.db, clock=kit.clock)  # fresh: its lane count is not known yet
    outcomes = await _top_ups(kit, engine, [first, first, second, second])
    assert [isinstance(o, RuntimeError) for o in outcomes] == [False, False, False, True], outcomes
    assert await _posted(kit, [first, second]) == {first: 2, second: 1}
    assert (seen["t0"], seen["t1"]) == (1, 1), seen

"""One wallet engine, used from one event loop and then another (an app's second lifespan: a test
client runs each on an event loop of its own), with its batches contending for the in-flight slots.

An asyncio.Semaphore is bound to the loop that first waits on it (Python 3.11): the engine made its
slots once, in __init__, and the second loop's first wait for a slot raised `RuntimeError: <asyncio.
locks.Semaphore ...> is bound to a different event loop`.
"""
from __future__ import annotations

import asyncio
import gc
from typing import Any

from wallet_kit import Kit, usd

from ledger.db import connect
from ledger.lanes import lane_count, lane_of
from wallets.commands import Reserve
from wallets.engine import Engine

LANES = 3  # one customer in each of lanes 0, 1 and 2: three batches for one slot, so two wait


async def test_an_engine_used_from_a_second_event_loop_waits_for_its_slots_there(shared_kit: Kit,
                                                                                  database_url: str) -> None:
    customers = await _one_a_lane(shared_kit, "loop")
    db = connect(database_url, pool_size=LANES)
    engine = Engine(db, clock=shared_kit.clock, in_flight=1)
    for round_ in range(2):  # two event loops, one after the other, each in a thread of its own
        outcomes = await asyncio.to_thread(asyncio.run, _holds(engine, db, shared_kit, customers, f"{round_}"))
        assert all(not isinstance(o, BaseException) for o in outcomes), outcomes

    # Each customer: $10.00 topped up, two holds of $0.50 (one per loop): $1.00 reserved, $9.00 left.
    balances = await shared_kit.balances(*customers, platform=False)
    for cid in customers:
        name = cid.removesuffix(f"-{shared_kit.tag}")
        assert balances[f"{name}.reserved"] == usd("1.00")
        assert balances[f"{name}.lot"] == usd("9.00")


async def test_an_engine_keeps_no_closed_loop_and_bounds_each_loop_s_batches(shared_kit: Kit,
                                                                            database_url: str) -> None:
    """The slots of a loop hold that loop (a Semaphore keeps the loop it first waited on): keyed by
    it in a WeakKeyDictionary, a loop closed after a wait lived as long as the engine, with its
    slots, one per test client's lifespan. And each loop's batches are at most in_flight at once."""
    customers = await _one_a_lane(shared_kit, "keep")
    db = connect(database_url, pool_size=LANES)
    engine = Engine(db, clock=shared_kit.clock, in_flight=1)
    run, running, most = engine._run, [0], [0]

    async def counted(*args: Any) -> Any:
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            return await run(*args)
        finally:
            running[0] -= 1

    engine._run = counted  # type: ignore[method-assign]

    for round_ in range(3):
        outcomes = await asyncio.to_thread(asyncio.run, _holds(engine, db, shared_kit, customers, f"k{round_}"))
        assert all(not isinstance(o, BaseException) for o in outcomes), outcomes
        assert most == [1], f"loop {round_}: {most[0]} batches at once, in_flight=1"
        most[0] = 0
    gc.collect()
    # Three loops, one after the other, each with two batches waiting for the one slot (so each
    # loop's semaphore holds that loop): the engine keeps the slots of the last one only, until
    # another loop comes; before, of all three. (Not weakrefs to the loops: asyncio itself may keep
    # a worker thread's last loop.)
    assert len(engine._slots_of) == 1
    # $10.00 each, three holds of $0.50: $1.50 reserved, $8.50 left
    balances = await shared_kit.balances(*customers, platform=False)
    for cid in customers:
        name = cid.removesuffix(f"-{shared_kit.tag}")
        assert balances[f"{name}.reserved"] == usd("1.50")
        assert balances[f"{name}.lot"] == usd("8.50")


async def _one_a_lane(kit: Kit, prefix: str) -> list[str]:
    """LANES customers, the n-th in lane n, each with $10.00 topped up (its lot `<name>.lot`)."""
    lanes = await kit.db.read(lane_count)
    customers: list[str] = []
    n = 0
    while len(customers) < LANES:
        name = f"{prefix}{n}"
        n += 1
        if lane_of(f"{name}-{kit.tag}", lanes) == len(customers):
            cid = await kit.customer(name)
            await kit.top_up(cid, "10", name=f"{name}.lot")
            customers.append(cid)
    return customers


async def _holds(engine: Engine, db: Any, kit: Kit, customers: list[str], round_: str) -> list[object]:
    """On the running loop, a bulk call of one $0.50 hold per customer: a batch per lane, one in
    flight, the others waiting; then the pool disposed, as a lifespan's end does (its connections
    are of this loop)."""
    try:
        return await engine.submit_many([Reserve(
            customer_id=cid, request_id=f"{kit.tag}-{round_}-{cid}", request_hash=b"h", model="model-x",
            ttl_seconds=300, amount=usd("0.50")) for cid in customers])
    finally:
        await db.dispose()

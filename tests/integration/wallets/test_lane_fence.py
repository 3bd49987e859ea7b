"""The fence of every lane (wallets.fence) takes the lanes' locks in the order every writer takes
its locks (ledger.db: by key), so it never closes a cycle of waits with the writers."""
from __future__ import annotations

import asyncio
import uuid

import psycopg

from ledger.db import Database
from tests.advisory_locks import waiting_on_a_lock
from wallets.engine import customer_lock, lane_lock, utc_now
from wallets.fence import lanes_fenced


async def test_the_fence_and_two_writers_never_deadlock(db: Database, database_url: str):
    """Writer b holds lane k and will want lock x (a customer's, say: it takes its locks by key,
    lane k's first); writer c holds x and will want lane j (x's key below j's). Lane j comes
    before lane k by number, but after it by key. Taking the lanes by number, the fence held
    lane j while it waited for lane k: c waited for the fence, b for c, the fence for b, and
    PostgreSQL broke the cycle after a second by failing one of them (40P01). By key, the fence
    waits for lane k before it takes lane j, c gets lane j, and all three go through."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as watch:
        lanes = (await (await watch.execute("SELECT lanes FROM ledger_settings")).fetchone())[0]
    keys = {lane: lane_lock(lane) for lane in range(lanes)}
    found = None
    for i in range(10_000):  # lane j < lane k by number, key(k) < key(x) < key(j)
        x = customer_lock(f"fence-{uuid.uuid4().hex[:8]}-{i}")
        pairs = [(j, k) for j in range(lanes) for k in range(j + 1, lanes) if keys[k] < x < keys[j]]
        if pairs:
            found = (x, *pairs[0])
            break
    assert found is not None
    x, j, k = found
    fence_db = Database(db.engine, attempts=1)  # a deadlock is an error here, not a retry
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as b, \
            await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c, \
            await psycopg.AsyncConnection.connect(database_url, autocommit=True) as watch:
        await b.execute("SELECT pg_advisory_lock(%s)", (keys[k],))
        await c.execute("SELECT pg_advisory_lock(%s)", (x,))
        fenced = asyncio.create_task(fence_db.run(lambda conn: lanes_fenced(conn, utc_now)))
        await waiting_on_a_lock(watch, 1, seconds=10)  # the fence waits for lane k

        async def c_then_done() -> None:
            await c.execute("SELECT pg_advisory_lock(%s)", (keys[j],))
            await c.execute("SELECT pg_advisory_unlock_all()")

        async def b_then_done() -> None:
            await b.execute("SELECT pg_advisory_lock(%s)", (x,))
            await b.execute("SELECT pg_advisory_unlock_all()")

        c_done = asyncio.create_task(c_then_done())
        await asyncio.sleep(0.05)
        b_done = asyncio.create_task(b_then_done())
        await asyncio.wait_for(asyncio.gather(c_done, b_done, fenced), 15)
    assert fenced.result() is not None

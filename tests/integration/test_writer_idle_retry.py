"""A writer's transaction sits idle inside its locks only when its process stalls: the server ends
it after the writer's idle timeout (`writer_idle_ms`, 5 s in service) and frees the locks. A process
starved of CPU that long (the suite's CI at a load of 10-12 on 2 cores: a customer create between two
statements, 25P03 "terminating connection due to idle-in-transaction timeout") is not hung: nothing
of its transaction was committed, so the unit of work is run again on a fresh connection, as after a
serialization failure, rather than failing its caller."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from ledger.db import connect


async def test_a_writer_the_server_ended_for_idling_runs_again_and_commits_once(database_url, tag):
    db = connect(database_url, pool_size=2, writer_idle_ms=200)
    table = f"idle_retry_{tag}"
    attempts: list[int] = []

    async def work(conn):
        attempts.append(len(attempts) + 1)
        await conn.execute(text(f"INSERT INTO {table} VALUES (:n)"), {"n": len(attempts)})
        if len(attempts) == 1:
            await asyncio.sleep(1.0)  # stalled inside the transaction, past its 200 ms
        await conn.execute(text(f"INSERT INTO {table} VALUES (:n)"), {"n": 10 * len(attempts)})
        return len(attempts)

    try:
        async with db.engine.begin() as conn:
            await conn.execute(text(f"CREATE TABLE {table} (n int)"))
        assert await db.run(work, locks=[424242]) == 2  # the second attempt's answer
        async with db.engine.connect() as conn:
            rows = (await conn.execute(text(f"SELECT n FROM {table} ORDER BY n"))).scalars().all()
        assert rows == [2, 20]  # the first attempt's row (1) was never committed
    finally:
        async with db.engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await db.dispose()

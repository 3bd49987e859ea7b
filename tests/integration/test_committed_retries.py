"""Database.committed (READ COMMITTED: webhook bookkeeping beside the ledger) retries the whole
transaction on a deadlock or a serialization failure, as run() does: a 40P01 in a webhook PATCH
was a 500 internal_error, and in the dispatcher an attempt left unrecorded."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from ledger.db import EXHAUSTED, RETRIES, RetriesExhaustedError, connect, sqlstate_of


def _count(counter, **labels) -> float:
    return sum(
        s.value
        for m in counter.collect()
        for s in m.samples
        if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items())
    )


_DEADLOCK = "DO $$ BEGIN RAISE EXCEPTION 'deadlock, as the server says it' USING ERRCODE = '40P01'; END $$"


async def test_a_deadlock_raised_once_inside_committed_is_retried_and_the_work_answers(scratch_url):
    db = connect(scratch_url, pool_size=2)
    calls: list[int] = []

    async def work(conn):
        calls.append(len(calls) + 1)
        await conn.execute(text("INSERT INTO probe (n) VALUES (:n)"), {"n": len(calls)})
        if len(calls) == 1:
            await conn.execute(text(_DEADLOCK))
        return "kept"

    retried = _count(RETRIES, sqlstate="40P01")
    try:
        await db.committed(lambda c: c.execute(text("CREATE TABLE probe (n int)")))
        assert await db.committed(work) == "kept"
        rows = (await db.read(lambda c: c.execute(text("SELECT n FROM probe ORDER BY n")))).scalars().all()
    finally:
        await db.dispose()
    # attempt 1 inserted 1 and deadlocked (rolled back), attempt 2 inserted 2 and committed: [2]
    assert (calls, rows, _count(RETRIES, sqlstate="40P01") - retried) == ([1, 2], [2], 1)


async def test_a_deadlock_every_time_spends_the_budget_and_says_so(scratch_url):
    db = connect(scratch_url, pool_size=2)
    db.attempts, db.max_backoff_s = 3, 0.0
    calls: list[int] = []

    async def work(conn):
        calls.append(1)
        await conn.execute(text(_DEADLOCK))

    retried, exhausted = _count(RETRIES, sqlstate="40P01"), _count(EXHAUSTED)
    try:
        with pytest.raises(RetriesExhaustedError) as raised:
            await db.committed(work)
    finally:
        await db.dispose()
    # 3 attempts, each a 40P01 counted; the third spends the budget: one exhausted
    assert (len(calls), _count(RETRIES, sqlstate="40P01") - retried, _count(EXHAUSTED) - exhausted) == (3, 3, 1)
    assert sqlstate_of(raised.value) == "40P01"

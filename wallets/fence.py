"""The lanes fenced: every lane's writer lock, for the rest of a transaction.

A change to how usage is rated that spans lanes (a price book's version, which every customer
of the book in every lane is rated by) and takes effect "now" must not let any lane charge a
call between that time and its commit: the call would be rated without the change while the
change says it was in force then. Each lane's wallet batches run under their lane's writer lock
and take their time under it (`wallets.engine.Engine._execute_lane`), so a writer that holds
every lane's lock, takes the time, writes and commits, is ordered after every batch that took
its time before (they committed, and did not see the change) and before every batch that takes
its time after (they wait for the commit, and see it). The fence is held for milliseconds: what
is slow (parsing, encoding the rules) happens before it.

The locks are taken in one statement, as transaction locks (released by the commit or
rollback), in the order every writer takes its locks: by key (ledger.db.Database.run sorts
them). Not by lane number: a batch holds its lane's lock and may wait for another of its locks
(a customer's, the accounts lock) that a batch of another lane holds while it waits for its
own lane, and with the fence holding that lane and waiting for the first, the three waited for
each other (PostgreSQL failed one of them after a second: tests/integration/wallets/test_lane_fence.py).
By key, every wait is for a greater key than any held, so no cycle closes; two fences take the
lanes in the same order.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from prometheus_client import Histogram
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.lanes import lane_count
from wallets.engine import lane_lock

FENCE_WAITED = Histogram("tokentill_lane_fence_wait_seconds",
                         "How long a fence of every lane waited for the lanes' batches in flight")
# as ledger.db takes a batch's locks: the function runs on the rows once sorted
_FENCE = "SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(%s AS bigint[])) WITH ORDINALITY AS t(k, n) ORDER BY n"


async def lanes_fenced(conn: AsyncConnection, clock: Callable[[], datetime]) -> datetime:
    """Take every lane's writer lock until the transaction ends, by key as the writers do; then
    the time by `clock` (the wallet engine's: the one batches take their time by)."""
    keys = sorted(lane_lock(lane) for lane in range(await lane_count(conn)))
    started = time.perf_counter()
    await conn.exec_driver_sql(_FENCE, (keys,))
    FENCE_WAITED.observe(time.perf_counter() - started)
    return clock()

"""A throwaway embedded PostgreSQL of a test's own, for tests that damage a server on purpose
(stop it, kill its postmaster, end its sessions) and so cannot use the session's."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from api.runtime import sync_url
from ledger import embedded
from ledger.accounts import ensure_asset
from ledger.db import connect
from migrations import runner

# One input price, enough to create a customer and top it up.
BOOK = {"currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"}]}


@contextmanager
def own_cluster(pgdata: Path) -> Iterator[embedded.EmbeddedPostgres]:
    """An embedded cluster in `pgdata`, migrated, with USD; stopped and deleted on exit."""
    own = embedded.start(pgdata, keep=False)
    try:
        runner.upgrade(sync_url(own.url))
        asyncio.run(_with_usd(own.url))
        yield own
    finally:
        own.stop()


async def _with_usd(url: str) -> None:
    db = connect(url, pool_size=1)
    try:
        await db.run(lambda conn: ensure_asset(conn, "USD", 9))
    finally:
        await db.dispose()

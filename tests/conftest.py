"""Test fixtures: a real PostgreSQL for the session, never SQLite, never a mock.

Without TOKENTILL_TEST_DATABASE_URL the session starts a throwaway embedded cluster of its own;
with it, tests run in a fresh database created on that server and dropped afterwards.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings
from sqlalchemy import text

from api.bench.common import scratch_database
from api.runtime import sync_url
from ledger import embedded
from ledger.accounts import ensure_asset
from ledger.db import Database, connect
from migrations import runner
from wallets.webhooks import endpoints

# No property test is a timed test: Hypothesis fails an example that takes longer than 200 ms by
# default (DeadlineExceeded, or Flaky when its replay is faster), which a loaded machine does to
# tests whose code is correct (the SSE splitting property failed so once, alone on a re-run).
settings.register_profile("tokentill", deadline=None)
settings.load_profile("tokentill")


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server URL for the session (its maintenance database)."""
    url = os.environ.get("TOKENTILL_TEST_DATABASE_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="tokentill-test-") as tmp:
        cluster = embedded.start(Path(tmp) / "pg", keep=False)
        try:
            _throwaway(cluster.url)
            yield cluster.url
        finally:
            cluster.stop()


def _throwaway(url: str) -> None:
    """No fsync on the session's own cluster, which is deleted after it: what it protects against is
    the machine losing power, not the process dying (a killed postmaster's writes are in the
    kernel's cache all the same), and a commit's flush took 2-3 ms here, a scratch database's copy
    and drop more (2.8 and 1.1 s on a loaded machine), thousands of times a run."""
    with psycopg.connect(url, autocommit=True) as conn:
        for name in ("fsync", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {name} = off")
        conn.execute("SELECT pg_reload_conf()")


def _migrated(server: str, name: str):
    """A fresh database `name` on `server`, migrated to head; dropped afterwards."""
    with scratch_database(server, name) as url:
        # 16 lanes whatever the machine (its default is its cores): tests pick customers of lanes 0-3
        runner.upgrade(sync_url(url), lanes=16)
        yield url


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A migrated database shared by the session; tests keep apart by unique account codes."""
    yield from _migrated(server_url, f"tokentill_test_{os.getpid()}")


@pytest.fixture(scope="session")
def migrated_template(server_url: str) -> Iterator[str]:
    """The name of a database migrated once for the session, which nothing connects to again:
    scratch databases are copies of it (~0.15 s each, where migrating one took 2-8 s)."""
    name = f"tokentill_template_{os.getpid()}"
    for _ in _migrated(server_url, name):
        yield name


@pytest.fixture
def scratch_url(server_url: str, migrated_template: str) -> Iterator[str]:
    """A migrated database of the test's own, for tests that damage it on purpose."""
    with scratch_database(server_url, f"tokentill_scratch_{uuid.uuid4().hex[:10]}", template=migrated_template) as url:
        yield url


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = connect(database_url, pool_size=5)
    await database.run(lambda conn: ensure_asset(conn, "USD", 9))
    yield database
    await database.dispose()


@pytest.fixture
async def no_endpoint_left(db: Database) -> AsyncIterator[None]:
    """Every webhook endpoint a test made on the session's database is deleted after it (its
    pending deliveries cancelled, as a DELETE does). Left enabled, an endpoint is handed every event
    of every later file by the app that fans them out next (the fan-out's cursor is the database's),
    and its sends, to a receiver closed since or a host nothing here reaches (x.example,
    hooks.example.com), took the dispatchers of later files' apps (ccb6a18: test_webhooks' retries
    never came). A file that makes endpoints names it: pytestmark = usefixtures("no_endpoint_left")."""
    live = "SELECT id FROM webhook_endpoints WHERE status <> 'deleted'"
    before = {row[0] for row in await db.read(lambda c: c.execute(text(live)))}
    yield
    made = {row[0] for row in await db.read(lambda c: c.execute(text(live)))} - before
    for endpoint_id in sorted(made):
        await db.committed(lambda c, e=endpoint_id: endpoints.delete(c, e))


@pytest.fixture(autouse=True, scope="session")
def spool_dir() -> Iterator[str]:
    """The SDK's spool (undeliverable settles) in a directory of the session's, never the user's."""
    with tempfile.TemporaryDirectory(prefix="tokentill-spool-") as tmp:
        before = os.environ.get("TOKENTILL_SPOOL_DIR")
        os.environ["TOKENTILL_SPOOL_DIR"] = tmp
        try:
            yield tmp
        finally:
            if before is None:
                os.environ.pop("TOKENTILL_SPOOL_DIR", None)
            else:
                os.environ["TOKENTILL_SPOOL_DIR"] = before


@pytest.fixture
def tag() -> str:
    """A unique prefix for the account codes and keys of one test."""
    return uuid.uuid4().hex[:12]

"""Fixtures shared by the integration tests."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from alembic.config import Config
from sqlalchemy import Connection, create_engine

from api.runtime import sync_url
from ledger.accounts import ensure_asset
from ledger.db import Database, connect
from migrations import runner


@pytest.fixture(scope="module")
def loop_db(database_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, Database]]:
    """An event loop of the module's own and a Database on it (USD known), for Hypothesis tests,
    which are plain functions that run each example's coroutines to completion."""
    loop = asyncio.new_event_loop()
    db = connect(database_url, pool_size=2)
    loop.run_until_complete(db.run(lambda conn: ensure_asset(conn, "USD", 9)))
    yield loop, db
    loop.run_until_complete(db.dispose())
    loop.close()


@pytest.fixture
def migrating(scratch_url: str) -> Iterator[tuple[Connection, Config]]:
    """A connection to a scratch database (migrated to head) and an Alembic config whose commands
    (command.downgrade, command.upgrade) run on that connection, for the migration tests."""
    engine = create_engine(sync_url(scratch_url))
    try:
        with engine.connect() as conn:
            config = runner.alembic_config()
            config.attributes["connection"] = conn
            yield conn, config
    finally:
        engine.dispose()

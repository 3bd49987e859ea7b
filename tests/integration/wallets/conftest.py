"""Fixtures of the wallet integration tests: a fresh database per test where exact platform
balances matter, and a kit (clock, price book, commands by decimal strings)."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from wallet_kit import Kit

from ledger.db import Database, connect


@pytest.fixture
async def fresh_db(scratch_url: str) -> AsyncIterator[Database]:
    database = connect(scratch_url, pool_size=5)
    yield database
    await database.dispose()


@pytest.fixture
async def kit(fresh_db: Database, tag: str) -> Kit:
    kit = Kit(fresh_db, tag)
    await kit.setup_book()
    return kit


@pytest.fixture
async def shared_kit(db: Database, tag: str) -> Kit:
    """A kit on the session database (platform balances are shared there: assert customers only)."""
    kit = Kit(db, tag)
    await kit.setup_book()
    return kit

"""Fixtures of the billing tests: a fresh database each, and a kit with the seed price book."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from billing_kit import BillingKit

from ledger.accounts import ensure_asset
from ledger.db import Database, connect


@pytest.fixture
async def fresh_db(scratch_url: str) -> AsyncIterator[Database]:
    database = connect(scratch_url, pool_size=5)
    await database.run(lambda conn: ensure_asset(conn, "USD", 9))
    yield database
    await database.dispose()


@pytest.fixture
async def bk(fresh_db: Database) -> BillingKit:
    kit = BillingKit(fresh_db)
    await kit.add_book(kit.SEED)
    return kit

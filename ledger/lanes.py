"""Lanes: a customer's fixed hash bucket, which every write-path table is partitioned by.

`lane_of` is the Python twin of the SQL function `ledger_lane` (migration 0009): the first 32
bits of md5(id), unsigned, modulo the lane count. The count is fixed when the database is
created and kept in `ledger_settings`; `lane_count` reads it once per engine.
"""
from __future__ import annotations

import hashlib
import weakref
from functools import lru_cache

from sqlalchemy.ext.asyncio import AsyncConnection

_counts: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()


@lru_cache(maxsize=65_536)  # a customer's lane never changes: md5 once per customer, not per posting
def lane_of(key: str, lanes: int) -> int:
    """The lane of a customer id (or of any key) among `lanes`."""
    return int.from_bytes(hashlib.md5(key.encode()).digest()[:4], "big") % lanes


def entry_lane(customer_id: str | None, lanes: int) -> int:
    """An entry's lane: its customer's, and lane 0 for an entry without one."""
    return lane_of(customer_id, lanes) if customer_id is not None else 0


async def lane_count(conn: AsyncConnection) -> int:
    """The database's lane count (fixed at creation, so cached per engine)."""
    found = _counts.get(conn.sync_engine)
    if found is None:
        found = int((await conn.exec_driver_sql("SELECT lanes FROM ledger_settings")).scalar_one())
        _counts[conn.sync_engine] = found
    return found

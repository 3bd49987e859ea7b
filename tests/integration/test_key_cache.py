"""API keys cached per process: a revocation reaches every process through NOTIFY, and nothing is
cached while a process cannot hear about changes."""
from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import pytest

from api import keys
from api.keys import LISTENER_NAME, KeyCache


class CountingDb:
    """The real database, counting the key lookups that reach it."""

    def __init__(self, db, on_lookup=None):
        self.db, self.lookups, self.on_lookup = db, 0, on_lookup

    async def lookup(self, work):
        self.lookups += 1
        if self.on_lookup is not None:
            self.on_lookup()
        return await self.db.lookup(work)


# Waits are generous (a loaded CI box is slow to connect and to deliver); what they wait for is
# what is asserted, not how soon it came.
WAIT_S = 30


async def _until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not condition():
        assert loop.time() - start < WAIT_S, what
        await asyncio.sleep(0.01)


async def _listening(*caches: KeyCache) -> None:
    await _until(lambda: all(c.listening for c in caches), "the key-change listener did not connect")


async def _until_refused(cache: KeyCache, secret: str) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while await cache.find(secret) is not None:
        assert loop.time() - start < WAIT_S, "the revocation never reached this process"
        await asyncio.sleep(0.005)


@pytest.fixture
async def caches(db, database_url):
    # stale_s far beyond any wait here: a cache that stops trusting a slow listener also refuses a
    # revoked key, so only the notification itself can refuse it within these tests
    pair = [KeyCache(CountingDb(db), database_url, stale_s=3 * WAIT_S),
            KeyCache(CountingDb(db), database_url, stale_s=3 * WAIT_S)]
    for cache in pair:
        cache.start()
    await _listening(*pair)
    yield pair
    for cache in pair:
        await cache.stop()


async def test_a_verified_key_is_served_from_the_cache(db, caches):
    a, _ = caches
    key, secret = await db.run(lambda conn: keys.create(conn, "inference", [], "cached"))
    assert (await a.find(secret)).id == key.id
    assert (await a.find(secret)).id == key.id
    assert a.db.lookups == 1


async def test_a_revocation_in_one_process_reaches_the_other(db, caches):
    a, b = caches
    key, secret = await db.run(lambda conn: keys.create(conn, "inference", [], "shared"))
    assert (await a.find(secret)).id == key.id and (await b.find(secret)).id == key.id
    await db.run(lambda conn: keys.revoke(conn, key.id))  # as process A's revoke route does
    a.forget()
    assert await a.find(secret) is None
    await _until_refused(b, secret)


async def test_a_revocation_with_raw_sql_is_heard_too(db, database_url, caches):
    a, _ = caches
    key, secret = await db.run(lambda conn: keys.create(conn, "auditor", [], "raw"))
    assert (await a.find(secret)).id == key.id
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (key.id,))
    await _until_refused(a, secret)


async def test_nothing_is_cached_while_the_listener_is_down(db):
    cache = KeyCache(CountingDb(db), "postgresql://nobody@127.0.0.1:1/none", retry_s=0.05)
    cache.start()
    try:
        await asyncio.sleep(0.2)
        assert not cache.listening
        key, secret = await db.run(lambda conn: keys.create(conn, "inference", [], "unheard"))
        assert (await cache.find(secret)).id == key.id
        assert (await cache.find(secret)).id == key.id
        assert cache.db.lookups == 2
        await db.run(lambda conn: keys.revoke(conn, key.id))  # no notification can reach it
        assert await cache.find(secret) is None
    finally:
        await cache.stop()


async def test_a_lookup_that_overlaps_a_change_is_not_cached(db, database_url):
    cache = KeyCache(None, database_url)  # type: ignore[arg-type]
    cache.db = CountingDb(db, on_lookup=cache.forget)  # a notification arrives mid-lookup
    cache.start()
    try:
        await _listening(cache)
        _, secret = await db.run(lambda conn: keys.create(conn, "inference", [], "racing"))
        assert await cache.find(secret) is not None
        assert await cache.find(secret) is not None
        assert cache.db.lookups == 2  # neither answer was kept
    finally:
        await cache.stop()


async def test_a_dropped_listener_stops_the_cache_until_it_is_back(db, database_url):
    # check_s is each SELECT 1's deadline too: 0.1 s, a loaded box can miss it and drop a healthy
    # listener in the "quiet" wait; a terminated backend is noticed on its socket, not by the check
    cache = KeyCache(CountingDb(db), database_url, retry_s=0.05, check_s=1.0)
    cache.start()
    try:
        await _listening(cache)
        await asyncio.sleep(0.3)  # quiet: the listener checks its connection and stays up
        assert cache.listening
        key, secret = await db.run(lambda conn: keys.create(conn, "inference", [], "dropped"))
        assert (await cache.find(secret)).id == key.id
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = %s", (LISTENER_NAME,))
        await _until(lambda: not cache.listening, "the listener never noticed its connection end")
        # and what it had cached is forgotten
        lookups = cache.db.lookups
        await _listening(cache)  # back, after retry_s
        assert (await cache.find(secret)).id == key.id
        assert cache.db.lookups == lookups + 1
    finally:
        await cache.stop()


async def test_a_listener_that_has_not_proved_itself_lately_is_not_trusted(db, caches):
    """A connection that died without a word cannot keep a revoked key cached: without a recent
    proof of life the cache is not served, whatever the driver believes."""
    a, _ = caches
    key, secret = await db.run(lambda conn: keys.create(conn, "inference", [], "silent"))
    assert (await a.find(secret)).id == key.id
    lookups = a.db.lookups
    a._proved_at -= a.stale_s  # as if the last SELECT 1 had answered stale_s ago, and none since
    assert a.listening and not a.serving
    assert (await a.find(secret)).id == key.id
    assert a.db.lookups == lookups + 1

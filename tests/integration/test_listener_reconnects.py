"""The key cache's and the webhook dispatcher's listeners (api.listening.listen) when their
connection is dropped (the database restarting, a terminated backend) and they listen again: each
outage is one WARNING naming it and its end one WARNING "listens again", word for word as each
listener said them before the two loops were one (01b13dd), and a second outage is said again
(its first line is not taken for a retry of the first outage). What each does on the way back is
its own: the key cache serves again, the dispatcher runs a round at once to catch up on what it
may have missed (its poll here is a minute away)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

from api import keys, webhooks
from api.keys import KeyCache
from api.webhooks import Dispatcher, DispatchSettings

WAIT_S = 30  # generous: a loaded box is slow to connect; what it waits for is what is asserted


async def _until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not condition():
        assert loop.time() - start < WAIT_S, what
        await asyncio.sleep(0.01)


def _said(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= logging.WARNING]


async def _drop(url: str, name: str) -> None:
    """Terminate the backend of the listener called `name` on this (the test's own) database: one,
    once it is seen (a loaded box once showed none there just after the listener said it listens
    again: CI at 4dace99), never two."""
    def terminated() -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE application_name = %s AND datname = current_database()", (name,)).fetchone()
        return row[0] if row else 0

    dropped = {"n": 0}

    def seen_and_dropped() -> bool:
        dropped["n"] = terminated()
        return dropped["n"] > 0

    await _until(seen_and_dropped, f"no backend of {name} to drop")
    assert dropped["n"] == 1, dropped


async def _dropped_twice(caplog, url: str, name: str, logger: str, back: str) -> list[str]:
    """Drop the listener twice, each time waiting for it to say it listens again: what it said."""
    for outages in (1, 2):
        await _drop(url, name)
        await _until(lambda n=outages: _said(caplog, logger).count(back) == n, f"never listened again ({outages})")
    return _said(caplog, logger)


async def test_the_key_listener_dropped_twice_says_each_outage_and_each_return_once_and_serves_again(
        scratch_url, caplog):
    back = "the key-change listener listens again; caching API keys"
    cache = KeyCache(None, scratch_url, retry_s=0.05, check_s=1.0, stale_s=30.0)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO):
        cache.start()
        try:
            await _until(lambda: cache.listening, "the key-change listener did not connect")
            said = await _dropped_twice(caplog, scratch_url, keys.LISTENER_NAME, "api.keys", back)
            await _until(lambda: cache.serving, "the cache is not served once the listener is back")
        finally:
            await cache.stop()
    assert not cache.listening  # stopped (cancelled): marked down as it ends
    down = "not caching API keys: the key-change listener is down ("
    assert [line.startswith(down) and line.endswith("); retrying every 0.05 s") for line in said] == [
        True, False, True, False], said
    assert said[1::2] == [back, back], said


class _NoDatabase:
    """The dispatcher's rounds are counted here, not run: only its stop() reaches this."""

    async def dispose(self) -> None:
        return None


async def test_the_webhook_listener_dropped_twice_says_each_outage_and_each_return_once_and_wakes_a_round(
        scratch_url, caplog):
    back = "webhook listener listens again"
    dispatcher = Dispatcher(_NoDatabase(), DispatchSettings(1.0, 60.0), listen_url=scratch_url,  # type: ignore[arg-type]
                            retry_s=0.05)
    rounds = {"n": 0}

    async def tick() -> int:
        rounds["n"] += 1
        return 0

    dispatcher.tick = tick  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO):
        dispatcher.start()
        try:
            # the round at start, and the one its first LISTEN wakes (the poll is a minute away)
            await _until(lambda: dispatcher.listening and rounds["n"] >= 2, "the webhook listener did not connect")
            for outages in (1, 2):
                before = rounds["n"]
                await _drop(scratch_url, webhooks.LISTENER_NAME)
                await _until(lambda n=outages: _said(caplog, "tokentill.webhooks").count(back) == n,
                             f"the webhook listener never listened again ({outages})")
                assert dispatcher.listening
                await _until(lambda b=before: rounds["n"] > b, "listening again woke no round")
        finally:
            await dispatcher.stop()
    assert not dispatcher.listening
    said = [line for line in _said(caplog, "tokentill.webhooks") if "listener" in line]
    down = "webhook listener down, polling every 60 s ("
    assert [line.startswith(down) and line.endswith(")") for line in said] == [True, False, True, False], said
    assert said[1::2] == [back, back], said

"""The key cache's and the webhook dispatcher's listeners during a database outage: each retries
every second, and each retry logged a WARNING with the driver's error (3,600 lines an hour per
listener and per process, the outage's first line lost among them). Now one line when a listener
goes down and one when it listens again."""
from __future__ import annotations

import asyncio
import logging

from api.keys import KeyCache
from api.webhooks import Dispatcher, DispatchSettings

DOWN = "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2"  # nothing listens on port 1: refused at once


def _said(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= logging.WARNING]


async def test_the_key_listener_down_for_many_retries_is_one_warning(caplog):
    cache = KeyCache(None, DOWN, retry_s=0.02)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO):
        cache.start()
        await asyncio.sleep(0.6)
        await cache.stop()
    said = _said(caplog, "api.keys")
    assert len(said) == 1 and "key-change listener is down" in said[0], said


async def test_the_webhook_listener_down_for_many_retries_is_one_warning(caplog):
    dispatcher = Dispatcher(None, DispatchSettings(1.0, 60.0), listen_url=DOWN, retry_s=0.02)  # type: ignore[arg-type]
    dispatcher.tick = _never  # type: ignore[method-assign]  # rounds are not what this is about
    with caplog.at_level(logging.INFO):
        dispatcher.start()
        await asyncio.sleep(0.6)
        for task in (dispatcher._loop, dispatcher._listener):
            task.cancel()
        await asyncio.gather(dispatcher._loop, dispatcher._listener, return_exceptions=True)
    said = [m for m in _said(caplog, "tokentill.webhooks") if "listener" in m]
    assert len(said) == 1 and "webhook listener down" in said[0], said


async def _never() -> int:
    return 0


async def test_webhook_rounds_failing_in_a_row_are_one_warning_and_their_recovery_one(caplog):
    """Each failed round (the database down: every poll) logged a WARNING of its own."""
    outcomes = [RuntimeError("the database is down")] * 5

    async def tick() -> int:
        if outcomes:
            raise outcomes.pop()
        return 0

    dispatcher = Dispatcher(None, DispatchSettings(1.0, 0.01))  # type: ignore[arg-type]
    dispatcher.tick = tick  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO):
        dispatcher.start()
        await asyncio.sleep(0.5)
        dispatcher._loop.cancel()
        await asyncio.gather(dispatcher._loop, return_exceptions=True)
    assert not outcomes
    assert _said(caplog, "tokentill.webhooks") == ["webhook dispatch round failed: the database is down",
                                                   "webhook dispatch rounds succeed again after 5 failed"]

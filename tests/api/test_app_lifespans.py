"""One app, one lifespan at a time, each on whatever event loop runs it.

An in-process client (AsyncTestClient) runs the app's lifespan on an event loop of its own (a
blocking portal's thread). A second client of the same app, one after the other, runs it again on
another loop: the webhook dispatcher made its wake-up event once, for the app, so the second
lifespan's dispatcher died at its first wait (`RuntimeError: <asyncio.locks.Event ...> is bound to
a different event loop`, logged as the `webhook-dispatcher` task's exception never retrieved) and
sent nothing more. A second client entered while the first still runs (the console tests' signed-in
browser beside the API client) started every service a second time and stopped them under the
first: it now shares the first one's loop and lifespan (tests/api/apps.py), and the app refuses a
second lifespan while one runs.
"""
from __future__ import annotations

import asyncio
import logging
import time

import pytest
from litestar.testing import AsyncTestClient

from api.webhooks import ROUNDS
from tests.api.apps import api_app, api_client

ROUNDS_WANTED = 3  # rounds of the dispatcher in the second lifespan, each after a wait on its event
CEILING_S = 120.0  # a loaded machine; the test ends as soon as the rounds are seen


def _ok_rounds() -> float:
    return ROUNDS.labels("ok")._value.get()


async def _dispatcher_task(client: AsyncTestClient) -> asyncio.Task:
    async def find() -> asyncio.Task:
        [task] = [t for t in asyncio.all_tasks() if t.get_name() == "webhook-dispatcher"]
        return task

    return client.blocking_portal.call(find)


async def _rounds_after_waits(client: AsyncTestClient) -> None:
    """Until the lifespan's dispatcher has done ROUNDS_WANTED rounds more (each one after a wait on
    its wake-up event); fails at once, with its error, if the dispatcher's task ended."""
    task = await _dispatcher_task(client)
    before, deadline = _ok_rounds(), time.monotonic() + CEILING_S
    while _ok_rounds() - before < ROUNDS_WANTED:
        assert not task.done(), f"the webhook dispatcher ended: {task.exception()!r}"
        assert time.monotonic() < deadline, "the webhook dispatcher did no round"
        await asyncio.sleep(0.05)
    assert not task.done()


async def test_a_second_lifespan_of_an_app_on_another_loop_keeps_its_webhook_dispatcher_running(
        db, database_url, caplog) -> None:
    app = api_app(database_url, webhook_poll_s=0.05)
    caplog.set_level(logging.WARNING)
    for _ in range(2):  # two clients one after the other: two lifespans, each on an event loop of its own
        async with AsyncTestClient(app=app) as client:
            await _rounds_after_waits(client)
    assert not [r for r in caplog.records if "different event loop" in r.getMessage() or r.levelno >= logging.ERROR]


async def test_a_second_lifespan_of_an_app_that_runs_is_refused(db, database_url) -> None:
    app = api_app(database_url, webhook_poll_s=0.05)
    async with AsyncTestClient(app=app) as first:
        with pytest.raises(BaseExceptionGroup) as refused:  # the test client's task group raises it
            async with AsyncTestClient(app=app):
                pass
        assert refused.group_contains(RuntimeError, match="already running: one lifespan at a time", depth=None)
        await _rounds_after_waits(first)  # the refused one stopped nothing of the first's
        assert (await first.get("/healthz")).status_code == 200


async def test_a_client_of_an_app_another_client_runs_shares_its_loop_and_lifespan(db, database_url) -> None:
    async with api_client(database_url) as first:
        async with api_client(app=first.app, send_admin=True) as second:
            assert second.blocking_portal is first.blocking_portal
            assert (await second.get("/v1/api-keys")).status_code == 200  # with the admin key it sends
        await _rounds_after_waits(first)  # the second's exit stopped nothing of the first's
        assert (await first.get("/healthz")).status_code == 200

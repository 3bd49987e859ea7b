"""A graceful stop while a scheduled job runs (a seal in its transaction): the scheduler's
shutdown cancels the job, which ends quietly; it runs again at the next start (every job works
from what the database says is due). It was an ERROR with a CancelledError traceback in the
server's log at every such stop."""
from __future__ import annotations

import asyncio
import logging

from wallets.jobs import Job, build_scheduler


async def test_a_job_running_when_the_scheduler_shuts_down_ends_without_an_error(caplog):
    started, finished = asyncio.Event(), []

    async def slow(_db) -> None:
        started.set()
        await asyncio.sleep(30)
        finished.append(True)

    scheduler = build_scheduler(None, [Job("slow", 1, slow)])  # type: ignore[arg-type]
    scheduler.start()
    await asyncio.wait_for(started.wait(), 10)
    with caplog.at_level(logging.INFO):
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0.2)
    assert not finished
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("slow" in r.getMessage() and "stopped" in r.getMessage() for r in caplog.records)

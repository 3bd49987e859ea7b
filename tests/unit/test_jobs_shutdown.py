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


def _series(name: str, **labels: str) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels)


async def test_every_jobs_runs_failures_duration_and_last_success_are_in_the_metrics():
    """Only a run's ok/error count was exported, and only once a run had that result: no series
    for a job that never failed (or never ran), nothing that said when a job last succeeded
    (a job stuck in its lock, or a scheduler that stopped, looked the same as a quiet one), nor
    how long a run took, nor runs skipped because the previous one was still going."""
    import time

    from wallets.jobs import run_job

    async def fine(_db) -> int:
        await asyncio.sleep(0.01)
        return 1

    async def broken(_db) -> int:
        raise RuntimeError("no")

    jobs = [Job("metrics_fine", 60, fine), Job("metrics_broken", 60, broken)]
    build_scheduler(None, jobs)  # type: ignore[arg-type]
    for job in ("metrics_fine", "metrics_broken"):
        for result in ("ok", "error", "skipped"):
            assert _series("tokentill_job_runs_total", job=job, result=result) == 0
    before = time.time()
    await run_job(None, jobs[0])  # type: ignore[arg-type]
    await run_job(None, jobs[1])  # type: ignore[arg-type]
    assert _series("tokentill_job_runs_total", job="metrics_fine", result="ok") == 1
    assert _series("tokentill_job_runs_total", job="metrics_broken", result="error") == 1
    assert before <= _series("tokentill_job_last_success_timestamp_seconds", job="metrics_fine") <= time.time()
    assert _series("tokentill_job_last_success_timestamp_seconds", job="metrics_broken") == 0
    assert _series("tokentill_job_duration_seconds_count", job="metrics_fine") == 1
    assert _series("tokentill_job_duration_seconds_sum", job="metrics_fine") >= 0.01


async def test_a_run_skipped_because_the_last_one_still_runs_is_counted():
    started, release = asyncio.Event(), asyncio.Event()

    async def long(_db) -> None:
        started.set()
        await release.wait()

    scheduler = build_scheduler(None, [Job("metrics_long", 1, long)])  # type: ignore[arg-type]
    scheduler.start()
    try:
        await asyncio.wait_for(started.wait(), 10)
        deadline = asyncio.get_running_loop().time() + 10
        while not _series("tokentill_job_runs_total", job="metrics_long", result="skipped"):
            assert asyncio.get_running_loop().time() < deadline, "no skipped run counted"
            await asyncio.sleep(0.1)
    finally:
        release.set()
        scheduler.shutdown(wait=False)


async def test_a_job_run_while_the_database_is_down_is_one_warning_line_not_a_traceback(caplog):
    """Every job run during a database outage logged ERROR with the driver's whole traceback:
    about 20 of them a minute (expire_reservations every 5 s, seal_journal every 10 s, ...) for
    an outage /readyz already reports. Now one line each; a job's other failures keep theirs."""
    import psycopg

    from wallets.jobs import run_job

    async def down(_db) -> None:
        raise psycopg.OperationalError("connection failed: connection to server on socket \"/x/.s.PGSQL.5432\" "
                                       "failed: No such file or directory\n\tIs the server running locally?")

    async def bug(_db) -> None:
        raise KeyError("a bug")

    before = _series("tokentill_job_runs_total", job="metrics_down", result="error") or 0
    with caplog.at_level(logging.INFO):
        await run_job(None, Job("metrics_down", 5, down))  # type: ignore[arg-type]
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert record.getMessage() == ("job metrics_down: the database is unavailable (connection failed: connection to "
                                   "server on socket \"/x/.s.PGSQL.5432\" failed: No such file or directory); "
                                   "it will run again")
    assert _series("tokentill_job_runs_total", job="metrics_down", result="error") == before + 1
    caplog.clear()
    with caplog.at_level(logging.INFO):
        await run_job(None, Job("metrics_bug", 5, bug))  # type: ignore[arg-type]
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.ERROR and record.exc_info is not None


async def test_a_job_failing_the_same_way_run_after_run_is_logged_once_and_its_recovery_once(caplog):
    """A statement timeout, a bug, the database down: every run of the job (expire_reservations
    every 5 s) logged it again, a traceback each time but for the database down, 720 an hour per
    job. The first run says it with its cause, the same failure again says nothing more (the runs
    are still counted), another failure is said, and the first run that succeeds says so once."""
    from wallets.jobs import run_job

    results: list[Exception | None] = [KeyError("a bug")] * 3 + [ValueError("another")] * 2 + [None] * 2

    async def flaky(_db) -> int:
        result = results.pop(0)
        if result is not None:
            raise result
        return 1

    job = Job("metrics_flaky", 5, flaky)
    before = _series("tokentill_job_runs_total", job="metrics_flaky", result="error") or 0
    with caplog.at_level(logging.INFO, logger="tokentill.jobs"):
        for _ in range(7):
            await run_job(None, job)  # type: ignore[arg-type]
    said = [(r.levelname, r.exc_info is not None, r.getMessage()) for r in caplog.records if r.name == "tokentill.jobs"]
    assert [(level, traceback) for level, traceback, _ in said] == [("ERROR", True), ("ERROR", True), ("INFO", False)]
    assert "a bug" in str(caplog.records[0].exc_info[1]) and "another" in str(caplog.records[1].exc_info[1])
    assert said[2][2] == "job metrics_flaky ran again after 5 failed runs"
    assert _series("tokentill_job_runs_total", job="metrics_flaky", result="error") == before + 5

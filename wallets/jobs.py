"""Time-driven work on APScheduler. Every job is idempotent, safe when several processes run it
at once (advisory locks and unique keys in the database), and catches up after downtime because
it works from what the database says is due, not from what the scheduler remembers."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.db import Database, is_unavailable
from ledger.seal import SealsDatedAhead, dated_ahead, horizon, seal_once
from wallets import store
from wallets.billing import close_due
from wallets.engine import lane_lock
from wallets.expiry import expire_grants, expire_reservations

log = logging.getLogger("tokentill.jobs")
EXPIRE_RESERVATIONS_EVERY_S, EXPIRE_GRANTS_EVERY_S, CLOSE_PERIODS_EVERY_S, FOLD_USAGE_EVERY_S = 5, 30, 60, 30
# result: ok, error, or skipped (due while the previous run of the job still ran, in this process)
JOB_RUNS = Counter("tokentill_job_runs", "Scheduled job runs", ["job", "result"])
JOB_RESULTS = ("ok", "error", "skipped")
JOB_DURATION = Histogram("tokentill_job_duration_seconds", "Scheduled job run duration, in seconds", ["job"],
                         buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900))
# 0 until the job first succeeds; under `serve --workers N` the latest of any worker's (dead ones' too)
JOB_LAST_SUCCESS = Gauge("tokentill_job_last_success_timestamp_seconds",
                         "When the job's last successful run ended (Unix time)", ["job"], multiprocess_mode="max")
# set by each fold_usage run (all lanes): what the fold keeps queued rather than take below 0 (0060);
# under `serve --workers N` the latest any live worker counted (a max kept a worker's stale count
# up to 30 s after the counters recovered, or for good while that worker's fold kept failing)
COUNTERS_KEPT_QUEUED = Gauge("tokentill_usage_counters_kept_queued",
                             "Usage counters whose queued period deltas would take them below 0, left queued by "
                             "the fold (their customers' periods stay unfolded)", multiprocess_mode="livemostrecent")


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    every_s: int
    run: Callable[[Database], Awaitable[object]]


async def seal_journal(db: Database) -> object:
    """Seal everything committed before the run began, in as many seals as that takes; what
    commits meanwhile is the next run's. (Sealing until a seal found nothing new never ended
    under steady posting: each seal found what committed while it ran.) Seals dated more than a day
    past the database's clock (after a planted seal) are taken, and while the last seal is dated so
    every run raises SealsDatedAhead, one that sealed nothing too (else its last success moved on
    whenever nothing was posted between two runs)."""
    until = await db.lookup(horizon)
    sealed = 0
    while (seal := await db.run(lambda conn: seal_once(conn, until))) is not None:
        sealed += seal.entries
    if (ahead := await db.lookup(dated_ahead)) is not None:  # taken, yet an error: see dated_ahead
        raise SealsDatedAhead(ahead)
    return sealed


class ItemsFailed(Exception):
    """A run did what it could, but left items undone (each logged where it failed): the run is
    an error, so that the job's last success stops while an item stays stuck."""

    def __init__(self, done: int, failed: list[str]) -> None:
        failed = list(dict.fromkeys(failed))  # close_due tries a refused customer again in each round
        more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
        super().__init__(f"{len(failed)} item(s) not done ({failed[0]}{more}), {done} done")


async def _every_item(run: Callable[[list[str]], Awaitable[int]]) -> int:
    failed: list[str] = []
    done = await run(failed)
    if failed:
        raise ItemsFailed(done, failed)
    return done


async def close_periods(db: Database) -> object:
    """Close every billing period whose grace window is over; finalize, number, announce."""
    async def run(failed: list[str]) -> int:
        refused: list[tuple[str, str]] = []
        closed = await close_due(db, failures=refused)
        failed += [f"the period of {customer}: {reason}" for customer, reason in refused]
        return len(closed)

    return await _every_item(run)


async def expire_due_reservations(db: Database) -> object:
    return await _every_item(lambda failed: expire_reservations(db, failures=failed))


async def expire_due_grants(db: Database) -> object:
    return await _every_item(lambda failed: expire_grants(db, failures=failed))


async def fold_usage(db: Database) -> object:
    """Fold every lane's queued charges into the usage rollups (migration 0026) and its period
    deltas into the period rollups and usage counters (0029), each lane in a transaction of its
    own under the lane's writer lock, as a batch of the lane folds. Batches fold only once enough
    is queued; this catches up when traffic stops, so the unfolded tail the readers add stays
    short. Then it sets the gauge of the counters the fold keeps queued (COUNTERS_KEPT_QUEUED).
    How many charges were folded."""
    async def queued_lanes(conn: AsyncConnection) -> list[int]:
        return [int(lane) for lane in (await conn.execute(text(
            "SELECT lane FROM usage_unfolded UNION SELECT lane FROM period_deltas ORDER BY lane"))).scalars()]

    folded = 0
    for lane in await db.read(queued_lanes):
        async def fold(conn: AsyncConnection, lane: int = lane) -> int:
            token = store.LANE.set(lane)
            try:
                return await store.fold_usage(conn)
            finally:
                store.LANE.reset(token)

        folded += await db.run(fold, locks=[lane_lock(lane)])
    COUNTERS_KEPT_QUEUED.set(await db.read(store.counters_kept_queued))
    return folded


def jobs(seal_interval_s: int) -> list[Job]:
    return [Job("seal_journal", seal_interval_s, seal_journal),
            Job("expire_reservations", EXPIRE_RESERVATIONS_EVERY_S, expire_due_reservations),
            Job("expire_grants", EXPIRE_GRANTS_EVERY_S, expire_due_grants),
            Job("close_periods", CLOSE_PERIODS_EVERY_S, close_periods),
            Job("fold_usage", FOLD_USAGE_EVERY_S, fold_usage)]


# Each failing job's last failure (its type and first line) and how many runs in a row failed:
# a failure is logged when it differs from the run before's, not at every run (the runs are counted).
_FAILING: dict[str, tuple[str, int]] = {}


def _said_before(job: Job, exc: BaseException) -> bool:
    """Whether the job's previous run failed the same way (then this one is not logged again)."""
    cause = getattr(exc, "orig", None) or exc
    signature = f"{type(cause).__name__}: {str(cause).partition(chr(10))[0]}"
    if isinstance(exc, ItemsFailed):  # its counts change from run to run; the items are logged where they fail
        signature = str(exc)
    last, runs = _FAILING.get(job.name, ("", 0))
    _FAILING[job.name] = (signature, runs + 1)
    return signature == last


async def run_job(db: Database, job: Job) -> None:
    started = time.perf_counter()
    try:
        result = await job.run(db)
    except asyncio.CancelledError:
        # The scheduler's shutdown cancels a job still running (a graceful stop): its transaction
        # rolls back, and the next start does the work, which is found from the database.
        log.info("job %s stopped by the shutdown; the next start runs it again", job.name)
        return
    except Exception as exc:
        JOB_DURATION.labels(job.name).observe(time.perf_counter() - started)
        JOB_RUNS.labels(job.name, "error").inc()
        if _said_before(job, exc):  # as the run before: said then (720 lines an hour at every 5 s)
            log.debug("job %s failed again as before: %s", job.name, exc)
        elif isinstance(exc, ItemsFailed):  # each item logged already: one line, no traceback
            log.error("job %s: %s; it will run again", job.name, exc)
        elif is_unavailable(exc):  # an outage /readyz reports: one line, not the driver's traceback
            cause = getattr(exc, "orig", None) or exc  # the driver's words, not SQLAlchemy's wrapping
            reason = " ".join(str(cause).split("\n")[0].split()) or type(cause).__name__
            log.warning("job %s: the database is unavailable (%s); it will run again", job.name, reason)
        else:
            log.exception("job %s failed; it will run again", job.name)
        return
    JOB_DURATION.labels(job.name).observe(time.perf_counter() - started)
    JOB_RUNS.labels(job.name, "ok").inc()
    JOB_LAST_SUCCESS.labels(job.name).set_to_current_time()
    failed = _FAILING.pop(job.name, None)
    if failed is not None:
        log.info("job %s ran again after %d failed runs", job.name, failed[1])
    log.debug("job %s: %s", job.name, result)


def _skipped(event: JobEvent) -> None:
    JOB_RUNS.labels(event.job_id, "skipped").inc()


def build_scheduler(db: Database, job_list: list[Job]) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone="UTC")
    for job in job_list:
        scheduler.add_job(run_job, "interval", seconds=job.every_s, args=[db, job], id=job.name,
                          coalesce=True, max_instances=1, misfire_grace_time=None)
        for result in JOB_RESULTS:  # every series from the start, at 0: an alert on a rate sees them
            JOB_RUNS.labels(job.name, result)
        JOB_DURATION.labels(job.name)
        JOB_LAST_SUCCESS.labels(job.name)
    scheduler.add_listener(_skipped, EVENT_JOB_MAX_INSTANCES)
    return scheduler

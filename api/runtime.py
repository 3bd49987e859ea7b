"""Where the database comes from: the configured server, or the embedded cluster; then migrate.
And the supervisor that keeps an embedded cluster running under a live process."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import sqlalchemy.exc

from api.settings import Settings
from ledger import embedded
from ledger.db import sqlalchemy_url, sqlstate_of
from migrations import runner

log = logging.getLogger("tokentill.supervisor")


# Every line a server writes, uvicorn's too (api/server.py leaves it no format of its own): its
# time, level, logger and process (which worker, under --workers).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def log_to_stderr(settings: Settings) -> None:
    """Our loggers at the configured level; libraries (httpx, the embedded server) at WARNING."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    logging.getLogger("tokentill").setLevel(settings.log_level)


@dataclass(slots=True)
class DatabaseHandle:
    url: str
    cluster: embedded.EmbeddedPostgres | None = None

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()


def open_database(settings: Settings, *, migrate: bool = True) -> DatabaseHandle:
    """Start or join the embedded cluster when no URL is set; apply migrations under a lock.

    SIGTERM and SIGINT wait while the embedded cluster starts (initdb, pg_ctl and the wheel's
    record of this process as a user of it are not cut midway: a postmaster started but not yet
    recorded would outlive the process), and take effect once it runs; during the migrations
    they interrupt at once (the migration in progress rolls back). Either way this process
    leaves the cluster as it does at exit: it stops when no other process uses it."""
    held = None
    if settings.database_url:
        check_sessions(settings.database_url, settings.pool_timeout_s)
        handle = DatabaseHandle(settings.database_url)
    else:
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission, a read-only file system
            raise SystemExit(f"TOKENTILL_DATA_DIR: cannot use {settings.data_dir}: {exc.strerror}") from None
        logging.getLogger("tokentill").info("starting the embedded PostgreSQL in %s", settings.data_dir / "pg")
        held = embedded.hold_signals()
        try:
            cluster = embedded.start(settings.data_dir / "pg", keep=True)
        except embedded.StartFailed as exc:
            embedded.release_signals(held)
            raise SystemExit(f"TOKENTILL_DATA_DIR: {exc}") from None
        except BaseException:
            embedded.release_signals(held)
            raise
        handle = DatabaseHandle(cluster.url, cluster)
    try:
        if held is not None:
            embedded.release_signals(held)  # a signal that came meanwhile takes effect here
        if migrate:
            logging.getLogger("tokentill").info("migrating the database")
            upgrade(handle, settings)
    except BaseException:
        handle.close()
        raise
    return handle


def check_spool(url: str, settings: Settings) -> None:
    """Stop the start in one line, exit 1, when the gateway cannot keep its spool (under
    TOKENTILL_SPOOL_DIR) for the database at `url`: a directory it cannot make (a file in the
    way, a read-only file system, another user's) or a lock file it cannot write. Found by the
    app's start-up instead, it was uvicorn's exception-group traceback and exit 3, the code of a
    database that cannot be reached."""
    from api.gateway.settles import spool_for

    spool = spool_for(url, settings.gateway.spool_dir)
    try:
        spool.records()  # makes the directory and takes the spool's lock, as the gateway's start does
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if exc.filename and str(exc.filename) != str(spool.path.parent):  # the lock file, say
            reason += f": {exc.filename}"
        raise SystemExit(f"TOKENTILL_SPOOL_DIR: the gateway cannot keep its spool in {spool.path.parent}: "
                         f"{reason}") from None


def check_sessions(url: str, timeout_s: float = 5.0) -> None:
    """Stop the start in one line when the server's sessions are not tokentill's to keep: a pooler
    in transaction or statement mode (PgBouncer's `pool_mode = transaction`) hands each
    transaction to whichever server session is free, so the session-level advisory locks a wallet
    batch takes before its transaction went to the next client of that session (which then took
    the same lane's lock as its own: two writers at once), the lead's temporary functions were
    missing, and LISTEN heard nothing (a revoked key stayed cached in the other processes). Two
    sessions tell: one asks its backend's pid; the other, inside a transaction, asks its own, which
    a pooler gives the session just freed; the first asks again, and under a pooler gets another.
    A pooler that drops the `options` the pool connects with (PgBouncer's
    `ignore_startup_parameters = options`) is refused too: its sessions ran without
    TimeZone=UTC and without the idle-in-transaction timeout that frees a hung writer's locks."""
    import psycopg

    from ledger.db import IDLE_IN_TRANSACTION_MS, session_options

    # connected as the pool connects: its options, and its timeout (libpq's whole seconds, at least 2),
    # so that a host that takes the connection and never answers stops the start, as the pool would
    options = session_options(url, IDLE_IN_TRANSACTION_MS)
    kwargs = {"autocommit": True, "options": options, "connect_timeout": max(2, math.ceil(timeout_s))}
    with runner.when_free(lambda: psycopg.connect(url, **kwargs)) as first:
        try:
            second: psycopg.Connection | None = psycopg.connect(url, **kwargs)
        except psycopg.OperationalError as exc:
            # a role limited to one connection (CONNECTION LIMIT 1, enough for `tokentill migrate`):
            # the server refused the second a process of its own, where a pooler that shares
            # sessions would have lent it the first's, idle
            if not runner.limit_reached(exc):
                raise
            second = None
        with second if second is not None else contextlib.nullcontext():
            pid, zone, idle = first.execute(
                "SELECT pg_backend_pid(), current_setting('TimeZone'), setting::int FROM pg_settings "
                "WHERE name = 'idle_in_transaction_session_timeout'").fetchone()
            shared = False
            try:
                if second is not None:
                    with second.transaction():
                        shared = second.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
                        if not shared:
                            shared = first.execute("SELECT pg_backend_pid()").fetchone()[0] != pid
            except psycopg.errors.ProtocolViolation:  # "transaction blocks not allowed in statement pooling mode"
                shared = True
    if shared:
        raise SystemExit("error: TOKENTILL_DATABASE_URL reaches PostgreSQL through a pooler that shares its sessions "
                         "between clients (transaction or statement pooling): tokentill needs sessions of its own; "
                         "use session pooling, or connect directly")
    if zone != "UTC" or idle != IDLE_IN_TRANSACTION_MS:
        raise SystemExit(f"error: TOKENTILL_DATABASE_URL's sessions lost the options tokentill connects with "
                         f"(TimeZone is {zone}, idle_in_transaction_session_timeout {idle} ms): a pooler dropped them "
                         f"(PgBouncer's ignore_startup_parameters = options); connect directly")


def upgrade(handle: DatabaseHandle, settings: Settings, *, to: str | None = None) -> str | None:
    """Migrate to head (or to revision `to`, up or down); a database a newer tokentill migrated
    stops the command with one line."""
    try:
        revision = runner.upgrade(sync_url(handle.url), lanes=settings.lanes, to=to)
        if settings.lanes is not None:
            _warn_fixed_lanes(handle.url, settings.lanes)
        return revision
    except runner.TransactionIdsBehind as exc:
        raise SystemExit(f"error: {transaction_ids_behind(exc, handle.cluster)}") from None
    except (runner.UnknownRevision, runner.ServerTooOld, runner.DowngradeRefused) as exc:
        raise SystemExit(f"error: {exc}") from None
    except sqlalchemy.exc.DBAPIError as exc:
        if sqlstate_of(exc) not in NOT_ALLOWED_TO_CREATE:
            raise
        reason = str(exc.orig).splitlines()[0]
        raise SystemExit(f"error: cannot migrate the database: {reason}: the user of TOKENTILL_DATABASE_URL must "
                         f"own the database, or be granted USAGE and CREATE on its schema") from None


def transaction_ids_behind(exc: runner.TransactionIdsBehind, cluster: embedded.EmbeddedPostgres | None) -> str:
    """What to do about `exc`: on the embedded cluster, `tokentill restore` or the wheel's
    pg_resetwal on its data dir; on another server, its operator's pg_resetwal."""
    if cluster is None:
        return str(exc)
    return exc.embedded(cluster.pgdata, cluster.bin_dir / "pg_resetwal", cluster.system_user)


def _warn_fixed_lanes(url: str, asked: int) -> None:
    """TOKENTILL_LANES counts when the database is created (migration 0009); say so when it asks
    for other lanes than the database has."""
    import psycopg

    with runner.when_free(lambda: psycopg.connect(url, autocommit=True)) as conn:  # the migrations' just closed
        if conn.execute("SELECT to_regclass('ledger_settings')").fetchone()[0] is None:
            return  # migrated down below 0009: no lanes yet
        lanes = int(conn.execute("SELECT lanes FROM ledger_settings").fetchone()[0])
    if lanes != asked:
        logging.getLogger("tokentill").warning(
            "TOKENTILL_LANES is %d, but this database was created with %d lanes, fixed since: TOKENTILL_LANES only "
            "counts for a database created now", asked, lanes)


# insufficient_privilege (on PostgreSQL 15 and later only the owner creates in `public`), and
# invalid_schema_name (no schema the user may use: nowhere to create)
NOT_ALLOWED_TO_CREATE = frozenset({"42501", "3F000"})


# Database connections a server process opens beside its pool and the pool's overflow (2 x
# TOKENTILL_POOL_SIZE): the key listener, the readiness probe's own session when the pool is full and
# the console's journal export (one at a time, api.console.export.WRITING); with webhooks, the
# dispatcher's pool of 2 and its overflow, and its listener.
BESIDE_THE_POOL = 3
BESIDE_FOR_WEBHOOKS = 5


def connections_limit(url: str) -> tuple[int, int]:
    """The database's max_connections and how many of them are reserved (for superusers and roles
    granted pg_use_reserved_connections)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        limit, reserved = (int(v) for v in conn.execute(
            "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int"
            " + coalesce(current_setting('reserved_connections', true)::int, 0)").fetchone())
    return limit, reserved


def beside_the_pool(settings: Settings) -> int:
    """Connections a server process opens beside its pool and overflow (BESIDE_THE_POOL, and
    BESIDE_FOR_WEBHOOKS with webhooks on)."""
    return BESIDE_THE_POOL + (BESIDE_FOR_WEBHOOKS if settings.webhooks else 0)


def largest_pool(allowed: int, settings: Settings, *, processes: int) -> int:
    """The largest TOKENTILL_POOL_SIZE with which `processes` server processes fit in `allowed`
    database connections (0: none does)."""
    return (allowed // processes - beside_the_pool(settings)) // 2


def check_connection_budget(url: str, settings: Settings, *, processes: int) -> int:
    """Stop the start when `processes` server processes may open more connections than the database
    allows others than superusers (README, Several processes), naming the largest pool (and count of
    processes) that fits: under load some of their requests would be answered 503 (too many
    clients). With TOKENTILL_POOL_OVERCOMMIT=on, a warning only. Returns what the database allows."""
    limit, reserved = connections_limit(url)
    allowed = limit - reserved
    beside = beside_the_pool(settings)
    most = processes * (2 * settings.pool_size + beside)
    if most <= allowed:
        return allowed
    said = (f"{processes} process{'es' if processes > 1 else ''} x (2 x TOKENTILL_POOL_SIZE {settings.pool_size} + "
            f"{beside}) = {most} database connections at most, but the database allows {allowed} (max_connections "
            f"{limit} less {reserved} reserved)")
    if settings.pool_overcommit:
        logging.getLogger("tokentill").warning("%s; TOKENTILL_POOL_OVERCOMMIT is on: under load some requests would "
                                               "be answered 503", said)
        return allowed
    pool = largest_pool(allowed, settings, processes=processes)
    workers = allowed // (2 * settings.pool_size + beside)
    fixes = [*([f"TOKENTILL_POOL_SIZE (to at most {pool})"] if pool >= 1 else []),
             *([f"TOKENTILL_WORKERS (to at most {workers})"] if processes > 1 and workers >= 1 else [])]
    fix = f"lower {' or '.join(fixes)}, or raise" if fixes else "raise"
    raise SystemExit(f"{said}: {fix} the server's max_connections (TOKENTILL_POOL_OVERCOMMIT=on starts anyway)")


def sync_url(url: str) -> str:
    return sqlalchemy_url(url).render_as_string(hide_password=False)


class Supervisor:
    """Watches the embedded postmaster a few times a second; when it has died, restarts it
    (`EmbeddedPostgres.ensure_running`, safe when every process sharing the cluster tries at
    once) and renews the pool, whose connections went down with the old server.

    Readiness asks `running()`, which looks at the postmaster itself: 503 from the moment it
    dies, not from the next check. A postmaster restarted by another process is noticed by its
    new identity, and the pool is renewed all the same."""

    def __init__(self, cluster: embedded.EmbeddedPostgres, renew_pool: Callable[[], Awaitable[None]], *,
                 interval_s: float = 0.25) -> None:
        self.cluster = cluster
        self.renew_pool = renew_pool
        self.interval_s = interval_s
        self.restarts = 0  # by this process
        self._seen = cluster.postmaster()
        self._stopping = asyncio.Event()  # made again by each start(): an Event is bound to the loop that waits on it
        self._task: asyncio.Task[None] | None = None

    def running(self) -> bool:
        """Whether the postmaster runs now (cheap: two small file reads)."""
        return self.cluster.postmaster() is not None

    def start(self) -> None:
        """Watch on the running event loop, which may be another than an earlier start's (an app's
        second lifespan: a test client runs each on an event loop of its own), with a stop event
        of its own: a stopped supervisor watches again."""
        if self._task is None:
            self._stopping = asyncio.Event()
            self._task = asyncio.create_task(self._watch(), name="embedded-postgres-supervisor")

    async def stop(self) -> None:
        """Stop watching; waits for a restart in progress (it cannot be interrupted midway)."""
        self._stopping.set()
        if self._task is not None:
            task, self._task = self._task, None
            await task

    async def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.check()
            except Exception:  # keep watching whatever happened; the next check tries again
                log.exception("supervising the embedded PostgreSQL in %s failed", self.cluster.pgdata)
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)
            except TimeoutError:
                pass

    async def check(self) -> None:
        postmaster = self.cluster.postmaster()
        if postmaster is None:
            down_since = time.monotonic()
            log.warning("the embedded PostgreSQL in %s is down; restarting it", self.cluster.pgdata)
            if await asyncio.to_thread(self.cluster.ensure_running):
                self.restarts += 1
            postmaster = self.cluster.postmaster()
            if postmaster is None:
                return
            log.warning("the embedded PostgreSQL runs again, %.2f s after it was seen down",
                        time.monotonic() - down_since)
        if postmaster != self._seen:
            await self.renew_pool()  # every pooled connection belonged to the old server
            self._seen = postmaster

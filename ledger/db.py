"""The database handle and the one unit of work: a SERIALIZABLE transaction, retried as a whole.

A command's `work(conn)` may run several times; its only effects are inside the transaction.
Serialization failures and deadlocks never reach a caller unless the retry budget is spent.
"""
from __future__ import annotations

import asyncio
import hashlib
import math
import random
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import psycopg
from prometheus_client import Counter
from psycopg import sql
from psycopg.types.json import set_json_loads
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

T = TypeVar("T")
# serialization_failure, deadlock_detected, and idle_in_transaction_session_timeout: the server
# ended a transaction that sat idle past its timeout (a writer's process starved of CPU for
# seconds, not hung: it goes on). It ends only a session idle INSIDE a transaction, never one whose
# COMMIT it has, so nothing of it was committed: the work runs again on a fresh connection.
RETRYABLE = frozenset({"40001", "40P01", "25P03"})
# A Lead's function that the session does not have though it was thought to (it cannot be dropped
# but by ending the session: never seen, guarded): the attempt is sent again at once, creating it.
LEAD_MISSING = "42883"  # undefined_function
LEAD_REFUSED = "42501"  # insufficient_privilege: the role may not create temporary objects here
# A session that sits inside a transaction this long is ended by the server, and its advisory
# locks with it: a process that hangs or loses the network while holding the wallet writer's
# lock stops everyone's writes for a minute, not until TCP gives up.
IDLE_IN_TRANSACTION_MS = 60_000
# A writer's transaction (one taken under advisory locks: a wallet batch under its lane's lock)
# runs a few round trips of milliseconds each, so a session idle inside one for this long has
# hung or been stopped: the server ends it, and the lane it held is free again in seconds.
WRITER_IDLE_IN_TRANSACTION_MS = 5_000

RETRIES = Counter(
    "tokentill_transaction_retries",
    "Transactions retried after a serialization failure, a deadlock or an idle transaction the server ended",
    ["sqlstate"],
)
EXHAUSTED = Counter(
    "tokentill_transaction_retries_exhausted", "Transactions that spent their whole retry budget"
)


class RetriesExhaustedError(Exception):
    code = "service_unavailable"


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for a name (an account code, a customer id)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def sqlstate_of(exc: BaseException | None) -> str | None:
    """The SQLSTATE behind an exception, found through wrappers (.orig) and causes."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if isinstance(state, str):
            return state
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    return None


# SQLSTATEs of a server that is not there for now: connection exceptions (class 08), too many
# connections, out of shared memory (53200: the predicate lock table is full, as when a stopped
# writer's transaction keeps every other lane's locks alive until it is ended), out of disk
# (53100 disk_full, 53000 insufficient_resources: every write refused until the operator frees
# space; they were a 500, which clients do not retry), and a server shutting down, crashed or
# still starting (57P01-57P03).
UNAVAILABLE_STATES = frozenset({"53000", "53100", "53200", "53300", "57P01", "57P02", "57P03", "25006"})
# 25006 read_only_sql_transaction: a server that takes no writes for now (a failover's standby,
# reached before the name moved on; default_transaction_read_only). A session learns it when it
# starts, so the pool's are replaced (Database._renew_if_read_only): kept, they wrote nothing again.
READ_ONLY = "25006"


def is_unavailable(exc: BaseException | None) -> bool:
    """Whether `exc` says the database cannot be reached or used right now (down, restarting,
    connection lost, pool exhausted): a fault a caller may retry, not a bad request and not a bug."""
    import psycopg
    from sqlalchemy import exc as sa_exc

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, sa_exc.TimeoutError):  # the pool had no connection to give in time
            return True
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return True
        state = getattr(exc, "sqlstate", None)
        if isinstance(state, str) and (state.startswith("08") or state in UNAVAILABLE_STATES):
            return True
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and state is None:
            return True  # no SQLSTATE: the connection failed or broke before the server answered
        if isinstance(exc, ConnectionError | TimeoutError):
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    return False


def sqlalchemy_url(url: str, *, driver: str = "psycopg") -> URL:
    """A libpq URL (postgresql://…, socket ?host=/dir included) as a SQLAlchemy URL."""
    parsed = make_url(url)
    return parsed.set(drivername=f"postgresql+{driver}")


@dataclass(frozen=True, slots=True)
class Lead:
    """A read that rides in a locked transaction's first round trip, right after its BEGIN: a
    call of the session's temporary PL/pgSQL function `pg_temp.<name>`, which `create` makes (a
    CREATE OR REPLACE FUNCTION, sent alone, committed, on the session's first use of it), with
    `args` written as literals (psycopg's quoting) cast to `types`. Its first row goes to the
    work: `work(conn, row)`. The function's query is planned once per session (its generic
    plan), where the same read as a literal query would be planned every time. A temporary
    function lives as long as its session: neither a ROLLBACK nor psycopg's DEALLOCATE ALL after
    one (which took the server-side prepared statement this once was) removes it."""
    name: str
    create: str
    args: tuple[Any, ...]
    types: tuple[str, ...]


@dataclass(slots=True)
class Database:
    engine: AsyncEngine
    attempts: int = 30
    max_backoff_s: float = 0.05
    writer_idle_ms: int = WRITER_IDLE_IN_TRANSACTION_MS
    # The role may not create the leads' temporary functions (no TEMPORARY privilege on the
    # database): work is then called without a lead's row, and reads for itself.
    leads_refused: bool = False

    async def run(self, work: Callable[..., Awaitable[T]], *,
                  locks: Sequence[int] = (), lead: Callable[[], Lead] | None = None) -> T:
        """Run `work` in one SERIALIZABLE transaction; commit; retry it whole on 40001/40P01.

        `locks` are advisory lock keys taken, in sorted order, *before* the transaction starts,
        so its snapshot is newer than whatever the previous holder committed: work that shares
        a key queues instead of failing with 40001 and retrying in a storm.

        `lead` (with `locks` only) makes each attempt's first read (see Lead), sent in the lock +
        BEGIN round trip; `work` is then called as `work(conn, row)` with its first row, or as
        `work(conn, None)` where the role may not create the lead's function (`leads_refused`).
        """
        if lead is not None and not locks:
            raise ValueError("a lead read rides in the locks' round trip: give locks")

        async def once() -> T:
            if not locks:
                async with self.engine.begin() as conn:
                    return await work(conn)
            keys = sorted(set(locks))
            if lead is None:
                return await self._run_locked(work, keys, None)
            if self.leads_refused:
                return await self._run_locked(lambda conn: work(conn, None), keys, None)
            sent = lead()
            try:
                return await self._run_locked(work, keys, sent)
            except Exception as exc:  # before the work began: the function was not there, or refused
                state = sqlstate_of(exc)
                if state == LEAD_REFUSED and self.leads_refused:  # its CREATE was: read without it
                    return await self._run_locked(lambda conn: work(conn, None), keys, None)
                if state != LEAD_MISSING:
                    raise
            return await self._run_locked(work, keys, sent)

        return await self._retried(once)

    async def _retried(self, once: Callable[[], Awaitable[T]]) -> T:
        """`once()` (one whole transaction), run again after a serialization failure, a deadlock or
        an idle transaction the server ended (RETRYABLE), with a jittered backoff, up to `attempts`
        times: RetriesExhaustedError once they are spent."""
        for attempt in range(1, self.attempts + 1):
            try:
                return await once()
            except Exception as exc:
                state = sqlstate_of(exc)
                if state not in RETRYABLE:
                    await self._renew_if_read_only(state)
                    raise
                RETRIES.labels(state).inc()
                if attempt == self.attempts:
                    EXHAUSTED.inc()
                    raise RetriesExhaustedError("the database is too contended; try again") from exc
            await asyncio.sleep(random.uniform(0, min(self.max_backoff_s, 0.001 * 2**attempt)))
        raise AssertionError("unreachable")

    async def _run_locked(self, work: Callable[..., Awaitable[T]], keys: list[int], lead: Lead | None) -> T:
        """Lock, then BEGIN (and the lead read), in one round trip; COMMIT, then unlock, in one
        more. The session runs in autocommit as far as the driver knows; the block is ours."""
        async with self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            pooled = await conn.get_raw_connection()
            driver = pooled.driver_connection
            created = _CREATED.setdefault(driver, set())
            try:
                text = _lock_then_begin(keys, self.writer_idle_ms)
                if lead is not None:
                    if lead.name not in created:  # alone and committed: no lock held, no snapshot taken
                        try:
                            await driver.execute(lead.create, prepare=False)
                        except psycopg.errors.InsufficientPrivilege:
                            self.leads_refused = True
                            raise
                        created.add(lead.name)
                    args = ", ".join(f"{sql.Literal(a).as_string(driver)}::{t}" for a, t in zip(lead.args, lead.types,
                                                                                              strict=True))
                    text += f"; SELECT * FROM pg_temp.{lead.name}({args})"
                cursor = await driver.execute(text, prepare=False)
                if lead is None:
                    result = await work(conn)
                else:
                    while cursor.nextset():
                        pass
                    result = await work(conn, await cursor.fetchone())
                await driver.execute(_COMMIT_THEN_UNLOCK, prepare=False)
                return result
            except BaseException as exc:
                if lead is not None and sqlstate_of(exc) == LEAD_MISSING:
                    created.discard(lead.name)
                if driver.broken or driver.closed:
                    # The server went away (restarted, or ended our sessions). These statements
                    # bypass SQLAlchemy's error handling, so do what it does on a disconnect:
                    # every pooled connection as old as this one is replaced at its next checkout.
                    self.engine.sync_engine.pool._invalidate(pooled, exc, _checkin=False)
                    if not conn.invalidated:
                        await conn.invalidate(exc)
                    raise
                # Session locks outlive the transaction: release them, or drop the session itself.
                try:
                    await driver.execute(_ROLLBACK_THEN_UNLOCK, prepare=False)
                except BaseException:
                    await conn.invalidate()
                raise

    async def read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run a read-only `work` at REPEATABLE READ: one consistent snapshot, no SSI bookkeeping."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                return await work(conn)

    async def committed(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in one READ COMMITTED transaction: for bookkeeping beside the ledger (webhook
        deliveries) that must never abort a SERIALIZABLE writer, which SSI lets it not do. Retried
        whole, as run() is, on a deadlock or a serialization failure (RETRYABLE): `work` may run
        several times, its only effects inside the transaction (a 40P01 in a webhook PATCH was a 500
        internal_error, and in the dispatcher an attempt left unrecorded)."""

        async def once() -> T:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="READ COMMITTED")
                async with conn.begin():
                    return await work(conn)

        return await self._retried(once)

    async def _renew_if_read_only(self, state: str | None) -> None:
        """A read-only session (25006) stays one: replace the pool's, so that the next use
        connects afresh (to the primary, once the failover's name points there)."""
        if state == READ_ONLY:
            await self.engine.dispose()

    async def lookup(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run a single-statement read in autocommit: one round trip, for hot-path lookups."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return await work(conn)

    async def dispose(self) -> None:
        await self.engine.dispose()


def _lock_then_begin(keys: list[int], idle_ms: int) -> str:
    """Session advisory locks in the given order, *then* the transaction: its snapshot (taken by
    its first statement) is newer than whatever the previous holder committed. The locks are
    taken in a block of their own (BEGIN ... COMMIT; session locks outlive it), so that the next
    BEGIN may set the isolation level. Without that BEGIN, the COMMIT would end the implicit block
    a multi-statement query runs in, which PostgreSQL answers with a WARNING ("there is no
    transaction in progress"), written to the server log once a batch. The session holds the
    locks only inside the transaction, whose idle
    timeout (`idle_ms`) bounds how long a stopped process can keep them. Keys are integers,
    written into the text.

    The transaction plans every cached statement generically (`plan_cache_mode`), the foreign-key
    checks above all: PostgreSQL runs each as a cached query against the referenced table, and
    for a partitioned one (journal entries, reservations) its default re-planned every check
    (a custom plan prunes to one lane, so it always looked cheaper than the generic one): ~0.2 ms
    a row, 4,159 plans for 14,525 checks in 10 s of lifecycles. A generic plan prunes the other
    lanes when it runs (the lane is a parameter) and reads no page of theirs. Our own statements
    name their lane as a constant, so their generic plans are pruned when planned."""
    array = ",".join(str(int(k)) for k in keys)
    return (f"BEGIN; SELECT pg_advisory_lock(k) FROM unnest('{{{array}}}'::bigint[]) WITH ORDINALITY AS t(k, n) "
            "ORDER BY n; COMMIT; BEGIN ISOLATION LEVEL SERIALIZABLE; "
            f"SET LOCAL idle_in_transaction_session_timeout = {int(idle_ms)}; "
            "SET LOCAL plan_cache_mode = force_generic_plan")


_COMMIT_THEN_UNLOCK = "COMMIT; SELECT pg_advisory_unlock_all()"
# The Lead functions each session (psycopg connection) has created.
_CREATED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_ROLLBACK_THEN_UNLOCK = "ROLLBACK; SELECT pg_advisory_unlock_all()"


def connect(url: str, *, pool_size: int = 10, pool_timeout_s: float = 5.0,
            idle_in_transaction_ms: int = IDLE_IN_TRANSACTION_MS,
            writer_idle_ms: int = WRITER_IDLE_IN_TRANSACTION_MS) -> Database:
    """Build the Database for a libpq URL. Nothing connects until first use.

    `pool_timeout_s` bounds the wait for a pooled connection and for a new connection to be made
    (libpq counts whole seconds, at least 2): past it the caller gets an error `is_unavailable`
    recognises, not a request that hangs. No pre-ping on checkout (a round trip per use): a
    connection that fails because the server went away invalidates the whole pool instead."""
    engine = create_async_engine(
        sqlalchemy_url(url),
        isolation_level="SERIALIZABLE",
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout_s,
        pool_pre_ping=False,
        # a database error's text leaves out what the statement was sent with ([parameters: ...]),
        # which would put a webhook signing secret or a customer's name in the server's log
        hide_parameters=True,
        connect_args={"prepare_threshold": 1, "connect_timeout": max(2, math.ceil(pool_timeout_s)),
                      "options": session_options(url, idle_in_transaction_ms)},
    )
    event.listen(engine.sync_engine, "connect", _decode_json_with_msgspec)
    return Database(engine, writer_idle_ms=min(writer_idle_ms, idle_in_transaction_ms))


def pool_full(engine: AsyncEngine) -> bool:
    """Whether every connection the engine's pool may hold (its size and overflow) is in use: a
    checkout would wait for one to come back."""
    pool = engine.pool
    checkedin, overflow = getattr(pool, "checkedin", None), getattr(pool, "overflow", None)
    if checkedin is None or overflow is None:  # not a QueuePool: it never makes a caller wait
        return False
    return checkedin() == 0 and overflow() >= getattr(pool, "_max_overflow", 0)


def one_off_engine(url: str, connect_timeout_s: int = 2) -> AsyncEngine:
    """An engine that opens a session for each use and keeps none (NullPool), with the pool's
    session options: for a probe that must not queue behind a full pool."""
    from sqlalchemy.pool import NullPool

    return create_async_engine(sqlalchemy_url(url), poolclass=NullPool, hide_parameters=True,
                               connect_args={"connect_timeout": connect_timeout_s,
                                             "options": session_options(url, IDLE_IN_TRANSACTION_MS)})


def session_options(url: str, idle_in_transaction_ms: int) -> str:
    """The pool's sessions' `options`: the URL's own first (a schema of tokentill's own,
    `?options=-csearch_path%3Dbilling`), then the idle timeout and the time zone, which a
    connection's `options` argument would otherwise replace (the server's sessions looked in
    `public` while `migrate` had made the tables in the URL's schema). TimeZone: every time read
    back is UTC, as the API spells times, whatever the server's own setting (initdb takes the
    host's zone)."""
    own = make_url(url).query.get("options") or ()
    own = (own,) if isinstance(own, str) else own
    return " ".join((*own, f"-c idle_in_transaction_session_timeout={idle_in_transaction_ms}", "-c TimeZone=UTC"))


def _decode_json_with_msgspec(dbapi_connection: object, _record: object) -> None:
    """json/jsonb results decoded by msgspec (same values as the json module, several times faster)."""
    set_json_loads(msgspec.json.decode, dbapi_connection.driver_connection)  # type: ignore[attr-defined]

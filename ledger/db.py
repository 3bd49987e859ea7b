"""The database handle and the one unit of work: a SERIALIZABLE transaction, retried as a whole.

A command's `work(conn)` may run several times; its only effects are inside the transaction.
Serialization failures and deadlocks never reach a caller unless the retry budget is spent.
"""
from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import Counter
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

T = TypeVar("T")
RETRYABLE = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected

RETRIES = Counter(
    "tokentill_transaction_retries", "Transactions retried after a serialization failure or deadlock",
    ["sqlstate"],
)
EXHAUSTED = Counter(
    "tokentill_transaction_retries_exhausted", "Transactions that spent their whole retry budget"
)


class RetriesExhaustedError(Exception):
    code = "service_unavailable"


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


def sqlalchemy_url(url: str, *, driver: str = "psycopg") -> URL:
    """A libpq URL (postgresql://…, socket ?host=/dir included) as a SQLAlchemy URL."""
    parsed = make_url(url)
    return parsed.set(drivername=f"postgresql+{driver}")


def libpq_url(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(slots=True)
class Database:
    engine: AsyncEngine
    attempts: int = 30
    max_backoff_s: float = 0.05

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in one SERIALIZABLE transaction; commit; retry it whole on 40001/40P01."""
        for attempt in range(1, self.attempts + 1):
            try:
                async with self.engine.begin() as conn:
                    return await work(conn)
            except Exception as exc:
                state = sqlstate_of(exc)
                if state not in RETRYABLE:
                    raise
                RETRIES.labels(state).inc()
                if attempt == self.attempts:
                    EXHAUSTED.inc()
                    raise RetriesExhaustedError("the database is too contended; try again") from exc
            await asyncio.sleep(random.uniform(0, min(self.max_backoff_s, 0.001 * 2**attempt)))
        raise AssertionError("unreachable")

    async def read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run a read-only `work` at REPEATABLE READ: one consistent snapshot, no SSI bookkeeping."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                return await work(conn)

    async def dispose(self) -> None:
        await self.engine.dispose()


def connect(url: str, *, pool_size: int = 10) -> Database:
    """Build the Database for a libpq URL. Nothing connects until first use."""
    engine = create_async_engine(
        sqlalchemy_url(url),
        isolation_level="SERIALIZABLE",
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,
        connect_args={"prepare_threshold": 1},
    )
    return Database(engine)

"""Operations endpoints: liveness, readiness, and (via the Prometheus plugin) metrics."""
from __future__ import annotations

import asyncio

from litestar import Response, get
from litestar.datastructures import State
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from api.errors import RETRY_AFTER_S, documented, problem
from ledger.db import one_off_engine, pool_full
from migrations import runner


@get("/healthz", sync_to_thread=False, tags=["operations"], **documented(secured=False))
def healthz() -> dict[str, str]:
    return {"status": "ok"}


# Readiness answers within this, whatever the database does (a full pool, a stopped server).
READY_TIMEOUT_S = 2.0


@get("/readyz", tags=["operations"], **documented(503, secured=False))
async def readyz(state: State) -> Response:
    ready, detail = await readiness(state)
    if not ready:
        return _not_ready(detail)
    return Response({"status": "ready", "migration": detail})


async def readiness(state: State) -> tuple[bool, str]:
    """(True, the migration the database is at) or (False, why not ready); within READY_TIMEOUT_S."""
    db = state.services.db
    supervisor = state.get("supervisor")
    if supervisor is not None and not supervisor.running():
        return False, "the embedded database is down; it is being restarted"
    engine = db.engine
    if pool_full(engine):  # load, not a database down: ask it over a session of the probe's own
        engine = state.get("probe_engine") or one_off_engine(state.services.database_url)
        state["probe_engine"] = engine
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            try:
                current, read_only = await _probe(engine)
            except DBAPIError as exc:
                # a pooled connection the server ended (a restarted postmaster, a failover) is not
                # the database down: the failure renewed the pool, so ask once more on a fresh one
                if not exc.connection_invalidated:
                    raise
                current, read_only = await _probe(engine)
    except Exception as exc:
        return False, f"database unreachable: {type(exc).__name__}"
    if read_only:
        return False, "the database takes no writes (read-only: a standby, or default_transaction_read_only)"
    head = runner.head_revision()
    if current != head:
        return False, f"migrations at {current}, head is {head}"
    return True, current


async def _probe(engine: AsyncEngine) -> tuple[str | None, bool]:
    """The migration the database is at, and whether it takes no writes."""
    async with engine.connect() as conn:
        current = await conn.run_sync(runner.current_revision)
        # A standby, or default_transaction_read_only: every write would be a 503. The session
        # is not kept (the setting is read when a session starts), so the next probe sees a change.
        read_only = (await conn.execute(text("SHOW transaction_read_only"))).scalar() == "on"
        if read_only:
            await conn.invalidate()
    return current, read_only


def _not_ready(detail: str) -> Response:
    return problem(503, "not_ready", detail, headers={"Retry-After": str(RETRY_AFTER_S)})


@get("/metrics", media_type="text/plain", tags=["operations"], **documented(secured=False))
async def metrics(state: State) -> Response[bytes]:
    """Prometheus text exposition: request, transaction-retry, batch and job metrics; under
    `tokentill serve --workers N`, summed over the N processes (api/workers.py)."""
    metrics_dir = state.services.settings.metrics_dir
    registry = REGISTRY
    if metrics_dir is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(metrics_dir))
    # As a header: given as media_type, Litestar would add a second charset to the one it has.
    return Response(generate_latest(registry), headers={"content-type": CONTENT_TYPE_LATEST})

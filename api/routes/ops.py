"""Operations endpoints: liveness, readiness, and (via the Prometheus plugin) metrics."""
from __future__ import annotations

from litestar import Response, get
from litestar.datastructures import State
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy import text

from api.errors import documented, problem
from migrations import runner


@get("/healthz", sync_to_thread=False, tags=["operations"], **documented(secured=False))
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", tags=["operations"], **documented(503, secured=False))
async def readyz(state: State) -> Response:
    db = state.services.db
    try:
        async with db.engine.connect() as conn:
            current = await conn.run_sync(runner.current_revision)
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return problem(503, "not_ready", f"database unreachable: {type(exc).__name__}")
    head = runner.head_revision()
    if current != head:
        return problem(503, "not_ready", f"migrations at {current}, head is {head}")
    return Response({"status": "ready", "migration": current})


@get("/metrics", media_type="text/plain", tags=["operations"], **documented(secured=False))
async def metrics() -> Response[bytes]:
    """Prometheus text exposition: request, transaction-retry, batch and job metrics."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

"""Operations endpoints: liveness, readiness, and (via the Prometheus plugin) metrics."""
from __future__ import annotations

from litestar import Response, get
from litestar.datastructures import State
from sqlalchemy import text

from api.errors import problem
from migrations import runner


@get("/healthz", sync_to_thread=False, include_in_schema=True, tags=["operations"])
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", tags=["operations"])
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

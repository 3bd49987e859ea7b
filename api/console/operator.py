"""The operator's page: readiness and the migration head, the lanes and what their writers are
doing right now, the webhook delivery backlog, the retry and error counters of the metrics, for
admins."""
from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.response import Template
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from api.console.web import PREFIX, allow, render
from api.routes.ops import readiness
from migrations import runner
from wallets.engine import lane_lock

COUNTERS = {  # metric family -> what the page calls it
    "tokentill_transaction_retries": "Transactions retried (serialization failure, deadlock)",
    "tokentill_transaction_retries_exhausted": "Transactions that spent their retry budget (503)",
    "tokentill_requests_error": "Requests answered 5xx",
    "tokentill_requests": "Requests",
    "tokentill_job_runs": "Scheduled job runs",
    "tokentill_connections_refused": "Connections refused at the limit",
}


def counters(registry: Any) -> list[dict[str, Any]]:
    """The counters above, summed over their labels, with a breakdown by the labels that matter."""
    out = []
    for family in registry.collect():
        if family.name not in COUNTERS:
            continue
        total, parts = 0.0, {}
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            total += sample.value
            label = ", ".join(f"{k}={v}" for k, v in sorted(sample.labels.items())
                              if k in ("sqlstate", "job", "result", "status_code"))
            if label:
                parts[label] = parts.get(label, 0) + sample.value
        out.append({"name": family.name, "title": COUNTERS[family.name], "total": int(total),
                    "parts": sorted((k, int(v)) for k, v in parts.items())})
    return sorted(out, key=lambda c: list(COUNTERS).index(c["name"]))


_LANES = text("""
SELECT s.lanes,
       (SELECT count(*) FROM customers) AS customers,
       (SELECT count(*) FROM reservations WHERE status IN ('held', 'capturing')) AS open_reservations,
       -- what the dispatcher may send (an enabled endpoint's); what waits for a disabled one is held
       (SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
         WHERE d.status = 'pending' AND e.status = 'enabled') AS webhooks_pending,
       (SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
         WHERE d.status = 'pending' AND e.status = 'enabled' AND d.next_attempt_at <= now()) AS webhooks_due,
       (SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
         WHERE d.status = 'pending' AND e.status <> 'enabled') AS webhooks_held,
       (SELECT count(*) FROM webhook_deliveries WHERE status = 'failed') AS webhooks_failed
  FROM ledger_settings s
""")
_WRITERS = text("""
SELECT l.objid, l.classid, l.granted, a.pid, a.application_name, a.state,
       extract(epoch FROM now() - a.xact_start) AS xact_s
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND ((l.classid::bigint << 32) | l.objid::bigint) = ANY(CAST(:keys AS bigint[]))
""")


async def lanes(conn: AsyncConnection) -> dict[str, Any]:
    """The lane count, and for each lane whose writer lock is held or awaited, by whom and for how long."""
    head = (await conn.execute(_LANES)).one()
    keys = {_unsigned(lane_lock(n)): n for n in range(head.lanes)}
    activity: dict[int, dict[str, Any]] = {}
    for row in await conn.execute(_WRITERS, {"keys": [_signed(k) for k in keys]}):
        lane = keys.get((int(row.classid) << 32) | int(row.objid))
        if lane is None:
            continue
        entry = activity.setdefault(lane, {"lane": lane, "holder": None, "waiting": 0})
        if row.granted:
            entry["holder"] = {"pid": row.pid, "application": row.application_name, "state": row.state,
                               "seconds": round(float(row.xact_s or 0), 3)}
        else:
            entry["waiting"] += 1
    return {"lanes": head.lanes, "customers": head.customers, "open_reservations": head.open_reservations,
            "webhooks": {"pending": head.webhooks_pending, "due": head.webhooks_due, "failed": head.webhooks_failed,
                         "held": head.webhooks_held},
            "active": [activity[n] for n in sorted(activity)]}


def _unsigned(key: int) -> int:
    return key & 0xFFFF_FFFF_FFFF_FFFF


def _signed(key: int) -> int:
    return key - (1 << 64) if key >= 1 << 63 else key


@get(f"{PREFIX}/operator", guards=[allow()], name="console-operator")
async def operator_page(state: State, request: Request) -> Template:
    ready, detail = await readiness(state)
    metrics_dir = state.services.settings.metrics_dir
    registry: Any = REGISTRY
    if metrics_dir is not None:  # serve --workers N: the sum over the processes, as /metrics shows
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(metrics_dir))
    lane_view = await state.services.db.read(lanes) if ready else None
    return render(request, "operator.html", ready=ready, detail=detail, head=runner.head_revision(),
                  lanes=lane_view, counters=counters(registry), section="operator")

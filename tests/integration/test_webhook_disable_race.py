"""An event committed while its endpoint is enabled is the endpoint's, though the fan-out has not
handed it out yet when the endpoint is disabled (by request, or for failing): enabled again, the
endpoint gets it. An event committed once the endpoint is disabled is not queued for it."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from ledger.db import connect
from tests.integration.test_webhook_attempt_numbers import queue_delivery
from wallets.webhooks import deliveries, endpoints
from wallets.webhooks.deliveries import Outcome
from wallets.webhooks.rules import RetryPolicy

INSERT = (
    "INSERT INTO outbox (topic, dedup_key, payload) VALUES ('invoice.finalized', %s, "
    "jsonb_build_object('id', %s::text))"
)
SPENT = RetryPolicy(window_s=0.0)  # a failed attempt is the last: the delivery fails for good


async def _disable_by_request(db, endpoint_id: str) -> None:
    await db.committed(lambda c: endpoints.update(c, endpoint_id, endpoints.Changes(enabled=False)))


async def _disable_for_failing(db, endpoint_id: str) -> None:
    [claimed] = await db.committed(lambda c: deliveries.claim(c, 1, 30.0))
    outcome = Outcome(claimed.scheduled_at, 5, 503)
    assert await db.committed(lambda c: deliveries.record(c, claimed, outcome, SPENT)) == "failed"


@pytest.mark.parametrize("disable", [_disable_by_request, _disable_for_failing], ids=["by-request", "failing"])
async def test_an_event_committed_before_its_endpoint_was_disabled_is_delivered_once_enabled(scratch_url, disable):
    """Another transaction (its id older) is open, so the fan-out cannot read past it yet; an
    invoice event commits; the endpoint is disabled; the older transaction ends and the fan-out
    reads the event, its endpoint disabled: no delivery. Enabled again, the endpoint got what
    was pending for it, and this event was never among it: never sent, never listed failed. Now
    the disable hands the endpoint the events it sees committed that the fan-out has not handed
    out yet (1 here, `evt_before`); `evt_after`, committed once it is disabled, is not queued."""
    db = connect(scratch_url, pool_size=1)
    url = scratch_url.replace("postgresql+psycopg://", "postgresql://")
    try:
        endpoint, _ = await db.committed(lambda c: endpoints.create(c, "https://x.example/h", ["invoice.*"], "", 4))
        await queue_delivery(db, endpoint.id, "evt_failing", "invoice.paid")
        with psycopg.connect(url) as older, psycopg.connect(url, autocommit=True) as writer:
            older.execute("SELECT pg_current_xact_id()")  # an older transaction id, open: the fan-out's horizon
            writer.execute(INSERT, ("before", "evt_before"))
            assert await db.committed(deliveries.fan_out) == (0, 0), "nothing past the open transaction yet"
            await disable(db, endpoint.id)
            writer.execute(INSERT, ("after", "evt_after"))
            older.rollback()
        while (await db.committed(deliveries.fan_out))[0]:
            pass
        await db.committed(lambda c: endpoints.update(c, endpoint.id, endpoints.Changes(enabled=True)))
        mine = "SELECT event_id, status FROM webhook_deliveries WHERE endpoint_id = :e AND event_id <> 'evt_failing'"
        rows = await db.read(lambda c: c.execute(text(mine), {"e": endpoint.id}))
        queued = sorted(tuple(r) for r in rows)
    finally:
        await db.dispose()
    assert queued == [("evt_before", "pending")]

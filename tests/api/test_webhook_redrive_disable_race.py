"""A re-drive reads its endpoint's status under the endpoint's row lock, as a PATCH or DELETE of
the endpoint takes it (endpoints.lock_endpoint): one racing a disable queued a delivery for the
endpoint disabled (it read `enabled` without a lock, the disable committed, it queued), which
nothing sends until it is enabled again, and answered 202 as though it would be sent."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from sqlalchemy import text

pytestmark = pytest.mark.usefixtures("no_endpoint_left")
ADMIN = {"Authorization": "Bearer test-admin"}


async def test_a_redrive_racing_a_disable_queues_nothing_for_the_disabled_endpoint(client, db, database_url):
    mark = uuid.uuid4().hex[:10]
    made = await client.post(
        "/v1/webhook-endpoints", headers=ADMIN, json={"url": "https://x.example/h", "topics": ["invoice.*"]}
    )
    assert made.status_code == 201, made.text
    endpoint = made.json()["id"]
    # one event of its topics, marked gone out (delivered_at) so that no app's fan-out hands it on
    await db.committed(
        lambda c: c.execute(
            text(
                "INSERT INTO outbox (topic, dedup_key, payload, delivered_at)"
                " VALUES ('invoice.paid', :m, jsonb_build_object('id', 'evt_' || :m), now())"
            ),
            {"m": mark},
        )
    )
    # the disable, holding the endpoint's row (a PATCH enabled:false's UPDATE) until it commits 1 s on
    with psycopg.connect(database_url) as held:
        held.execute(
            "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = 'disabled by request' WHERE id = %s",
            (endpoint,),
        )
        timer = threading.Timer(1.0, held.commit)
        timer.start()
        try:
            redriven = await client.post(
                f"/v1/webhook-endpoints/{endpoint}/redrive", headers=ADMIN, json={"event_id": f"evt_{mark}"}
            )
        finally:
            timer.join()
    queued = (
        await db.read(
            lambda c: c.execute(text("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = :e"), {"e": endpoint})
        )
    ).scalar()
    # the re-drive waits for the disable, then reads `disabled`: 409, 0 deliveries (it was 202, 1)
    assert (redriven.status_code, redriven.json().get("code"), queued) == (409, "endpoint_disabled", 0), redriven.text

"""A re-drive's `scheduled` counts what it queued anew: an event already pending and due now (a
single-event re-drive just queued it, or the fan-out did) is sent once whatever the count says,
and counting it read as a second copy queued."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from ledger.db import connect
from wallets.webhooks import deliveries, endpoints, log

INSERT = text(
    "INSERT INTO outbox (topic, dedup_key, payload) "
    "VALUES ('invoice.finalized', :k, jsonb_build_object('id', CAST(:k AS text)))"
)


async def _three_events(db) -> endpoints.Endpoint:
    """An endpoint of invoice.* and its deliveries of three events: evt_due pending and due now
    (never attempted), evt_later pending with its retry an hour away, evt_sent succeeded."""
    endpoint, _ = await db.committed(lambda c: endpoints.create(c, "https://x.example/h", ["invoice.*"], "", 4))
    for key in ("evt_due", "evt_later", "evt_sent"):
        await db.committed(lambda c, k=key: c.execute(INSERT, {"k": k}))
    while (await db.committed(deliveries.fan_out))[0]:
        pass
    for change in (
        "next_attempt_at = now() + interval '1 hour' WHERE event_id = 'evt_later'",
        "status = 'succeeded', succeeded_at = now() WHERE event_id = 'evt_sent'",
    ):
        await db.committed(lambda c, s=change: c.execute(text(f"UPDATE webhook_deliveries SET attempts = 1, {s}")))
    return endpoint


async def test_a_redrive_does_not_count_an_event_already_pending_and_due(scratch_url):
    """Three events: evt_due pending and due now (never attempted), evt_later pending with its
    retry an hour away, evt_sent succeeded. A failed_only re-drive over the three schedules
    evt_later anew (brought forward) and not evt_sent (received): 1; evt_due was queued already:
    1, not 2. Then one without failed_only: evt_sent anew, evt_due and evt_later (the first
    re-drive made it due now) queued already: 1, not 3."""
    db = connect(scratch_url, pool_size=1)
    try:
        endpoint = await _three_events(db)
        since = datetime.now(UTC) - timedelta(hours=1)
        topics = endpoint.topics

        async def redrive(failed_only: bool) -> int:
            return await db.committed(
                lambda c: log.redrive_since(c, endpoint.id, topics, since, None, failed_only, limit=100)
            )

        failed_only = await redrive(True)
        everything = await redrive(False)
    finally:
        await db.dispose()
    assert (failed_only, everything) == (1, 1)


async def test_a_single_event_redrive_does_not_count_an_event_already_pending_and_due(scratch_url):
    """The same three events, one re-drive of each by its `event_id`: evt_due was pending and due
    now (queued, never attempted), so the re-drive queues nothing anew: 0 (it answered 1, read as
    a second copy queued, where a `since` re-drive over it counts 0); evt_later, its retry an hour
    away, is brought forward: 1; evt_sent, received, is queued again: 1. Then evt_later once more:
    the first re-drive made it due now, so 0."""
    db = connect(scratch_url, pool_size=1)
    try:
        endpoint = await _three_events(db)

        async def redrive(event_id: str) -> int:
            return await db.committed(lambda c: log.redrive_event(c, endpoint.id, endpoint.topics, event_id))

        counts = [await redrive(e) for e in ("evt_due", "evt_later", "evt_sent", "evt_later")]
    finally:
        await db.dispose()
    assert counts == [0, 1, 1, 0]

"""A delivery's attempts are numbered 1, 2, 3, ... over its whole life, re-drives and an endpoint
enabled again included, so that its `attempts` and its attempt log agree; the retry schedule
alone starts again (a new window, its first wait the shortest)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from ledger.db import connect
from wallets.webhooks import deliveries, endpoints, log
from wallets.webhooks.deliveries import Outcome
from wallets.webhooks.rules import RetryPolicy

# attempt n failed: the next waits between half and all of min(cap, 100 s x 2^(n-1))
POLICY = RetryPolicy(base_s=100.0, cap_s=100_000.0, window_s=86400.0)


async def queue_delivery(db, endpoint_id: str, event_id: str, topic: str) -> None:
    """A delivery of `event_id` to the endpoint, due now (no outbox row behind it)."""
    await db.committed(
        lambda c: c.execute(
            text(
                """INSERT INTO webhook_deliveries (endpoint_id, event_id, topic, payload, event_at)
                   VALUES (:e, :ev, :topic, '{}', now())"""
            ),
            {"e": endpoint_id, "ev": event_id, "topic": topic},
        )
    )


async def _attempt_fails(db) -> tuple[int, timedelta]:
    """Claim the one due delivery, record a 503 (latency 0); its number and the wait set after it."""
    [claimed] = await db.committed(lambda c: deliveries.claim(c, 1, 30.0))
    outcome = Outcome(claimed.leased_until - timedelta(seconds=30), 0, 503)
    assert await db.committed(lambda c: deliveries.record(c, claimed, outcome, POLICY)) == "pending"
    due = await db.read(
        lambda c: c.execute(text("SELECT next_attempt_at FROM webhook_deliveries WHERE id = :id"), {"id": claimed.id})
    )
    return claimed.attempt, due.scalar() - outcome.attempted_at


async def test_attempts_go_on_counting_over_a_redrive_and_an_enabling_while_the_backoff_starts_again(scratch_url):
    """An event failed once, was re-driven and failed, then its endpoint was disabled and enabled
    and it failed again: three attempts. The log listed them as attempts 1, 1, 1 (each start
    afresh set the count to 0), the delivery said `attempts: 1`, while 3 were listed. Now they
    are 1, 2, 3 and the delivery says 3. Each start afresh is a new retry window all the same:
    every wait after a failure is the first one's, between half and all of 100 s (50-100 s),
    not the third's (200-400 s, 100 s x 2^2)."""
    db = connect(scratch_url, pool_size=1)
    try:
        endpoint, _ = await db.committed(lambda c: endpoints.create(c, "https://x.example/h", ["balance.*"], "", 4))
        await queue_delivery(db, endpoint.id, "evt_1", "balance.low")
        first = await _attempt_fails(db)
        assert await db.committed(lambda c: log.redrive_event(c, endpoint.id, ("balance.*",), "evt_1")) == 1
        second = await _attempt_fails(db)
        await db.committed(lambda c: endpoints.update(c, endpoint.id, endpoints.Changes(enabled=False)))
        await db.committed(lambda c: endpoints.update(c, endpoint.id, endpoints.Changes(enabled=True)))
        third = await _attempt_fails(db)
        listed = await db.read(lambda c: log.attempts(c, endpoint.id, event_id="evt_1", before=None, limit=10))
        [delivery] = await db.read(
            lambda c: log.deliveries(c, endpoint.id, status=None, event_id="evt_1", before=None, limit=10)
        )
    finally:
        await db.dispose()
    assert [first[0], second[0], third[0]] == [1, 2, 3]
    assert [a.attempt for a in reversed(listed)] == [1, 2, 3]
    assert delivery.attempts == 3 == len(listed)
    for _, wait in (first, second, third):
        assert timedelta(seconds=50) <= wait <= timedelta(seconds=100), wait

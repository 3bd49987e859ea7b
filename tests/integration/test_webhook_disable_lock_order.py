"""The dispatcher's last failed attempt of a delivery (which disables its endpoint) and an
endpoint's PATCH of `topics` or DELETE (which cancel its pending deliveries) take their locks in
one order: the fan-out's cursor, the endpoint's row, then its deliveries. The dispatcher took the
delivery's row first (recording the attempt) and the cursor after it, while the PATCH or DELETE
held the cursor and waited on that delivery: a deadlock (40P01). Both run in Database.committed,
which retried nothing then: the PATCH or DELETE that lost answered 500 internal_error, or the
dispatcher's round failed, the attempt unrecorded (its lease ran out and the event was sent
again) and the endpoint left enabled."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from ledger.db import RETRIES, connect, sqlstate_of
from tests.integration.test_webhook_attempt_numbers import queue_delivery
from wallets.webhooks import deliveries, endpoints
from wallets.webhooks.deliveries import Outcome
from wallets.webhooks.rules import DISABLED_TOPIC, RetryPolicy

SPENT = RetryPolicy(window_s=0.0)  # a failed attempt is the last: the delivery fails for good
ROUNDS = 20  # each side's first statement sent together: before, most rounds deadlocked


def _retried() -> float:
    """Transactions retried after a 40P01 (Database.committed retries them now: none should need to)."""
    return sum(
        s.value
        for m in RETRIES.collect()
        for s in m.samples
        if s.name.endswith("_total") and s.labels.get("sqlstate") == "40P01"
    )


async def _patch_topics(c, endpoint_id: str):
    return await endpoints.update(c, endpoint_id, endpoints.Changes(topics=["balance.*"]))


# (the endpoint's change, (the dispatcher first: its record, the endpoint's status, the delivery's, the
# disabled events), (the change first: the same)). The dispatcher first: the delivery failed for good,
# the endpoint is disabled (then deleted) and announced. The change first: the delivery is cancelled
# and the attempt's record finds it so ("superseded": not failed, nothing disabled, no event).
CASES = [
    (_patch_topics, ("failed", "disabled", "failed", 1), ("superseded", "enabled", "cancelled", 0)),
    (endpoints.delete, ("failed", "deleted", "failed", 1), ("superseded", "deleted", "cancelled", 0)),
]


@pytest.mark.parametrize(("change", "dispatcher_first", "change_first"), CASES, ids=["patch-topics", "delete"])
async def test_a_last_failure_and_a_change_of_the_endpoint_never_deadlock(
    scratch_url, change, dispatcher_first, change_first
):
    db = connect(scratch_url, pool_size=2)
    outcomes, deadlocks = [], []
    retried = _retried()
    try:
        for n in range(ROUNDS):
            endpoint, _ = await db.committed(lambda c: endpoints.create(c, "https://x.example/h", ["invoice.*"], "", 4))
            await queue_delivery(db, endpoint.id, f"evt_{n}", "invoice.paid")
            [claimed] = await db.committed(lambda c: deliveries.claim(c, 1, 30.0))
            outcome = Outcome(claimed.scheduled_at, 5, 503)
            recorded, changed = await asyncio.gather(
                db.committed(lambda c, d=claimed, o=outcome: deliveries.record(c, d, o, SPENT)),
                db.committed(lambda c, e=endpoint.id: change(c, e)),
                return_exceptions=True,
            )
            deadlocks += [sqlstate_of(x) for x in (recorded, changed) if isinstance(x, BaseException)]
            state = (
                await db.read(
                    lambda c, e=endpoint.id: c.execute(
                        text(
                            """SELECT (SELECT status FROM webhook_endpoints WHERE id = :e),
                          (SELECT status FROM webhook_deliveries WHERE endpoint_id = :e),
                          (SELECT count(*) FROM outbox WHERE topic = :topic AND payload->>'endpoint_id' = :e)"""
                        ),
                        {"e": e, "topic": DISABLED_TOPIC},
                    )
                )
            ).one()
            outcomes.append((recorded, *state))
    finally:
        await db.dispose()
    assert (deadlocks, _retried() - retried) == ([], 0)
    assert set(outcomes) <= {dispatcher_first, change_first}, outcomes

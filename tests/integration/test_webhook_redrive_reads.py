"""What a re-drive of one event, and an endpoint's log of one event, read, from their plans' own
figures (never a clock): the event's rows by its id, not every lane's whole outbox, nor the
endpoint's whole log."""
from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from tests.integration.plan_reads import rows_read
from wallets.errors import NotFoundError
from wallets.webhooks import endpoints, log

EVENTS = 2_000  # outbox rows of this test, beside what the session's other tests wrote


class Explaining:
    """A connection that runs each statement once as EXPLAIN (ANALYZE, FORMAT JSON) first and keeps
    its plan (a re-drive of an id that is no event changes nothing, so running it twice is safe)."""

    def __init__(self, conn: Any) -> None:
        self.conn, self.plans = conn, []

    async def execute(self, statement: Any, params: Any = None) -> Any:
        plan = (await self.conn.execute(text("EXPLAIN (ANALYZE, FORMAT JSON) " + statement.text), params)).scalar_one()
        self.plans.append((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
        return await self.conn.execute(statement, params)


async def test_a_redrive_of_an_unknown_event_id_probes_the_outbox_by_that_id_not_every_row(db):
    """2,000 events in the outbox and a re-drive of an id that is none of them: it is a 404 after
    two lookups of the id in the outbox (the events to queue, then the topic of one to name), each
    of which read every row, at least 2 x 2,000 = 4,000 (a scan of every lane's partition); by the
    index each reads the rows with that id: none."""
    mark = uuid.uuid4().hex[:10]
    await db.committed(lambda c: c.execute(text(
        "INSERT INTO outbox (topic, dedup_key, payload) SELECT 'invoice.finalized', :m || '-' || g, "
        "jsonb_build_object('id', 'evt_' || :m || '_' || g) FROM generate_series(1, :n) g"),
        {"m": mark, "n": EVENTS}))
    endpoint, _ = await db.committed(lambda c: endpoints.create(c, "https://x.example/h", ["invoice.*"], "", 1))
    spy: list[Explaining] = []

    async def redrive(conn: Any) -> int:
        await conn.execute(text("ANALYZE outbox"))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))  # a small test outbox is cheapest to scan
        spy.append(Explaining(conn))
        return await log.redrive_event(spy[0], endpoint.id, endpoint.topics, f"evt_{mark}_none")

    with pytest.raises(NotFoundError):
        await db.committed(redrive)
    assert rows_read(spy[0].plans, "outbox") == 0


async def test_one_events_attempts_and_delivery_are_read_by_its_id_not_the_endpoints_whole_log(db):
    """An endpoint with 2,000 events, each delivered once and attempted once, and the log of the
    oldest (`?event_id=`): its attempts were read back from the newest of the endpoint's, all 2,000
    (no index had the event); by webhook_attempts_event (migration 0078) the read is its one row,
    and its delivery's, by the endpoint's and event's unique key, one row."""
    endpoint, _ = await db.committed(lambda c: endpoints.create(c, "https://x.example/h", ["invoice.*"], "", 1))
    await db.committed(lambda c: c.execute(text(
        """WITH d AS (
               INSERT INTO webhook_deliveries (endpoint_id, event_id, topic, payload, event_at)
               SELECT :e, 'evt_log_' || g, 'invoice.finalized', '{}', now() FROM generate_series(1, :n) g
               RETURNING id, event_id)
           INSERT INTO webhook_attempts (delivery_id, endpoint_id, event_id, attempt, attempted_at, status_code,
                                         latency_ms, error, succeeded)
           SELECT d.id, :e, d.event_id, 1, now(), 503, 5, 'HTTP 503', false FROM d ORDER BY d.id"""),
        {"e": endpoint.id, "n": EVENTS}))
    spy: list[Explaining] = []

    async def read(conn: Any) -> tuple[list[log.Attempt], list[log.Delivery]]:
        for table in ("webhook_attempts", "webhook_deliveries"):
            await conn.execute(text(f"ANALYZE {table}"))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        spy.append(Explaining(conn))
        return (await log.attempts(spy[0], endpoint.id, event_id="evt_log_1", before=None, limit=100),
                await log.deliveries(spy[0], endpoint.id, status=None, event_id="evt_log_1", before=None, limit=100))

    attempts, deliveries = await db.read(read)
    assert [(a.event_id, a.status_code) for a in attempts] == [("evt_log_1", 503)]
    assert [d.event_id for d in deliveries] == ["evt_log_1"]
    plans = spy[0].plans
    assert (rows_read(plans[:1], "webhook_attempts"), rows_read(plans[1:], "webhook_deliveries")) == (1, 1)

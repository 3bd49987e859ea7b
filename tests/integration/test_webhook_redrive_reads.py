"""What a re-drive of one event reads of the outbox, from its plans' own figures (never a clock):
the event's row by the id it is delivered under, not every lane's whole outbox."""
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

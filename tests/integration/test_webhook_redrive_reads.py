"""What a re-drive of one event, and an endpoint's log of one event, read, from their plans' own
figures (never a clock): the event's rows by its id, not every lane's whole outbox, nor the
endpoint's whole log."""
from __future__ import annotations

import json
import re
import uuid
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from tests.integration.plan_reads import rows_read
from wallets.errors import NotFoundError
from wallets.webhooks import endpoints, log

EVENTS = 2_000  # outbox rows of this test, beside what the session's other tests wrote
pytestmark = pytest.mark.usefixtures("no_endpoint_left")  # x.example: nothing here reaches it


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
    # marked as gone out (delivered_at, as migration 0013 left those before it), as a fan-out skips
    # them: unmarked, the next app's fan-out handed all 2,000 to every enabled `invoice.*` endpoint,
    # a later file's test's own among them (test_webhook_isolation's two dispatchers got none of
    # their 16 events in 30 s, behind 2,000 of these at 0.15 s each, 2 at a time)
    await db.committed(lambda c: c.execute(text(
        "INSERT INTO outbox (topic, dedup_key, payload, delivered_at) SELECT 'invoice.finalized', :m || '-' || g, "
        "jsonb_build_object('id', 'evt_' || :m || '_' || g), now() FROM generate_series(1, :n) g"),
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


class Generic(Explaining):
    """A connection that runs each statement once PREPAREd (its `:name`s as `$n`, the types
    PostgreSQL infers) and EXPLAIN (ANALYZE) EXECUTEd with `plan_cache_mode` force_generic_plan,
    as psycopg runs a statement from its 6th run (a log read is one), and keeps that plan."""

    async def execute(self, statement: Any, params: Any = None) -> Any:
        names = list(dict.fromkeys(re.findall(r"(?<![:\w]):(\w+)", statement.text)))
        numbered = re.sub(r"(?<![:\w]):(\w+)", lambda m: f"${names.index(m[1]) + 1}", statement.text)
        await self.conn.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        await self.conn.exec_driver_sql("PREPARE tokentill_log AS " + numbered.replace("%", "%%"))
        raw = (await self.conn.get_raw_connection()).driver_connection
        async with psycopg.AsyncClientCursor(raw) as cur:  # EXECUTE's arguments as literals
            await cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE tokentill_log ("
                              + ", ".join(["%s"] * len(names)) + ")", [params[n] for n in names])
            plan = (await cur.fetchone())[0]
        await self.conn.exec_driver_sql("DEALLOCATE tokentill_log")
        self.plans.append((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
        return await self.conn.execute(statement, params)


@pytest.mark.parametrize("planned", ["custom", "generic"])
async def test_one_events_log_is_read_by_its_id_not_the_endpoints_whole_log(db, planned):
    """An endpoint with 2,000 events, each delivered once and attempted once, and the log of the
    oldest (`?event_id=`). Planned for its arguments (custom): its attempts were read back from the
    newest of the endpoint's, all 2,000 (no index had the event); by webhook_attempts_event
    (migration 0078) the read is its one row, and its delivery's, by the endpoint's and event's
    unique key, one row. Planned generically (Generic), as a prepared statement is from its 6th
    run: `(CAST(:event AS text) IS NULL OR event_id = :event)` is no index condition in a plan for
    any :event, so its attempts and its delivery were found by reading the log back from the
    newest: the oldest of 2,000 is the 2,000th, so at least 2,000 rows each (measured: 2,000 alone,
    4,000 after another endpoint's); with only the filters given, `event_id = :event` is one: 1 row
    each."""
    spying = Generic if planned == "generic" else Explaining
    event = f"evt_{planned}_1"
    endpoint, _ = await db.committed(lambda c: endpoints.create(c, "https://x.example/h", ["invoice.*"], "", 1))
    await db.committed(lambda c: c.execute(text(
        """WITH d AS (
               INSERT INTO webhook_deliveries (endpoint_id, event_id, topic, payload, event_at)
               SELECT :e, :prefix || g, 'invoice.finalized', '{}', now() FROM generate_series(1, :n) g
               RETURNING id, event_id)
           INSERT INTO webhook_attempts (delivery_id, endpoint_id, event_id, attempt, attempted_at, status_code,
                                         latency_ms, error, succeeded)
           SELECT d.id, :e, d.event_id, 1, now(), 503, 5, 'HTTP 503', false FROM d ORDER BY d.id"""),
        {"e": endpoint.id, "n": EVENTS, "prefix": f"evt_{planned}_"}))
    spy: list[Explaining] = []

    async def read(conn: Any) -> tuple[list[log.Attempt], list[log.Delivery]]:
        for table in ("webhook_attempts", "webhook_deliveries"):
            await conn.execute(text(f"ANALYZE {table}"))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        spy.append(spying(conn))
        return (await log.attempts(spy[0], endpoint.id, event_id=event, before=None, limit=100),
                await log.deliveries(spy[0], endpoint.id, status=None, event_id=event, before=None, limit=100))

    attempts, deliveries = await db.read(read)
    assert [(a.event_id, a.status_code) for a in attempts] == [(event, 503)]
    assert [d.event_id for d in deliveries] == [event]
    plans = spy[0].plans
    assert (rows_read(plans[:1], "webhook_attempts"), rows_read(plans[1:], "webhook_deliveries")) == (1, 1)


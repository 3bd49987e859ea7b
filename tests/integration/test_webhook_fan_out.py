"""The fan-out reads the outbox and never writes it: a wallet writer that inserts an event's
dedup key again is never failed by it, and an event whose transaction commits after a later
one is still handed out, once."""
from __future__ import annotations

import uuid

import psycopg
import pytest
from sqlalchemy import text

from ledger.db import connect
from wallets.webhooks import deliveries, endpoints

pytestmark = pytest.mark.usefixtures("no_endpoint_left")  # x.example: nothing here reaches it
INSERT = ("INSERT INTO outbox (topic, dedup_key, payload) VALUES ('invoice.finalized', %s, "
          "jsonb_build_object('id', %s::text)) ON CONFLICT (lane, dedup_key) DO NOTHING")


async def _fanned(db, endpoint_id: str, mark: str) -> list[str]:
    while (await db.committed(deliveries.fan_out))[0]:
        pass
    rows = await db.read(lambda conn: conn.execute(text(
        "SELECT event_id FROM webhook_deliveries WHERE endpoint_id = :e AND event_id LIKE '%' || :m ORDER BY id"),
        {"e": endpoint_id, "m": mark}))
    return [r.event_id for r in rows]


async def test_a_writer_inserting_a_fanned_out_key_again_is_not_failed_by_the_fan_out(database_url, db):
    mark = uuid.uuid4().hex[:10]
    endpoint, _ = await db.committed(lambda c: endpoints.create(c, "https://x.example/h", ["invoice.*"], "", 1))
    with psycopg.connect(database_url, autocommit=True) as first:
        first.execute(INSERT, (f"k-{mark}", f"evt_{mark}"))
    with psycopg.connect(database_url) as writer:
        writer.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
        writer.execute("SELECT count(*) FROM customers")  # the writer's snapshot predates the fan-out
        assert await _fanned(db, endpoint.id, mark) == [f"evt_{mark}"]
        writer.execute(INSERT, (f"k-{mark}", f"evt_again_{mark}"))  # 0013's UPDATE made this a 40001
        writer.commit()


async def test_an_event_committed_after_a_later_one_is_not_skipped(database_url, db):
    mark = uuid.uuid4().hex[:10]
    endpoint, _ = await db.committed(lambda c: endpoints.create(c, "https://x.example/h", ["invoice.*"], "", 1))
    with psycopg.connect(database_url) as slow, psycopg.connect(database_url) as fast:
        slow.execute(INSERT, (f"slow-{mark}", f"evt_slow_{mark}"))  # the lower id, still open
        fast.execute(INSERT, (f"fast-{mark}", f"evt_fast_{mark}"))
        fast.commit()
        assert await _fanned(db, endpoint.id, mark) == [], "nothing past an open transaction's xid is read yet"
        slow.commit()
    assert sorted(await _fanned(db, endpoint.id, mark)) == sorted([f"evt_slow_{mark}", f"evt_fast_{mark}"])
    assert len(await _fanned(db, endpoint.id, mark)) == 2, "each once"


async def test_a_claim_takes_turns_between_endpoints_so_a_backlog_cannot_crowd_out_a_new_event(scratch_url):
    """Three endpoints with due work and room for three sends: each gets one, though two of them
    have older backlogs (by age alone the oldest endpoint's backlog would take two)."""
    scratch = connect(scratch_url, pool_size=1)
    try:
        made = [await scratch.committed(lambda c, n=n: endpoints.create(c, f"https://{n}.example/h", ["invoice.*"],
                                                                        "", 4)) for n in ("old", "older", "new")]
        ids = [e.id for e, _ in made]
        await scratch.committed(lambda c: c.execute(text(
            """INSERT INTO webhook_deliveries (endpoint_id, event_id, topic, payload, event_at, next_attempt_at)
               SELECT e.id, 'evt_' || e.id || '_' || n, 'invoice.finalized', '{}', now(),
                      now() - make_interval(secs => e.age * 10 + n)
                 FROM (VALUES (:a, 2), (:b, 3), (:c, 0)) AS e(id, age),
                      generate_series(1, CASE WHEN e.age = 0 THEN 1 ELSE 3 END) AS n"""),
            {"a": ids[0], "b": ids[1], "c": ids[2]}))
        claimed = await scratch.committed(lambda c: deliveries.claim(c, 3, 30.0, share=2))
    finally:
        await scratch.dispose()
    assert sorted(c.endpoint_id for c in claimed) == sorted(ids)


async def test_endpoints_timing_out_take_at_most_their_share_of_a_claim_together(scratch_url):
    """Three endpoints timing out, each with a backlog older than a fourth endpoint's one event,
    and room for four sends (two per endpoint): they take two between them, the fourth two of its
    three; with those two still open (the fourth's done), they take none, and the fourth endpoint's
    third is claimed."""
    scratch = connect(scratch_url, pool_size=1)
    try:
        made = [await scratch.committed(lambda c, n=n: endpoints.create(c, f"https://{n}.example/h", ["invoice.*"],
                                                                        "", 8)) for n in ("h0", "h1", "h2", "ok")]
        ids = [e.id for e, _ in made]
        stalling, healthy = ids[:3], ids[3]
        await scratch.committed(lambda c: c.execute(text(
            """INSERT INTO webhook_deliveries (endpoint_id, event_id, topic, payload, event_at, next_attempt_at)
               SELECT e, 'evt_' || e || '_' || n, 'invoice.finalized', '{}'::jsonb, now(), now() - interval '1 minute'
                 FROM unnest(CAST(:stalling AS text[])) AS e, generate_series(1, 4) AS n
               UNION ALL
               SELECT :ok, 'evt_' || :ok || '_' || n, 'invoice.finalized', '{}', now(), now() - make_interval(secs => n)
                 FROM generate_series(1, 3) AS n"""), {"stalling": stalling, "ok": healthy}))
        first = await scratch.committed(lambda c: deliveries.claim(c, 4, 30.0, share=2, stalling=stalling,
                                                                   stalling_share=2))
        mine = {e: n for e in stalling if (n := sum(c.endpoint_id == e for c in first))}
        second = await scratch.committed(lambda c: deliveries.claim(c, 2, 30.0, share=2, mine=mine,
                                                                    stalling=stalling, stalling_share=2))
    finally:
        await scratch.dispose()
    taken = [c.endpoint_id for c in first]
    assert len(taken) == 4 and sum(e in stalling for e in taken) == 2 and taken.count(healthy) == 2, taken
    assert len(set(e for e in taken if e in stalling)) == 2, "in turns: one each, not two of one"
    assert [c.endpoint_id for c in second] == [healthy], "two open already: no room for those timing out"


async def test_an_endpoint_the_process_has_not_tried_gets_one_send_until_it_has(scratch_url):
    """A hanging endpoint the process had not tried yet took its whole share (half of the
    process's sends) for one timeout, beside the share of the endpoints already timing out: all of
    them. One it has not tried (neither an answer nor a timeout yet) now gets one send; the others
    keep their share."""
    scratch = connect(scratch_url, pool_size=1)
    try:
        made = [await scratch.committed(lambda c, n=n: endpoints.create(c, f"https://{n}.example/h", ["invoice.*"],
                                                                        "", 8)) for n in ("new", "known")]
        new, known = (e.id for e, _ in made)
        await scratch.committed(lambda c: c.execute(text(
            """INSERT INTO webhook_deliveries (endpoint_id, event_id, topic, payload, event_at, next_attempt_at)
               SELECT e, 'evt_' || e || '_' || n, 'invoice.finalized', '{}'::jsonb, now(), now() - interval '1 minute'
                 FROM unnest(CAST(:ids AS text[])) AS e, generate_series(1, 4) AS n"""), {"ids": [new, known]}))
        claimed = await scratch.committed(lambda c: deliveries.claim(c, 4, 30.0, share=2, tried=[known]))
    finally:
        await scratch.dispose()
    taken = [c.endpoint_id for c in claimed]
    assert sorted(taken) == sorted([new, known, known]), taken


async def test_enabled_names_the_endpoints_neither_deleted_nor_disabled(scratch_url):
    scratch = connect(scratch_url, pool_size=1)
    try:
        made = [await scratch.committed(lambda c, n=n: endpoints.create(c, f"https://{n}.example/h", ["invoice.*"],
                                                                        "", 1)) for n in ("on", "off", "gone")]
        on, off, gone = (e.id for e, _ in made)
        await scratch.committed(lambda c: endpoints.update(c, off, endpoints.Changes(enabled=False)))
        await scratch.committed(lambda c: endpoints.delete(c, gone))
        assert await scratch.committed(lambda c: deliveries.enabled(c, [on, off, gone, "we_never"])) == {on}
    finally:
        await scratch.dispose()

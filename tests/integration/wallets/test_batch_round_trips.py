"""A wallet batch's round trips: the load rides in the lock + BEGIN message (a statement the
session prepared on first use), so a batch is three (lock, BEGIN and load; the write; COMMIT and
unlock), and it still reads what its rules act on when the lock waited or the statement is gone."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from wallet_kit import Kit, usd

from ledger.db import Database, connect
from wallets import engine as engine_module
from wallets import store
from wallets.commands import Reserve
from wallets.engine import Engine


def _reserve(cid: str, request_id: str, amount: str = "0.001") -> Reserve:
    return Reserve(customer_id=cid, request_id=request_id, request_hash=request_id.encode(), model="model-x",
                   ttl_seconds=300, amount=usd(amount))


class Sent:
    """Every message a psycopg cursor sends while `on`: one round trip each."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.on = False
        self.texts: list[str] = []
        original = psycopg.AsyncCursor.execute

        async def execute(cursor: Any, query: Any, *args: Any, **kw: Any) -> Any:
            if self.on:
                self.texts.append(str(query))
            return await original(cursor, query, *args, **kw)

        monkeypatch.setattr(psycopg.AsyncCursor, "execute", execute)


async def test_a_reserve_batch_is_three_round_trips(fresh_db: Database, tag: str, monkeypatch: pytest.MonkeyPatch):
    kit = Kit(fresh_db, tag)
    await kit.setup_book()
    cid = await kit.customer("alice")
    await kit.top_up(cid, "1.00")
    engine = Engine(fresh_db, clock=kit.clock)
    await engine.execute([_reserve(cid, f"{tag}-0")])  # accounts known, the book cached
    sent = Sent(monkeypatch)
    sent.on = True
    [result] = await engine.execute([_reserve(cid, f"{tag}-1")])
    sent.on = False
    assert result.reservation.amount == usd("0.001")
    assert len(sent.texts) == 3, sent.texts
    assert "pg_advisory_lock" in sent.texts[0] and "EXECUTE tokentill_load_" in sent.texts[0]
    assert "ledger_post" in sent.texts[1]
    assert sent.texts[2].startswith("COMMIT")


async def test_the_load_is_prepared_once_a_session(scratch_url: str, tag: str, monkeypatch: pytest.MonkeyPatch):
    db = connect(scratch_url, pool_size=1)
    try:
        kit = Kit(db, tag)
        await kit.setup_book()
        cid = await kit.customer("bob")
        await kit.top_up(cid, "1.00")
        engine = Engine(db, clock=kit.clock)
        sent = Sent(monkeypatch)
        sent.on = True
        for n in range(3):
            await engine.execute([_reserve(cid, f"{tag}-{n}")])
        prepares = [t for t in sent.texts if "PREPARE tokentill_load_" in t]
        assert len(prepares) <= 1  # one pooled session: prepared at most once (the top-up's batch may have)
    finally:
        await db.dispose()


async def test_a_batch_after_a_failed_one_prepares_again(scratch_url: str, tag: str,
                                                         monkeypatch: pytest.MonkeyPatch):
    """A failed batch's ROLLBACK makes psycopg deallocate every prepared statement of the session,
    the load's too: the next batch on it finds the load gone, prepares it again and runs."""
    db = connect(scratch_url, pool_size=1)
    db.attempts = 1
    try:
        kit = Kit(db, tag)
        await kit.setup_book()
        cid = await kit.customer("carol")
        await kit.top_up(cid, "1.00")
        engine = Engine(db, clock=kit.clock)
        original_lead = store.load_lead
        def bad_lead(*args: Any, **kw: Any) -> Any:  # the EXECUTE fails, after its PREPARE ran
            lead, params = original_lead(*args, **kw)
            return type(lead)(lead.name, lead.sql, (*lead.args[:-1], "not a number")), params

        monkeypatch.setattr(store, "load_lead", bad_lead)
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            await engine.execute([_reserve(cid, f"{tag}-fail")])
        monkeypatch.setattr(store, "load_lead", original_lead)
        [result] = await engine.execute([_reserve(cid, f"{tag}-ok")])
        assert result.reservation.amount == usd("0.001")
    finally:
        await db.dispose()


async def test_a_load_older_than_its_rules_time_is_read_again(kit: Kit, monkeypatch: pytest.MonkeyPatch):
    """The load is read at the time taken before the locks; when the rules' time (after them) is
    later by LEAD_FRESH or more, the batch reads it again at the rules' time."""
    cid = await kit.customer("dave")
    await kit.top_up(cid, "1.00")
    engine = Engine(kit.db, clock=kit.clock)
    loads: list[Any] = []
    original_load = store.load

    async def load(*args: Any, **kw: Any) -> Any:
        loads.append(kw.get("now"))
        return await original_load(*args, **kw)

    monkeypatch.setattr(store, "load", load)
    await engine.execute([_reserve(cid, f"{kit.tag}-1")])
    assert loads == []  # the lead's load served the batch
    original_lead = store.load_lead

    def lead(*args: Any, **kw: Any) -> Any:
        found = original_lead(*args, **kw)
        kit.clock.advance(seconds=engine_module.LEAD_FRESH.total_seconds() + 1)  # the lock waited
        return found

    monkeypatch.setattr(store, "load_lead", lead)
    [result] = await engine.execute([_reserve(cid, f"{kit.tag}-2")])
    assert loads == [kit.clock.now] and result.reservation.amount == usd("0.001")
    assert engine_module.LEAD_FRESH <= timedelta(seconds=1)  # the minute windows are loaded from 61 s back

"""A wallet batch's round trips: the load rides in the lock + BEGIN message (a call of a temporary
function the session created on first use), so a batch is three (lock, BEGIN and load; the write;
COMMIT and unlock), and it still reads what its rules act on when the lock waited, and after
ROLLBACKs, which make psycopg deallocate a session's prepared statements (the function stays)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from wallet_kit import Kit, usd

from api.keys import LISTENER_NAME
from ledger.db import Database, connect
from wallets import engine as engine_module
from wallets import store
from wallets.commands import Reserve
from wallets.engine import Engine


def _reserve(cid: str, request_id: str, amount: str = "0.001") -> Reserve:
    return Reserve(customer_id=cid, request_id=request_id, request_hash=request_id.encode(), model="model-x",
                   ttl_seconds=300, amount=usd(amount))


@asynccontextmanager
async def _one_session(scratch_url: str, tag: str, name: str, attempts: int | None = None
                       ) -> AsyncIterator[tuple[Database, str, Engine]]:
    """A database of one pooled session with a customer `name` holding $1.00, and an engine."""
    db = connect(scratch_url, pool_size=1)
    if attempts is not None:
        db.attempts = attempts
    try:
        kit = Kit(db, tag)
        await kit.setup_book()
        cid = await kit.customer(name)
        await kit.top_up(cid, "1.00")
        yield db, cid, Engine(db, clock=kit.clock)
    finally:
        await db.dispose()


class Sent:
    """Every message a psycopg cursor sends while `on`: one round trip each. Not the API-key
    listener's: an app of another test in this process may still be checking its connection
    (`SELECT 1` every few seconds, api/keys.py), which CI once counted as a fourth round trip."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.on = False
        self.texts: list[str] = []
        original = psycopg.AsyncCursor.execute

        async def execute(cursor: Any, query: Any, *args: Any, **kw: Any) -> Any:
            if self.on and cursor.connection.info.parameter_status("application_name") != LISTENER_NAME:
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
    assert "pg_advisory_lock" in sent.texts[0] and "FROM pg_temp.tokentill_load_" in sent.texts[0]
    assert "ledger_post" in sent.texts[1]
    assert sent.texts[2].startswith("COMMIT")


async def test_the_load_function_is_created_once_a_session(scratch_url: str, tag: str, monkeypatch: pytest.MonkeyPatch):
    async with _one_session(scratch_url, tag, "bob") as (_, cid, engine):
        sent = Sent(monkeypatch)
        sent.on = True
        for n in range(3):
            await engine.execute([_reserve(cid, f"{tag}-{n}")])
        creates = [t for t in sent.texts if "FUNCTION pg_temp.tokentill_load_" in t]
        assert len(creates) <= 1  # one pooled session: created at most once (the top-up's batch may have)
        assert sum("FROM pg_temp.tokentill_load_" in t for t in sent.texts) == 3


async def test_a_batch_after_a_failed_one_finds_the_load_still_there(scratch_url: str, tag: str,
                                                                     monkeypatch: pytest.MonkeyPatch):
    """A failed batch's ROLLBACK makes psycopg deallocate every prepared statement of the session
    (a load PREPAREd in the batch's message was gone, and on several pooled sessions at once the
    retries ran out: CI on 0b78da7); the load's temporary function is not a prepared statement and
    stays: the next batch on the session calls it without creating it again."""
    async with _one_session(scratch_url, tag, "carol", attempts=1) as (_, cid, engine):
        original_lead = store.load_lead
        def bad_lead(*args: Any, **kw: Any) -> Any:  # the call fails, in the batch's transaction
            lead, params = original_lead(*args, **kw)
            return type(lead)(lead.name, lead.create, (*lead.args[:-1], "not a number"), lead.types), params

        monkeypatch.setattr(store, "load_lead", bad_lead)
        for n in range(2):
            with pytest.raises(psycopg.errors.InvalidTextRepresentation):
                await engine.execute([_reserve(cid, f"{tag}-fail{n}")])
        monkeypatch.setattr(store, "load_lead", original_lead)
        sent = Sent(monkeypatch)
        sent.on = True
        [result] = await engine.execute([_reserve(cid, f"{tag}-ok")])
        sent.on = False
        assert result.reservation.amount == usd("0.001")
        assert not [t for t in sent.texts if "FUNCTION pg_temp.tokentill_load_" in t], sent.texts


async def test_pooled_sessions_whose_statements_psycopg_deallocated_still_load(scratch_url: str, tag: str):
    """Three pooled sessions, each having run a batch (the load's function created on each), then
    each a ROLLBACK through psycopg, which deallocates its prepared statements (DEALLOCATE ALL);
    batches on all three then run, each first try: no retry, no error."""
    db = connect(scratch_url, pool_size=3)
    db.attempts = 1
    try:
        kit = Kit(db, tag)
        await kit.setup_book()
        cids = [await kit.customer(f"p{n}") for n in range(6)]
        for cid in cids:
            await kit.top_up(cid, "1.00")
        engine = Engine(db, clock=kit.clock)

        async def round_(label: str) -> None:
            results = await asyncio.gather(*(engine.execute([_reserve(cid, f"{tag}-{label}-{cid}")]) for cid in cids))
            assert all(r.reservation.amount == usd("0.001") for [r] in results), results

        await round_("warm")
        functions = ("SELECT count(*) FROM pg_proc WHERE pronamespace = pg_my_temp_schema()"
                     " AND proname LIKE 'tokentill_load_%%'")
        before, after = [], []
        async with db.engine.connect() as c1, db.engine.connect() as c2, db.engine.connect() as c3:
            for conn in (c1, c2, c3):
                driver = (await conn.get_raw_connection()).driver_connection
                before.append((await (await driver.execute(functions)).fetchone())[0])
                for _ in range(3):  # psycopg prepares a statement of its own once it ran before
                    await driver.execute("SELECT 1 WHERE %s", (True,))
                assert driver._prepared._names, "psycopg prepared nothing of its own: the test proves nothing"
                await driver.rollback()  # psycopg: DEALLOCATE ALL of the session's statements
                after.append((await (await driver.execute(functions)).fetchone())[0])
                await driver.rollback()
        assert sum(before) >= 1 and after == before, (before, after)
        await round_("after")
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


async def test_a_role_that_may_not_create_temporary_functions_loads_on_its_own(scratch_url: str, tag: str,
                                                                               monkeypatch: pytest.MonkeyPatch):
    """Where the role has no TEMPORARY privilege on the database, the load's function cannot be
    created (42501): batches run, the load its own round trip (four a batch), and the CREATE is
    not tried again."""
    async with _one_session(scratch_url, tag, "erin") as (db, cid, engine):
        original_lead = store.load_lead

        def refused(*args: Any, **kw: Any) -> Any:  # what a CREATE answers a role without TEMPORARY
            lead, params = original_lead(*args, **kw)
            create = "DO $$ BEGIN RAISE insufficient_privilege USING MESSAGE = 'permission denied'; END $$"
            return type(lead)(lead.name + "_refused", create, lead.args, lead.types), params

        monkeypatch.setattr(store, "load_lead", refused)
        sent = Sent(monkeypatch)
        sent.on = True
        [first] = await engine.execute([_reserve(cid, f"{tag}-1")])
        sent.texts.clear()
        [second] = await engine.execute([_reserve(cid, f"{tag}-2")])
        sent.on = False
        assert first.reservation.amount == second.reservation.amount == usd("0.001")
        assert db.leads_refused
        assert len(sent.texts) == 4, sent.texts
        assert not [t for t in sent.texts if "RAISE insufficient_privilege" in t or "pg_temp." in t], sent.texts

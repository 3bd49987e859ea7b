"""Concurrency, replays and crashes, with exact outcomes: money moves once, holds never exceed
what a wallet has, and a killed process leaves nothing the jobs cannot finish."""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
import textwrap
from datetime import timedelta

import pytest
from sqlalchemy import text
from wallet_kit import Kit, amounts, usd

from ledger.db import connect
from wallets.errors import ConflictError, InsufficientFundsError
from wallets.expiry import expire_grants, expire_reservations


@pytest.mark.parametrize("grouping", [True, False], ids=["group-commit", "one-per-transaction"])
async def test_64_concurrent_holds_of_one_dollar_against_ten_dollars_hold_exactly_ten(
        shared_kit: Kit, grouping: bool):
    kit = Kit(shared_kit.db, shared_kit.tag, grouping=grouping)
    kit.book = shared_kit.book
    other = Kit(shared_kit.db, shared_kit.tag, grouping=grouping)  # a second "process": its own engine
    acme = await kit.customer("acme")
    await kit.top_up(acme, "10.00", name="T")

    async def hold(i: int):
        try:
            return await (kit if i % 2 else other).reserve(acme, f"r{i}", amount="1.00")
        except InsufficientFundsError as exc:
            return exc

    outcomes = await asyncio.gather(*(hold(i) for i in range(64)))
    assert sum(not isinstance(o, Exception) for o in outcomes) == 10
    assert sum(isinstance(o, InsufficientFundsError) for o in outcomes) == 54
    assert await kit.balances(acme, platform=False) == amounts(T="0", acme__reserved="10.00",
                                                              acme__receivable="0")
    assert (await kit.service.wallet(acme)).available == 0
    assert (await kit.verify()).ok


async def test_every_mutating_call_replayed_five_times_moves_money_once(shared_kit: Kit):
    kit = shared_kit
    acme = await kit.customer("acme")
    await kit.top_up(acme, "10.00", name="T")
    reserves = await asyncio.gather(*(kit.reserve(acme, "req-1", amount="3.00") for _ in range(5)))
    assert len({r.reservation.id for r in reserves}) == 1
    assert sum(not r.replayed for r in reserves) == 1
    rid = reserves[0].reservation.id
    settles = await asyncio.gather(*(kit.settle(acme, rid, input_tokens=1000) for _ in range(5)))
    assert {(s.charged, s.released, s.entry_id) for s in settles} == {(usd("1.00"), usd("2.00"), settles[0].entry_id)}
    r2 = await kit.reserve(acme, "req-2", amount="2.00")
    releases = await asyncio.gather(*(kit.release(acme, r2.reservation.id) for _ in range(5)))
    assert {(r.status, r.released) for r in releases} == {("released", usd("2.00"))}
    events = await asyncio.gather(*(kit.usage_event(acme, f"evt-{kit.tag}", input_tokens=500) for _ in range(5)))
    assert sum(not e.duplicate for e in events) == 1
    # 10.00 - 1.00 settled - 0.50 usage event
    assert await kit.balances(acme, platform=False) == amounts(T="8.50", acme__reserved="0", acme__receivable="0")
    with pytest.raises(ConflictError):
        await kit.reserve(acme, "req-1", amount="4.00")
    entries = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT kind, count(*) FROM journal_entries WHERE customer_id = :c GROUP BY kind ORDER BY kind"),
        {"c": acme}))
    assert [tuple(e) for e in entries] == [("release", 1), ("reserve", 2), ("settle", 1), ("topup", 1),
                                           ("usage", 1)]
    assert (await kit.verify()).ok


_RESERVE_AND_HANG = textwrap.dedent("""
    import asyncio, sys, time
    from ledger.db import connect
    from wallets.commands import Reserve
    from wallets.engine import Engine

    async def main(url, customer):
        db = connect(url, pool_size=1)
        result = await Engine(db).submit(Reserve(customer_id=customer, request_id="doomed", request_hash=b"x",
                                                 model="model-x", ttl_seconds=1, amount=2_000_000_000))
        print(result.reservation.id, flush=True)
        time.sleep(3600)  # killed here: after reserve, before any settle

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


async def test_a_process_killed_between_reserve_and_settle_leaves_a_hold_the_expiry_job_releases(
        shared_kit: Kit, database_url: str):
    kit = shared_kit
    acme = await kit.customer("acme")
    await kit.top_up(acme, "5.00", name="T")
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", _RESERVE_AND_HANG, database_url, acme,
                                                 stdout=asyncio.subprocess.PIPE, cwd=os.getcwd())
    try:
        reservation_id = (await child.stdout.readline()).decode().strip()  # type: ignore[union-attr]
        assert reservation_id.startswith("res_")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        await child.wait()
    assert await kit.balances(acme, platform=False) == amounts(T="3.00", acme__reserved="2.00",
                                                              acme__receivable="0")
    later = kit.clock.now + timedelta(days=3650)  # long after the reservation's own clock ran out
    assert await expire_reservations(kit.db, later) >= 1
    assert await kit.balances(acme, platform=False) == amounts(T="5.00", acme__reserved="0", acme__receivable="0")
    status = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT status FROM reservations WHERE id = :id"), {"id": reservation_id}))
    assert status.scalar() == "expired"


def _expire_in_process(args) -> int:
    url, iso = args
    from datetime import datetime

    async def run() -> int:
        db = connect(url, pool_size=2)
        try:
            return await expire_grants(db, datetime.fromisoformat(iso))
        finally:
            await db.dispose()

    return asyncio.run(run())


async def test_two_processes_expiring_grants_at_once_expire_each_exactly_once(kit: Kit, scratch_url: str):
    customers = [await kit.customer(f"c{i}") for i in range(6)]
    for n, cid in enumerate(customers):
        for j in range(5):
            await kit.grant(cid, f"{n + 1}.{j}0", expires_at=kit.clock.now + timedelta(hours=1))
    held = await kit.reserve(customers[0], "held", amount="0.50")  # part of a grant is held
    later = (kit.clock.now + timedelta(hours=2)).isoformat()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        done = pool.map(_expire_in_process, [(scratch_url, later), (scratch_url, later)])
    assert sorted(done)[0] >= 0 and sum(done) == 30
    total = sum(usd(f"{n + 1}.{j}0") for n in range(6) for j in range(5))
    balances = await kit.balances(*customers)
    assert balances["breakage"] == total - usd("0.50")
    assert balances["promotions"] == total
    counts = await kit.db.read(lambda conn: conn.execute(text(
        """SELECT (SELECT count(*) FROM lots WHERE expired_at IS NOT NULL),
                  (SELECT count(*) FROM journal_entries WHERE kind = 'grant_expiry'),
                  (SELECT count(*) FROM outbox WHERE topic = 'grant.expired')""")))
    assert tuple(counts.one()) == (30, 30, 30)
    await kit.release(customers[0], held.reservation.id)  # the held part follows to breakage
    assert (await kit.balances(*customers))["breakage"] == total
    assert (await kit.verify()).ok

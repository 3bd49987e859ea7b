"""Lanes: wallet batches of different lanes run at the same time under SERIALIZABLE and both
commit; batches of one lane queue on the lane's lock; the lane of a customer is the same in
Python and in SQL; and PostgreSQL guards the invariants on every partition, named directly."""
from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from wallet_kit import Kit, usd

from ledger.db import RETRIES, Database, RetriesExhaustedError, connect
from ledger.lanes import lane_count, lane_of
from wallets import store
from wallets.commands import Reserve, Settle
from wallets.engine import Engine, customer_lock

CUSTOMERS = 16  # per batch: each batch reserves for 16 customers, then settles those holds


def _retries() -> float:
    return sum(sample.value for metric in RETRIES.collect() for sample in metric.samples
               if sample.name.endswith("_total"))


async def _customers_in(kit: Kit, lanes: int, lane: int, count: int, prefix: str) -> list[str]:
    """`count` customers of `lane`, each topped up with $10."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        name = f"{prefix}{n}"
        n += 1
        if lane_of(f"{name}-{kit.tag}", lanes) == lane:
            cid = await kit.customer(name)
            await kit.top_up(cid, "10")
            found.append(cid)
    return found


def _reserve(cid: str, request_id: str) -> Reserve:
    return Reserve(customer_id=cid, request_id=request_id, request_hash=request_id.encode(), model="model-x",
                   ttl_seconds=300, amount=usd("0.50"))


def _settle(cid: str, reservation_id: str) -> Settle:
    tokens = {"input": 100, "output": 10}
    return Settle(customer_id=cid, reservation_id=reservation_id, request_hash=b"s" + reservation_id.encode(),
                  tokens=tokens, usage=tokens, final=True)


class Held:
    """Holds each batch's transaction open, after its writes and before its commit, until
    `release` is set: the batches then overlap for certain."""

    def __init__(self, engine: Engine, expected: int) -> None:
        self.arrived: list[int] = []
        self.all_in = asyncio.Event()
        self.release = asyncio.Event()
        original = engine._work

        async def held(conn, commands, *args, **kw):  # type: ignore[no-untyped-def]
            outcomes = await original(conn, commands, *args, **kw)
            self.arrived.append(len(commands))
            if len(self.arrived) >= expected:
                self.all_in.set()
            await self.release.wait()
            return outcomes

        engine._work = held  # type: ignore[method-assign]


async def _two_lanes(kit: Kit, db: Database) -> tuple[int, list[str], list[str]]:
    lanes = await db.read(lane_count)
    assert lanes >= 2
    return lanes, await _customers_in(kit, lanes, 0, CUSTOMERS, "a"), await _customers_in(kit, lanes, 1, CUSTOMERS, "b")


async def test_overlapping_serializable_batches_of_two_lanes_both_commit(kit: Kit, scratch_url: str):
    _, lane_a, lane_b = await _two_lanes(kit, kit.db)
    once = connect(scratch_url, pool_size=4)
    once.attempts = 1  # a serialization failure is not retried here: it fails the batch
    try:
        engine = Engine(once, clock=kit.clock)
        before = _retries()
        reserved: dict[str, str] = {}
        for round_ in ("reserve", "settle"):
            held = Held(engine, 2)
            if round_ == "reserve":
                batches = [[_reserve(c, f"{kit.tag}-{c}") for c in lane] for lane in (lane_a, lane_b)]
            else:
                batches = [[_settle(c, reserved[c]) for c in lane] for lane in (lane_a, lane_b)]
            tasks = [asyncio.create_task(engine.execute(batch)) for batch in batches]
            await asyncio.wait_for(held.all_in.wait(), 10)  # both transactions are open, writes done
            assert held.arrived == [CUSTOMERS, CUSTOMERS]
            held.release.set()
            results = await asyncio.gather(*tasks)
            assert all(not isinstance(o, BaseException) for outcomes in results for o in outcomes), results
            if round_ == "reserve":
                reserved.update({c: o.reservation.id for lane, outcomes in zip((lane_a, lane_b), results, strict=True)
                                 for c, o in zip(lane, outcomes, strict=True)})
        assert _retries() == before
    finally:
        await once.dispose()
    balances = await kit.balances(*lane_a, *lane_b)
    assert balances["revenue"] == usd("0.12") * 2 * CUSTOMERS  # 100 in at $1/1k + 10 out at $2/1k
    report = await kit.verify()
    assert report.ok, [c for c in report.checks if not c.ok]


async def test_two_batches_of_one_lane_queue_on_the_lane_lock(kit: Kit):
    lanes = await kit.db.read(lane_count)
    first, second = (await _customers_in(kit, lanes, 2, 2, "q"))
    engine = Engine(kit.db, clock=kit.clock)
    held = Held(engine, 1)
    one = asyncio.create_task(engine.execute([_reserve(first, f"{kit.tag}-1")]))
    await asyncio.wait_for(held.all_in.wait(), 10)
    other = asyncio.create_task(engine.execute([_reserve(second, f"{kit.tag}-2")]))
    await asyncio.sleep(0.5)
    assert held.arrived == [1] and not other.done()  # waiting for the lane's lock, not running
    held.release.set()
    await asyncio.gather(one, other)
    assert held.arrived == [1, 1]


async def test_one_lane_without_its_lock_collides_as_shared_tables_did(kit: Kit, scratch_url: str):
    """What the lanes avoid: two overlapping batches on the same partitions (one lane), without the
    lane's lock, fail with a serialization error (so did any two batches before lanes)."""
    lanes = await kit.db.read(lane_count)
    group = await _customers_in(kit, lanes, 3, 2 * CUSTOMERS, "s")
    once = connect(scratch_url, pool_size=4)
    once.attempts = 1
    try:
        engine = Engine(once, clock=kit.clock)
        held = Held(engine, 2)

        async def unlocked(commands: list[Any]) -> list[Any]:  # the lane's batch, minus the lane's lock
            customers = sorted({c.customer_id for c in commands})

            async def work(conn):  # type: ignore[no-untyped-def]
                token = store.LANE.set(3)
                try:
                    return await engine._work(conn, commands, customers, kit.clock())
                finally:
                    store.LANE.reset(token)

            return await once.run(work, locks=[customer_lock(c) for c in customers])

        halves = [group[:CUSTOMERS], group[CUSTOMERS:]]
        tasks = [asyncio.create_task(unlocked([_reserve(c, f"{kit.tag}-{c}") for c in half])) for half in halves]
        await asyncio.wait_for(held.all_in.wait(), 10)
        held.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await once.dispose()
    assert any(isinstance(r, RetriesExhaustedError) for r in results), results


async def test_customers_and_top_ups_of_many_lanes_at_once_never_retry(kit: Kit, scratch_url: str):
    """What opens accounts (customer creation, top-ups, grants) queues on one lock, since the
    accounts table is shared by every lane: none of them fails or retries, however many run."""
    once = connect(scratch_url, pool_size=8)
    once.attempts = 1
    try:
        other = Kit(once, kit.tag, kit.clock)
        before = _retries()

        async def open_and_fund(n: int) -> None:
            cid = await other.customer(f"open{n}")
            await other.top_up(cid, "1")
            await other.grant(cid, "1")

        await asyncio.gather(*(open_and_fund(n) for n in range(24)))
        assert _retries() == before
    finally:
        await once.dispose()


def test_the_lane_of_a_customer_is_the_same_in_python_and_in_sql(database_url: str):
    ids = ["acme", "a", "", "é-ü", "customer-0001", *(f"c{i}" for i in range(200))]
    with psycopg.connect(database_url) as conn:
        lanes = conn.execute("SELECT lanes FROM ledger_settings").fetchone()[0]
        sql = dict(conn.execute("SELECT id, ledger_lane(id) FROM unnest(%s::text[]) AS id", (ids,)).fetchall())
    assert sql == {i: lane_of(i, lanes) for i in ids}
    assert len(set(sql.values())) == lanes  # 205 ids fill every lane


@pytest.mark.parametrize("statement", [
    "UPDATE postings_l0 SET amount = amount * 2",
    "DELETE FROM postings_l0",
    "TRUNCATE postings_l0",
    "UPDATE journal_entries_l0 SET kind = 'x'",
    "DELETE FROM journal_entries_l0",
    "TRUNCATE journal_entries_l0 CASCADE",
    "UPDATE idempotency_records_l0 SET status = 1",
])
async def test_a_partition_named_directly_is_as_append_only_as_its_table(db: Database, database_url: str, tag: str,
                                                                         statement: str):
    with psycopg.connect(database_url) as conn:  # rows in lane 0 (raw SQL that names no lane)
        conn.execute("INSERT INTO idempotency_records (scope, key, request_hash, status, response) "
                     "VALUES ('t', %s, '\\x00', 0, '{}')", (tag,))
        ids = [conn.execute("INSERT INTO accounts (code, type, asset) VALUES (%s, %s, 'USD') RETURNING id",
                            (f"{kind}:append:{tag}", kind)).fetchone()[0] for kind in ("asset", "income")]
        entry = conn.execute("INSERT INTO journal_entries (key, request_hash, kind, occurred_at) "
                             "VALUES (%s, '\\x00', 'raw', now()) RETURNING id", (tag,)).fetchone()[0]
        conn.execute("INSERT INTO postings (entry_id, account_id, amount) VALUES (%s, %s, 1), (%s, %s, -1)",
                     (entry, ids[0], entry, ids[1]))
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute(statement)


async def test_postings_written_into_a_partition_directly_are_checked_and_counted(db: Database, database_url: str,
                                                                                   tag: str):
    """A statement that names a partition fires that partition's triggers: the per-statement
    balance check refuses an unbalanced insert, and balanced postings reach the cached balances."""
    with psycopg.connect(database_url) as conn:
        ids = [conn.execute("INSERT INTO accounts (code, type, asset) VALUES (%s, %s, 'USD') RETURNING id",
                            (f"{kind}:direct:{tag}", kind)).fetchone()[0] for kind in ("asset", "income")]
    with psycopg.connect(database_url) as conn:
        entry = conn.execute("INSERT INTO journal_entries (key, request_hash, kind, occurred_at) "
                             "VALUES (%s, '\\x00', 'raw', now()) RETURNING id", (f"{tag}-direct",)).fetchone()[0]
        with pytest.raises(psycopg.errors.CheckViolation, match="unbalanced"):
            conn.execute("INSERT INTO postings_l0 (entry_id, account_id, amount) VALUES (%s, %s, 5)",
                         (entry, ids[0]))
    with psycopg.connect(database_url) as conn:
        entry = conn.execute("INSERT INTO journal_entries (key, request_hash, kind, occurred_at) "
                             "VALUES (%s, '\\x00', 'raw', now()) RETURNING id", (f"{tag}-direct2",)).fetchone()[0]
        conn.execute("INSERT INTO postings_l0 (entry_id, account_id, amount) VALUES (%s, %s, 5), (%s, %s, -5)",
                     (entry, ids[0], entry, ids[1]))
    with psycopg.connect(database_url) as conn:
        debits = conn.execute("SELECT sum(debits) FROM account_balances WHERE account_id = %s", (ids[0],)).fetchone()
    assert debits[0] == 5


@pytest.mark.parametrize("in_flight", [1, 3])
async def test_a_process_runs_at_most_its_in_flight_batches_at_once_over_all_lanes(shared_kit: Kit, in_flight: int):
    kit = shared_kit
    lanes = await kit.db.read(lane_count)
    cids = [(await _customers_in(kit, lanes, lane, 1, f"slot{in_flight}-{lane}-"))[0] for lane in range(4)]
    engine = Engine(kit.db, clock=kit.clock, in_flight=in_flight)
    await engine.lane_of(cids[0])  # the engine reads the lane count once; until then commands queue together
    running = most = 0
    execute = engine.execute

    async def counted(commands, **kw):
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.05)  # long enough for every lane's flusher to be waiting
            return await execute(commands, **kw)
        finally:
            running -= 1

    engine.execute = counted  # type: ignore[method-assign]
    outcomes = await asyncio.gather(*(engine.submit(_reserve(cid, f"{kit.tag}-slot{in_flight}-{i}"))
                                      for i in range(8) for cid in cids))
    assert len(outcomes) == 32
    assert most == in_flight  # four lanes had work at once; the process ran only its slots' worth


def _phases() -> dict[str, tuple[float, float]]:
    from wallets.engine import BATCH_PHASE
    found: dict[str, list[float]] = {}
    for metric in BATCH_PHASE.collect():
        for sample in metric.samples:
            if sample.name.endswith(("_sum", "_count")):
                found.setdefault(sample.labels["phase"], [0.0, 0.0])[sample.name.endswith("_count")] += sample.value
    return {phase: (total, count) for phase, (total, count) in found.items()}


async def test_the_engine_times_each_phase_of_a_command_and_its_batch(shared_kit: Kit):
    """tokentill_wallet_batch_phase_seconds: queued per command, the batch's phases once per batch,
    and the phases of a batch add up to no more than the time its commands took."""
    kit = shared_kit
    lanes = await kit.db.read(lane_count)
    cids = await _customers_in(kit, lanes, 1, 3, "phase")
    engine = Engine(kit.db, clock=kit.clock)
    await engine.lane_of(cids[0])
    before = _phases()
    started = asyncio.get_running_loop().time()
    await asyncio.gather(*(engine.submit(_reserve(cid, f"{kit.tag}-phase-{cid}")) for cid in cids))
    took = asyncio.get_running_loop().time() - started
    after = _phases()
    counts = {p: after[p][1] - before.get(p, (0.0, 0.0))[1] for p in after}
    sums = {p: after[p][0] - before.get(p, (0.0, 0.0))[0] for p in after}
    assert counts["queued"] == 3
    batches = counts["lock"]
    assert 1 <= batches <= 3
    assert all(counts[p] == batches for p in ("load", "rules", "post", "write", "commit"))
    assert all(sums[p] > 0 for p in ("lock", "load", "post", "write", "commit"))
    assert sum(sums[p] for p in ("lock", "load", "rules", "post", "write", "commit")) <= took * batches

"""What a batch's load reads for its reserves' request ids (9cc70e9: a request id sent again
answers its reservation as it is now, so the load also reads the reservation a kept answer names).
Each request id's kept answer is one primary-key probe of `idempotency_records` (then of
`idempotency_keys`, the records kept before lanes), and the reservation it names one probe more:
the answer was probed twice, once for the answer and once again for its reservation. A record
kept before lanes names its reservation too, and is answered as it is now."""
from __future__ import annotations

from wallet_kit import Kit, usd

from ledger.db import Database
from tests.integration.plan_reads import explained, rows_read
from wallets import store
from wallets.commands import Release, Reserve
from wallets.engine import Engine


def _reserve(cid: str, request_id: str) -> Reserve:
    return Reserve(customer_id=cid, request_id=request_id, request_hash=request_id.encode(), model="model-x",
                   ttl_seconds=300, amount=usd("0.001"))


async def test_a_batch_of_reserves_probes_each_request_ids_answer_once(fresh_db: Database, tag: str):
    kit = Kit(fresh_db, tag)
    await kit.setup_book()
    cid = await kit.customer("alice")
    await kit.top_up(cid, "1.00")
    engine = Engine(fresh_db, clock=kit.clock)
    await engine.execute([_reserve(cid, f"r{n}") for n in range(5)])
    # 5 request ids sent again (their answers kept) and 15 new ones: 20 keys, 20 probes of the
    # lane's records, and 5 reservations read (those the 5 answers name)
    keys = [(f"reserve:{cid}", f"r{n}") for n in range(5)] + [(f"reserve:{cid}", f"new{n}") for n in range(15)]
    loaded, spy = await explained(fresh_db, lambda conn: store.load(conn, [cid], idempotency=keys),
                                  analyze=("idempotency_records", "reservations"))
    assert len(loaded.idempotency) == 5
    assert sorted(r.request_id for r in loaded.wallets[cid].reservations.values()) == [f"r{n}" for n in range(5)]
    assert rows_read(spy.plans, "idempotency_records") <= 5  # probes that found a row: 10 before
    assert rows_read(spy.plans, "reservations") == 5


async def test_a_reserve_answer_kept_before_lanes_is_answered_as_its_reservation_is_now(fresh_db: Database, tag: str):
    kit = Kit(fresh_db, tag)
    await kit.setup_book()
    cid = await kit.customer("bob")
    await kit.top_up(cid, "1.00")
    engine = Engine(fresh_db, clock=kit.clock)
    [first] = await engine.execute([_reserve(cid, "old")])
    await engine.execute([Release(customer_id=cid, reservation_id=first.reservation.id)])

    async def before_lanes(conn) -> None:  # the answer as a record kept before lanes holds it
        await conn.exec_driver_sql(
            "INSERT INTO idempotency_keys (scope, key, request_hash, status, response, created_at) "
            "SELECT scope, key, request_hash, status, response, created_at FROM idempotency_records "
            "WHERE scope = %s AND key = 'old'", (f"reserve:{cid}",))
        await conn.exec_driver_sql("ALTER TABLE idempotency_records DISABLE TRIGGER USER")
        await conn.exec_driver_sql("DELETE FROM idempotency_records WHERE scope = %s AND key = 'old'",
                                   (f"reserve:{cid}",))
        await conn.exec_driver_sql("ALTER TABLE idempotency_records ENABLE TRIGGER USER")

    await fresh_db.run(before_lanes)
    [again] = await engine.execute([_reserve(cid, "old")])
    assert again.replayed
    assert (again.reservation.id, again.reservation.status) == (first.reservation.id, "released")  # "held" before

"""(review of the lane reads, s28) The reservations check read a reservation's charges and hold
pieces by reservation id alone, where a reservation id is unique within its lane: a forger's copy
of a charge (or a hold piece) in another lane under that id was read as the reservation's."""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from wallet_kit import Kit

from ledger.lanes import lane_count, lane_of
from wallets.audit import reservations_consistent


def _columns_but(names: list[str], *skip: str) -> str:
    return ", ".join(n for n in names if n not in skip)


async def _copied_into_another_lane(kit: Kit, cid: str, reservation_id: str, as_of: str) -> list[str]:
    """As a superuser with triggers off, copy reservation `reservation_id`'s charges and hold pieces
    into a lane other than `cid`'s, under the id `as_of`; what the check finds, rolled back after."""
    async def forged(conn: AsyncConnection) -> list[str]:
        lanes = await lane_count(conn)
        other = next(lane_of(f"o{i}", lanes) for i in range(1000) if lane_of(f"o{i}", lanes) != lane_of(cid, lanes))
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        for table in ("charges", "reservation_holds"):
            names = list((await conn.execute(text(
                "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attnum > 0"
                " AND NOT attisdropped ORDER BY attnum"), {"t": table})).scalars())
            rest = _columns_but(names, "lane", "reservation_id")
            await conn.execute(text(f"""
                INSERT INTO {table} (lane, reservation_id, {rest})
                SELECT :other, :as_of, {rest} FROM {table} WHERE lane = :own AND reservation_id = :r"""),
                {"other": other, "as_of": as_of, "own": lane_of(cid, lanes), "r": reservation_id})
        found = await reservations_consistent(conn)
        await conn.rollback()
        return list(found.problems)

    return await kit.db.read(forged)


async def test_a_copy_of_a_reservation_s_charge_and_hold_in_another_lane_is_not_read_as_its_own(kit: Kit):
    """`lanes` tops up $10.00, reserves 2,000 input tokens at $1.00 per 1,000 (a $2.00 hold,
    2,000,000,000 units, one piece off its lot) and settles 2,000: captured and charged
    2,000,000,000. A forger copies the charge and the hold piece into another lane under the same
    reservation id. The check read them as the reservation's: 'reservation R: captured 2000000000,
    charged 2000000000, but its charges say 4000000000 and 4000000000' and 'reservation R holds
    2000000000 but its hold pieces sum to 4000000000'. Read in the reservation's lane: nothing."""
    cid = await kit.customer("lanes")
    await kit.top_up(cid, "10.00")
    hold = await kit.reserve(cid, "r-1", input_tokens=2000)
    await kit.settle(cid, hold.reservation.id, input_tokens=2000)
    row = (await kit.db.read(lambda conn: conn.execute(text(
        "SELECT amount, captured, charged FROM reservations WHERE id = :r"), {"r": hold.reservation.id}))).one()
    assert tuple(row) == (2_000_000_000, 2_000_000_000, 2_000_000_000)

    assert await _copied_into_another_lane(kit, cid, hold.reservation.id, hold.reservation.id) == []


async def test_a_final_charge_of_another_lane_does_not_make_an_open_reservation_settled(kit: Kit):
    """`lanes` settles r-1 as above ($2.00) and holds r-2 (1,000 input tokens: $1.00, open). A
    forger copies r-1's final charge into another lane under r-2's id. The check read it as r-2's:
    'reservation R2 is held but has a final charge' and 'captured 0, charged 0, but its charges say
    2000000000 and 2000000000'. Read in r-2's lane: nothing."""
    cid = await kit.customer("lanes")
    await kit.top_up(cid, "10.00")
    first = await kit.reserve(cid, "r-1", input_tokens=2000)
    await kit.settle(cid, first.reservation.id, input_tokens=2000)
    second = await kit.reserve(cid, "r-2", input_tokens=1000)

    assert await _copied_into_another_lane(kit, cid, first.reservation.id, second.reservation.id) == []

"""What a re-rate reads of a charge's earlier re-rates (charge_adjustments) is read in
the charge's lane: a charge id is unique within its lane alone, so a forger's adjustment of that
id in another lane (superuser, triggers off) is not the charge's."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from wallet_kit import Kit, forge_adjustment

from wallets import engine, store
from wallets.periods import Cycle, period_named

NOV_1, DEC_1 = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)


async def _charged(kit: Kit) -> str:
    """`lanes` tops up $10.00 and is charged 2,000 input tokens at $1.00 per 1,000 on November 23rd:
    $2.00 (2,000,000,000 units), never re-rated."""
    cid = await kit.customer("lanes")
    await kit.top_up(cid, "10.00")
    hold = await kit.reserve(cid, "r-1", input_tokens=2000)
    await kit.settle(cid, hold.reservation.id, input_tokens=2000)
    return cid


async def _forged(kit: Kit, cid: str, read: Any) -> Any:
    """What `read(conn)` gives once a forger inserted into another lane an adjustment of `cid`'s
    charge's id ($2.00 -> $1.00, its input now 1,000,000,000, for a customer of that lane; rolled
    back after)."""
    async def forged(conn: AsyncConnection) -> Any:
        await forge_adjustment(conn, cid, '[["model-x", "input", 1000000000]]')
        found = await read(conn)
        await conn.rollback()
        return found

    return await kit.db.read(forged)


async def test_a_re_rate_reads_a_charge_s_earlier_re_rates_in_its_lane(kit: Kit):
    """The re-rate's charges: the $2.00 charge stands as charged (no earlier re-rate, current
    None). With the forged adjustment in another lane the re-rate read it as the charge's: current
    {(model-x, input): 1,000,000,000}, so a re-rate to $0.50 per 1,000 would move it from $1.00 to
    $1.00, nothing, where -$1.00 is due. Now it reads the charge's lane: current None."""
    cid = await _charged(kit)

    async def read(conn: AsyncConnection) -> list[Any]:
        rows = await store.load_rerate_charges(conn, cid, kit.book, NOV_1, DEC_1)
        return [engine._on_record(r) for r in rows]

    [charge] = await _forged(kit, cid, read)
    assert (charge.charged, charge.current) == (2_000_000_000, None)



async def test_the_close_lists_a_charge_under_the_rules_of_its_own_lane_s_re_rates(kit: Kit):
    """What the close lists as paying each rule (store.rule_funding): the $2.00 charge, never
    re-rated, under the rule that charged its input, with its 2,000 units and 2,000,000,000 charged,
    not moved. With the forged adjustment in another lane (rules {input: forged-rule}) the close
    read it as the charge's last re-rate: the charge listed under `forged-rule` as moved (units and
    charged None), its own rule's true-up giving it no part. Now it reads the charge's lane."""
    cid = await _charged(kit)

    async def rules(conn: AsyncConnection) -> Any:
        await conn.execute(text("""UPDATE charge_adjustments SET new_rules = '{"input": "forged-rule"}'
                                    WHERE corrected_version = 'forged'"""))
        return await store.rule_funding(conn, cid, period_named("2026-11", Cycle()))

    async def charged(conn: AsyncConnection) -> Any:
        return (await conn.execute(text("SELECT l ->> 'rule_id' FROM charges, jsonb_array_elements(lines) l"
                                        " WHERE customer_id = :c AND l ->> 'kind' = 'usage'"), {"c": cid})).scalar_one()

    rule = await kit.db.read(charged)
    found = await _forged(kit, cid, rules)
    assert [(r, [(units, amount) for _, _, _, units, amount, _, _ in paid]) for r, paid in found.items()] == [
        (rule, [(2000, 2_000_000_000)])]

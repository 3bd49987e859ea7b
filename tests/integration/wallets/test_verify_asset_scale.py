"""`audit verify` names a wallet currency whose scale was rewritten. Every amount of the ledger is
an integer of atomic units, and the asset's `scale` alone says what one unit is worth: the seals
hash the units and the asset's code, not its scale, so a superuser who rewrote `assets.scale`
(past its immutability trigger) multiplied every figure the auditor reads (the trial balance, the
exports, the statements) and every check still passed."""
from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from wallet_kit import Kit

from wallets.audit import full_verify


async def test_verify_names_a_wallet_currency_whose_scale_was_rewritten(kit: Kit):
    """A $20.00 top-up is 20,000,000,000 atomic units at USD's scale of 9 (10^-9 dollars each).
    With the scale rewritten to 6, the same units read 20,000,000,000 / 10^6 = $20,000.00: a
    thousand times the cash the customer paid, in every export and balance at T. Before, verify
    said ok; now the scale check names USD, 6 where its wallets keep 9."""
    cid = await kit.customer("scl")
    await kit.top_up(cid, "20.00")

    async def figures(conn: AsyncConnection) -> tuple[Any, Any]:
        before = await full_verify(conn)
        await conn.execute(text("SET LOCAL session_replication_role = replica"))  # past assets_immutable
        await conn.execute(text("UPDATE assets SET scale = 6 WHERE code = 'USD'"))
        shown = (await conn.execute(text(
            """SELECT trim_scale(b.debits / power(10::numeric, s.scale))::text
                 FROM accounts a JOIN assets s ON s.code = a.asset
                 JOIN (SELECT account_id, sum(debits) AS debits FROM account_balances GROUP BY account_id) b
                   ON b.account_id = a.id
                WHERE a.code = 'asset:platform:cash:USD'"""))).scalar_one()
        after = await full_verify(conn)
        await conn.rollback()
        return before, shown, after

    before, shown, after = await kit.db.read(figures)
    assert before.ok, [c for c in before.checks if not c.ok]
    assert shown == "20000"  # the $20.00 the customer paid, as an auditor reads it now
    failed = [c for c in after.checks if not c.ok]
    assert [c.name for c in failed] == ["assets"], failed
    assert failed[0].problems == (
        "asset USD has scale 6, but a wallet currency is kept in units of 10^-9: its customers' "
        "amounts read 1000 times what they are",)

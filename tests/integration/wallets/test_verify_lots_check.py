"""`audit verify` runs on a database migrated to head: the CLI migrates before it verifies
(`_with_db`), a server migrates at its start, and no test verifies lots below head. So the lots
check is one statement, with no probe of the catalog for a pre-0048 schema, and it still names a
grant revoked in whole that holds money again."""
from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from wallet_kit import Kit

from wallets.audit import lots_match_accounts
from wallets.commands import ReverseGrant


class Counting:
    """An AsyncConnection that keeps the text of every statement run through it."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn, self.statements = conn, []

    async def execute(self, statement: Any, *args: Any, **kw: Any) -> Any:
        self.statements.append(str(statement))
        return await self.conn.execute(statement, *args, **kw)


async def test_the_lots_check_is_one_statement_and_names_a_revoked_grant_holding_money(kit: Kit):
    cid = await kit.customer("rvk")
    promo = await kit.grant(cid, "5.00")
    await kit.service.submit(ReverseGrant(customer_id=cid, lot_id=promo.grant.id, amount=None, reason="abuse"))

    async def check(conn: AsyncConnection) -> tuple[Any, list[str]]:
        counting = Counting(conn)
        return await lots_match_accounts(counting), counting.statements

    result, statements = await kit.db.read(check)
    assert result.ok and len(statements) == 1 and "pg_attribute" not in statements[0]

    async def tampered(conn: AsyncConnection) -> Any:  # money back on the revoked lot's account, by hand
        await conn.execute(text("SET LOCAL session_replication_role = replica"))  # past the ledger's triggers
        await conn.execute(text("""UPDATE account_balances b SET credits = b.credits + 1 FROM lots l
                                    WHERE l.id = :id AND b.account_id = l.account_id"""), {"id": promo.grant.id})
        found = await lots_match_accounts(conn)
        await conn.rollback()
        return found

    found = await kit.db.read(tampered)
    assert not found.ok and any("was revoked in whole" in p for p in found.problems), found

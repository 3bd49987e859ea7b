"""`audit verify` on a database below head: the CLI migrates before it verifies and a server
migrates at its start, but a test verifies a database moved down to 0028
(test_period_deltas.py::test_the_downgrade_folds_the_pending_deltas), so the checks still ask
which optional tables and columns (0048's lots.revoked_at among them) the schema has. They ask
once per transaction, in one query, not with a catalog probe per check on every verify; and the
lots check still names a grant revoked in whole that holds money again."""
from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from wallet_kit import Kit

from wallets.audit import full_verify, lots_match_accounts
from wallets.commands import ReverseGrant


class Counting:
    """An AsyncConnection that keeps the text of every statement run through it."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn, self.statements = conn, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    async def execute(self, statement: Any, *args: Any, **kw: Any) -> Any:
        self.statements.append(str(statement))
        return await self.conn.execute(statement, *args, **kw)


async def test_a_verify_asks_the_schema_once_and_the_lots_check_names_a_revoked_grant_holding_money(kit: Kit):
    cid = await kit.customer("rvk")
    promo = await kit.grant(cid, "5.00")
    await kit.service.submit(ReverseGrant(customer_id=cid, lot_id=promo.grant.id, amount=None, reason="abuse"))

    async def check(conn: AsyncConnection) -> tuple[Any, list[str]]:
        counting = Counting(conn)
        return await lots_match_accounts(counting), await full_verify(counting), counting.statements

    result, report, statements = await kit.db.read(check)
    assert result.ok and report.ok, [c for c in report.checks if not c.ok]
    probes = [s for s in statements if "pg_attribute" in s or "to_regclass" in s]
    assert len(probes) == 1, probes  # the lots check's and the whole verify's: one, shared

    async def tampered(conn: AsyncConnection) -> Any:  # money back on the revoked lot's account, by hand
        await conn.execute(text("SET LOCAL session_replication_role = replica"))  # past the ledger's triggers
        await conn.execute(text("""UPDATE account_balances b SET credits = b.credits + 1 FROM lots l
                                    WHERE l.id = :id AND b.account_id = l.account_id"""), {"id": promo.grant.id})
        found = await lots_match_accounts(conn)
        await conn.rollback()
        return found

    found = await kit.db.read(tampered)
    assert not found.ok and any("was revoked in whole" in p for p in found.problems), found


async def test_the_lots_check_names_a_lot_marked_empty_that_holds_money(kit: Kit):
    """A batch's load reads no lot marked empty (migration 0072): one marked so while it holds
    money would take that money out of the customer's reach. Marked by hand, the $3.00 lot is named."""
    cid = await kit.customer("mark")
    lot = await kit.top_up(cid, "3.00")

    async def tampered(conn: AsyncConnection) -> Any:
        await conn.execute(text("UPDATE lots SET empty = true WHERE id = :id"), {"id": lot.grant.id})
        found = await lots_match_accounts(conn)
        await conn.rollback()
        return found

    assert (await kit.db.read(lambda conn: lots_match_accounts(conn))).ok
    found = await kit.db.read(tampered)
    assert not found.ok and found.problems == (f"lot {lot.grant.id} is marked empty, yet its account holds 3000000000",)


async def test_the_lots_check_names_a_top_up_that_paid_the_receivable_unmarked(kit: Kit):
    """A close reads only the top-ups marked as having paid the receivable (migration 0073): one a
    server older than 0073 wrote unmarked, in a rolling deploy, is a payment the invoice would ask
    for again. `owes` topped up $1.00, spent $2.00 (2,000 input tokens at $1.00 per 1,000: $1.00 of
    it on the receivable), then topped up $3.00, which paid that $1.00 first: that lot is marked.
    Unmarked by hand, it is named; the first lot, which paid nothing, marked by hand, is only read
    for nothing by the close (0073's backfill marks a true-up's credit lot so), and is not named."""
    cid = await kit.customer("owes")
    first = await kit.top_up(cid, "1.00")
    await kit.usage_event(cid, "past-credit", input_tokens=2_000)
    paying = await kit.top_up(cid, "3.00")

    async def turned(lot_id: str, mark: bool) -> Any:
        async def tamper(conn: AsyncConnection) -> Any:
            await conn.execute(text("SET LOCAL session_replication_role = replica"))  # past the lots guard
            await conn.execute(text("UPDATE lots SET paid_receivable = :mark WHERE id = :id"),
                               {"id": lot_id, "mark": mark})
            found = await lots_match_accounts(conn)
            await conn.rollback()
            return found
        return await kit.db.read(tamper)

    assert (await kit.db.read(lambda conn: lots_match_accounts(conn))).ok
    unmarked = await turned(paying.grant.id, False)
    assert not unmarked.ok and unmarked.problems == (
        f"lot {paying.grant.id}: its top-up paid the receivable, yet it is not marked paid_receivable",)
    assert (await turned(first.grant.id, True)).ok

"""`audit verify` checks each charge's lines against their own unit prices and quantities, under
the one rounding rule (pricing.money.round_entry: each line within one atomic unit of its exact
amount, quantity x unit price / the units a price covers; the lines within half a unit of their
exact total). A line edited in raw SQL so that the charge's total, its entry and every rollup's
totals still agree passed every check."""
from __future__ import annotations

from billing_kit import BillingKit
from sqlalchemy import text
from test_period_deltas import failed_checks

from ledger.audit import verify
from wallets.audit import WALLET_CHECKS

# model-a 1,000 in at $10/M, 500 out at $20/M, and the $0.01 request fee: $0.01 each, by hand
CENT = 10_000_000  # atomic units (10^-9 USD)


def edit(field: str, rule: str, value: str) -> str:
    """Set `field` of the charge's line of `rule` (triggers off for the statement's transaction)."""
    return f"""UPDATE charges SET lines = (
                   SELECT jsonb_agg(CASE WHEN l ->> 'rule_id' = '{rule}'
                                         THEN jsonb_set(l, '{{{field}}}', '{value}'::jsonb) ELSE l END ORDER BY o)
                     FROM jsonb_array_elements(lines) WITH ORDINALITY x(l, o))
                WHERE customer_id = :c"""


async def tampered(bk: BillingKit, cid: str, *sqls: str) -> dict[str, tuple[str, ...]]:
    async with bk.db.engine.connect() as conn:
        await conn.execute(text("ALTER TABLE charges DISABLE TRIGGER charges_immutable"))
        for sql in sqls:
            await conn.execute(text(sql), {"c": cid})
        report = await verify(conn, WALLET_CHECKS)
        await conn.rollback()
    return {c.name: c.problems for c in report.checks if not c.ok}


async def test_verify_names_a_charge_whose_lines_do_not_follow_their_unit_prices(bk: BillingKit) -> None:
    cid = await bk.customer("lines", billing_mode="postpaid")
    await bk.event(cid, "model-a", 1000, 500)
    [(charge, request, lines)] = (await bk.db.read(lambda conn: conn.execute(text(
        "SELECT id, request_id, lines FROM charges WHERE customer_id = :c"), {"c": cid}))).all()
    assert sorted((ln["rule_id"], ln["quantity"], ln["amount_units"]) for ln in lines) == [
        ("a-in", 1000, CENT), ("a-out", 500, CENT), ("call", 1, CENT)]
    assert await failed_checks(bk) == {}

    # a unit from one line to the other: the total, the entry and the rollups' totals still agree
    found = await tampered(bk, cid, edit("amount_units", "a-in", str(CENT - 1)),
                           edit("amount_units", "a-out", str(CENT + 1)))
    # (period_rollups sees it too now: the rollup's lines are the charge's as it was billed)
    assert sorted(found) == ["charge_lines", "period_rollups"], found
    assert len(found["charge_lines"]) == 2 and all(f"charge {charge} ({request})" in p and cid in p
                                                   for p in found["charge_lines"]), found
    assert any("a-in" in p and str(CENT - 1) in p for p in found["charge_lines"]), found
    # the price the line shows is not the one it was rated at (1,000 x $20/M is $0.02)
    found = await tampered(bk, cid, edit("unit_price", "a-in", '"20.00"'))
    assert "charge_lines" in found and [p for p in found["charge_lines"] if f"charge {charge}" in p and "a-in" in p]
    # two units more on two lines, the total taken along (each line within its unit, the total off by 2)
    found = await tampered(bk, cid, edit("amount_units", "a-in", str(CENT + 1)),
                           edit("amount_units", "a-out", str(CENT + 1)))
    problems = found["charge_lines"]
    assert [p for p in problems if f"charge {charge}" in p and str(3 * CENT + 2) in p], found
    assert await failed_checks(bk) == {}

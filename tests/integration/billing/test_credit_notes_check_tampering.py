"""verify's credit_notes check reads each re-rate entry's and each credit note's revenue and rounding
postings and each note's charge adjustments once for all (not an account scan, or an adjustment
scan, a row: notes times adjustments); each damage it named row by row it still names.

By hand (test_rerate_volume_true_up's first case). Customer `tampered`, postpaid on book `vol`:
November's 60,000 and 70,000 model-v output tokens at v1 ($20/M to 100,000, $10/M beyond) cost
$1.20 and $0.80 + $0.30 = $1.10; the close trues them up to 130,000 x $10/M = $1.30 (-$1.00).
Re-rated to v2 ($16/M, $8/M): $0.96 and $0.64 + $0.24 = $0.88, the charges -$0.46; the true-up
130,000 x $8/M - $1.84 = -$0.80 where -$1.00 stands, +$0.20: the re-rate's entry debits usage
revenue $0.26 and its credit note's total is -$0.26, its two lines -0.46 and 0.20. In atomic units
(10^-9 of a dollar): charges moved -460,000,000, true-ups 200,000,000, revenue and the note's total
-260,000,000; a cent is 10,000,000."""
from __future__ import annotations

from typing import Any

from billing_kit import BillingKit
from sqlalchemy import text
from test_rerate_volume_true_up import CLOSED, V2, applied, november_usage, spec, verified, vol_customer

from ledger.db import Database
from wallets import books, chart
from wallets.audit import credit_notes_tie_out


async def _problems(bk: BillingKit, params: dict[str, Any], *sqls: str) -> list[str]:
    """The credit_notes check's problems, sorted, once `sqls` ran (with `params`) past the
    immutability triggers, in a transaction rolled back after."""

    async def run(conn: Any) -> list[str]:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        for sql in sqls:
            await conn.execute(text(sql), params)
        await conn.execute(text("SET LOCAL session_replication_role = origin"))
        found = await credit_notes_tie_out(conn)
        await conn.rollback()
        return sorted(found.problems)

    return await bk.db.read(run)


async def test_the_credit_notes_check_names_each_damage_to_a_note_or_its_entry(fresh_db: Database) -> None:
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "tampered", billing_mode="postpaid")
    await november_usage(bk, cid)
    await bk.close(CLOSED)
    await fresh_db.run(lambda conn: books.add_version(conn, V2))
    done = await applied(bk, spec("v2"))
    [note] = done["credit_notes"]
    [entry] = done["customers"][0]["entry_ids"]
    assert (note["total"], done["delta"]) == ("-0.26", "-0.26")
    await verified(bk)
    number = note["number"]
    params = {"e": entry, "n": note["id"], "revenue": chart.revenue_account("USD"), "c": cid}
    revenue = """UPDATE postings SET amount = amount + 10000000
                  WHERE entry_id = :e AND lane = ledger_lane(:c)
                    AND account_id = (SELECT id FROM accounts WHERE code = :revenue)"""
    # its entry's revenue made a cent more: -270,000,000 (the entry no longer balances: another
    # check's problem); the entry's record of what it posted beyond its payers' rows names it too
    assert await _problems(bk, params, revenue) == [
        f"credit note {number}: total -260000000, lines -0.26, its entry {entry} moved revenue by -270000000, "
        f"its charges by -260000000",
        f"re-rate entry {entry}: its charges moved -460000000, its true-ups 200000000, its revenue postings "
        f"-270000000",
        f"true-up record of re-rate {done['rerate_id']} of customer tampered, 2026-11: its payers' rows give "
        f"{chart.revenue_account('USD')} 0 back, its entry posted it -270000000 (-260000000 of it beyond its "
        f"payers' rows, as it recorded)"]
    # one of its charges' adjustments made a cent lower: the charges moved -470,000,000
    one = """UPDATE charge_adjustments SET new_amount = new_amount - 10000000
              WHERE id = (SELECT min(id) FROM charge_adjustments WHERE credit_note_id = :n)"""
    assert await _problems(bk, params, one) == [
        f"credit note {number}: total -260000000, lines -0.26, its entry {entry} moved revenue by -260000000, "
        f"its charges by -270000000",
        f"re-rate entry {entry}: its charges moved -470000000, its true-ups 200000000, its revenue postings "
        f"-260000000"]
    # its adjustments taken off the note: it has no charges (their sum NULL, named empty)
    assert await _problems(bk, params, "UPDATE charge_adjustments SET credit_note_id = NULL WHERE credit_note_id = :n"
                           ) == [f"credit note {number}: total -260000000, lines -0.26, its entry {entry} moved "
                                 f"revenue by -260000000, its charges by "]
    # a rounding of a cent said in its content (its hash made to match): its entry posted none
    said = """UPDATE credit_notes n SET content = f.c, content_hash = sha256(convert_to(f.c::text, 'UTF8'))
                FROM (SELECT id, jsonb_set(content, '{amount_rounding}', '"0.01"') AS c FROM credit_notes) f
               WHERE f.id = n.id AND n.id = :n"""
    [problem] = await _problems(bk, params, said)
    assert problem.startswith(f"credit note {number}: total -0.26, amount ") and problem.endswith(
        f"amount rounding 0.01, but its entry {entry} posted 0 to the rounding account"), problem

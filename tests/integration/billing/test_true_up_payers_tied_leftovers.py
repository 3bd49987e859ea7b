"""What verify ties a true-up's payer rows to, where the earlier checks left them untied: the rows
of a re-rate that posted no entry (its lines netted 0), kept with its true-ups' corrections
(`rerate_true_ups.payer_rows`, migration 0091); and the rows of two payers of two charges swapped
between the charges (`beyond_payer_rows` is kept per account, not per charge).

By hand (test_close_true_up_funding): book `vol`, $20/M to 100,000 output tokens, $10/M beyond. A
$1.20 top-up pays the 5th's 60,000 tokens ($1.20), a $5.00 grant the 20th's 70,000 ($0.80 + $0.30 =
$1.10). The close (130,000 x $10/M = $1.30, -$1.00) gives $0.60 of the 5th back to the top-up and
$0.40 of the 20th to the grant."""

from __future__ import annotations

from billing_kit import BillingKit
from sqlalchemy import text
from test_close_true_up_funding import _closed_per_charge, _damaged, _rerated
from test_rerate_volume_true_up import verified

from wallets import chart

CENT = 10_000_000  # atomic units (9 decimals) of $0.01


async def _rows(bk: BillingKit, cid: str, rerate_id: str) -> list[tuple[int, str | None, int]]:
    found = await bk.db.read(
        lambda conn: conn.execute(
            text(
                """SELECT charge_id, payer, units FROM true_up_payers WHERE customer_id = :c AND rerate_id = :r
            ORDER BY charge_id, payer"""
            ),
            {"c": cid, "r": rerate_id},
        )
    )
    return [(charge, payer, int(units)) for charge, payer, units in found]


async def test_the_payer_rows_of_a_re_rate_that_posted_no_entry_are_tied_to_its_record(fresh_db) -> None:
    """A fix to $30/M and $10/M: the 5th +$0.60, the 20th +$0.40, the true-up $1.00 more back, of the
    5th $1.80 - $0.60 at $10/M less the close's $0.60 = $0.60, of the 20th $1.50 - $0.70 less $0.40
    = $0.40: each charge's own nets with its part, nothing moves, no entry; its rows name no payer
    (the 5th's $0.60, the 20th's $0.40: none of their payers got them). The 5th's row given to the
    top-up by hand (it got $0.60 + $0.60 = $1.20 of the 5th in all, what it paid: within its bound;
    the 5th's rows still $0.60) is named."""
    bk = BillingKit(fresh_db)
    cid = "no-entry-rows-tied"
    top_up, _ = await _closed_per_charge(bk, cid, grant_expires=None)
    done = await _rerated(bk, "30", "10")
    assert done["customers"][0]["entry_ids"] == [], done
    rerate_id = done["rerate_id"]
    fifth, twentieth = sorted(charge for charge, _, _ in await _rows(bk, cid, rerate_id))
    assert await _rows(bk, cid, rerate_id) == [(fifth, None, 60 * CENT), (twentieth, None, 40 * CENT)]
    await verified(bk)
    params = {"r": rerate_id, "c": fifth, "t": chart.lot_account(cid, top_up)}
    damaged = await _damaged(bk, params, "UPDATE true_up_payers SET payer = :t WHERE rerate_id = :r AND charge_id = :c")
    assert damaged[:1] == ["credit_notes"] and any(rerate_id in p and params["t"] in p for p in damaged), damaged

"""A take-back of what the receivable got back, where that money went partly off what is owed and
partly into a paid credit lot (money_back.to_credit), comes from that credit lot before anything is
owed again: the reverse of the give-back, which took off what is owed first and made credit of the
rest (README, Billing rules: "The rows follow the postings").

By hand. Book `vol` v1 (test_rerate_volume_true_up.V1), model-v output graduated per charge: $20/M
to 100,000 tokens, $10/M beyond. Prepaid with a $5.00 overdraft and no lot: the 5th's 60,000 tokens
($1.20) and the 20th's 70,000 (40,000 x $20/M + 30,000 x $10/M = $0.80 + $0.30 = $1.10) both go on
the receivable, $2.30 owed; a top-up of the 21st pays some of it (no lot opens). The close: 130,000
tokens reached the second tier, 130,000 x $10/M = $1.30, true-up -$1.00: the 5th $1.20 - $0.60 =
$0.60 over, the 20th $1.10 - $0.70 = $0.40 over, both the receivable's."""
from __future__ import annotations

from datetime import UTC, datetime

from billing_kit import BillingKit
from sqlalchemy import text
from test_close_true_up_funding import _rerated
from test_rerate_volume_true_up import CLOSED, V1, applied, live_lots, spec, verified, vol

from wallets import chart

CENT = 10_000_000  # atomic units (9 decimals) of $0.01


async def _partly_owed(bk: BillingKit, name: str, top_up: str) -> str:
    """The module's November: $2.30 on the receivable, `top_up` paid on the 21st, then the close's
    -$1.00. The customer's id."""
    await bk.add_book(V1)
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    cid = await bk.customer(name, book="vol", overdraft="5.00")
    for day, tokens in ((5, 60_000), (20, 70_000)):
        bk.clock.now = datetime(2026, 11, day, 12, tzinfo=UTC)
        await bk.event(cid, "model-v", 0, tokens)
    assert (await bk.service.wallet(cid)).receivable == 230 * CENT
    bk.clock.now = datetime(2026, 11, 21, 12, tzinfo=UTC)
    await bk.top_up(cid, top_up)
    assert await live_lots(bk, cid) == {}
    await bk.close(CLOSED)
    return cid


async def _rows(bk: BillingKit, cid: str, rerate_id: str | None) -> dict[tuple[int, str], int]:
    """What true_up_payers keeps of the customer's close (`rerate_id` None) or of a re-rate:
    (charge id, payer account) -> units."""
    rows = await bk.db.read(lambda conn: conn.execute(text(
        """SELECT charge_id, payer, units FROM true_up_payers
            WHERE customer_id = :c AND rerate_id IS NOT DISTINCT FROM :r"""), {"c": cid, "r": rerate_id}))
    return {(charge, payer): int(units) for charge, payer, units in rows}


async def _owed(bk: BillingKit, cid: str) -> int:
    return (await bk.service.wallet(cid)).receivable


async def test_a_re_rate_s_take_back_draws_on_the_credit_lot_its_give_back_opened_before_owing(fresh_db) -> None:
    """A $1.00 top-up on the 21st: $1.30 owed; the close's $1.00 all off it: $0.30 owed. Re-rated
    to $20/M and $5/M: the 20th $0.80 + 30,000 x $5/M = $0.95 (-$0.15); at the tier reached 130,000
    x $5/M = $0.65, the true-up $0.65 - $2.15 = -$1.50 where -$1.00 stands: the 5th's part $0.30
    more ($1.20 - 60,000 x $5/M = $0.90 over, $0.60 given), the 20th's $0.20 ($0.95 - $0.35 = $0.60
    over, $0.40 given); -$0.65, all the receivable's: $0.30 off what is owed (nothing owed), $0.35
    a paid credit lot. Its rows: the 5th's $0.30 off what is owed (the receivable), the 20th's $0.20
    into the lot (to_credit, the later charges' first). Re-rated again to $20/M and $8/M: the 20th
    $0.80 + $0.24 = $1.04 (+$0.09); the true-up 130,000 x $8/M = $1.04 - ($1.20 + $1.04) = -$1.20
    where -$1.50 stands: +$0.30, the 5th's $0.18 ($0.72 over where $0.90 was given), the 20th's
    $0.12 ($0.48 over where $0.60 was); +$0.39 in all. The customer got $0.30 + $0.35 back and gives
    $0.39 of it back: the credit lot's $0.35 first, then $0.04 owed. Check: November at $8/M costs
    130,000 x $8/M = $1.04 in all ($1.20 + $1.04 charged, true-up -$1.20), of which the customer paid
    $1.00 (the top-up): $0.04 owed, no credit. Before, the 5th's $0.18 went onto what is owed (its
    row named the receivable) while the lot paid the 20th's $0.12 and the +$0.09: $0.35 - $0.21 =
    $0.14 of credit beside $0.18 owed."""
    bk = BillingKit(fresh_db)
    cid = await _partly_owed(bk, "partly-owed", "1.00")
    assert await _owed(bk, cid) == 30 * CENT
    done = await _rerated(bk, "20", "5")
    assert done["delta"] == "-0.65", done
    [(credit, held)] = (await live_lots(bk, cid)).items()
    assert held == ("topup", 35 * CENT)
    assert await _owed(bk, cid) == 0
    lot = chart.lot_account(cid, credit)
    receivable = chart.receivable_account(cid)
    first, second = sorted(charge for charge, _ in await _rows(bk, cid, None))
    assert await _rows(bk, cid, done["rerate_id"]) == {(first, receivable): 30 * CENT, (second, lot): 20 * CENT}
    await verified(bk)
    await bk.add_book(vol("v3", "2026-11-02T00:00:00Z", "20", "8"))
    bk.clock.now = datetime(2026, 12, 3, tzinfo=UTC)
    again = await applied(bk, spec("v3", datetime(2026, 11, 2, tzinfo=UTC)))
    assert again["delta"] == "0.39", again
    assert await live_lots(bk, cid) == {}
    assert await _owed(bk, cid) == 4 * CENT
    assert await _rows(bk, cid, again["rerate_id"]) == {(first, lot): -18 * CENT, (second, lot): -12 * CENT}
    await verified(bk)


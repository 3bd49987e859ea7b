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
from test_close_true_up_funding import _rerated, _rerated_again
from test_rerate_volume_true_up import CLOSED, V1, live_lots, verified

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
    a paid credit lot. What came off what is owed is counted the 20th's own decrease first ($0.15),
    then the parts ($0.15), so the parts' other $0.35 are the lot's (to_credit, the later charges'
    first). Its rows: the 20th's $0.20 and $0.15 of the 5th's into the lot, the 5th's other $0.15
    off what is owed (the receivable). Re-rated again to $20/M and $8/M: the 20th
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
    assert await _rows(bk, cid, done["rerate_id"]) == {
        (first, receivable): 15 * CENT, (first, lot): 15 * CENT, (second, lot): 20 * CENT}
    await verified(bk)
    again = await _rerated_again(bk, "20", "8")
    assert again["delta"] == "0.39", again
    assert await live_lots(bk, cid) == {}
    assert await _owed(bk, cid) == 4 * CENT
    assert await _rows(bk, cid, again["rerate_id"]) == {(first, lot): -18 * CENT, (second, lot): -12 * CENT}
    await verified(bk)


async def test_a_re_rate_s_take_back_draws_on_the_credit_lot_the_close_s_give_back_opened_before_owing(
        fresh_db) -> None:
    """A $1.50 top-up on the 21st: $0.80 owed; the close's -$1.00 (the 5th's $0.60, the 20th's
    $0.40, both the receivable's) takes $0.80 off it (nothing owed) and opens a $0.20 paid credit
    lot; the rows follow the postings (to_credit, the later charges' first): of the 20th $0.20 into
    the lot and $0.20 off what is owed, of the 5th $0.60 off what is owed. Re-rated to $20/M and
    $12/M: the 20th $0.80 + 30,000 x $12/M = $1.16 (+$0.06); the true-up 130,000 x $12/M = $1.56 -
    ($1.20 + $1.16) = -$0.80 where -$1.00 stands: +$0.20, the 5th's $0.12 ($1.20 - $0.72 = $0.48
    over where $0.60 was given), the 20th's $0.08 ($1.16 - $0.84 = $0.32 over where $0.40 was);
    +$0.26 in all: the credit lot's $0.20 first, then $0.06 owed (November at $12/M, $1.56, less
    the $1.50 paid). Before, the 5th's $0.12 went onto what is owed while the lot paid the 20th's
    $0.08 and the +$0.06: $0.06 of credit beside $0.12 owed."""
    bk = BillingKit(fresh_db)
    cid = await _partly_owed(bk, "close-partly-owed", "1.50")
    [(credit, held)] = (await live_lots(bk, cid)).items()
    assert held == ("topup", 20 * CENT)
    assert await _owed(bk, cid) == 0
    lot = chart.lot_account(cid, credit)
    receivable = chart.receivable_account(cid)
    close = await _rows(bk, cid, None)
    first, second = sorted({charge for charge, _ in close})
    assert close == {(first, receivable): 60 * CENT, (second, receivable): 20 * CENT, (second, lot): 20 * CENT}
    await verified(bk)
    done = await _rerated(bk, "20", "12")
    assert done["delta"] == "0.26", done
    assert await live_lots(bk, cid) == {}
    assert await _owed(bk, cid) == 6 * CENT
    assert await _rows(bk, cid, done["rerate_id"]) == {(first, lot): -12 * CENT, (second, lot): -8 * CENT}
    await verified(bk)


async def _given_back_as_credit(bk: BillingKit, name: str) -> tuple[str, str, int, int]:
    """The first test's customer re-rated to $20/M and $5/M: a $0.35 credit lot, nothing owed. The
    customer, the lot's account, the two charges' ids."""
    cid = await _partly_owed(bk, name, "1.00")
    await _rerated(bk, "20", "5")
    [credit] = await live_lots(bk, cid)
    first, second = sorted({charge for charge, _ in await _rows(bk, cid, None)})
    return cid, chart.lot_account(cid, credit), first, second


async def test_a_take_back_draws_on_what_is_left_of_a_credit_lot_partly_spent_before_owing(fresh_db) -> None:
    """As the first test, then December usage before the second re-rate: 5,000 tokens on December
    2nd at $20/M (the first tier) = $0.10, paid by the credit lot ($0.25 left). Re-rated to $20/M and
    $8/M (+$0.39: the 5th's $0.18, the 20th's $0.12, the 20th's +$0.09): the 5th's $0.18 from the
    lot ($0.07 left), the 20th's $0.12: $0.07 from the lot, $0.05 owed; the +$0.09 owed: $0.14 owed,
    no credit (the customer paid $1.00 for November's $1.04 and December's $0.10). Before, the 5th's
    $0.18 went onto what is owed and the lot paid the 20th's $0.12 and the +$0.09: $0.04 of credit
    beside $0.18 owed."""
    bk = BillingKit(fresh_db)
    cid, lot, first, second = await _given_back_as_credit(bk, "credit-spent")
    bk.clock.now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 5_000)
    assert [held for _, held in (await live_lots(bk, cid)).values()] == [25 * CENT]
    assert await _owed(bk, cid) == 0
    again = await _rerated_again(bk, "20", "8")
    assert again["delta"] == "0.39", again
    assert await live_lots(bk, cid) == {}
    assert await _owed(bk, cid) == 14 * CENT
    assert await _rows(bk, cid, again["rerate_id"]) == {
        (first, lot): -18 * CENT, (second, lot): -7 * CENT, (second, chart.receivable_account(cid)): -5 * CENT}
    await verified(bk)


async def test_a_take_back_larger_than_the_credit_lot_empties_it_and_owes_the_rest(fresh_db) -> None:
    """As the first test ($0.35 credit lot, nothing owed), re-rated to $20/M and $15/M: the 20th
    $0.80 + 30,000 x $15/M = $1.25 (+$0.30); the true-up 130,000 x $15/M = $1.95 - ($1.20 + $1.25) =
    -$0.50 where -$1.50 stands: +$1.00, the 5th's $0.60 ($1.20 - $0.90 = $0.30 over where $0.90 was
    given), the 20th's $0.40 ($1.25 - $1.05 = $0.20 over where $0.60 was); +$1.30 in all. The 5th's
    $0.60: the lot's $0.35, then $0.25 owed; the 20th's $0.40 and the +$0.30 owed: $0.95 owed, no
    credit (November at $15/M, $1.95, less the $1.00 paid). What each payer got of each charge stays
    between nothing and what it paid (verify: the lot counted as the receivable, which paid both).
    Before, the money ended the same (the +$0.30 paid like usage emptied the lot) but the rows said
    the 5th's $0.60 all came off the receivable and the 20th's $0.20 from the lot, $0.20 owed."""
    bk = BillingKit(fresh_db)
    cid, lot, first, second = await _given_back_as_credit(bk, "credit-exceeded")
    again = await _rerated_again(bk, "20", "15")
    assert again["delta"] == "1.30", again
    assert await live_lots(bk, cid) == {}
    assert await _owed(bk, cid) == 95 * CENT
    receivable = chart.receivable_account(cid)
    assert await _rows(bk, cid, again["rerate_id"]) == {
        (first, lot): -35 * CENT, (first, receivable): -25 * CENT, (second, receivable): -40 * CENT}
    await verified(bk)


async def test_a_take_back_draws_on_the_credit_lot_a_charge_s_decrease_beside_the_parts_opened_before_owing(
        fresh_db) -> None:
    """An $0.80 top-up on the 21st: $1.50 owed; the close's -$1.00 all off it: $0.50 owed. Re-rated
    to $20/M and $5/M (as the first test): the 20th -$0.15, the true-up parts the 5th's $0.30 and the
    20th's $0.20, -$0.65 in all, the receivable's: $0.50 off what is owed (nothing owed), $0.15 a
    paid credit lot. What came off what is owed is counted the charge's decrease first ($0.15), then
    the parts ($0.35), so the parts' other $0.15 is the lot's and the rows name it (to_credit, the
    later charges' first): of the 20th $0.15 into the lot and $0.05 off what is owed, of the 5th
    $0.30 off what is owed. Re-rated again to $20/M and $8/M (+$0.39: the 5th's $0.18, the 20th's
    $0.12, the 20th +$0.09, as the first test): the 5th's $0.18 from the lot's $0.15 first, then $0.03
    owed; the 20th's $0.12 owed (the lot is empty) and the +$0.09 owed: $0.24 owed, no credit.
    Check: November at $8/M costs $1.04, of which the customer paid $0.80: $0.24 owed. Before, the
    rows named no lot (the parts counted first against what is owed: the lot was the 20th's -$0.15
    alone), so the parts' $0.30 went onto what is owed and the lot paid the +$0.09 like usage: a $0.06
    lot beside $0.30 owed."""
    bk = BillingKit(fresh_db)
    cid = await _partly_owed(bk, "decrease-credit", "0.80")
    assert await _owed(bk, cid) == 50 * CENT
    assert await live_lots(bk, cid) == {}
    done = await _rerated(bk, "20", "5")
    assert done["delta"] == "-0.65", done
    [(credit, held)] = (await live_lots(bk, cid)).items()
    assert held == ("topup", 15 * CENT)
    assert await _owed(bk, cid) == 0
    lot = chart.lot_account(cid, credit)
    receivable = chart.receivable_account(cid)
    first, second = sorted({charge for charge, _ in await _rows(bk, cid, None)})
    assert await _rows(bk, cid, done["rerate_id"]) == {
        (first, receivable): 30 * CENT, (second, receivable): 5 * CENT, (second, lot): 15 * CENT}
    await verified(bk)
    again = await _rerated_again(bk, "20", "8")
    assert again["delta"] == "0.39", again
    assert await live_lots(bk, cid) == {}
    assert await _owed(bk, cid) == 24 * CENT
    assert await _rows(bk, cid, again["rerate_id"]) == {
        (first, lot): -15 * CENT, (first, receivable): -3 * CENT, (second, receivable): -12 * CENT}
    await verified(bk)

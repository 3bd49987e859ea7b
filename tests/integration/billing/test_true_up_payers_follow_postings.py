"""What each payer got of each charge's volume true-up part (`true_up_payers`) follows what was
posted to it. A re-rate correcting a closed period's true-up on a credit (or debit) note moves whole
minor units (rerating: `money = round_line(net)`, the difference to the rounding account): the rows
say what each payer was posted, not the exact sub-cent part, so the next correction neither takes
from a payer what the rounding account kept nor leaves it what it got. A close whose money back
opens a paid credit lot names that lot in the rows of the parts it holds, what is owed having taken
the receivable's share beside the parts first (as a re-rate's, money_back.to_credit's `own`).

By hand (the first test's set-up). Book `vol` v1 (test_rerate_volume_true_up): model-v output
$20/M up to 100,000 tokens, $10/M beyond. Postpaid: the 5th's 60,000 tokens ($1.20) on the
receivable; a $5.00 grant given on the 6th pays the 20th's 70,000 (40,000 x $20/M + 30,000 x
$10/M = $1.10; the grant $3.90). The close: 130,000 x $10/M = $1.30, true-up -$1.00: the 5th
$1.20 - $0.60 = $0.60 over, off what is owed ($1.20 - $0.60 = $0.60 owed); the 20th $1.10 - $0.70
= $0.40 over, to the grant ($4.30)."""
from __future__ import annotations

from datetime import UTC, datetime

from billing_kit import BillingKit
from sqlalchemy import text
from test_close_true_up_funding import _damaged, _lot
from test_rerate_volume_true_up import (
    CLOSED,
    DEC_1,
    NOV_1,
    applied,
    live_lots,
    spec,
    two_models,
    verified,
    vol,
    vol_customer,
)
from test_true_up_payers import _unrecorded

from wallets import chart
from wallets.rerating import RerateSpec

CENT = 10_000_000  # atomic units (9 decimals) of $0.01
MIL = CENT // 10  # $0.001


async def _closed(bk: BillingKit, cid: str) -> str:
    """The module's November and close; the grant's id."""
    cid = await vol_customer(bk, cid, billing_mode="postpaid")
    bk.clock.now = datetime(2026, 11, 5, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 60_000)
    bk.clock.now = datetime(2026, 11, 6, 12, tzinfo=UTC)
    grant = await _lot(bk, cid, "grant", "5.00")
    bk.clock.now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 70_000)
    await bk.close(CLOSED)
    assert (await bk.service.wallet(cid)).receivable == 60 * CENT
    assert await live_lots(bk, cid) == {grant: ("grant", 430 * CENT)}
    return grant


async def _rows(bk: BillingKit, rerate_id: str) -> dict[tuple[int, str | None], int]:
    rows = await bk.db.read(lambda conn: conn.execute(text(
        "SELECT charge_id, payer, units FROM true_up_payers WHERE rerate_id = :r"), {"r": rerate_id}))
    return {(c, p): int(u) for c, p, u in rows}


async def _two_customer(bk: BillingKit, cid: str, **terms: str) -> dict:
    """Book `two` v1 (two_models: rules a, model-x, and b, model-y, output $20/M up to 100,000, $10/M
    beyond), and customer `cid` of it (`terms`: its billing mode, overdraft) from November 1st."""
    book = two_models("v1", "2026-01-01T00:00:00Z", "10")
    await bk.add_book(book)
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    await bk.customer(cid, book="two", **terms)
    return book


def _two_version(book: dict, name: str, day: int, prices: dict[str, tuple[str, str]]) -> dict:
    """Book `two` (two_models) as `name` from November `day`, each rule of `prices` at (up to
    100,000, beyond) $/M."""
    return {**book, "version": name, "effective_from": f"2026-11-{day:02d}T00:00:00Z", "rules": [
        {**rule, "tiers": [{"up_to": 100_000, "price": prices[rule["id"]][0]},
                           {"up_to": None, "price": prices[rule["id"]][1]}]}
        if rule["id"] in prices else rule for rule in book["rules"]]}


async def test_a_rounded_credit_note_s_payer_rows_say_what_each_payer_was_posted(fresh_db) -> None:
    """Re-rated on December 2nd to $20/M and $9.75/M: the 20th $0.80 + 30,000 x $9.75/M = $1.0925
    (-$0.0075, the grant's); at the tier reached 130,000 x $9.75/M = $1.2675, the true-up $1.2675 -
    ($1.20 + $1.0925) = -$1.025 where -$1.00 stands: -$0.025 more back. The 5th costs 60,000 x
    $9.75/M = $0.585, $0.615 below its $1.20, $0.60 given: $0.015 more, the receivable's; the 20th
    $0.6825, $0.41 below its $1.0925, $0.40 given: $0.01 more, the grant's. -$0.0325 exact; the credit
    note moves whole cents, -$0.03 (3.25 cents half to even), the rounding account keeps $0.0025.
    Posted: the receivable's $0.015 in whole cents, $0.01 off what is owed ($0.59 owed); the grant
    its $0.0075 + $0.01 = $0.0175 and the $0.0025 left (give_back: the fraction to the last lot
    given money back), $0.02 ($4.32). So the rows: the receivable $0.01 of the 5th and the rounding
    account the other $0.005; the grant $0.02 - $0.0075 (its own decrease) = $0.0125 of the 20th and
    the rounding account -$0.0025 (what the grant got beyond its part).
    Before, the rows kept the exact parts: receivable $0.015 where $0.01 came off what is owed, the
    grant $0.01.

    Re-rated back on the 3rd (from November 2nd) to $20/M and $10/M: +$0.0325 exact, the debit note
    +$0.03 (rounding -$0.0025, what the first kept). Of the 5th $0.015 is taken back: the rounding
    account's $0.005 first (a row), the receivable's $0.01 ($0.60 owed), the $0.005 it never got is
    not taken from it; of the 20th $0.01 and the $0.0025 the grant got beyond its part, $0.0125;
    the rest, $0.03 - $0.0225 = $0.0075, like usage, the grant ($4.32 - $0.02 = $4.30). Every
    account back where the close left it: $0.60 owed, the grant $4.30; the rounding account's rows
    of each charge net to 0. Before, the
    receivable's row of $0.015 took $0.015 onto what is owed ($0.605, a half cent owed that the
    rounding account had kept) and the grant paid $0.005 less ($4.305)."""
    bk = BillingKit(fresh_db)
    cid = "rounded-rows"
    grant = await _closed(bk, cid)
    await bk.add_book(vol("v2", "2026-11-01T00:00:00Z", "20", "9.75"))
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    done = await applied(bk, spec("v2"))
    assert (await bk.service.wallet(cid)).receivable == 59 * CENT
    assert await live_lots(bk, cid) == {grant: ("grant", 432 * CENT)}
    receivable, payer = chart.receivable_account(cid), chart.lot_account(cid, grant)
    rounding = chart.rounding_account("USD")
    fifth, twentieth = sorted({charge for charge, _ in await _rows(bk, done["rerate_id"])})
    assert await _rows(bk, done["rerate_id"]) == {
        (fifth, receivable): 10 * MIL, (fifth, rounding): 5 * MIL,
        (twentieth, payer): 125 * MIL // 10, (twentieth, rounding): -25 * MIL // 10}
    await verified(bk)
    await bk.add_book(vol("v3", "2026-11-02T00:00:00Z", "20", "10"))
    bk.clock.now = datetime(2026, 12, 3, tzinfo=UTC)
    again = await applied(bk, spec("v3", datetime(2026, 11, 2, tzinfo=UTC)))
    assert (again["delta"], done["delta"]) == ("0.0325", "-0.0325")
    assert (await bk.service.wallet(cid)).receivable == 60 * CENT
    assert await live_lots(bk, cid) == {grant: ("grant", 430 * CENT)}
    assert await _rows(bk, again["rerate_id"]) == {
        (fifth, receivable): -10 * MIL, (fifth, rounding): -5 * MIL,
        (twentieth, payer): -125 * MIL // 10, (twentieth, rounding): 25 * MIL // 10}
    await verified(bk)


async def _closed_beside_a_rest(bk: BillingKit, cid: str) -> tuple[dict, str, int]:
    """The set-up of the test below up to its close: book `two`, its credit lot's id (holding
    $0.70) and the 5th's charge id."""
    book = await _two_customer(bk, cid, overdraft="5.00")
    bk.clock.now = datetime(2026, 11, 5, 12, tzinfo=UTC)
    await bk.event(cid, "model-y", 0, 130_000)
    bk.clock.now = datetime(2026, 11, 10, 12, tzinfo=UTC)
    await bk.event(cid, "model-x", 0, 130_000)
    bk.clock.now = datetime(2026, 11, 11, 12, tzinfo=UTC)
    await bk.top_up(cid, "3.17")
    assert await live_lots(bk, cid) == {}
    assert (await bk.service.wallet(cid)).receivable == 143 * CENT
    await bk.add_book(_two_version(book, "v2", 1, {"a": ("18", "9")}))
    bk.clock.now = datetime(2026, 11, 15, tzinfo=UTC)
    done = await applied(bk, RerateSpec("two", "v2", NOV_1, DEC_1, None))
    assert done["delta"] == "-0.23", done
    assert (await bk.service.wallet(cid)).receivable == 120 * CENT
    await bk.close(CLOSED)
    assert (await bk.service.wallet(cid)).receivable == 0
    [(credit, held)] = (await live_lots(bk, cid)).items()
    assert held == ("topup", 70 * CENT)
    rows = list(await bk.db.read(lambda conn: conn.execute(text(
        "SELECT charge_id, payer, units FROM true_up_payers WHERE customer_id = :c"), {"c": cid})))
    [fifth] = {charge for charge, _, _ in rows}
    assert {(c, p): int(u) for c, p, u in rows} == {
        (fifth, chart.receivable_account(cid)): 30 * CENT, (fifth, chart.lot_account(cid, credit)): 70 * CENT}
    await verified(bk)
    return book, credit, fifth


async def test_a_close_s_credit_lot_is_named_by_the_rows_of_the_parts_it_holds_beside_a_rule_s_rest(fresh_db) -> None:
    """Prepaid, a $5.00 overdraft, book `two` (rules a, model-x, and b, model-y, output: $20/M up to
    100,000, $10/M beyond). The 5th's 130,000 model-y tokens ($2.00 + 30,000 x $10/M = $2.30) and the
    10th's 130,000 model-x ($2.30) go on the receivable ($4.60); a $3.17 top-up on the 11th pays $3.17
    of it ($1.43 owed, no lot). On the 15th, November open, model-x is re-rated to $18/M and $9/M:
    $1.80 + $0.27 = $2.07, -$0.23 off what is owed ($1.20). The close: rule a 130,000 x $9/M = $1.17,
    -$0.90 (its charge re-rated: no part of it per charge, the rule's rest, the receivable's); rule b
    130,000 x $10/M = $1.30, -$1.00, the 5th's part (its overcharge, $2.30 - $1.30), the
    receivable's. $1.90 back: $1.20 off what is owed, a $0.70 paid credit lot. The rows of the 5th's
    $1.00 part: what is owed took the rest's $0.90 first (to_credit's `own`, as a re-rate's), so
    $0.30 came off it and the lot holds the other $0.70: (5th, receivable) $0.30, (5th, lot) $0.70.
    Re-rated on December 2nd from November 2nd to v3 (a as v2, b $20/M and $15/M): the 5th $2.00 + $0.45 = $2.45
    (+$0.15); b's true-up 130,000 x $15/M = $1.95 - $2.45 = -$0.50 where -$1.00 stands: +$0.50, all
    the 5th's (its overcharge at $15/M $0.50, $1.00 given). +$0.65: the $0.50 from the credit lot
    first ($0.20), the +$0.15 like usage from it ($0.05); nothing owed (had the close known the price:
    $1.40 back, $0.20 of credit, then the $0.15). Before, the close called to_credit with own=0: what
    is owed counted as the parts' first, the rows named the receivable alone ($1.00), the lot none;
    the take went onto what is owed: $0.50 owed beside a $0.55 credit lot."""
    bk, cid = BillingKit(fresh_db), "close-rest"
    book, credit, _ = await _closed_beside_a_rest(bk, cid)
    await bk.add_book(_two_version(book, "v3", 2, {"a": ("18", "9"), "b": ("20", "15")}))
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    again = await applied(bk, RerateSpec("two", "v3", datetime(2026, 11, 2, tzinfo=UTC), DEC_1, None))
    assert again["delta"] == "0.65", again
    assert (await bk.service.wallet(cid)).receivable == 0
    assert await live_lots(bk, cid) == {credit: ("topup", 5 * CENT)}
    await verified(bk)


async def test_verify_names_a_close_s_rows_moved_within_a_payer_s_share_of_a_rule_s_rest(fresh_db) -> None:
    """The test above's close: its entry credits what is owed $1.20 and the credit lot $0.70 ($1.90
    back), its rows of the 5th's part the receivable $0.30 and the lot $0.70; beyond them it posted
    the receivable rule a's rest, $0.90. By hand (raw SQL, rolled back) $0.30 of the 5th moved from
    the lot's row to the receivable's: $0.60 and $0.40, the 5th's sum kept ($1.00). The lot did not
    pay the 5th (the receivable's part went to it), so both count as the receivable, $1.00 of the
    $2.30 it paid; each payer's rows are within what the entry posted it ($0.60 <= $1.20, $0.40 <=
    $0.70) and no less than that less all it posted beyond the rows ($1.20 - $0.90, $0.70 - $0.90):
    the checks before took it for right (a move within the receivable's share of the rest). The
    entry now records what it posted each account beyond its rows, and verify ties them: the
    receivable's $0.60 + $0.90 = $1.50 where $1.20 was posted, the lot's $0.40 + 0 where $0.70 was.
    Before, verify passed (no problem)."""
    bk, cid = BillingKit(fresh_db), "close-rest-moved"
    _, credit, _ = await _closed_beside_a_rest(bk, cid)
    receivable, lot = chart.receivable_account(cid), chart.lot_account(cid, credit)
    moved = "UPDATE true_up_payers SET units = units {} 300000000 WHERE customer_id = :c AND payer = :{}"
    record = f"true-up record of the close of customer {cid}, 2026-11"
    assert await _damaged(bk, {"c": cid, "receivable": receivable, "lot": lot}, moved.format("+", "receivable"),
                          moved.format("-", "lot"), ordered=True) == ["credit_notes", *sorted([
        f"{record}: its payers' rows give {receivable} {60 * CENT} back, its entry posted it {120 * CENT} "
        f"({90 * CENT} of it beyond its payers' rows, as it recorded)",
        f"{record}: its payers' rows give {lot} {40 * CENT} back, its entry posted it {70 * CENT} "
        f"(0 of it beyond its payers' rows, as it recorded)"])]


async def test_a_rounded_debit_note_s_payer_rows_say_what_the_receivable_was_posted(fresh_db) -> None:
    """(review of a72cab3) A true-up corrected up by more than the decreases beside it give
    (rerating._refund's `back + debits <= 0`) gives the receivable its decrease in whole cents too
    (`owed - owed % step`): its rows follow that, as the credit note's do (money_back.rounded).
    Postpaid, book `two` (rules a, model-x, and b, model-y, output: $20/M up to 100,000, $10/M
    beyond). The 5th's 130,000 model-y ($2.00 + 30,000 x $10/M = $2.30) on the receivable; a $5.00
    grant given on the 6th pays the 20th's 130,000 model-x ($2.30; the grant $2.70). The close: each
    rule 130,000 x $10/M = $1.30, -$1.00: the 5th's $1.00 off what is owed ($1.30 owed), the 20th's
    to the grant ($3.70).
    Re-rated on December 2nd to v2: b $20/M and $9.85/M: the 5th $2.00 + 30,000 x $9.85/M = $2.00 +
    $0.2955 = $2.2955 (-$0.0045); b's true-up 130,000 x $9.85/M = $1.2805 - $2.2955 = -$1.015 where
    -$1.00 stands: -$0.015, the 5th's part (the receivable's). a $20/M and $15/M: the 20th $2.00 +
    $0.45 = $2.45 (+$0.15); a's true-up 130,000 x $15/M = $1.95 - $2.45 = -$0.50 where -$1.00 stands:
    +$0.50, taken from the grant that got it. In all -$0.0045 - $0.015 + $0.15 + $0.50 = +$0.6305, the
    debit note +$0.63. The receivable gets $0.0045 + $0.015 = $0.0195 back in whole cents, $0.01
    ($1.29 owed); the grant the rest of the note, $0.63 + $0.01 = $0.64 ($3.70 - $0.64 = $3.06). The
    receivable's rows: of the $0.01 posted, its own decrease's $0.0045 first (no row names it), the
    5th's part $0.0055; the rounding account the other $0.0095. Before, the row said $0.015 of the
    5th where $0.0055 of it came off what is owed."""
    bk, cid = BillingKit(fresh_db), "debit-rounded"
    book = await _two_customer(bk, cid, billing_mode="postpaid")
    bk.clock.now = datetime(2026, 11, 5, 12, tzinfo=UTC)
    await bk.event(cid, "model-y", 0, 130_000)
    bk.clock.now = datetime(2026, 11, 6, 12, tzinfo=UTC)
    grant = await _lot(bk, cid, "grant", "5.00")
    bk.clock.now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    await bk.event(cid, "model-x", 0, 130_000)
    await bk.close(CLOSED)
    assert (await bk.service.wallet(cid)).receivable == 130 * CENT
    assert await live_lots(bk, cid) == {grant: ("grant", 370 * CENT)}
    await bk.add_book(_two_version(book, "v2", 1, {"a": ("20", "15"), "b": ("20", "9.85")}))
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    done = await applied(bk, RerateSpec("two", "v2", NOV_1, DEC_1, None))
    assert done["delta"] == "0.6305", done
    assert (await bk.service.wallet(cid)).receivable == 129 * CENT
    assert await live_lots(bk, cid) == {grant: ("grant", 306 * CENT)}
    receivable, payer = chart.receivable_account(cid), chart.lot_account(cid, grant)
    rows = await _rows(bk, done["rerate_id"])
    fifth, twentieth = sorted({charge for charge, _ in rows})
    assert rows == {(fifth, receivable): 55 * MIL // 10, (fifth, chart.rounding_account("USD")): 95 * MIL // 10,
                    (twentieth, payer): -50 * CENT}
    await verified(bk)


async def test_a_note_s_rounding_up_goes_to_a_payer_s_row_only_where_it_fits_in_what_it_paid(fresh_db) -> None:
    """(review of a72cab3) What a credit note's rounding up gives a lot beyond its exact share
    (give_back: the fraction to the first consumed lot given money back) goes to that lot's row of a
    charge only where the row stays within what the lot paid of it (verify's bound).
    Prepaid, book `two` (rules a, model-x, and b, model-y, output: $20/M up to 100,000, $10/M
    beyond). A $2.35 grant (November 1st) pays the 5th's 130,000 model-y ($2.00 + 30,000 x $10/M =
    $2.30; $0.05 left); a $5.00 top-up on the 6th; the 20th's 130,000 model-x ($2.30): the grant its
    last $0.05, the top-up $2.25 ($2.75). The close: each rule 130,000 x $10/M = $1.30, -$1.00: the
    5th's to the grant ($1.00), the 20th's to the top-up, consumed last ($3.75).
    Re-rated on December 2nd: a $20/M and $0 beyond: the 20th $2.00 (-$0.30, the top-up's, consumed
    last); a's true-up 130,000 x $0 = $0 - $2.00 = -$2.00 where -$1.00 stands: -$1.00, all the 20th's
    (at $0 it costs nothing): the top-up up to what it paid less what it got, $2.25 - $1.00 - $0.30 =
    $0.95, the grant the other $0.05, all it paid of the 20th. b $20/M and $9.85/M: the 5th $2.00 +
    $0.2955 (-$0.0045, the grant's); b's true-up 130,000 x $9.85/M = $1.2805 - $2.2955 = -$1.015: the
    5th's part -$0.015, the grant's. In all $0.30 + $1.00 + $0.0045 + $0.015 = $1.3195 back, the credit
    note $1.32 (131.95 cents, half to even); the top-up $0.30 + $0.95 = $1.25 ($5.00), the grant
    $0.05 + $0.0045 + $0.015 = $0.0695 and the $0.0005 the note rounded up, $0.07 ($1.07).
    The grant's rows: $0.0005 beyond its parts; its 20th's row holds all it paid of the 20th ($0.05),
    so it goes to the 5th's row, $0.015 + $0.0005 = $0.0155 (the rounding account -$0.0005 of the
    5th). Before, it went to the 20th's row: $0.0505 of the $0.05 it paid, flagged by verify on a
    healthy ledger."""
    bk, cid = BillingKit(fresh_db), "round-up-fits"
    book = await _two_customer(bk, cid)
    grant = await _lot(bk, cid, "grant", "2.35")
    bk.clock.now = datetime(2026, 11, 5, 12, tzinfo=UTC)
    await bk.event(cid, "model-y", 0, 130_000)
    bk.clock.now = datetime(2026, 11, 6, 12, tzinfo=UTC)
    top_up = await _lot(bk, cid, "topup", "5.00")
    bk.clock.now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    await bk.event(cid, "model-x", 0, 130_000)
    await bk.close(CLOSED)
    assert await live_lots(bk, cid) == {grant: ("grant", 100 * CENT), top_up: ("topup", 375 * CENT)}
    await bk.add_book(_two_version(book, "v2", 1, {"a": ("20", "0"), "b": ("20", "9.85")}))
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    done = await applied(bk, RerateSpec("two", "v2", NOV_1, DEC_1, None))
    assert done["delta"] == "-1.3195", done
    assert await live_lots(bk, cid) == {grant: ("grant", 107 * CENT), top_up: ("topup", 500 * CENT)}
    rows = await _rows(bk, done["rerate_id"])
    fifth, twentieth = sorted({charge for charge, _ in rows})
    mine, paid = chart.lot_account(cid, grant), chart.lot_account(cid, top_up)
    assert rows == {(fifth, mine): 155 * MIL // 10, (fifth, chart.rounding_account("USD")): -5 * MIL // 10,
                    (twentieth, mine): 5 * CENT, (twentieth, paid): 95 * CENT}
    await verified(bk)


async def test_a_note_a_whole_cent_off_its_total_leaves_rows_of_what_the_receivable_was_posted(fresh_db) -> None:
    """A note's money can be a whole minor unit from its exact total (it rounds the invoice's running
    figure, the close's rounding with it): then the receivable was posted a cent less than its exact
    share, and the rows must say so too (money_back.rounded took a difference of a whole `step` for
    no rounding at all and kept the exact parts).

    By hand. Book `vol` v1: model-v output $20/M up to 100,000 tokens, $10/M beyond. Postpaid, on the
    receivable: the 5th's 60,000 tokens ($1.20), the 20th's 52,500 ($0.80 + 12,500 x $10/M = $0.925).
    The close: 112,500 x $10/M = $1.125, true-up -$1.00 (the 5th $1.20 - $0.60 = $0.60 over, the 20th
    $0.925 - $0.525 = $0.40), owed $1.125, due $1.12 (112.5 cents half to even), its rounding -$0.005.
    Re-rated on December 2nd to $20/M and $9.20/M: the 20th $0.80 + $0.115 = $0.915 (-$0.01); at the
    tier 112,500 x $9.20/M = $1.035, the true-up $1.035 - $2.115 = -$1.08, -$0.08 more: of the 5th
    $1.20 - $0.552 = $0.648 over, $0.60 given, $0.048 more; of the 20th $0.915 - $0.483 = $0.432,
    $0.40 given, $0.032. -$0.09 exact; the note moves round(-$0.09 + $0.005) = round(-$0.085) = -$0.08
    (half to even), the rounding account keeps $0.01. Posted: the receivable -$0.08 off what is owed
    ($1.04 = round($1.035)), $0.01 of it the 20th's own decrease, so $0.07 of the parts: the rows the
    receivable $0.048 of the 5th and $0.022 of the 20th (the last charge's row first), the rounding
    account $0.01 of the 20th. Before, the receivable's rows kept $0.048 and $0.032, $0.08 of parts.

    A $5.00 grant on the 2nd; re-rated back on the 3rd (from November 2nd) to $20/M and $10/M: +$0.09
    exact, the debit note round(-$0.09 + $0.09 + $0.005) = round($0.005) = $0 less -$0.08: +$0.08. It
    takes back of each charge what its payers got: the receivable $0.048 and $0.022 ($1.11 owed), the
    rounding account's $0.01 (what it kept); the rest, $0.08 - $0.07 = $0.01, the 20th's own increase,
    is paid like usage, from the grant ($4.99). Every part back where the close left it, the rounding
    account's rows of the 20th net to 0. Before, the receivable's rows took $0.08 back onto what is
    owed ($1.12: a cent the rounding account had kept) and the grant paid nothing ($5.00)."""
    bk = BillingKit(fresh_db)
    cid = "rounded-a-cent"
    await vol_customer(bk, cid, billing_mode="postpaid")
    for day, tokens in ((5, 60_000), (20, 52_500)):
        bk.clock.now = datetime(2026, 11, day, 12, tzinfo=UTC)
        await bk.event(cid, "model-v", 0, tokens)
    await bk.close(CLOSED)
    assert (await bk.service.wallet(cid)).receivable == 112 * CENT
    await _there_and_back(bk, cid, ("9.20", "10"), (48 * MIL, 22 * MIL, 10 * MIL), 111 * CENT, 499 * CENT)


async def _there_and_back(bk: BillingKit, cid: str, beyond: tuple[str, str], rows: tuple[int, int, int],
                          owed: int, left: int) -> None:
    """`cid` (a close of the 5th's and the 20th's usage on the receivable) re-rated on December 2nd
    to $20/M and `beyond`[0] beyond 100,000: -$0.09 exact, what is owed then $1.04, the re-rate's
    rows `rows` (the receivable's of the 5th, of the 20th, the rounding account's of the 20th); a
    $5.00 grant on the 2nd, re-rated back on the 3rd (from November 2nd) to `beyond`[1]: +$0.09
    exact, each row taken back, what is owed then `owed`, the grant `left`. Verified after each."""
    await bk.add_book(vol("v2", "2026-11-01T00:00:00Z", "20", beyond[0]))
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    done = await applied(bk, spec("v2"))
    assert done["delta"] == "-0.09"
    assert (await bk.service.wallet(cid)).receivable == 104 * CENT
    receivable, rounding = chart.receivable_account(cid), chart.rounding_account("USD")
    fifth, twentieth = sorted({charge for charge, _ in await _rows(bk, done["rerate_id"])})
    keys = ((fifth, receivable), (twentieth, receivable), (twentieth, rounding))
    assert await _rows(bk, done["rerate_id"]) == dict(zip(keys, rows, strict=True))
    await verified(bk)
    grant = await _lot(bk, cid, "grant", "5.00")
    await bk.add_book(vol("v3", "2026-11-02T00:00:00Z", "20", beyond[1]))
    bk.clock.now = datetime(2026, 12, 3, tzinfo=UTC)
    again = await applied(bk, spec("v3", datetime(2026, 11, 2, tzinfo=UTC)))
    assert again["delta"] == "0.09"
    assert (await bk.service.wallet(cid)).receivable == owed
    assert await live_lots(bk, cid) == {grant: ("grant", left)}
    assert await _rows(bk, again["rerate_id"]) == dict(zip(keys, (-units for units in rows), strict=True))
    await verified(bk)


async def _rounded_up(bk: BillingKit, cid: str) -> None:
    """Book `vol` v1 at $20/M up to 100,000 tokens, $9.08/M beyond; postpaid `cid`'s 60,000 tokens
    on the 5th ($1.20) and 65,000 on the 20th ($0.80 + 25,000 x $9.08/M = $1.027); the close: 125,000
    x $9.08/M = $1.135, true-up $1.135 - $2.227 = -$1.092 (the 5th $1.20 - $0.5448 = $0.6552 over,
    the 20th $1.027 - $0.5902 = $0.4368), all to the receivable's rows; due round(113.5 cents) =
    $1.14 (half to even, up), the rounding +$0.005 debited the receivable beside the rows: the entry
    credited it $1.092 - $0.005 = $1.087."""
    await bk.add_book(vol("v1", "2026-01-01T00:00:00Z", "20", "9.08"))
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    await bk.customer(cid, billing_mode="postpaid", book="vol")
    for day, tokens in ((5, 60_000), (20, 65_000)):
        bk.clock.now = datetime(2026, 11, day, 12, tzinfo=UTC)
        await bk.event(cid, "model-v", 0, tokens)
    await bk.close(CLOSED)
    assert (await bk.service.wallet(cid)).receivable == 114 * CENT


async def test_verify_passes_a_close_that_rounds_the_amount_due_up(fresh_db) -> None:
    """A close whose rounding of the amount due is up debits the receivable beside its rows (_rounded_up:
    rows $1.092, the entry credited it $1.087), which is no payer row's: verify (_CLOSE_PAYERS) took
    the rows' $1.092 for more than the entry posted the receivable and named a healthy ledger
    ("its payers' rows give ...:receivable 1092000000 back, its entry posted it 1087000000"); a close
    rounding down ($1.125 due $1.12: rows $1.00, the receivable credited $1.005) passed."""
    bk = BillingKit(fresh_db)
    await _rounded_up(bk, "rounded-up-close")
    await verified(bk)
    # a close written before it recorded what it posted beyond its rows (ce3a83a): the bounds, which
    # the receivable's rounding up passes too
    assert await _unrecorded(bk, "rounded-up-close", {}) == []


async def test_a_note_a_whole_cent_beyond_its_total_leaves_rows_of_what_the_receivable_was_posted(fresh_db) -> None:
    """The mirror of test_a_note_a_whole_cent_off_its_total_...: a note that moves a whole minor
    unit MORE than its exact total (the close rounded half a cent up, the note's running figure half
    a cent down): the receivable was posted a cent more than its exact share, and its rows say so
    (money_back.rounded took a difference of a whole `step` for no rounding before c0aff52, either
    way).

    By hand. The close of _rounded_up: $1.135 exact, due $1.14 (its rounding +$0.005). Re-rated on
    December 2nd to $20/M and $8.36/M: the 20th $0.80 + 25,000 x $8.36/M = $0.80 + $0.209 = $1.009
    (-$0.018); at the tier 125,000 x $8.36/M = $1.045, the true-up $1.045 - $2.209 =
    -$1.164, -$0.072 more: of the 5th $1.20 - $0.5016 = $0.6984, $0.0432 more; of the 20th $1.009 -
    $0.5434 = $0.4656, $0.0288 more. -$0.09 exact (125,000 x -$0.72/M); the note moves round($1.135 -
    $0.09) - $1.14 = round($1.045) - $1.14 = $1.04 - $1.14 = -$0.10 (104.5 cents half to even, down),
    the rounding account pays $0.01. Posted: the receivable -$0.10 off what is owed, $0.018 of it the
    20th's own decrease, so $0.082 of the parts, $0.01 beyond their exact $0.072: the rows the
    receivable $0.0432 of the 5th and $0.0288 + $0.01 = $0.0388 of the 20th (the last charge's row),
    the rounding account -$0.01 of the 20th.

    A $5.00 grant on the 2nd; re-rated back on the 3rd (from November 2nd) to $20/M and $9.08/M:
    +$0.09 exact, the debit note round($1.045 + $0.09) - $1.04 = round($1.135) - $1.04 = $1.14 -
    $1.04 = +$0.10. It takes back of each charge what its payers got: the receivable $0.0432 and
    $0.0388 ($1.04 + $0.082 = $1.122 owed), the rounding account its -$0.01 (what it paid); the rest,
    $0.10 - $0.082 = $0.018, the 20th's own increase, is paid like usage, from the grant ($4.982).
    Were the rows the exact $0.0432 and $0.0288, the receivable would take back $0.072 ($1.112) and
    the grant pay $0.028 ($4.972): the cent the rounding account gave the receivable paid by the grant."""
    bk = BillingKit(fresh_db)
    cid = "rounded-a-cent-up"
    await _rounded_up(bk, cid)
    await _there_and_back(bk, cid, ("8.36", "9.08"), (432 * MIL // 10, 388 * MIL // 10, -10 * MIL), 1122 * MIL,
                          4982 * MIL)

"""What a volume true-up gave back of a charge paid by two lots is kept per payer (`true_up_payers`,
migration 0082), so a re-rate correcting it later gives back to (and takes back from) each lot by
what it paid and already got of that charge, not by the charge's total alone.

By hand. Book `vol` (test_rerate_volume_true_up), model-v output: $20/M up to 100,000 tokens, $10/M
beyond. A $1.00 top-up A (November 1st) and a $5.00 top-up B (the 2nd): A is consumed first (same
priority, older). The 5th's 60,000 tokens cost $1.20: A pays $1.00 (spent), B $0.20; the 20th's
70,000 cost $0.80 + $0.30 = $1.10, all B ($5.00 - $0.20 - $1.10 = $3.70). The close: 130,000 x
$10/M = $1.30, true-up $1.30 - $2.30 = -$1.00: the 5th $1.20 - $0.60 = $0.60 over, the last consumed
first up to what each paid: B $0.20, A $0.40; the 20th $1.10 - $0.70 = $0.40 over, all B. A $0.40,
B $3.70 + $0.20 + $0.40 = $4.30."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billing_kit import BillingKit
from sqlalchemy import text
from test_close_true_up_funding import _damaged, _lot, _paid_per_charge, _rerated, _rerated_again
from test_rerate_mixed_payers import _paid_off_on_the_6th
from test_rerate_volume_true_up import CLOSED, applied, live_lots, spec, verified, vol, vol_customer

from wallets import chart
from wallets.audit import credit_notes_tie_out
from wallets.rerating import RerateSpec

CENT = 10_000_000  # atomic units (9 decimals) of $0.01


async def _split_charge(bk: BillingKit, cid: str) -> tuple[str, str]:
    """The module's November and close: lots A and B, the 5th's charge split between them."""
    await vol_customer(bk, cid)
    a = await _lot(bk, cid, "topup", "1.00")
    bk.clock.now = datetime(2026, 11, 2, 12, tzinfo=UTC)
    b = await _lot(bk, cid, "topup", "5.00")
    for day, tokens in ((5, 60_000), (20, 70_000)):
        bk.clock.now = datetime(2026, 11, day, 12, tzinfo=UTC)
        await bk.event(cid, "model-v", 0, tokens)
    assert await live_lots(bk, cid) == {b: ("topup", 370 * CENT)}
    await bk.close(CLOSED)
    assert await live_lots(bk, cid) == {a: ("topup", 40 * CENT), b: ("topup", 430 * CENT)}
    return a, b


async def _payers(bk: BillingKit, cid: str) -> dict[tuple[str | None, int, str], int]:
    """What true_up_payers keeps: (re-rate or None: the close, charge, payer lot id) -> units."""
    rows = await bk.db.read(lambda conn: conn.execute(text(
        """SELECT t.rerate_id, t.charge_id, l.id, t.units FROM true_up_payers t
             JOIN accounts a ON a.code = t.payer JOIN lots l ON l.account_id = a.id
            WHERE t.customer_id = :c"""), {"c": cid}))
    return {(rerate, charge, lot): int(units) for rerate, charge, lot, units in rows}


async def _unrecorded(bk: BillingKit, cid: str, params: dict, *sqls: str) -> list[str]:
    """The credit_notes check's problems, sorted, once `sqls` ran (with `params`) past the
    immutability triggers on a ledger whose close of `cid` kept no record of what it posted beyond
    its payer rows (as one written before it did: taken out of its entry's metadata, which the
    ledger's own checks would name), in a transaction rolled back after."""

    async def run(conn: Any) -> list[str]:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text("""UPDATE journal_entries SET metadata = metadata - 'beyond_payer_rows'
                                    WHERE customer_id = :c AND kind = 'volume_true_up'"""), {"c": cid})
        for sql in sqls:
            await conn.execute(text(sql), params)
        found = await credit_notes_tie_out(conn)
        await conn.rollback()
        return sorted(found.problems)

    return await bk.db.read(run)


async def _took_every_part_back(bk: BillingKit, cid: str, rerate_id: str, a: str, b: str) -> None:
    """After `_split_charge`, a re-rate to $20/M and $5/M and one back to $20/M flat (`rerate_id`):
    B holds $3.40, A nothing; the second took back every part the first gave, of the 5th A's $0.70
    and B's $0.20, of the 20th B's $0.60; verify passes."""
    assert await live_lots(bk, cid) == {b: ("topup", 340 * CENT)}
    charges = sorted({charge for _, charge, _ in await _payers(bk, cid)})
    assert {k: v for k, v in (await _payers(bk, cid)).items() if k[0] == rerate_id} == {
        (rerate_id, charges[0], a): -70 * CENT, (rerate_id, charges[0], b): -20 * CENT,
        (rerate_id, charges[1], b): -60 * CENT}
    await verified(bk)


async def test_a_rerate_gives_a_split_charge_s_payers_back_by_what_each_already_got_of_it(fresh_db) -> None:
    """Re-rated to $20/M and $5/M: the 5th stays $1.20; the 20th $0.80 + 30,000 x $5/M = $0.95
    (-$0.15, to B, its payer). At the tier reached, 130,000 x $5/M = $0.65, the true-up $0.65 - $2.15
    = -$1.50 where -$1.00 stands: $0.50 more back. The 5th costs $0.30 at $5/M, $0.90 below its
    $1.20, of which the close gave back $0.60: $0.30 more. B paid $0.20 of it and got $0.20 back
    already: all $0.30 to A ($0.40 + $0.30 = $0.70 = $1.00 - $0.30, A's share of the 5th's $0.30
    cost, B's $0.20 all back). The 20th costs $0.35, $0.60 below its $0.95, $0.40 given: $0.20 to B.
    B $4.30 + $0.15 + $0.20 = $4.65 (= $5.00 - $0.35, the 20th at the tier reached). Before, B was
    given the 5th's $0.30 again up to the $0.20 it paid (the close's $0.20 forgotten): B $4.85, A
    $0.50."""
    bk = BillingKit(fresh_db)
    cid = "split-given"
    a, b = await _split_charge(bk, cid)
    done = await _rerated(bk, "20", "5")
    assert done["delta"] == "-0.65", done
    assert await live_lots(bk, cid) == {a: ("topup", 70 * CENT), b: ("topup", 465 * CENT)}
    await verified(bk)
    first, second = sorted({charge for _, charge, _ in await _payers(bk, cid)})
    assert await _payers(bk, cid) == {
        (None, first, a): 40 * CENT, (None, first, b): 20 * CENT, (None, second, b): 40 * CENT,
        (done["rerate_id"], first, a): 30 * CENT, (done["rerate_id"], second, b): 20 * CENT}
    # verify ties the payers' rows to the records per charge, and bounds what each payer got of a
    # charge in all by what it paid of it: $0.10 of the close's 5th moved from A to B (the 5th's sum
    # unchanged) has B got $0.30 of the $0.20 it paid; B's row of the 20th gone leaves the close's
    # $0.40 of it without its payers
    payer_b = chart.lot_account(cid, b)
    params = {"a": chart.lot_account(cid, a), "b": payer_b, "first": first, "second": second}
    assert await _damaged(bk, params, *(f"""UPDATE true_up_payers SET units = units {sign} 100000000
                                            WHERE rerate_id IS NULL AND charge_id = :first AND payer = :{lot}"""
                                        for sign, lot in (("-", "a"), ("+", "b")))) == [
        "credit_notes", f"true-up record of the close of customer {cid}, 2026-11: {payer_b} got 300000000 back of "
        f"charge {first} in all, which it paid 200000000",
        f"true-up record of the close of customer {cid}, 2026-11: its payers' rows give {params['a']} 300000000 "
        f"back, its entry posted it 400000000 (0 of it beyond its payers' rows, as it recorded)"]  # A: $0.40 - $0.10
    assert await _damaged(bk, params, "DELETE FROM true_up_payers WHERE charge_id = :second AND payer = :b "
                                      "AND rerate_id IS NULL") == [
        "credit_notes", f"true-up record of the close of customer {cid}, 2026-11: charge {second} gave back "
        f"400000000, its payers' rows none"]


async def test_verify_names_a_close_s_payer_row_made_larger_than_its_entry_posted_that_payer(fresh_db) -> None:
    """The module's close: A $0.40 back, B $0.60 ($0.20 of the 5th, $0.40 of the 20th), as its
    entry posted them. A's row of the 5th made $0.10 larger and B's $0.10 smaller by hand (raw SQL,
    rolled back): the 5th's rows still sum to the $0.60 the close gave back of it, A got $0.50 of
    the $1.00 it paid of it and B $0.10 of its $0.20: the per-charge sums and the bounds by what
    each paid take that for right. Verify now names the record: its rows give A $0.50 where its
    entry posted A $0.40; and B's, $0.10 + $0.40 = $0.50 where $0.60 was posted it, the entry
    posting nothing beyond its payers' rows (test_verify_names_the_payer_whose_close_row_was_made_
    smaller_beside_the_one_made_larger). Before, verify passed (no problem)."""
    bk = BillingKit(fresh_db)
    cid = "split-forged"
    a, b = await _split_charge(bk, cid)
    await verified(bk)
    first = min(charge for _, charge, _ in await _payers(bk, cid))  # the 5th
    payer_a = chart.lot_account(cid, a)
    params = {"a": payer_a, "b": chart.lot_account(cid, b), "first": first}
    moved = [f"""UPDATE true_up_payers SET units = units {sign} 100000000
                 WHERE rerate_id IS NULL AND charge_id = :first AND payer = :{lot}"""
             for sign, lot in (("+", "a"), ("-", "b"))]
    record = f"true-up record of the close of customer {cid}, 2026-11"
    assert await _damaged(bk, params, *moved) == [
        "credit_notes", f"{record}: its payers' rows give {payer_a} {50 * CENT} back, its entry posted it {40 * CENT} "
        "(0 of it beyond its payers' rows, as it recorded)",
        f"{record}: its payers' rows give {params['b']} {50 * CENT} back, its entry posted it {60 * CENT} "
        "(0 of it beyond its payers' rows, as it recorded)"]  # B: $0.60 - $0.10
    # a close's entry written before it recorded that: its rows bounded by what it posted each payer
    assert await _unrecorded(bk, cid, params, *moved) == [
        f"{record}: its payers' rows give {payer_a} {50 * CENT} back, its entry posted it {40 * CENT}",
        f"{record}: its payers' rows give {params['b']} {50 * CENT} back, its entry posted it {60 * CENT} "
        "(0 beyond every payer's rows)"]


async def test_verify_names_the_payer_whose_close_row_was_made_smaller_beside_the_one_made_larger(fresh_db) -> None:
    """The module's close (A $0.40 back, B $0.60: $0.20 of the 5th, $0.40 of the 20th; its entry
    posted them so, and nothing beyond its payers' rows: $0.40 + $0.60 = the $1.00 it credited).
    A row made smaller by hand beside another of its charge made larger (the 5th's sum kept) was
    named through the larger alone: A's row of the 5th $0.10 smaller and B's $0.10 larger named B
    (got $0.30 of the 5th, which it paid $0.20) and not A (B's $0.10 smaller and A's larger, the
    test above, named A alone). A payer's rows are at least what the entry posted it less what it
    posted beyond every payer's rows (its share of a rule's rest is at most all of it), here 0: A's
    $0.40 - $0.10 = $0.30 where $0.40 was posted, named beside B. Before: B's line alone."""
    bk = BillingKit(fresh_db)
    cid = "split-shrunk"
    a, b = await _split_charge(bk, cid)
    await verified(bk)
    first = min(charge for _, charge, _ in await _payers(bk, cid))  # the 5th
    payer_a, payer_b = chart.lot_account(cid, a), chart.lot_account(cid, b)
    params = {"a": payer_a, "b": payer_b, "first": first}
    record = f"true-up record of the close of customer {cid}, 2026-11"
    moved = """UPDATE true_up_payers SET units = units {} 100000000
                WHERE rerate_id IS NULL AND charge_id = :first AND payer = :{}"""
    bound = f"{record}: {payer_b} got {30 * CENT} back of charge {first} in all, which it paid {20 * CENT}"
    assert await _damaged(bk, params, moved.format("-", "a"), moved.format("+", "b"), ordered=True) == [
        "credit_notes", *sorted([bound, f"{record}: its payers' rows give {payer_a} {30 * CENT} back, its entry "
                                        f"posted it {40 * CENT} (0 of it beyond its payers' rows, as it recorded)"])]
    # a close's entry written before it recorded that: at least what it posted less all it posted
    # beyond every payer's rows
    assert await _unrecorded(bk, cid, params, moved.format("-", "a"), moved.format("+", "b")) == sorted([
        bound, f"{record}: its payers' rows give {payer_a} {30 * CENT} back, its entry posted it {40 * CENT} "
               f"(0 beyond every payer's rows)"])


async def test_a_rerate_takes_back_of_a_split_charge_from_what_each_payer_got_of_it(fresh_db) -> None:
    """As above, re-rated to $20/M and $5/M (A $0.70, B $4.65; of the 5th A got $0.70 back, B $0.20;
    of the 20th B $0.60 and its $0.15 decrease). Re-rated again to $20/M and $8/M: the 20th $0.80 +
    30,000 x $8/M = $1.04 (+$0.09); the true-up 130,000 x $8/M = $1.04 - ($1.20 + $1.04) = -$1.20
    where -$1.50 stands: $0.30 taken back. The 5th at $8/M costs $0.48, $0.72 over where $0.90 was
    given back: $0.18 taken back, from what got it the first consumed first: A (got $0.70), $0.52.
    The 20th at $8/M costs $0.56, $0.48 over where $0.60 was: $0.12 from B. The 20th's +$0.09 is
    paid like usage, in consumption order: A, $0.52 - $0.09 = $0.43. B $4.65 - $0.12 = $4.53."""
    bk = BillingKit(fresh_db)
    cid = "split-taken"
    a, b = await _split_charge(bk, cid)
    await _rerated(bk, "20", "5")
    assert await live_lots(bk, cid) == {a: ("topup", 70 * CENT), b: ("topup", 465 * CENT)}
    again = await _rerated_again(bk, "20", "8")
    assert again["delta"] == "0.39", again
    assert await live_lots(bk, cid) == {a: ("topup", 43 * CENT), b: ("topup", 453 * CENT)}
    await verified(bk)
    first, second = sorted({charge for _, charge, _ in await _payers(bk, cid)})
    taken = {k: v for k, v in (await _payers(bk, cid)).items() if k[0] == again["rerate_id"]}
    assert taken == {(again["rerate_id"], first, a): -18 * CENT, (again["rerate_id"], second, b): -12 * CENT}


async def test_verify_names_the_payers_whose_re_rate_rows_were_moved_between_them(fresh_db) -> None:
    """As above, the second re-rate (to $20/M and $8/M) takes back $0.18 of the 5th from A and
    $0.12 of the 20th from B (its rows), and A pays the 20th's +$0.09 like usage: its entry debits
    A $0.18 + $0.09 = $0.27 (A $0.70 -> $0.43) and B $0.12 ($4.65 -> $4.53), so it gave A back
    -$0.27, -$0.09 beyond A's rows, and B -$0.12, nothing beyond its rows. By hand (raw SQL, rolled
    back) A's row of the 5th made -$0.08 and a B row of the 5th of -$0.10 added: the 5th's rows
    still sum to the -$0.18 the re-rate took back of it, A got $0.70 - $0.08 = $0.62 of the $1.00 it
    paid of it and B $0.20 - $0.10 = $0.10 of its $0.20, so the per-charge sums and the bounds took
    it for right. Verify now ties each payer's rows to what the entry posted it less what it records
    beyond them: A's rows -$0.08 + -$0.09 = -$0.17 where -$0.27 was posted, B's -$0.12 - $0.10 =
    -$0.22 + 0 where -$0.12 was. Before, verify passed (no problem)."""
    bk = BillingKit(fresh_db)
    cid = "split-moved"
    a, b = await _split_charge(bk, cid)
    await _rerated(bk, "20", "5")
    again = await _rerated_again(bk, "20", "8")
    assert await live_lots(bk, cid) == {a: ("topup", 43 * CENT), b: ("topup", 453 * CENT)}
    await verified(bk)
    first = min(charge for _, charge, _ in await _payers(bk, cid))  # the 5th
    payer_a, payer_b = chart.lot_account(cid, a), chart.lot_account(cid, b)
    params = {"a": payer_a, "b": payer_b, "first": first, "r": again["rerate_id"]}
    record = f"true-up record of re-rate {again['rerate_id']} of customer {cid}, 2026-11"
    assert await _damaged(bk, params, """
        INSERT INTO true_up_payers (lane, customer_id, period, rerate_id, charge_id, payer, units, created_at, written)
        SELECT lane, customer_id, period, rerate_id, charge_id, :b, -100000000, created_at, written
          FROM true_up_payers WHERE rerate_id = :r AND charge_id = :first AND payer = :a""",
        "UPDATE true_up_payers SET units = -80000000 WHERE rerate_id = :r AND charge_id = :first AND payer = :a",
        ordered=True) == ["credit_notes", *sorted([
            f"{record}: its payers' rows give {payer_a} {-8 * CENT} back, its entry posted it {-27 * CENT} "
            f"({-9 * CENT} of it beyond its payers' rows, as it recorded)",
            f"{record}: its payers' rows give {payer_b} {-22 * CENT} back, its entry posted it {-12 * CENT} "
            f"(0 of it beyond its payers' rows, as it recorded)"])]


async def test_verify_bounds_each_payer_by_the_true_ups_as_written_when_two_re_rates_share_an_instant(fresh_db) -> None:
    """Two re-rates written at the same instant (one clock reading, as the kit's clock is here): the
    second gives back, of each charge, what the first gave. Re-rated to $20/M and $5/M on December
    2nd (A $0.70, B $4.65, as above: of the 5th A got $0.40 + $0.30, B $0.20; of the 20th B $0.40 +
    $0.20), then, the clock not moved, to $20/M flat from November 2nd: the 20th 70,000 x $20/M =
    $1.40 (+$0.45); the true-up 130,000 x $20/M = $2.60 - ($1.20 + $1.40) = 0 where -$1.50 stands:
    +$1.50, every part taken back: of the 5th A's $0.70 and B's $0.20, of the 20th B's $0.60. The
    20th's +$0.45 paid like usage: A has nothing left, B pays it. A $0.70 - $0.70 = 0, B $4.65 -
    $0.20 - $0.60 - $0.45 = $3.40 (= $5.00 - $0.20 - $1.40); +$1.95 in all. Each payer's running
    total: A 0.40, 0.70, 0 and B of the 20th 0.40, 0.60, 0: never below nothing. verify ordered the
    two re-rates of one instant by their ids (hashes), so the second's take came first: A 0.40 -
    0.70 = -$0.30, B 0.40 - 0.60 = -$0.20, flagged on a healthy ledger. (Their rows are now dated by
    the database's clock, not the kit's: one instant only within one batch.)"""
    bk = BillingKit(fresh_db)
    cid = "same-instant"
    a, b = await _split_charge(bk, cid)
    first = await _rerated(bk, "20", "5")
    again = await _rerated_again(bk, "20", "20", on=None)
    assert again["delta"] == "1.95", again
    assert again["rerate_id"] < first["rerate_id"]  # written second, its id first
    await _took_every_part_back(bk, cid, again["rerate_id"], a, b)


async def test_verify_orders_two_re_rates_by_the_database_not_by_servers_whose_clocks_differ(fresh_db) -> None:
    """The same two re-rates, the second applied after the first by another server whose clock reads
    3 ms behind the first's (two hosts a few ms apart). The rows kept each re-rate's server clock
    (the batch's time) as created_at, and verify ordered each payer's true-ups by it: the second's
    take came first, A 0.40 - 0.70 = -$0.30 and B of the 20th 0.40 - 0.60 = -$0.20, flagged on a
    healthy ledger (as in the test above, though the two were 3 ms apart). The rows are now dated by
    the database's clock when written (one clock; the lane's lock orders the re-rates): A 0.40,
    0.70, 0 and B 0.40, 0.60, 0, never below nothing."""
    from datetime import timedelta

    from tests.integration.wallets.wallet_kit import Clock
    from wallets import rerating
    from wallets.service import WalletService

    bk = BillingKit(fresh_db)
    cid = "clocks-apart"
    a, b = await _split_charge(bk, cid)
    await _rerated(bk, "20", "5")
    await bk.add_book(vol("v3", "2026-11-02T00:00:00Z", "20", "20"))
    behind = WalletService(fresh_db, clock=Clock(bk.clock.now - timedelta(milliseconds=3)))
    again = await rerating.apply(fresh_db, behind.engine, spec("v3", datetime(2026, 11, 2, tzinfo=UTC)), None)
    assert again["delta"] == "1.95", again
    await _took_every_part_back(bk, cid, again["rerate_id"], a, b)


async def test_a_take_back_of_what_the_receivable_got_as_paid_credit_comes_from_that_credit_lot(fresh_db) -> None:
    """Postpaid: the 5th's $1.20 and the 20th's $1.10 go on the receivable. The close gives back
    $0.60 + $0.40 = $1.00 off what is owed: the invoice is $2.30 - $1.00 = $1.30, paid in full.
    Re-rated to $20/M and $5/M (as above): the 20th -$0.15, the true-up's 5th $0.30 and 20th $0.20
    more: -$0.65, nothing owed, so a $0.65 paid credit lot, where the true-up's parts went (its
    payer rows name that lot: $0.30 of the 5th, $0.20 of the 20th). Re-rated again to $20/M and
    $8/M (as above, +$0.39): of the 5th $0.18 and of the 20th $0.12 taken back from where they went,
    the credit lot ($0.65 - $0.30 = $0.35), the 20th's +$0.09 paid like usage from it: $0.26 left
    (= $1.30 paid - $1.04 due: 130,000 x $8/M), nothing owed. Before, the rows named the receivable:
    $0.30 taken back onto it ($0.30 owed on a paid invoice) and the credit lot $0.65 - $0.09 = $0.56."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "credit-taken", billing_mode="postpaid")
    for day, tokens in ((5, 60_000), (20, 70_000)):
        bk.clock.now = datetime(2026, 11, day, 12, tzinfo=UTC)
        await bk.event(cid, "model-v", 0, tokens)
    await bk.close(CLOSED)
    [invoice] = await bk.invoices(cid)
    assert invoice["amount_due"] == "1.30"
    await bk.pay(cid, invoice["id"], "1.30", "wire-1")
    assert (await bk.service.wallet(cid)).receivable == 0
    done = await _rerated(bk, "20", "5")
    assert done["delta"] == "-0.65", done
    [(credit, (_, held))] = (await live_lots(bk, cid)).items()
    assert held == 65 * CENT
    assert (await bk.service.wallet(cid)).receivable == 0
    lot = chart.lot_account(cid, credit)
    rows = list(await bk.db.read(lambda conn: conn.execute(text(
        "SELECT rerate_id, charge_id, payer, units FROM true_up_payers WHERE customer_id = :c"), {"c": cid})))
    first, second = sorted({charge for _, charge, _, _ in rows})
    payers = {(r, c, p): int(u) for r, c, p, u in rows if r is not None}
    assert payers == {(done["rerate_id"], first, lot): 30 * CENT, (done["rerate_id"], second, lot): 20 * CENT}, payers
    await verified(bk)
    again = await _rerated_again(bk, "20", "8")
    assert again["delta"] == "0.39", again
    assert await live_lots(bk, cid) == {credit: ("topup", 26 * CENT)}
    assert (await bk.service.wallet(cid)).receivable == 0
    rows = await bk.db.read(lambda conn: conn.execute(text(
        "SELECT charge_id, payer, units FROM true_up_payers WHERE rerate_id = :r"), {"r": again["rerate_id"]}))
    assert {(c, p): int(u) for c, p, u in rows} == {(first, lot): -18 * CENT, (second, lot): -12 * CENT}
    await verified(bk)


async def test_a_take_back_of_what_the_close_gave_the_receivable_as_paid_credit_comes_from_that_credit_lot(
        fresh_db) -> None:
    """Prepaid with a $5.00 overdraft: the 5th's $1.20 on the receivable, paid off on the 6th by a
    $1.20 top-up (nothing owed, no lot); a $5.00 grant (the 6th, consumed first: priority 50 before
    a top-up's 100) pays the 20th's $1.10 ($3.90). The close's -$1.00: the 5th $0.60 over, the
    receivable's, nothing owed: a $0.60 paid credit lot; the 20th $0.40 over, to the grant ($4.30).
    Re-rated to $20/M and $15/M: the 20th $0.80 + 30,000 x $15/M = $1.25 (+$0.15); the true-up
    130,000 x $15/M = $1.95 - ($1.20 + $1.25) = -$0.50 where -$1.00 stands: +$0.50. At $15/M the
    5th costs $0.90, $0.30 over where $0.60 was given back: $0.30 taken back from where it went, the
    credit lot ($0.60 - $0.30 = $0.30); the 20th costs $1.05, $0.20 over where $0.40 was: $0.20 from
    the grant; the +$0.15 paid like usage, the grant first: $4.30 - $0.20 - $0.15 = $3.95. Nothing
    owed. Before, the close's row named the receivable: $0.30 owed beside the $0.60 credit lot."""
    bk = BillingKit(fresh_db)
    cid, grant = await _paid_off_on_the_6th(bk, "close-credit-taken", "5.00")
    await bk.close(CLOSED)
    lots = await live_lots(bk, cid)
    assert lots.pop(grant) == ("grant", 430 * CENT)
    [(credit, held)] = lots.items()
    assert held == ("topup", 60 * CENT)
    rows = list(await bk.db.read(lambda conn: conn.execute(text(
        "SELECT charge_id, payer, units FROM true_up_payers WHERE customer_id = :c AND rerate_id IS NULL"),
        {"c": cid})))
    first, second = sorted(charge for charge, _, _ in rows)
    assert {(c, p): int(u) for c, p, u in rows} == {
        (first, chart.lot_account(cid, credit)): 60 * CENT, (second, chart.lot_account(cid, grant)): 40 * CENT}
    await verified(bk)
    done = await _rerated(bk, "20", "15")
    assert done["delta"] == "0.65", done
    assert await live_lots(bk, cid) == {grant: ("grant", 395 * CENT), credit: ("topup", 30 * CENT)}
    assert (await bk.service.wallet(cid)).receivable == 0
    await verified(bk)


async def test_a_grant_s_true_up_part_beside_a_receivable_charge_s_decrease_goes_to_the_grant_its_row_names(
        fresh_db) -> None:
    """Postpaid: the 5th's $1.20 on the receivable; a $5.00 grant given on the 6th pays the 20th's
    $1.10 ($3.90). The close's -$1.00: the 5th $0.60 over, off what is owed ($0.60 left, the invoice
    unpaid); the 20th $0.40 over, to the grant ($4.30). Re-rated on December 2nd, all of November,
    to $16/M and $5/M: the 5th 60,000 x $16/M = $0.96 (-$0.24, the receivable's), the 20th 40,000 x
    $16/M + 30,000 x $5/M = $0.79 (-$0.31, the grant's); at the tier reached 130,000 x $5/M = $0.65,
    the true-up $0.65 - ($0.96 + $0.79) = -$1.10 where -$1.00 stands: $0.10 more back. The 5th costs
    $0.30 at $5/M, $0.66 below its $0.96, $0.60 given: $0.06 more, the receivable's; the 20th costs
    $0.35, $0.44 below its $0.79, $0.40 given: $0.04 more, the grant's. -$0.65: $0.30 off what is
    owed ($0.30), $0.35 to the grant ($4.65), as the rows say (receivable $0.06 of the 5th, grant
    $0.04 of the 20th). (Re-rating the 5th alone, as this test did, each version's units are priced
    at its own price of the tier reached: the 20th stays at v1's $10/M, as given: the grant gets none.)
    Re-rated again on the 3rd, from November 2nd, to $20/M and $10/M: the 5th back to $1.20
    (+$0.24), the 20th to $1.10 (+$0.31); the true-up 130,000 x $10/M = $1.30 - $2.30 = -$1.00 where
    -$1.10 stands: +$0.10, of the 5th $0.06 back from the receivable, of the 20th $0.04 from the
    grant (what each got); the +$0.55 paid like usage, the grant first: $4.65 - $0.04 - $0.55 =
    $4.06, owed $0.30 + $0.06 = $0.36. Before, the receivable's share of the first re-rate was all
    it paid of the 5th ($1.20 + $0.06), paid first: $0.60 off what was owed and the grant $0.05,
    though its row said $0.35 of the 20th; the second took that $0.35 back from the grant: grant
    $3.76, owed $0.06 (the promotion paid $0.30 of what the customer owes)."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "grant-part", billing_mode="postpaid")
    _, grant = await _paid_per_charge(bk, cid, None, ("grant", "5.00"))
    await bk.close(CLOSED)
    assert [invoice["amount_due"] for invoice in await bk.invoices(cid)] == ["0.60"]
    assert (await bk.service.wallet(cid)).receivable == 60 * CENT
    assert await live_lots(bk, cid) == {grant: ("grant", 430 * CENT)}
    await bk.add_book(vol("v2", "2026-11-01T00:00:00Z", "16", "5"))
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    done = await applied(bk, RerateSpec("vol", "v2", datetime(2026, 11, 1, tzinfo=UTC),
                                        datetime(2026, 12, 1, tzinfo=UTC)))
    assert done["delta"] == "-0.65", done
    assert (await bk.service.wallet(cid)).receivable == 30 * CENT
    assert await live_lots(bk, cid) == {grant: ("grant", 465 * CENT)}
    receivable, payer = chart.receivable_account(cid), chart.lot_account(cid, grant)
    rows = list(await bk.db.read(lambda conn: conn.execute(text(
        "SELECT rerate_id, charge_id, payer, units FROM true_up_payers WHERE customer_id = :c"), {"c": cid})))
    fifth, twentieth = sorted({charge for _, charge, _, _ in rows})
    assert {(r, c, p): int(u) for r, c, p, u in rows if r is not None} == {
        (done["rerate_id"], fifth, receivable): 6 * CENT, (done["rerate_id"], twentieth, payer): 4 * CENT}
    await verified(bk)
    again = await _rerated_again(bk, "20", "10")
    assert again["delta"] == "0.65", again
    assert (await bk.service.wallet(cid)).receivable == 36 * CENT
    assert await live_lots(bk, cid) == {grant: ("grant", 406 * CENT)}
    rows = await bk.db.read(lambda conn: conn.execute(text(
        "SELECT charge_id, payer, units FROM true_up_payers WHERE rerate_id = :r"), {"r": again["rerate_id"]}))
    assert {(c, p): int(u) for c, p, u in rows} == {(fifth, receivable): -6 * CENT, (twentieth, payer): -4 * CENT}
    await verified(bk)


async def test_verify_orders_each_payer_s_true_ups_as_written_when_the_database_clock_steps_back(fresh_db) -> None:
    """The same two re-rates (A 0.40, 0.70, 0 and B of the 20th 0.40, 0.60, 0: by hand above), the
    database host's clock stepped back an hour (NTP) between them: the second's rows are dated an
    hour before the first's (planted in raw SQL: its rows' created_at moved back an hour). verify
    ordered each payer's true-ups by created_at, so the second's take came before what the first
    gave: A 0.40 - 0.70 = -$0.30 and B 0.40 - 0.60 = -$0.20, flagged on a healthy ledger. They are
    ordered as written now (each true-up's rows numbered when written, migration 0085), whatever
    the clock read: nothing flagged."""
    bk = BillingKit(fresh_db)
    cid = "clock-stepped-back"
    _, b = await _split_charge(bk, cid)
    first = await _rerated(bk, "20", "5")
    await bk.add_book(vol("v3", "2026-11-02T00:00:00Z", "20", "20"))
    bk.clock.now = datetime(2026, 12, 3, tzinfo=UTC)
    again = await applied(bk, spec("v3", datetime(2026, 11, 2, tzinfo=UTC)))
    assert again["delta"] == "1.95", again
    assert await live_lots(bk, cid) == {b: ("topup", 340 * CENT)}
    await verified(bk)
    stepped = ("UPDATE true_up_payers SET created_at = (SELECT min(created_at) FROM true_up_payers "
               "WHERE rerate_id = :first) - interval '1 hour' WHERE rerate_id = :second")
    params = {"first": first["rerate_id"], "second": again["rerate_id"]}
    problems = await _damaged(bk, params, stepped)
    assert problems == [], problems
    # the first written before 0085 (no number), the second after, dated before it: rows without a
    # number were all written before any numbered one, so they come first
    before = "UPDATE true_up_payers SET written = NULL WHERE rerate_id = :first"
    problems = await _damaged(bk, params, stepped, before)
    assert problems == [], problems

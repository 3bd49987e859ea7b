"""Two risks of 7d5bebf's re-rates after the close (a payer's room in a charge counting what the same
correction takes back of it; a rule whose true-up stands at 0 with nothing recorded read as having
given nothing of any charge): a lot closed between the close and the re-rate, and a two-version
rule whose close lines cancel.

Book and usage of the first as `test_volume_true_up_moved_payers`: v1 (from January) `in`, v2 (from
November 15th) `in-b`, each volume-tiered $10/M to 1,000,000 tokens, $1/M beyond; the 5th
3,000,000 under v1 `in` ($12.00), the 20th 1,000,000 under v2 `in-b`, its first units ($10.00)."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from billing_kit import BillingKit
from sqlalchemy import text
from test_close_true_up_funding import _damaged
from test_volume_true_up_two_volume_versions import (
    CENT,
    DEC_2,
    _closed,
    _november,
    _remaining,
    _rerated,
    _to_v3,
    _verified,
    _volume_b,
)
from test_volume_true_up_versions_more import CLOSED, NOV_25

from ledger.audit import trial_balance
from ledger.lanes import lane_count, lane_of
from wallets import chart
from wallets.expiry import expire_grants

NOV_2, NOV_26 = datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 26, tzinfo=UTC)
NOV_30 = datetime(2026, 11, 30, 12, tzinfo=UTC)  # before November's close (December 1st, 01:00)
DEC_1 = datetime(2026, 12, 1, 12, tzinfo=UTC)  # after November's close, before the re-rate


async def _breakage(bk: BillingKit) -> int:
    """What the USD trial balance shows credited (less debited) to breakage; asserts it balances."""
    trial = await bk.db.read(lambda conn: trial_balance(conn, "USD"))
    assert trial.totals["USD"][0] == trial.totals["USD"][1], trial.totals
    return {ln.account: ln.credits - ln.debits for ln in trial.lines}.get(chart.breakage_account("USD"), 0)


async def _charges(conn, cid: str) -> list[int]:
    """The customer's charges' ids, by usage time."""
    return list((await conn.execute(text("SELECT id FROM charges WHERE customer_id = :c ORDER BY occurred_at, id"),
                                    {"c": cid})).scalars())


async def _lot_ids(bk: BillingKit, cid: str) -> set[str]:
    """Every lot of the customer, live, spent or expired."""
    return await bk.db.read(lambda conn: _ids(conn, cid))


async def _ids(conn, cid: str) -> set[str]:
    return {str(r[0]) for r in await conn.execute(text("SELECT id FROM lots WHERE customer_id = :c"), {"c": cid})}


@pytest.mark.parametrize("expires_at", [DEC_1, NOV_30], ids=["expired-after-the-close", "expired-before-the-close"])
async def test_a_re_rate_after_the_close_gives_an_expired_grant_s_part_to_breakage(
        bk: BillingKit, expires_at: datetime) -> None:
    """Prepaid: a $12.00 grant (November 1st, expiring `expires_at`) pays the 5th's $12.00 and is
    spent; a $15.00 top-up (the 6th) pays the 20th's $10.00 ($5.00 left). The close: `in`'s 3,000,000
    at $1/M = $3.00 less $12.00, -$9.00, the 5th's: to the grant ($9.00, swept to breakage December
    1st at 12:00) or, the grant expired November 30th (at noon, before the close), to breakage
    outright; `in-b`'s 1,000,000 its first tier, 0. Breakage $9.00 either way, the grant $0, the
    top-up $5.00. December 2nd, re-rated to v3 (`in-b`, $10/M to 1,000,000, $0.50/M beyond): the 5th
    $11.00 (-$1.00); `in` -$9.00 -> 0 (+$9.00 of the 5th, taken back from breakage, where it went);
    `in-b` 0 -> -$18.50: the 5th's $9.50 (3,000,000 at $0.50/M = $1.50 less $11.00), the 20th's
    $9.00 (1,000,000 at $1/M less $10.00): -$10.50 in all. The grant's part of it, $1.00 - $9.00 +
    $9.50 = $1.50, to breakage (DESIGN: a grant's remainder at expiry is breakage revenue; README:
    a lot expired since takes nothing back, its part goes to breakage): $10.50, what the grant holds
    after the same re-rate unexpired (test_prepaid_units_re_rated_after_the_close_to_another_rule_id_
    give_each_payer_its_charge_s_part); the top-up $5.00 + $9.00 = $14.00; no lot opens, the trial
    balance balances, verify is ok. (A guard of 7d5bebf's risk: a lot closed between the close and
    the re-rate.)"""
    cid = "expired-between"
    grant, topup = await _november(bk, cid, [(1, "grant", "12.00", expires_at), (5, 3_000_000),
                                             (6, "topup", "15.00"), (20, 1_000_000)], "prepaid", v2=_volume_b())
    assert await _remaining(bk, cid, grant, topup) == (0, 500 * CENT)
    await _closed(bk, cid)
    bk.clock.now = datetime(2026, 12, 1, 13, tzinfo=UTC)
    await expire_grants(bk.db, bk.clock.now)
    assert (await _remaining(bk, cid, grant, topup), await _breakage(bk)) == ((0, 500 * CENT), 900 * CENT)
    assert (await _to_v3(bk, cid, "0.5", DEC_2, previewed=True))["delta"] == "-10.50"
    await _verified(bk)
    assert (await _remaining(bk, cid, grant, topup), await _breakage(bk)) == ((0, 1400 * CENT), 1050 * CENT)
    assert await _lot_ids(bk, cid) == {grant, topup}


def _in(first: str, beyond: str, rule_id: str = "in") -> dict:
    return {"id": rule_id, "model": "model-x", "token_type": "input", "tier_mode": "volume",
            "tiers": [{"up_to": 1_000_000, "price": first}, {"up_to": None, "price": beyond}]}


async def _cancelling(bk: BillingKit, cid: str) -> tuple[str, str]:
    """Prepaid; v1 (from January) `in` $10/M to 1,000,000, $8/M beyond; v2 (from November 15th) `in`
    $2/M to 1,000,000, $4/M beyond. A $5.00 grant (November 1st) pays the 5th's 500,000 (v1's first
    tier, $5.00) and is spent; a $10.00 top-up (the 6th) pays the 20th's 1,000,000 under v2, rated on
    from 500,000: 500,000 x $2/M + 500,000 x $4/M = $3.00 ($7.00 left). The lots' ids."""
    grant, topup = await _november(bk, cid, [(1, "grant", "5.00"), (5, 500_000), (6, "topup", "10.00"),
                                             (20, 1_000_000)], "prepaid", v2=_in("2", "4"), v1=_in("10", "8"))
    assert await _remaining(bk, cid, grant, topup) == (0, 700 * CENT)
    return grant, topup


V3 = _in("9", "1", "in-b")  # v3 (from November 1st): `in-b` alone, $9/M to 1,000,000, $1/M beyond


async def test_a_re_rate_before_the_close_of_a_rule_whose_lines_would_cancel(bk: BillingKit) -> None:
    """`_cancelling`; November 25th, v3 and November 1st-15th re-rated to it: the 5th under `in-b`,
    500,000 x $9/M = $4.50 (-$0.50, grant $0.50). The close: `in`'s 1,000,000 (the 20th alone) its
    first tier, $2/M = $2.00 less $3.00: -$1.00, the 20th's, to the top-up ($8.00); `in-b`'s 500,000
    its first tier: 0; November $4.50 + $3.00 - $1.00 = $6.50; the lots $8.50 = $15.00 - $6.50 (the
    state the re-rate after the close below is to reach). These hold; verify then names the close's
    record of `in` (the 20th gave back $1.00 where it reads the 5th's due, the 5th's lines as
    charged under `in` v1, $5.00 less 500,000 at $2/M, over $4.00, first by id): known gap."""
    cid = "cancel-before"
    grant, topup = await _cancelling(bk, cid)
    assert (await _rerated(bk, cid, "v3", V3, NOV_25))["delta"] == "-0.50"
    bk.clock.now = datetime(2026, 11, 30, tzinfo=UTC)
    await bk.close(CLOSED)
    [november] = await bk.invoices(cid)
    assert (november["total"], await _remaining(bk, cid, grant, topup)) == ("6.50", (50 * CENT, 800 * CENT))
    await _verified(bk)


async def test_verify_orders_a_re_rate_before_the_close_by_the_database_not_by_servers_whose_clocks_differ(
        bk: BillingKit) -> None:
    """The re-rate above applied just before the close (both on December 1st, as the period came
    due at 01:00), by a server whose clock reads 3 ms ahead of the closing server's: the re-rate's
    rows are dated 01:00:00.004, the close's 01:00:00.001, though written before them. The close
    counted the 5th under `in-b`, as the re-rate left it: `in`'s true-up -$1.00, the 20th's, as in
    the case above; the re-rate's -$0.50, dated December 1st, is billed in December: November $5.00
    + $3.00 - $1.00 = $7.00, the lots $0.50 and $8.00 as above. verify read the re-rates before the close by their dates
    (created_at < the close record's), took this one for after it, read the 5th under `in` as
    charged (v1 $5.00 less 500,000 at $2/M: $4.00 over, first by id) and named a healthy ledger:
    'charge <5th> gave back 0 where ... is 1000000000' and 'charge <20th> gave back 1000000000
    where ... is 0'. It orders them as the database wrote them now."""
    from datetime import timedelta

    cid = "cancel-before-skewed"
    grant, topup = await _cancelling(bk, cid)
    assert (await _rerated(bk, cid, "v3", V3, CLOSED + timedelta(milliseconds=4)))["delta"] == "-0.50"
    await bk.close(CLOSED + timedelta(milliseconds=1))
    [november] = await bk.invoices(cid)
    assert (november["total"], await _remaining(bk, cid, grant, topup)) == ("7.00", (50 * CENT, 800 * CENT))
    await _verified(bk)


async def _closed_after_v3(bk: BillingKit, cid: str) -> None:
    """`_cancelling`, November 1st-15th re-rated to v3 on November 25th, closed; verify ok."""
    await _cancelling(bk, cid)
    await _rerated(bk, cid, "v3", V3, NOV_25)
    bk.clock.now = datetime(2026, 11, 30, tzinfo=UTC)
    await bk.close(CLOSED)
    await _verified(bk)

async def test_verify_names_a_close_s_record_moved_to_the_charge_a_re_rate_before_it_moved_off_the_rule(
        bk: BillingKit) -> None:
    """The case above, then its close's record of `in` ($1.00 of the 20th, its overcharge at $2/M:
    $3.00 less 1,000,000 at $2/M) moved by hand (raw SQL, rolled back) to the 5th, which the re-rate
    moved to `in-b` before the close: verify names both rows (the 5th gave back $1.00 where `in` owes
    it nothing, the 20th nothing where its overcharge is $1.00; the payer rows' tie, of a record named
    already, not again). Before, verify read the 5th under `in`, as charged, its due $1.00 (first by
    id): its per-charge tie took the forged record for right (the payer rows' tie alone named it:
    'charge 1 gave back 1000000000, its payers' rows none'), and named the close's true one."""
    cid = "cancel-before-forged"
    await _closed_after_v3(bk, cid)
    fifth, twentieth = await bk.db.read(lambda conn: _charges(conn, cid))
    record = f"true-up record of the close of customer {cid}, 2026-11 rule in"
    assert await _damaged(bk, {"c": cid, "fifth": fifth, "twentieth": twentieth},
                          "UPDATE true_up_charges SET charge_id = :fifth WHERE customer_id = :c AND rerate_id IS NULL"
                          " AND charge_id = :twentieth", ordered=True) == [
        "credit_notes",
        f"{record}: charge {fifth} gave back {100 * CENT} where its overcharge at the tier reached (up to what the "
        f"line's 0 left) is 0",  # no charge of the rule: nothing of the line is its
        f"{record}: charge {twentieth} gave back 0 where its overcharge at the tier reached (up to what the "
        f"line's {100 * CENT} left) is {100 * CENT}"]


async def test_migration_0090_numbers_the_records_after_it_and_verify_reads_those_before_by_their_dates(
        bk: BillingKit, migrating) -> None:
    """Migration 0090 on a database with a close's record written before it: `_closed_after_v3` (the
    re-rate on November 25th, the close December 1st, 01:00: verify ok), moved down to 0089 (no
    number: verify reads the re-rates before the close by their dates, as it did) and up again to
    head: the record keeps no number (NULL), verify ok at 0089 and after. A close written after it
    (the same case, another customer) numbers its record from the adjustments' sequence: above the
    ids of the re-rate's adjustments written before it; verify ok."""
    conn, config = migrating
    await _closed_after_v3(bk, "cancel-0089")
    command.downgrade(config, "0089")
    conn.commit()
    await _verified(bk)
    command.upgrade(config, "head")
    conn.commit()
    await _verified(bk)
    numbered = ("SELECT t.adjustment_seq, (SELECT max(a.id) FROM charge_adjustments a WHERE a.customer_id = :c) "
                "FROM true_up_charges t WHERE t.customer_id = :c AND t.rerate_id IS NULL")
    assert {seq for seq, _ in conn.execute(text(numbered), {"c": "cancel-0089"})} == {None}
    await _closed_after_v3(bk, "cancel-0090")
    [(seq, adjusted)] = set(conn.execute(text(numbered), {"c": "cancel-0090"}).all())
    assert seq > adjusted, (seq, adjusted)


V4 = _in("10", "8")  # v4 (from November 2nd): `in` again, as v1 prices it


async def test_a_charge_re_rated_to_another_rule_and_back_before_the_close_counts_where_it_stands(
        bk: BillingKit) -> None:
    """`_cancelling`; November 25th, v3 and November 1st-15th re-rated to it: the 5th under `in-b`,
    $4.50 (-$0.50, grant $0.50); November 26th, v4 (from November 2nd, `in` as v1) and November
    2nd-15th re-rated to it: the 5th back under `in`, the period's first units, 500,000 x $10/M =
    $5.00 (+$0.50, taken back from the grant: $0). The close counts the 5th under `in` at v4 (its
    last re-rate's rule, not the first's `in-b`): `in`'s 1,500,000 reach both versions' second tier,
    v4's 500,000 at $8/M = $4.00 less $5.00, -$1.00; v2's 1,000,000 at $4/M = $4.00 less $3.00,
    +$1.00; `in` 0, `in-b` nothing: November $5.00 + $3.00 = $8.00, the lots (0, 7.00), as if never
    moved (the same close with no re-rate: test_a_re_rate_after_the_close_of_a_rule_whose_lines_
    cancelled_gives_each_payer_its_charge_s_part). verify is ok (a guard: the rules a charge's last
    re-rate before the close left it under, not its first's)."""
    cid = "away-and-back"
    grant, topup = await _cancelling(bk, cid)
    assert (await _rerated(bk, cid, "v3", V3, NOV_25))["delta"] == "-0.50"
    assert (await _rerated(bk, cid, "v4", V4, NOV_26, start=NOV_2))["delta"] == "0.50"
    assert await _remaining(bk, cid, grant, topup) == (0, 700 * CENT)
    bk.clock.now = datetime(2026, 11, 30, tzinfo=UTC)
    await bk.close(CLOSED)
    [november] = await bk.invoices(cid)
    assert (november["total"], await _remaining(bk, cid, grant, topup)) == ("8.00", (0, 700 * CENT))
    await _verified(bk)


async def test_a_re_rate_after_the_close_of_a_rule_whose_lines_cancelled_gives_each_payer_its_charge_s_part(
        bk: BillingKit) -> None:
    """`_cancelling`, closed: the period's 1,500,000 reach both versions' second tier: v1's 500,000 at
    $8/M = $4.00 less $5.00, -$1.00 (the 5th's); v2's 1,000,000 at $4/M = $4.00 less $3.00, +$1.00
    (the 20th's): `in` 0 in all, November $8.00, no money moved (the lots (0, 7.00)). December 2nd,
    v3 and November 1st-15th re-rated to it: the 5th under `in-b` $4.50, -$0.50 to the grant that
    paid it ($0.50); `in` 0 -> -$1.00: v1's line gone (the 5th left `in`; the close gave it nothing,
    so nothing is taken back), v2's the 20th alone, its first tier, 1,000,000 at $2/M = $2.00 less
    $3.00: -$1.00, the 20th's, to the top-up that paid it ($8.00); `in-b`'s 500,000 its first tier:
    0. -$0.50 - $1.00 = -$1.50, November $6.50, (0.50, 8.00): what the same re-rate before the close
    leaves (test_a_re_rate_before_the_close_of_a_rule_whose_lines_would_cancel). A guard of 7d5bebf's
    risk (a rule whose true-up stands at 0 with nothing kept read as having given nothing of any
    charge): it held."""
    cid = "cancel-after"
    grant, topup = await _cancelling(bk, cid)
    _, november = await _closed(bk, cid)
    assert (november["total"], await _remaining(bk, cid, grant, topup)) == ("8.00", (0, 700 * CENT))
    assert (await _rerated(bk, cid, "v3", V3, DEC_2, previewed=True))["delta"] == "-1.50"
    await _verified(bk)
    assert await _remaining(bk, cid, grant, topup) == (50 * CENT, 800 * CENT)


async def test_verify_reads_a_charge_s_re_rates_before_the_close_in_its_lane(bk: BillingKit) -> None:
    """The case of test_a_re_rate_before_the_close_of_a_rule_whose_lines_would_cancel (closed:
    verify ok), then a forger (superuser, triggers off) inserts into another lane an adjustment of
    the 5th's charge id, written before the close, rating its input under `in` (a charge id is unique
    within its lane alone). Verify read it as the 5th's last re-rate before the close: the 5th back
    under `in` as charged (500,000 at $10/M, $5.00; at the tier reached, $2/M, $1.00: its overcharge
    $4.00, up to the line's $1.00 left, first by id), so it named the close's record of `in` though the
    ledger is untouched: "charge 1 gave back 0 where its overcharge ... is 1000000000" and a row of the
    20th (2 problems). It reads the charge's lane: no problem of the close's record."""
    cid = "cancel-before-other-lane"
    await _closed_after_v3(bk, cid)
    fifth, _ = await bk.db.read(lambda conn: _charges(conn, cid))
    lanes = await bk.db.read(lane_count)
    other = next(f"o{i}" for i in range(1000) if lane_of(f"o{i}", lanes) != lane_of(cid, lanes))
    problems = await _damaged(bk, {"lane": lane_of(other, lanes), "other": other, "fifth": fifth}, """
        INSERT INTO charge_adjustments (lane, charge_id, corrected_version, rerate_id, customer_id, period,
                                        old_amount, new_amount, old_lines, new_lines, new_rules, created_at)
        VALUES (:lane, :fifth, 'forged', 'forged', :other, '2026-11', 500000000, 500000000, '[]',
                '[["model-x", "input", 500000000]]', '{"input": "in"}', '2026-11-02T00:00:00Z')""")
    assert [p for p in problems if "true-up record" in p] == []

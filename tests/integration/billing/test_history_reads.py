"""Reads made under a lane's writer lock read the period they are about, not the customer's history
(tests/integration/plan_reads.py)."""
from __future__ import annotations

import json
from datetime import UTC, datetime

from billing_kit import BillingKit

from tests.integration.plan_reads import explained, generic, rows_read, scans
from tests.integration.wallets.wallet_kit import usd
from wallets import chart, rerating, store
from wallets.budget_seeding import count_before
from wallets.core.state import Unapplied
from wallets.model import Budget
from wallets.periods import Cycle, period_named


async def _calls_by_month(bk: BillingKit, cid: str, months: tuple[tuple[int, int], ...]) -> None:
    """`cid`'s calls (1,000 model-a input tokens: $0.01 at $10/M, and the call's $0.01), (month,
    calls) each on the 10th of the month of 2026, each month from the clock's on closed on the
    next's 1st at 02:00."""
    for month, calls in months:
        for m in range(bk.clock.now.month + 1, month + 1):
            await bk.close(datetime(2026, m, 1, 2, tzinfo=UTC))
        bk.clock.now = datetime(2026, month, 10, tzinfo=UTC)
        for _ in range(calls):
            await bk.event(cid, "model-a", 1000, 0)


async def _a_in_priced(bk: BillingKit, version: str, effective_from: str, price: str) -> None:
    """A version of the seed book, in force from `effective_from`, with model-a input at `price` per 1M."""
    await bk.add_book({**bk.SEED, "version": version, "effective_from": effective_from, "rules": [
        {**r, "price": price} if r["id"] == "a-in" else r for r in bk.SEED["rules"]]})


async def _rerated(bk: BillingKit, cid: str, version: str, since: datetime, until: datetime) -> None:
    """`cid`'s charges from `since` to `until` re-rated to the seed book's `version`, without errors."""
    done = await rerating.apply(bk.db, bk.service.engine, rerating.RerateSpec("seed", version, since, until, cid), None)
    assert done["errors"] == []


async def test_what_a_rerate_finds_left_in_a_periods_charges_reads_only_that_periods_charges(bk: BillingKit):
    """Each call: 1,000 model-a input tokens at $10/M ($0.01) and the call itself ($0.01): $0.02,
    paid from the top-up's lot. Five calls in September, one in October, five in November (each
    billed in the period of its own time, closed at the next): what October's charges left is the
    one October call's $0.02, all in the lot; the other ten are neither counted nor read (before,
    paid_left read every charge of the customer: 12 rows, 10 of them of other periods)."""
    bk.clock.now = datetime(2026, 9, 5, tzinfo=UTC)
    cid = await bk.customer("hist-paid-left")
    await bk.top_up(cid, "10.00")
    await _calls_by_month(bk, cid, ((9, 5), (10, 1), (11, 5)))
    [lot] = [g.id for g in (await bk.service.wallet(cid)).grants]
    october = period_named("2026-10", Cycle())

    left, spy = await explained(bk.db, lambda conn: store.paid_left(conn, cid, october), analyze=("charges",))

    assert left == {"2026-10": {chart.lot_account(cid, lot): 20_000_000}}
    # the October charge, found by its time (which periods billed it), then by the period billing it
    # (and at most once more, by its time, for charges of no period): 3 at most; 12 before
    assert rows_read(spy.plans, "charges") <= 3


async def test_what_paid_a_periods_rules_tests_each_charge_for_re_rates_once(bk: BillingKit):
    """October's one call (1,000 model-a input tokens, $0.01 at `a-in`; the call, $0.01 at `call`)
    was paid $0.02 from the top-up's lot, listed under each rule that rated it, with the rule's units
    and amount (not re-rated) and the book version that rated it. Whether a re-rate moved a charge
    is one test of its adjustments a row:
    the plan scans charge_adjustments once (twice before: one test each for units and amount, each
    a scan of every customer's adjustments when the planner hashed them)."""
    bk.clock.now = datetime(2026, 10, 5, tzinfo=UTC)
    cid = await bk.customer("hist-rule-funding")
    await bk.top_up(cid, "10.00")
    bk.clock.now = datetime(2026, 10, 10, tzinfo=UTC)
    await bk.event(cid, "model-a", 1000, 0)
    [lot] = [g.id for g in (await bk.service.wallet(cid)).grants]
    charge = await bk.db.read(lambda conn: conn.exec_driver_sql(
        "SELECT id FROM charges WHERE customer_id = %s", (cid,)))
    charge_id = charge.scalar_one()

    found, spy = await explained(bk.db, lambda conn: store.rule_funding(conn, cid, period_named("2026-10", Cycle())),
                                 analyze=("charges", "charge_adjustments"))

    paid = chart.lot_account(cid, lot)
    version = "2026-01-01T00:00:00Z"  # the seed book's version its lines name (which prices a true-up)
    assert found == {"a-in": ((charge_id, paid, 20_000_000, 1000, 10_000_000, version, 0),),
                     "call": ((charge_id, paid, 20_000_000, 1, 10_000_000, version, 0),)}
    assert scans(spy.plans, "charge_adjustments") == 1


async def _rerated_history(bk: BillingKit, cid: str, months: tuple[tuple[int, int], ...]) -> None:
    """`cid`, topped up $10.00, with `_calls_by_month`'s calls; then all of them re-rated (on
    November 20th) to $8/M from July 1st: $0.018 each, 0.002 less."""
    bk.clock.now = datetime(2026, months[0][0], 5, tzinfo=UTC)
    await bk.customer(cid)
    await bk.top_up(cid, "10.00")
    await _calls_by_month(bk, cid, months)
    await _a_in_priced(bk, "v8", "2026-07-01T00:00:00Z", "8.00")
    bk.clock.now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    await _rerated(bk, cid, "v8", datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))


async def test_a_money_budget_made_mid_month_reads_the_months_rerates_not_the_customers(bk: BillingKit):
    """Five calls on July 10th, five on August 10th, two on November 10th, all re-rated on the 20th
    (12 adjustments of $0.002 less each). A month money budget made on November 20th counts
    November's two calls as re-rated: 2 x ($0.02 - $0.002) = $0.036, and reads November's two
    adjustments (at most those billed from September on: a call of November's window is of a
    period named October or November), not July's and August's ten: 12 before, with their charges
    (12 more), where a customer with 70,969 adjustments (50,000 of its 300,000 charges of 6
    months, re-rated) read the lane's whole charges and reservations partitions (856 ms)."""
    cid = "hist-budget-rerates"
    await _rerated_history(bk, cid, ((7, 5), (8, 5), (11, 2)))
    now = bk.clock.now
    lane = await bk.service.engine.lane_of(cid)
    made = Budget(id="bud-hist-rerates", customer_id=cid, name="", api_key=None, model=None, dimensions={},
                  window="month", metric="money", limit=usd("100.00"), mode="soft", thresholds=(),
                  time_zone="UTC", created_at=now)

    _, spy = await explained(bk.db, lambda conn: count_before(conn, lane, made, now),
                             analyze=("charges", "charge_adjustments"), writes=False)

    [(_, budget_id, windows)] = [params for sql, params in spy.skipped if "INSERT INTO budget_windows" in sql]
    assert budget_id == "bud-hist-rerates"
    assert json.loads(windows) == [{"start": "2026-11-01T00:00:00Z", "used": 36_000_000, "held": 0}]
    assert rows_read(spy.plans, "charge_adjustments") <= 2
    assert rows_read(spy.plans, "charges") <= 4  # November's two: summed, and beside their adjustments


async def test_what_a_close_finds_its_periods_rerates_gave_back_reads_only_their_adjustments(bk: BillingKit):
    """A postpaid customer's five calls of July 10th (its receivable: 5 x $0.02), re-rated on
    August 10th to $8/M ($0.002 less each: $0.01 off the receivable, billed in August, on July's
    credit note), and its two calls of November 10th ($0.018 each at $8/M), re-rated on the 20th to
    $6/M ($0.016: $0.004 off, billed in November). What November's close finds given back is
    November's re-rate alone, $0.004 (4,000,000 atomic units), under the re-rate's name (November
    not invoiced), and it reads one adjustment of its entry for the re-rate's name, not July's
    five: 7 before (every adjustment of the customer; 195 ms at 70,969)."""
    cid = "hist-corrections"
    bk.clock.now = datetime(2026, 7, 5, tzinfo=UTC)
    await bk.customer(cid, billing_mode="postpaid")
    await _calls_by_month(bk, cid, ((7, 5),))
    await bk.close(datetime(2026, 8, 1, 2, tzinfo=UTC))
    await _a_in_priced(bk, "v8", "2026-07-01T00:00:00Z", "8.00")
    bk.clock.now = datetime(2026, 8, 10, tzinfo=UTC)
    await _rerated(bk, cid, "v8", datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 8, 1, tzinfo=UTC))
    await _calls_by_month(bk, cid, ((11, 2),))  # September, October and November closed first
    await _a_in_priced(bk, "v9", "2026-11-01T00:00:00Z", "6.00")
    bk.clock.now = datetime(2026, 11, 20, tzinfo=UTC)
    await _rerated(bk, cid, "v9", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    [(rerate_id, entry_id)] = list(await bk.db.read(lambda conn: conn.exec_driver_sql(
        "SELECT DISTINCT rerate_id, entry_id FROM charge_adjustments WHERE customer_id = %s AND period = '2026-11'",
        (cid,))))

    found, spy = await explained(bk.db, lambda conn: store.load_corrections(conn, [(cid, "2026-11")]),
                                 analyze=("journal_entries", "charge_adjustments"))

    assert found == {cid: (Unapplied(entry_id, f"rerate:{rerate_id}", 4_000_000, None),)}
    assert rows_read(spy.plans, "charge_adjustments") <= 1


async def test_what_a_rerate_finds_of_a_periods_true_ups_reads_that_periods_rollups_on(bk: BillingKit):
    """Five calls on July 10th, five on August 10th, two on November 10th, each month closed on the
    next's 1st (no volume rule: no true-up). What November's true-ups stand at is nothing, and each
    of the two reads takes the rollups billed from November on: the two calls' batches' delta rows
    (none folded), 4 in all; before, every period's of the customer, 13 each (the top-up's and the
    twelve calls' batches): a true-up of November, or a correction of it, is billed in November or
    later."""
    cid = "hist-true-ups"
    bk.clock.now = datetime(2026, 7, 5, tzinfo=UTC)
    await bk.customer(cid)
    await bk.top_up(cid, "10.00")
    await _calls_by_month(bk, cid, ((7, 5), (8, 5), (11, 2)))

    async def both(conn):
        return await store.true_ups_posted(conn, cid, "2026-11"), await store.true_up_shares(conn, cid, "2026-11")

    found, spy = await explained(bk.db, both, analyze=("period_rollups", "period_deltas"))

    assert found == ({}, (0, {}))
    assert rows_read(spy.plans, "period_rollups") + rows_read(spy.plans, "period_deltas") <= 4  # 2, twice


async def test_what_a_close_counts_as_re_rated_reads_the_periods_adjustments_not_its_charges(bk: BillingKit):
    """Five calls on November 10th, two on the 15th (1,000 model-a input tokens each: $0.01 at
    $10/M, and the call's $0.01), October's one call of the 10th re-rated on November 20th to $8/M.
    What November's close counts as re-rated (store.rerated_charges, under the lane's lock, at every
    close and upcoming invoice) is nothing, and it reads no charge (October's adjustment is not
    November's); before, it tested each of November's 7 charges for adjustments. The 15th's two
    re-rated on the 21st to $8/M: those two, each at v8 (model-a input 1,000 x $8/M = $0.008,
    8,000,000 atomic units; the call $0.01, 10,000,000), read by their keys: 2 charges, where all 7
    were read. Planned for its parameters and generically (psycopg prepares it from its 2nd run)."""
    cid = "hist-rerated"
    bk.clock.now = datetime(2026, 10, 5, tzinfo=UTC)
    await bk.customer(cid, billing_mode="postpaid")
    await _calls_by_month(bk, cid, ((10, 1), (11, 5)))
    bk.clock.now = datetime(2026, 11, 15, tzinfo=UTC)
    for _ in range(2):
        await bk.event(cid, "model-a", 1000, 0)
    await _a_in_priced(bk, "v8", "2026-10-01T00:00:00Z", "8.00")
    bk.clock.now = datetime(2026, 11, 20, tzinfo=UTC)
    await _rerated(bk, cid, "v8", datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    november = period_named("2026-11", Cycle())

    for plan in (explained, generic):
        found, spy = await plan(bk.db, lambda conn: store.rerated_charges(conn, cid, november),
                                analyze=("charges", "charge_adjustments"))
        assert found == (), plan
        assert rows_read(spy.plans, "charges") == 0, plan  # 7 before

    bk.clock.now = datetime(2026, 11, 21, tzinfo=UTC)
    await _rerated(bk, cid, "v8", datetime(2026, 11, 15, tzinfo=UTC), datetime(2026, 11, 16, tzinfo=UTC))

    for plan in (explained, generic):
        found, spy = await plan(bk.db, lambda conn: store.rerated_charges(conn, cid, november),
                                analyze=("charges", "charge_adjustments"))
        assert [(model, version, {t: a for _, t, a in moved}) for model, _, version, moved, *_ in found] == [
            ("model-a", "v8", {"input": 8_000_000, "request": 10_000_000})] * 2, plan
        assert rows_read(spy.plans, "charges") == 2, plan  # 7 before
        # November's two adjustments, then each charge's last: 4
        assert rows_read(spy.plans, "charge_adjustments") <= 4, plan


# store.rerated_charges as it read before (every charge of the period, each tested for adjustments):
# the reference the read driven by the adjustments must agree with
_CHARGE_DRIVEN = """SELECT c.model, c.lines, a.corrected_version, a.new_lines, a.new_rules, c.id
      FROM charges c
     CROSS JOIN LATERAL (SELECT a.corrected_version, a.new_lines, a.new_rules FROM charge_adjustments a
                          WHERE a.charge_id = c.id ORDER BY a.id DESC LIMIT 1) a
     WHERE c.customer_id = %s AND c.period = %s AND c.occurred_at >= %s AND c.occurred_at < %s
       AND coalesce((SELECT j.metadata ->> 'period' FROM journal_entries j
                      WHERE j.lane = c.lane AND j.id = c.entry_id), c.period) = %s
     ORDER BY c.occurred_at, c.id"""


async def test_what_a_close_counts_as_re_rated_is_the_same_read_from_the_charges_or_the_adjustments(bk: BillingKit):
    """October's call of the 10th, re-rated on November 26th to v8 ($8/M from October 1st);
    November's calls: three on the 10th and two on the 15th re-rated the same day to v8, the 15th's
    two again on the 27th to v6 ($6/M from the 15th: the last re-rate counts), two on the 20th
    re-rated to v6 at 00:30 on December 1st, in the grace window (billed in December: they count),
    one on the 25th never re-rated. By hand, in time order: v8 x 3, v6 x 4 (not October's, not the
    25th's); model-a input 1,000 tokens at $8/M 8,000,000 atomic units, at $6/M 6,000,000; the call
    10,000,000. The same rows as every charge of the period tested for adjustments (the read
    before) gives."""
    cid = "hist-rerated-both"
    bk.clock.now = datetime(2026, 10, 5, tzinfo=UTC)
    await bk.customer(cid, billing_mode="postpaid")
    await _calls_by_month(bk, cid, ((10, 1), (11, 3)))
    for day, calls in ((15, 2), (20, 2), (25, 1)):
        bk.clock.now = datetime(2026, 11, day, tzinfo=UTC)
        for _ in range(calls):
            await bk.event(cid, "model-a", 1000, 0)
    await _a_in_priced(bk, "v8", "2026-10-01T00:00:00Z", "8.00")
    bk.clock.now = datetime(2026, 11, 26, tzinfo=UTC)
    await _rerated(bk, cid, "v8", datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    await _rerated(bk, cid, "v8", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 16, tzinfo=UTC))
    await _a_in_priced(bk, "v6", "2026-11-15T00:00:00Z", "6.00")
    bk.clock.now = datetime(2026, 11, 27, tzinfo=UTC)
    await _rerated(bk, cid, "v6", datetime(2026, 11, 15, tzinfo=UTC), datetime(2026, 11, 16, tzinfo=UTC))
    bk.clock.now = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
    await _rerated(bk, cid, "v6", datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC))
    november = period_named("2026-11", Cycle())

    found = await bk.db.read(lambda conn: store.rerated_charges(conn, cid, november))
    reference = await bk.db.read(lambda conn: conn.exec_driver_sql(_CHARGE_DRIVEN, (
        cid, november.label, november.start, november.end, november.label)))

    at = {"v8": 8_000_000, "v6": 6_000_000}
    assert [(model, version, {t: a for _, t, a in moved}) for model, _, version, moved, *_ in found] == [
        ("model-a", v, {"input": at[v], "request": 10_000_000}) for v in ("v8",) * 3 + ("v6",) * 4]
    assert found == tuple((model, tuple(lines), version, tuple((m, t, int(a)) for m, t, a in moved), rules, charge)
                          for model, lines, version, moved, rules, charge in reference)


async def test_what_a_close_counts_as_re_rated_leaves_out_late_charges_whichever_way_it_is_read(bk: BillingKit):
    """Late charges, where the two reads could differ (an adjustment names its charge's usage
    period, the charge the period that billed it): October's call of the 10th (closed on November
    1st at 02:00); on November 10th two November calls and one of October 20th arriving late (billed
    in November); November closed on December 1st at 02:00; on December 2nd one of November 20th
    arriving late (billed in December); one December call on the 10th. All re-rated on December 15th
    to v8 ($8/M from October 1st). By hand: October's own billed in it: the 10th's, 1 row; November's:
    its two of the 10th, 2 rows (not October's late one it billed, not its own late one December
    billed); December's: its 10th's, 1 row (not November's late one); each model-a input 1,000 x
    $8/M = 8,000,000 atomic units, the call 10,000,000. The read before (every charge of the period)
    gives the same rows."""
    cid = "hist-rerated-late"
    bk.clock.now = datetime(2026, 10, 5, tzinfo=UTC)
    await bk.customer(cid, billing_mode="postpaid")
    await _calls_by_month(bk, cid, ((10, 1), (11, 2)))
    await bk.event(cid, "model-a", 1000, 0, at=datetime(2026, 10, 20, tzinfo=UTC))
    await bk.close(datetime(2026, 12, 1, 2, tzinfo=UTC))
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    await bk.event(cid, "model-a", 1000, 0, at=datetime(2026, 11, 20, tzinfo=UTC))
    bk.clock.now = datetime(2026, 12, 10, tzinfo=UTC)
    await bk.event(cid, "model-a", 1000, 0)
    await _a_in_priced(bk, "v8", "2026-10-01T00:00:00Z", "8.00")
    bk.clock.now = datetime(2026, 12, 15, tzinfo=UTC)
    await _rerated(bk, cid, "v8", datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    billed = await bk.db.read(lambda conn: conn.exec_driver_sql(
        "SELECT to_char(occurred_at, 'MM-DD'), period FROM charges WHERE customer_id = %s ORDER BY occurred_at",
        (cid,)))
    assert billed.all() == [("10-10", "2026-10"), ("10-20", "2026-11"), ("11-10", "2026-11"), ("11-10", "2026-11"),
                            ("11-20", "2026-12"), ("12-10", "2026-12")]

    for label, rows in (("2026-10", 1), ("2026-11", 2), ("2026-12", 1)):
        period = period_named(label, Cycle())
        found = await bk.db.read(lambda conn, period=period: store.rerated_charges(conn, cid, period))
        reference = await bk.db.read(lambda conn, period=period: conn.exec_driver_sql(_CHARGE_DRIVEN, (
            cid, period.label, period.start, period.end, period.label)))
        assert [(model, version, {t: a for _, t, a in moved}) for model, _, version, moved, *_ in found] == [
            ("model-a", "v8", {"input": 8_000_000, "request": 10_000_000})] * rows, label
        assert found == tuple((model, tuple(lines), version, tuple((m, t, int(a)) for m, t, a in moved), rules,
                               charge) for model, lines, version, moved, rules, charge in reference), label


async def test_what_a_close_counts_as_re_rated_reads_a_charges_adjustments_once(bk: BillingKit):
    """November 10th's call (1,000 model-a input tokens, $10/M) re-rated three times: to v8 ($8/M
    from the 1st) on the 20th, v6 ($6/M from the 2nd) on the 21st, v7 ($7/M from the 3rd) on the
    22nd; the last counts: v7, input 1,000 x $7/M = $0.007, 7,000,000 atomic units, the call
    10,000,000 (another customer's five re-rated after, on the 23rd, to v7: newer adjustments).
    Its three adjustments are read once each: 3 rows of charge_adjustments. Before, each of the
    period's adjustments probed for its charge's last (max(id)): 3 + 3 probes (6 here, a row each;
    by the primary key each probe reads the charge's 3: 3 + 3 x 3 = 12), a read growing with the
    square of a charge's re-rates (30,000 charges re-rated 3 times each: 663,736 buffers, 282 ms,
    where testing each charge read 213,332, 167 ms)."""
    cid = "hist-rerated-thrice"
    bk.clock.now = datetime(2026, 11, 5, tzinfo=UTC)
    await bk.customer(cid, billing_mode="postpaid")
    bk.clock.now = datetime(2026, 11, 10, tzinfo=UTC)
    await bk.event(cid, "model-a", 1000, 0)
    for day, (version, price) in zip((20, 21, 22), (("v8", "8.00"), ("v6", "6.00"), ("v7", "7.00")), strict=True):
        await _a_in_priced(bk, version, f"2026-11-0{day - 19}T00:00:00Z", price)  # in force on the 10th
        bk.clock.now = datetime(2026, 11, day, tzinfo=UTC)
        await _rerated(bk, cid, version, datetime(2026, 11, 10, tzinfo=UTC), datetime(2026, 11, 11, tzinfo=UTC))
    await bk.customer("hist-rerated-other", billing_mode="postpaid")
    bk.clock.now = datetime(2026, 11, 10, tzinfo=UTC)
    for _ in range(5):
        await bk.event("hist-rerated-other", "model-a", 1000, 0)
    bk.clock.now = datetime(2026, 11, 23, tzinfo=UTC)
    await _rerated(bk, "hist-rerated-other", "v7", datetime(2026, 11, 10, tzinfo=UTC),
                   datetime(2026, 11, 11, tzinfo=UTC))
    november = period_named("2026-11", Cycle())

    for plan in (explained, generic):
        found, spy = await plan(bk.db, lambda conn: store.rerated_charges(conn, cid, november),
                                analyze=("charges", "charge_adjustments"))
        assert [(model, version, {t: a for _, t, a in moved}) for model, _, version, moved, *_ in found] == [
            ("model-a", "v7", {"input": 7_000_000, "request": 10_000_000})], plan
        assert rows_read(spy.plans, "charge_adjustments") == 3, plan  # 6 before
        assert rows_read(spy.plans, "charges") == 1, plan

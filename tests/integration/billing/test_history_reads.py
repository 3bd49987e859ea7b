"""Reads made under a lane's writer lock read the period they are about, not the customer's history
(tests/integration/plan_reads.py)."""
from __future__ import annotations

from datetime import UTC, datetime

from billing_kit import BillingKit

from tests.integration.plan_reads import explained, rows_read, scans
from wallets import chart, store
from wallets.periods import Cycle, period_named


async def test_what_a_rerate_finds_left_in_a_periods_charges_reads_only_that_periods_charges(bk: BillingKit):
    """Each call: 1,000 model-a input tokens at $10/M ($0.01) and the call itself ($0.01): $0.02,
    paid from the top-up's lot. Five calls in September, one in October, five in November (each
    billed in the period of its own time, closed at the next): what October's charges left is the
    one October call's $0.02, all in the lot; the other ten are neither counted nor read (before,
    paid_left read every charge of the customer: 12 rows, 10 of them of other periods)."""
    bk.clock.now = datetime(2026, 9, 5, tzinfo=UTC)
    cid = await bk.customer("hist-paid-left")
    await bk.top_up(cid, "10.00")
    for day, calls in ((datetime(2026, 9, 10, tzinfo=UTC), 5), (datetime(2026, 10, 10, tzinfo=UTC), 1),
                       (datetime(2026, 11, 10, tzinfo=UTC), 5)):
        if day.month > 9:
            await bk.close(day.replace(day=1, hour=2))
        bk.clock.now = day
        for _ in range(calls):
            await bk.event(cid, "model-a", 1000, 0)
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
    and amount (not re-rated). Whether a re-rate moved a charge is one test of its adjustments a row:
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
    assert found == {"a-in": ((charge_id, paid, 20_000_000, 1000, 10_000_000),),
                     "call": ((charge_id, paid, 20_000_000, 1, 10_000_000),)}
    assert scans(spy.plans, "charge_adjustments") == 1

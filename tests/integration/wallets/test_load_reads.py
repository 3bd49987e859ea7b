"""A wallet batch's load, under its lane's writer lock, reads its own customers' rows, not the
lane's (tests/integration/plan_reads.py: counted from the plan, never timed)."""
from __future__ import annotations

from wallet_kit import Kit, usd

from ledger.lanes import lane_of
from tests.integration.plan_reads import explained, generic_load, rows_read
from wallets import chart, store


async def test_a_batch_loads_its_customers_lots_not_the_lanes(kit: Kit):
    """Two customers of one lane: `mine` topped up once ($10.00), the other five times. Loading
    `mine` finds its one lot with its $10.00 and reads that lot alone; before, no index led by the
    customer held every lot (`lots_customer_live` holds the unexpired ones, which the load's OR with
    the lots named and those held from cannot use), so it read the lane's 6 (with sequential scans
    off; a scan of the whole partition with them on: 31,952 lots for a customer's 2)."""
    lanes = await kit.service.engine.lane_count()
    mine = await kit.customer("mine")
    theirs = next(name for name in (f"theirs{i}" for i in range(1000))
                  if lane_of(f"{name}-{kit.tag}", lanes) == lane_of(mine, lanes))
    theirs = await kit.customer(theirs)
    await kit.top_up(mine, "10.00")
    for _ in range(5):
        await kit.top_up(theirs, "1.00")

    loaded, spy = await explained(kit.db, lambda conn: store.load(conn, [mine], now=kit.clock.now),
                                  analyze=("lots", "account_balances"))

    assert [lot.balance for lot in loaded.wallets[mine].lots.values()] == [usd("10.00")]
    assert rows_read(spy.plans, "lots") == 1


async def test_a_batch_does_not_read_its_customers_spent_lots(kit: Kit):
    """`spender` topped up $1.00 five times and a usage event of 5,000 input tokens ($1.00 per
    1,000: $5.00) spent all five; then it topped up $10.00. Loading it finds the $10.00 lot alone
    and reads that lot alone, and one balance for it (with the customer's reserved and receivable
    balances: 3). Before, every unexpired lot of the customer was read with its balance to find
    the ones with money (lots_customer): 6 lots and 8 balances (at 20,000 spent lots: 20,001 lots
    read, 18.7-64 ms a load; README, Performance)."""
    spender = await kit.customer("spender")
    for _ in range(5):
        await kit.top_up(spender, "1.00")
    await kit.usage_event(spender, "spend-all", input_tokens=5_000)
    await kit.top_up(spender, "10.00")

    loaded, spy = await explained(kit.db, lambda conn: store.load(conn, [spender], now=kit.clock.now),
                                  analyze=("lots", "account_balances"))

    assert [lot.balance for lot in loaded.wallets[spender].lots.values()] == [usd("10.00")]
    assert rows_read(spy.plans, "lots") == 1
    assert rows_read(spy.plans, "account_balances") == 3


async def test_a_close_reads_only_the_top_ups_that_paid_the_receivable(kit: Kit):
    """What a prepaid customer's top-ups paid off its receivable and no invoice records yet
    (store.load_unapplied, each close's and upcoming invoice's read). `payer` topped up $1.00 five
    times, a usage event of 5,000 input tokens ($1.00 per 1,000: $5.00) spent all five, another of
    2,000 ($2.00) went to the receivable, and a $3.00 top-up paid that $2.00 off first ($1.00 made
    its lot): $2.00 unapplied, under that top-up's `topup:<lot>`, as worked by hand. It reads that
    one lot; before, every top-up lot of the customer with a postings probe each, to find the one
    whose entry credits the receivable: 36 lots read here (the lane's; 20,000 spent top-ups: 141,427
    buffers, 71-147 ms)."""
    payer = await kit.customer("payer")
    for _ in range(5):
        await kit.top_up(payer, "1.00")
    await kit.usage_event(payer, "spend-all", input_tokens=5_000)
    await kit.usage_event(payer, "on-credit", input_tokens=2_000)
    paying = await kit.top_up(payer, "3.00")

    found, spy = await explained(kit.db, lambda conn: store.load_unapplied(conn, [payer]), analyze=("lots",))

    assert [(x.reference, x.amount) for x in found[payer]] == [(f"topup:{paying.grant.id}", usd("2.00"))]
    assert rows_read(spy.plans, "lots") == 1


async def test_a_settle_and_a_named_lot_probe_their_lots_not_the_customers_spent_ones(kit: Kit):
    """`spender` topped up $1.00 five times, spent them all (5,000 input tokens at $1.00 per
    1,000), topped up $10.00 and reserved $2.00 from it. Loading it for a settle of that
    reservation and an expiry naming the first (spent) $1.00 lot finds the live lot ($10.00 - $2.00
    held = $8.00) and the named one ($0.00), and reads the live lot by its index and each lot the
    batch names by its code: 1 + 2 probes = 3 lots, in the plan its batch runs (generic). Before,
    that plan read 8: it looked for the named lot and the hold's among the customer's lots by its
    index (a settle of a customer with 20,000 spent lots read them all)."""
    spender = await kit.customer("spender")
    spent = [await kit.top_up(spender, "1.00") for _ in range(5)]
    await kit.usage_event(spender, "spend-all", input_tokens=5_000)
    live = await kit.top_up(spender, "10.00")
    reserved = await kit.reserve(spender, "r-1", amount="2.00")
    named = chart.lot_account(spender, spent[0].grant.id)

    lane = lane_of(spender, await kit.service.engine.lane_count())
    loaded, plans = await generic_load(kit.db, lane, [spender], reservation_ids=[reserved.reservation.id],
                                       lot_codes=[named], now=kit.clock.now, analyze=("lots", "account_balances"))

    lots = loaded.wallets[spender].lots
    assert {code: lot.balance for code, lot in lots.items()} == {
        chart.lot_account(spender, live.grant.id): usd("8.00"), named: usd("0.00")}
    assert list(loaded.wallets[spender].reservations) == [reserved.reservation.id]
    assert rows_read(plans, "lots") == 3

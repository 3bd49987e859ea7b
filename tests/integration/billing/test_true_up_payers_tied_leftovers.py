"""What verify ties a true-up's payer rows to, where the earlier checks left them untied: the rows
of a re-rate that posted no entry (its lines netted 0), kept with its true-ups' corrections
(`rerate_true_ups.payer_rows`, migration 0091); and the rows of two payers of two charges swapped
between the charges (`beyond_payer_rows` is kept per account, not per charge).

By hand (test_close_true_up_funding): book `vol`, $20/M to 100,000 output tokens, $10/M beyond. A
$1.20 top-up pays the 5th's 60,000 tokens ($1.20), a $5.00 grant the 20th's 70,000 ($0.80 + $0.30 =
$1.10). The close (130,000 x $10/M = $1.30, -$1.00) gives $0.60 of the 5th back to the top-up and
$0.40 of the 20th to the grant."""

from __future__ import annotations

from datetime import UTC, datetime

from billing_kit import BillingKit
from sqlalchemy import text
from test_close_true_up_funding import _damaged, _lot, _no_entry_rerate
from test_rerate_volume_true_up import CLOSED, live_lots, verified, vol_customer

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
    top_up, _, rerate_id = await _no_entry_rerate(bk, cid)
    fifth, twentieth = sorted(charge for charge, _, _ in await _rows(bk, cid, rerate_id))
    assert await _rows(bk, cid, rerate_id) == [(fifth, None, 60 * CENT), (twentieth, None, 40 * CENT)]
    await verified(bk)
    params = {"r": rerate_id, "c": fifth, "t": chart.lot_account(cid, top_up)}
    damaged = await _damaged(bk, params, "UPDATE true_up_payers SET payer = :t WHERE rerate_id = :r AND charge_id = :c")
    assert damaged[:1] == ["credit_notes"] and any(rerate_id in p and params["t"] in p for p in damaged), damaged


async def test_rows_of_two_payers_swapped_between_two_charges_are_named(fresh_db) -> None:
    """Guard. A $5.00 top-up T (November 1st); on the 5th a $0.50 reservation held of T, then a $1.00
    grant G, then the reservation settled at 60,000 tokens ($1.20: T's $0.50 hold, $0.70 of G,
    consumed before top-ups); on the 20th 70,000 tokens ($0.80 + $0.30 = $1.10: G's $0.30, T's
    $0.80). The close (130,000 x $10/M = $1.30, -$1.00) gives each charge's payers the last consumed
    (top-ups after grants) first, up to what each paid: of the 5th's $1.20 - $0.60 = $0.60, T $0.50
    and G $0.10; of the 20th's $1.10 - $0.70 = $0.40, T $0.40. $0.05 swapped between the charges
    keeps each charge's sum and each payer's sum (what the close's entry posted it, `beyond_payer_rows`
    being per account), either way: T's 5th less and 20th more with G's the opposite leaves G -$0.05
    of the 20th; T's 5th more leaves T $0.55 of the 5th it paid $0.50 of. The bounds by what each
    paid name each: the close gives every charge's payers in one order, so one of the two is at
    nothing or at what it paid on a charge and the swap takes it past that."""
    bk = BillingKit(fresh_db)
    cid = "swapped-between-charges"
    await vol_customer(bk, cid)
    top_up = await _lot(bk, cid, "topup", "5.00")
    bk.clock.now = datetime(2026, 11, 5, 12, tzinfo=UTC)
    held = await bk.reserve(cid, "model-v", "0.50")
    grant = await _lot(bk, cid, "grant", "1.00")
    await bk.settle(cid, held, 0, 60_000)
    bk.clock.now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 70_000)
    await bk.close(CLOSED)
    t, g = chart.lot_account(cid, top_up), chart.lot_account(cid, grant)
    found = await bk.db.read(lambda conn: conn.execute(text(
        "SELECT charge_id, payer, units FROM true_up_payers WHERE customer_id = :c ORDER BY charge_id, payer"),
        {"c": cid}))
    rows = {(charge, payer): int(units) for charge, payer, units in found}
    fifth, twentieth = sorted({charge for charge, _ in rows})
    assert rows == {(fifth, t): 50 * CENT, (fifth, g): 10 * CENT, (twentieth, t): 40 * CENT}, rows
    assert await live_lots(bk, cid) == {top_up: ("topup", 460 * CENT), grant: ("grant", 10 * CENT)}
    await verified(bk)
    def moved(i: int) -> str:  # row i of the swap added to the close's rows (:charge{i}, :payer{i}, :units{i})
        return f"""
            INSERT INTO true_up_payers (lane, customer_id, period, rerate_id, charge_id, payer, units, created_at,
                                        written)
            SELECT lane, customer_id, period, NULL, :charge{i}, :payer{i}, :units{i}, created_at, written
              FROM true_up_payers WHERE customer_id = :c AND rerate_id IS NULL LIMIT 1
                ON CONFLICT (lane, customer_id, period, rerate_id, charge_id, payer)
                DO UPDATE SET units = true_up_payers.units + EXCLUDED.units"""

    for sign, named in ((-1, f"{g} got -50000000 back of charge {twentieth}"),
                        (1, f"{t} got 550000000 back of charge {fifth}")):
        d = sign * 5 * CENT
        swap = [(fifth, t, d), (twentieth, t, -d), (fifth, g, -d), (twentieth, g, d)]
        params = {"c": cid, **{f"{key}{i}": value for i, row in enumerate(swap)
                               for key, value in zip(("charge", "payer", "units"), row, strict=True)}}
        damaged = await _damaged(bk, params, *(moved(i) for i in range(len(swap))))
        assert damaged[:1] == ["credit_notes"] and any(named in p for p in damaged), (sign, damaged)


async def test_a_re_rate_s_payer_rows_record_altered_by_raw_sql_is_named(fresh_db) -> None:
    """Guard (the record itself: rerate_true_ups.payer_rows, not the rows). The same $30/M and $10/M
    fix posts no entry and keeps [5th, none, $0.60], [20th, none, $0.40]. The record's 5th given by
    raw SQL to the top-up (the rows as written: none of the 5th's payers got its $0.60): verify ties
    the record to the rows, charge by charge and payer by payer, and names both sides: none of the
    payers got 600,000,000 of the 5th where the record keeps 0, the top-up 0 where it keeps
    600,000,000. (The record and the rows altered together alike are not seen: no hash covers them.)"""
    bk = BillingKit(fresh_db)
    cid = "no-entry-record-tampered"
    top_up, _, rerate_id = await _no_entry_rerate(bk, cid)
    fifth, _ = sorted(charge for charge, _, _ in await _rows(bk, cid, rerate_id))
    params = {"r": rerate_id, "c": fifth, "t": chart.lot_account(cid, top_up)}
    damaged = await _damaged(bk, params, """
        UPDATE rerate_true_ups SET payer_rows = (
               SELECT jsonb_agg(CASE WHEN (e ->> 0)::bigint = :c
                                     THEN jsonb_build_array(e -> 0, CAST(:t AS text), e -> 2) ELSE e END ORDER BY n)
                 FROM jsonb_array_elements(payer_rows) WITH ORDINALITY x(e, n))
         WHERE rerate_id = :r""")
    said = f"true-up record of re-rate {rerate_id} of customer {cid}"
    assert damaged[:1] == ["credit_notes"], damaged
    assert sorted(p.split(": ", 1)[1] for p in damaged if p.startswith(said)) == [
        f"its payers' rows give {params['t']} 0 of charge {fifth}, it posted no entry and kept 600000000",
        f"its payers' rows give none of its payers 600000000 of charge {fifth}, it posted no entry and kept 0"], damaged

"""A volume-tiered rule whose units a contract price rated in part: the period's charges count
those units toward the rule's tier (its counters), and so does every path that counts the rule's
volume again: the close's true-up, the upcoming invoice, a re-rate after the close, and verify.
The contract's units are the customer's own price (never trued up themselves); they only move the
tier the book-priced units reach.

Book `shared` (v1, from January): model-* output volume-tiered, $20/M to 1,000,000 tokens, $10/M
beyond. Contract prices (the customer's overrides from November 1st, 09:00): model-a output $5/M
(`a-out`), in one test model-c output $4/M (`c-out`) too. All figures below are worked by hand."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billing_kit import BillingKit
from sqlalchemy import text

from ledger.audit import verify
from wallets import rerating
from wallets.audit import WALLET_CHECKS

CENT = 10_000_000  # atomic units (9 decimals) in a cent
NOV_1, DEC_1 = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
CLOSED = datetime(2026, 12, 1, 1, tzinfo=UTC)  # November's close: 01:00 on December 1st


def shared(version: str, effective_from: str, low: str, high: str) -> dict[str, Any]:
    return {"id": "shared", "version": version, "currency": "USD", "effective_from": effective_from, "rules": [
        {"id": "v-out", "model": "model-*", "token_type": "output", "tier_mode": "volume",
         "tiers": [{"up_to": 1_000_000, "price": low}, {"up_to": None, "price": high}]},
    ]}


def contract(model: str, price: str) -> dict[str, Any]:
    return {"id": f"{model[-1]}-out", "model": model, "token_type": "output", "price": price}


async def _customer(bk: BillingKit, cid: str, billing_mode: str = "postpaid",
                    contracts: tuple[dict[str, Any], ...] = (contract("model-a", "5"),)) -> str:
    await bk.add_book(shared("v1", "2026-01-01T00:00:00Z", "20", "10"))
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    await bk.customer(cid, billing_mode=billing_mode, book="shared")
    await bk.service.add_overrides(cid, {"contract_prices": list(contracts)}, bk.clock.now)
    return cid


async def _usage(bk: BillingKit, cid: str, calls: list[tuple[Any, ...]]) -> None:
    """Each (day, model, output tokens) a usage event at noon; (day, "grant"|"topup", amount) money."""
    for day, what, amount in calls:
        bk.clock.now = datetime(2026, 11, day, 12, tzinfo=UTC)
        if what == "grant":
            await bk.grant(cid, amount)
        elif what == "topup":
            await bk.top_up(cid, amount)
        else:
            await bk.event(cid, what, 0, amount)


def _true_ups(invoice: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(ln["model"], ln["quantity"], ln["unit_price"], ln["amount"]) for ln in invoice["lines"]
            if ln["kind"] == "volume_true_up"]


async def _verified(bk: BillingKit) -> None:
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]


async def _charges(bk: BillingKit, cid: str) -> list[int]:
    rows = await bk.db.read(lambda conn: conn.execute(text(
        "SELECT id FROM charges WHERE customer_id = :c ORDER BY occurred_at, id"), {"c": cid}))
    return list(rows.scalars())


async def _lots(bk: BillingKit, cid: str) -> dict[str, int]:
    return {g.kind: g.remaining for g in (await bk.service.wallet(cid)).grants}


async def _closed_then_rerated_to_v2(bk: BillingKit) -> list[tuple[str, str, str]]:
    """November closed, then on December 2nd re-rated to v2 (from November 1st: $16/M to 1,000,000,
    $8/M beyond), which moves -$0.60: the re-rate's lines (token type, old amount, new amount)."""
    await bk.close(CLOSED)
    await bk.add_book(shared("v2", "2026-11-01T00:00:00Z", "16", "8"))
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    done = await rerating.apply(bk.db, bk.service.engine, rerating.RerateSpec("shared", "v2", NOV_1, DEC_1), None)
    assert done["errors"] == [] and done["delta"] == "-0.60", done
    return [(ln["token_type"], ln["old_amount"], ln["new_amount"]) for ln in done["customers"][0]["lines"]]


async def test_the_close_reaches_the_volume_tier_the_period_s_charges_reached_with_contract_priced_units(
        bk: BillingKit) -> None:
    """On the 5th model-a writes 1,200,000 output tokens: 1,200,000 x $5/M = $6.00 at the contract,
    and the rule's period counter becomes 1,200,000 (the contract's units count). On the 20th
    model-b writes 300,000, rated graduated on from that counter, past the first tier: 300,000 x
    $10/M = $3.00. The close counts the contract's units too: 1,500,000 reach the $10/M tier,
    model-b's 300,000 x $10/M = $3.00 less the $3.00 charged: nothing to true up, $9.00 in all.
    Before, it counted model-b's 300,000 alone: $20/M, a true-up of +$3.00 and $12.00. The upcoming
    invoice on November 30th shows what the close then finalizes: the same lines, $9.00."""
    cid = await _customer(bk, "contract-volume")
    await _usage(bk, cid, [(5, "model-a", 1_200_000), (20, "model-b", 300_000)])
    bk.clock.now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    upcoming = await bk.upcoming(cid)
    assert (_true_ups(upcoming), upcoming["total"]) == ([], "9.00")
    await bk.close(CLOSED)
    [invoice] = await bk.invoices(cid)
    assert (_true_ups(invoice), invoice["total"], invoice["amount_due"]) == ([], "9.00", "9.00")
    assert [(ln["kind"], ln["model"], ln["amount"]) for ln in invoice["lines"]] == [
        (ln["kind"], ln["model"], ln["amount"]) for ln in upcoming["lines"]]
    await _verified(bk)


async def test_contract_units_after_the_book_priced_ones_bring_their_tier_down_at_the_close(
        bk: BillingKit) -> None:
    """Contract units after the book-priced ones: model-b's 300,000 on the 2nd, from a counter of 0:
    300,000 x $20/M = $6.00; model-a's 1,200,000 on the 5th at the contract, $6.00. The period's
    units reach 1,500,000, the $10/M tier: model-b's 300,000 x $10/M = $3.00 less $6.00, a
    true-up of -$3.00 (model-*, 300,000 at 10), $9.00 in all, as the order of the first test. Before:
    300,000 alone at $20/M, nothing trued up, $12.00. The upcoming invoice shows the same -$3.00."""
    cid = await _customer(bk, "contract-volume-first")
    await _usage(bk, cid, [(2, "model-b", 300_000), (5, "model-a", 1_200_000)])
    bk.clock.now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    upcoming = await bk.upcoming(cid)
    assert (_true_ups(upcoming), upcoming["total"]) == ([("model-*", 300_000, "10", "-3.00")], "9.00")
    await bk.close(CLOSED)
    [invoice] = await bk.invoices(cid)
    assert (_true_ups(invoice), invoice["total"], invoice["amount_due"]) == (
        [("model-*", 300_000, "10", "-3.00")], "9.00", "9.00")
    assert [(ln["kind"], ln["model"], ln["amount"]) for ln in invoice["lines"]] == [
        (ln["kind"], ln["model"], ln["amount"]) for ln in upcoming["lines"]]
    await _verified(bk)


async def test_prepaid_the_close_gives_the_book_priced_charge_s_overcharge_to_its_own_payer(
        bk: BillingKit) -> None:
    """Prepaid. A $6.00 grant (the 1st) pays model-b's 300,000 on the 2nd ($6.00 at $20/M: the grant
    is spent); a $10.00 top-up (the 3rd) pays model-a's 1,200,000 on the 5th at the contract ($6.00:
    $4.00 left). The close: 1,500,000 reach $10/M, model-b's 300,000 x $10/M = $3.00 less $6.00 =
    -$3.00, all the 2nd's overcharge, back to the grant that paid it: grant $3.00, top-up $4.00 (the
    contract's charge was not overcharged: nothing of it). The close records the 2nd's part, 300
    cents, and its payer, the grant. Before: nothing trued up, grant 0, top-up $4.00."""
    cid = await _customer(bk, "contract-volume-prepaid", "prepaid")
    await _usage(bk, cid, [(1, "grant", "6.00"), (2, "model-b", 300_000), (3, "topup", "10.00"),
                           (5, "model-a", 1_200_000)])
    await bk.close(CLOSED)
    [invoice] = await bk.invoices(cid)
    assert (_true_ups(invoice), invoice["total"]) == ([("model-*", 300_000, "10", "-3.00")], "9.00")
    assert await _lots(bk, cid) == {"grant": 300 * CENT, "topup": 400 * CENT}
    second, _ = await _charges(bk, cid)
    rows = await bk.db.read(lambda conn: conn.execute(text(
        "SELECT charge_id, units FROM true_up_charges WHERE customer_id = :c AND rerate_id IS NULL"), {"c": cid}))
    assert [(charge, int(units)) for charge, units in rows] == [(second, 300 * CENT)]
    payers = await bk.db.read(lambda conn: conn.execute(text(
        "SELECT charge_id, units FROM true_up_payers WHERE customer_id = :c AND rerate_id IS NULL"), {"c": cid}))
    assert [(charge, int(units)) for charge, units in payers] == [(second, 300 * CENT)]
    await _verified(bk)


async def test_the_units_of_two_contract_models_together_reach_the_tier(bk: BillingKit) -> None:
    """Contracts for model-a ($5/M) and model-c ($4/M). model-b's 300,000 on the 2nd at $20/M,
    $6.00; model-a's 600,000 on the 3rd, $3.00; model-c's 500,000 on the 4th, $2.00. Neither
    contract alone lifts the period past 1,000,000 with model-b's (900,000 and 800,000); together
    1,400,000 reach $10/M: model-b's 300,000 x $10/M = $3.00 less $6.00 = -$3.00, $8.00 in all.
    Before: nothing trued up, $11.00."""
    cid = await _customer(bk, "contract-volume-two", contracts=(contract("model-a", "5"), contract("model-c", "4")))
    await _usage(bk, cid, [(2, "model-b", 300_000), (3, "model-a", 600_000), (4, "model-c", 500_000)])
    await bk.close(CLOSED)
    [invoice] = await bk.invoices(cid)
    assert (_true_ups(invoice), invoice["total"]) == ([("model-*", 300_000, "10", "-3.00")], "8.00")
    await _verified(bk)


async def test_the_units_of_a_contract_that_ended_mid_period_count_toward_the_tier(bk: BillingKit) -> None:
    """The contract (model-a $5/M) ends on November 15th: the overrides' next version, from then,
    has no contract price. model-a's 1,200,000 on the 5th at the contract, $6.00 (counter
    1,200,000); model-a's 300,000 on the 20th at the book's price, graduated on from the counter:
    $10/M, $3.00. The close: 1,500,000 reach $10/M, the 20th's 300,000 x $10/M = $3.00 less $3.00:
    nothing to true up, $9.00. Before: the 20th's 300,000 alone at $20/M, +$3.00, $12.00."""
    cid = await _customer(bk, "contract-volume-ended")
    await bk.service.add_overrides(cid, {}, datetime(2026, 11, 15, tzinfo=UTC))
    await _usage(bk, cid, [(5, "model-a", 1_200_000), (20, "model-a", 300_000)])
    await bk.close(CLOSED)
    [invoice] = await bk.invoices(cid)
    assert [(ln["kind"], ln["override_id"], ln["quantity"], ln["amount"]) for ln in invoice["lines"]
            if ln["kind"] == "usage"] == [("usage", "a-out", 1_200_000, "6.00"), ("usage", None, 300_000, "3.00")]
    assert (_true_ups(invoice), invoice["total"]) == ([], "9.00")
    await _verified(bk)


async def test_a_rerate_after_the_close_counts_the_contract_units_toward_the_tier(bk: BillingKit) -> None:
    """The first test's period, closed at $9.00 with nothing trued up. v2 (from November 1st):
    $16/M to 1,000,000, $8/M beyond; November re-rated to it on December 2nd. model-a's 1,200,000
    stay at the contract, $6.00; model-b's 300,000 on from the counter's 1,200,000: $8/M, $2.40
    (-$0.60). The true-up: 1,500,000 reach v2's $8/M, 300,000 x $8/M = $2.40 less $2.40: nothing,
    as the close's. The re-rate moves -$0.60, November ends at $8.40. Before, the re-rate counted
    model-b's 300,000 alone: $16/M, $4.80 less $2.40, a true-up of +$2.40, +$1.80 in all."""
    cid = await _customer(bk, "contract-volume-rerate")
    await _usage(bk, cid, [(5, "model-a", 1_200_000), (20, "model-b", 300_000)])
    assert await _closed_then_rerated_to_v2(bk) == [
        ("output", "3.00", "2.40")]
    assert (await bk.service.wallet(cid)).receivable == 840 * CENT
    await _verified(bk)


async def test_a_rerate_after_the_close_corrects_the_true_up_and_its_payer_at_the_tier_the_contract_reached(
        bk: BillingKit) -> None:
    """The prepaid period of the prepaid test: the close's -$3.00 went to the grant ($3.00; the top-up
    $4.00). v2 (from November 1st): $16/M to 1,000,000, $8/M beyond; November re-rated to it on
    December 2nd. model-b's 300,000 on the 2nd, from a counter of 0: $16/M, $4.80 (-$1.20); model-a's
    1,200,000 stay at the contract, $6.00. The true-up: 1,500,000 reach v2's $8/M, 300,000 x $8/M =
    $2.40 less $4.80 = -$2.40 where -$3.00 stands: +$0.60. The re-rate moves -$0.60 (November at v2,
    $8.40). The 2nd's overcharge at $8/M is $2.40, less the $3.00 the close gave it: -$0.60 taken back
    from the grant that got it, beside the 2nd's own -$1.20 back to it: grant $3.60, top-up $4.00.
    Before, the re-rate counted model-b's 300,000 alone: $16/M, $4.80 less $4.80, 0 where -$3.00
    stands, +$3.00: +$1.80 in all, and the grant $1.20."""
    cid = await _customer(bk, "contract-volume-rerate-prepaid", "prepaid")
    await _usage(bk, cid, [(1, "grant", "6.00"), (2, "model-b", 300_000), (3, "topup", "10.00"),
                           (5, "model-a", 1_200_000)])
    assert await _closed_then_rerated_to_v2(bk) == [
        ("volume_true_up", "-3.00", "-2.40"), ("output", "6.00", "4.80")]
    assert await _lots(bk, cid) == {"grant": 360 * CENT, "topup": 400 * CENT}
    await _verified(bk)


async def test_a_rerate_counts_contract_units_where_they_were_charged_as_the_close_does(bk: BillingKit) -> None:
    """v2 (from November 15th) tiers the rule as v1. model-a's 1,200,000 on the 5th at the contract
    under v1 ($6.00); model-b's 100,000 on the 6th under v1 on from 1,200,000 ($10/M, $1.00), its
    300,000 on the 20th under v2 on from 1,300,000 ($3.00). The close: 1,600,000 reach $10/M, nothing
    to true up, $10.00. On December 2nd, v1b (from November 1st) prices the rule flat at $2/M and
    November 1st-15th is re-rated to it: the contract's charge stays $6.00 (no correction, so it stands
    under v1 as charged, where the close counted it), model-b's 100,000 $0.20 (-$0.80, counting for no
    tier now). The true-up: the contract's 1,200,000 and v2's 300,000 reach $10/M, v2's 300,000 x
    $10/M = $3.00 less $3.00: nothing, -$0.80 in all (November $9.20), as the same re-rate before the
    close leaves it. Before, the re-rate counted the contract's units at v1b (flat: no tier), v2's
    300,000 alone at $20/M, +$3.00: +$2.20."""
    cid = await _customer(bk, "contract-volume-as-charged")
    await bk.add_book(shared("v2", "2026-11-15T00:00:00Z", "20", "10"))
    await _usage(bk, cid, [(5, "model-a", 1_200_000), (6, "model-b", 100_000), (20, "model-b", 300_000)])
    await bk.close(CLOSED)
    [invoice] = await bk.invoices(cid)
    assert (_true_ups(invoice), invoice["total"]) == ([], "10.00")
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    await bk.add_book({"id": "shared", "version": "v1b", "currency": "USD", "effective_from": "2026-11-01T00:00:00Z",
                       "rules": [{"id": "v-out", "model": "model-*", "token_type": "output", "price": "2"}]})
    done = await rerating.apply(bk.db, bk.service.engine,
                                rerating.RerateSpec("shared", "v1b", NOV_1, datetime(2026, 11, 15, tzinfo=UTC)), None)
    assert done["errors"] == [] and done["delta"] == "-0.80", done
    assert (await bk.service.wallet(cid)).receivable == 920 * CENT
    await _verified(bk)

"""Graduated tiers crossing their boundary mid-month, and a volume tier trued up at close,
against sums written by hand."""
from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from billing_kit import BillingKit

from ledger.audit import verify
from wallets.audit import WALLET_CHECKS

TIERED = {"id": "tiered", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "g-in", "model": "model-g", "token_type": "input", "tier_mode": "graduated",
     "tiers": [{"up_to": 1_000_000, "price": "10"}, {"up_to": None, "price": "5"}]},
    {"id": "v-out", "model": "model-v", "token_type": "output", "tier_mode": "volume",
     "tiers": [{"up_to": 1_000_000, "price": "20"}, {"up_to": None, "price": "10"}]},
]}


def at(day: int) -> datetime:
    return datetime(2026, 11, day, 12, tzinfo=UTC)


@pytest.mark.parametrize("mode", ["postpaid", "prepaid"])
async def test_graduated_tiers_and_the_volume_true_up_match_a_hand_sum(bk: BillingKit, mode: str) -> None:
    await bk.add_book(TIERED)
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    cid = await bk.customer(f"tiers-{mode}", billing_mode=mode, book="tiered")
    if mode == "prepaid":
        await bk.top_up(cid, "50.00")
    for day, model, tokens in [(5, "model-g", 600_000), (5, "model-v", 600_000),
                               (20, "model-g", 700_000), (20, "model-v", 700_000)]:
        bk.clock.now = at(day)
        await bk.event(cid, model, tokens if model == "model-g" else 0, tokens if model == "model-v" else 0)
    await bk.close(datetime(2026, 12, 1, 1, tzinfo=UTC))
    [invoice] = await bk.invoices(cid)
    lines = [(ln["kind"], ln["model"], ln["quantity"], ln["unit_price"], ln["tier"], ln["amount"])
             for ln in invoice["lines"]]
    # By hand. model-g input, graduated: 600,000 on the 5th at $10/M = $6.00; on the 20th the
    # first 400,000 at $10/M = $4.00 and 300,000 past the first million at $5/M = $1.50.
    # model-v output, rated graduated during the month: 1,000,000 at $20/M = $20.00 and 300,000 at
    # $10/M = $3.00; at close, volume: all 1,300,000 at the tier reached, $10/M = $13.00, so the
    # true-up is $13.00 - $23.00 = -$10.00.
    assert lines == [
        ("usage", "model-g", 1_000_000, "10", 0, "10.00"),
        ("usage", "model-g", 300_000, "5", 1, "1.50"),
        ("usage", "model-v", 1_000_000, "20", 0, "20.00"),
        ("usage", "model-v", 300_000, "10", 1, "3.00"),
        ("volume_true_up", "model-v", 1_300_000, "10", 1, "-10.00"),
    ]
    assert invoice["subtotals"]["usage"] == "34.50" and invoice["subtotals"]["true_ups"] == "-10.00"
    assert invoice["total"] == "24.50"
    if mode == "postpaid":
        assert invoice["charged_to_account"] == "24.50" and invoice["amount_due"] == "24.50"
        assert invoice["closing_balance"]["receivable"] == "24.50"
    else:  # paid from the top-up; the $10.00 back is paid credit again
        assert invoice["credits_applied"]["paid"] == "24.50" and invoice["amount_due"] == "0.00"
        assert invoice["closing_balance"] == {"credits": "25.50", "reserved": "0.00", "receivable": "0.00"}
        wallet = await bk.service.wallet(cid)
        assert wallet.available == 25_500_000_000
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]


async def test_a_true_up_goes_back_to_the_top_up_that_paid_the_usage_before_an_older_debt(bk: BillingKit) -> None:
    """Money a volume true-up gives back goes where the usage's money came from, first the lots that
    paid the rule's charges, then what the customer owes (a re-rate's rule). By hand: November
    100,000 model-g input tokens at $10/M = $1.00, invoiced; December (paid from a $30 top-up,
    credit for a postpaid customer) 1,300,000 model-v output tokens rated $23.00, trued up to
    $13.00: all $10.00 back goes to the top-up ($7.00 + $10.00 = $17.00), November's $1.00 stays
    owed. Before, $1.00 of it paid November and $9.00 became a paid credit lot."""
    await bk.add_book(TIERED)
    bk.clock.now = at(5)
    cid = await bk.customer("owing", billing_mode="postpaid", book="tiered")
    await bk.event(cid, "model-g", 100_000, 0)
    await bk.close(datetime(2026, 12, 1, 1, tzinfo=UTC))
    bk.clock.now = datetime(2026, 12, 5, tzinfo=UTC)
    await bk.top_up(cid, "30.00")
    await bk.event(cid, "model-v", 0, 1_300_000)
    await bk.close(datetime(2027, 1, 1, 1, tzinfo=UTC))
    november, december = await bk.invoices(cid)
    assert (november["amount_due"], december["amount_due"], december["total"]) == ("1.00", "0.00", "13.00")
    wallet = await bk.service.wallet(cid)
    assert (wallet.receivable, wallet.available) == (1_000_000_000, 17_000_000_000)
    assert [(g.kind, g.remaining) for g in wallet.grants] == [("topup", 17_000_000_000)]  # no paid credit lot
    assert (november["payment_status"], november["amount_paid"], november["payments"]) == ("open", "0.00", [])
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]


# A volume tier dearer than the one below it: the true-up charges more (rare, but a book may).
DEARER = {"id": "dearer", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "d-out", "model": "model-v", "token_type": "output", "tier_mode": "volume",
     "tiers": [{"up_to": 1_000_000, "price": "10"}, {"up_to": None, "price": "20"}]},
]}
NOV_GRACE_OVER = datetime(2026, 12, 1, 1, tzinfo=UTC)
DEC_GRACE_OVER = datetime(2027, 1, 1, 1, tzinfo=UTC)


def _as_closed(invoice: dict) -> dict:
    """What the upcoming invoice says the close will finalize: every figure the customer reads
    (not the id, number, status, issue time, or payments' ids, which only the close gives)."""
    left = {k: v for k, v in invoice.items()
            if k not in ("id", "number", "status", "issued_at", "content_hash", "payment_status", "payments")}
    left["payments"] = [{k: p[k] for k in ("amount", "reference", "entry_id", "created_at")}
                        for p in invoice["payments"]]
    return left


@pytest.mark.parametrize(("book", "mode", "top_ups", "due", "paid", "remaining"), [
    # postpaid, by hand: model-v 1,300,000 rated graduated $20.00 + $3.00 = $23.00, trued up to
    # $13.00; the upcoming invoice said $23.00 due, the close finalized $13.00.
    (TIERED, "postpaid", [], "13.00", "0.00", "13.00"),
    # prepaid with a $100 overdraft: $5.00 of credit pays the first $5.00 of the $23.00, $18.00
    # goes on the receivable; a $10.00 top-up then pays $10.00 of it (receivable $8.00); the
    # true-up's $10.00 back pays the $8.00 still owed, and $2.00 is credit. Due $18.00 - $8.00 =
    # $10.00, all of it paid by the $10.00 top-up: the upcoming invoice said $18.00 due, $8.00 left.
    (TIERED, "prepaid", ["5.00", "10.00"], "10.00", "10.00", "0.00"),
    # prepaid, the dearer book: 1,300,000 rated graduated $10.00 + $6.00 = $16.00, at volume
    # $26.00: the true-up's $10.00 takes the $4.00 left of a $20.00 top-up, then $6.00 goes on the
    # receivable: the upcoming invoice said nothing was due.
    (DEARER, "prepaid", ["20.00"], "6.00", "0.00", "6.00"),
])
async def test_the_upcoming_invoice_counts_its_volume_true_up_in_what_is_due_as_the_close_does(
        bk: BillingKit, book: dict, mode: str, top_ups: list[str], due: str, paid: str, remaining: str) -> None:
    """The upcoming invoice showed the true-up the close would post as a line, but its amount
    due, credits applied, balances and amount remaining left it out: the customer read another
    amount due than the invoice then finalized."""
    await bk.add_book(book)
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    cid = await bk.customer(f"preview-{book['id']}-{mode}", billing_mode=mode, book=book["id"], overdraft="100.00")
    if top_ups:
        await bk.top_up(cid, top_ups[0])
    bk.clock.now = at(5)
    await bk.event(cid, "model-v", 0, 600_000)
    bk.clock.now = at(20)
    await bk.event(cid, "model-v", 0, 700_000)
    for amount in top_ups[1:]:
        await bk.top_up(cid, amount)
    upcoming = await bk.upcoming(cid)
    await bk.close(NOV_GRACE_OVER)
    [invoice] = await bk.invoices(cid)
    assert (invoice["amount_due"], invoice["amount_paid"], invoice["amount_remaining"]) == (due, paid, remaining)
    assert (upcoming["amount_due"], upcoming["amount_paid"], upcoming["amount_remaining"]) == (due, paid, remaining)
    assert _as_closed(upcoming) == _as_closed(invoice)
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]


async def test_the_upcoming_invoice_counts_the_true_up_an_earlier_period_gets_at_its_close(bk: BillingKit) -> None:
    """While November waits for its close, December's upcoming invoice took November's amount
    due before its true-up: the top-up money November's close leaves for December was not seen.
    By hand (prepaid, $100 overdraft): November 1,300,000 model-v output rated $23.00 on the
    receivable; December 100,000 model-g input $1.00; a $20.00 top-up pays $20.00 of the $24.00
    owed. November's close trues up -$10.00: $4.00 pays off what is still owed, $6.00 is credit;
    November is due $19.00, paid by $19.00 of the top-up, and the $1.00 left pays December's $1.00.
    The upcoming invoice said November's $23.00 took all of the top-up: December $1.00 remaining."""
    await bk.add_book(TIERED)
    bk.clock.now = at(5)
    cid = await bk.customer("preview-earlier", billing_mode="prepaid", book="tiered", overdraft="100.00")
    await bk.event(cid, "model-v", 0, 600_000)
    await bk.event(cid, "model-v", 0, 700_000)
    bk.clock.now = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)  # November ended, not closed (grace)
    await bk.event(cid, "model-g", 100_000, 0)
    topup = await bk.top_up(cid, "20.00")
    december = await bk.upcoming(cid)
    assert december["period"]["label"] == "2026-12"
    assert (december["amount_due"], december["amount_paid"], december["amount_remaining"]) == ("1.00", "1.00", "0.00")
    assert [(p["amount"], p["reference"]) for p in december["payments"]] == [("1.00", f"topup:{topup.grant.id}")]
    await bk.close(NOV_GRACE_OVER)
    november = (await bk.invoices(cid))[0]
    assert (november["amount_due"], november["amount_paid"]) == ("19.00", "19.00")
    assert _as_closed(await bk.upcoming(cid)) == _as_closed(december)  # November's close changed nothing
    await bk.close(DEC_GRACE_OVER)
    closed = (await bk.invoices(cid))[1]
    assert _as_closed(closed) == _as_closed(december)
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]


async def test_two_versions_true_up_each_one_s_units_at_its_own_price_of_the_tier_reached_labels_apart(
        bk: BillingKit) -> None:
    """A price change mid-period: version "v9" (from January) rated the 5th, "v10" (from the
    15th) the 20th. The close once trued up at the tiers of the version whose label sorts last,
    "v9" ("v9" > "v10" as text): all 1,300,000 at v9's $10/M, $5.20 too much. Now the period's
    1,300,000 reach the second tier of both, each version's units at its own price of it: the 5th's
    600,000, rated $12.00 at v9's $20/M, at $10/M = $6.00 (-$6.00); the 20th's 700,000, rated on
    from 600,000 at v10's 400,000 x $30/M + 300,000 x $6/M = $13.80, at $6/M = $4.20 (-$9.60);
    the invoice $6.00 + $4.20 = $10.20."""
    v9 = {"id": "relabelled", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "version": "v9",
          "rules": [{"id": "v-out", "model": "model-v", "token_type": "output", "tier_mode": "volume",
                     "tiers": [{"up_to": 1_000_000, "price": "20"}, {"up_to": None, "price": "10"}]}]}
    v10 = {**v9, "effective_from": "2026-11-15T00:00:00Z", "version": "v10",
           "rules": [{**v9["rules"][0], "tiers": [{"up_to": 1_000_000, "price": "30"}, {"up_to": None, "price": "6"}]}]}
    await bk.add_book(v9)
    await bk.add_book(v10)
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    cid = await bk.customer("relabelled", billing_mode="postpaid", book="relabelled")
    for day, tokens in [(5, 600_000), (20, 700_000)]:
        bk.clock.now = at(day)
        await bk.event(cid, "model-v", 0, tokens)
    await bk.close(datetime(2026, 12, 1, 1, tzinfo=UTC))
    [invoice] = await bk.invoices(cid)
    usage = sum(Decimal(ln["amount"]) for ln in invoice["lines"] if ln["kind"] == "usage")
    true_ups = sorted((ln["price_version"], ln["quantity"], ln["unit_price"], ln["tier"], ln["amount"])
                      for ln in invoice["lines"] if ln["kind"] == "volume_true_up")
    assert true_ups == [("v10", 700_000, "6", 1, "-9.60"), ("v9", 600_000, "10", 1, "-6.00")]
    assert (usage, invoice["total"]) == (Decimal("25.80"), "10.20")

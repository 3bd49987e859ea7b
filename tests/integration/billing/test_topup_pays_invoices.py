"""A prepaid customer's top-up pays what its receivable owes first; when that debt is on finalized
invoices, the part that paid it is applied to them, oldest first, as invoice payments referring to
the top-up (same entry), and the invoices' documents stay frozen. Worked by hand with the seed book:
one model-a call of 1,000 input and 500 output tokens costs $0.01 + $0.01 + $0.01 (request) = $0.03."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from billing_kit import BillingKit

from ledger.audit import verify
from wallets.audit import WALLET_CHECKS
from wallets.errors import OverpaymentError

NOV_GRACE_OVER = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
DEC_GRACE_OVER = datetime(2027, 1, 1, 1, 0, tzinfo=UTC)
DEC_5 = datetime(2026, 12, 5, tzinfo=UTC)
JAN_5 = datetime(2027, 1, 5, tzinfo=UTC)


async def _verified(bk: BillingKit) -> None:
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]


async def _entry_of_lot(bk: BillingKit, lot_id: str) -> int:
    return await bk.db.read(lambda conn: _scalar(conn, "SELECT entry_id FROM lots WHERE id = %s", lot_id))


async def _scalar(conn, sql: str, *args):
    return (await conn.exec_driver_sql(sql, args)).scalar()


def _frozen(invoice: dict) -> dict:
    changing = ("payment_status", "amount_paid", "amount_remaining", "payments")  # with each payment
    return {k: v for k, v in invoice.items() if k not in changing}


async def test_a_top_up_that_pays_an_invoiced_receivable_pays_the_invoice(bk: BillingKit) -> None:
    cid = await bk.customer("pre", overdraft="1.00")
    for _ in range(3):
        await bk.event(cid, "model-a", 1000, 500)  # $0.09 owed on the receivable
    await bk.close(NOV_GRACE_OVER)
    [before] = await bk.invoices(cid)
    assert before["amount_due"] == "0.09" and before["payment_status"] == "open"

    partly = await bk.top_up(cid, "0.05", reference="card-1")  # all of it pays the receivable
    assert partly.applied_to_receivable == 50_000_000
    [invoice] = await bk.invoices(cid)
    assert invoice["payment_status"] == "partially_paid" and invoice["amount_paid"] == "0.05"
    [payment] = invoice["payments"]
    assert payment["amount"] == "0.05" and payment["reference"] == f"topup:{partly.grant.id}"
    assert payment["entry_id"] == await _entry_of_lot(bk, partly.grant.id)

    rest = await bk.top_up(cid, "1.00")  # $0.04 pays the rest, $0.96 becomes credit
    assert rest.applied_to_receivable == 40_000_000 and rest.grant.granted == 960_000_000
    [invoice] = await bk.invoices(cid)
    assert invoice["payment_status"] == "paid" and invoice["amount_paid"] == "0.09"
    assert [(p["amount"], p["reference"]) for p in invoice["payments"]] == [
        ("0.05", f"topup:{partly.grant.id}"), ("0.04", f"topup:{rest.grant.id}")]
    assert _frozen(invoice) == _frozen(before)  # the document and its hash are untouched
    with pytest.raises(OverpaymentError):  # nothing left to pay, and nothing owed
        await bk.pay(cid, invoice["id"], "0.01", "wire-1")
    await _verified(bk)


async def test_a_top_up_pays_open_invoices_oldest_first_and_the_rest_stays_uninvoiced(bk: BillingKit) -> None:
    cid = await bk.customer("pre2", overdraft="1.00")
    await bk.event(cid, "model-a", 1000, 500)  # November: $0.03
    await bk.close(NOV_GRACE_OVER)
    bk.clock.now = DEC_5
    await bk.event(cid, "model-a", 1000, 500)
    await bk.event(cid, "model-a", 1000, 500)  # December: $0.06
    await bk.close(DEC_GRACE_OVER)
    november, december = await bk.invoices(cid)
    await bk.pay(cid, november["id"], "0.01", "wire-1")  # November: $0.02 left; December: $0.06
    bk.clock.now = JAN_5
    await bk.event(cid, "model-a", 1000, 500)  # January, not invoiced yet: $0.03; $0.11 owed in all

    result = await bk.top_up(cid, "0.05")  # November's $0.02, then $0.03 of December's $0.06
    assert result.applied_to_receivable == 50_000_000
    november, december = await bk.invoices(cid)
    ref = f"topup:{result.grant.id}"
    assert (november["payment_status"], november["amount_paid"]) == ("paid", "0.03")
    assert [(p["amount"], p["reference"]) for p in november["payments"]] == [("0.01", "wire-1"), ("0.02", ref)]
    assert (december["payment_status"], december["amount_paid"]) == ("partially_paid", "0.03")
    assert [(p["amount"], p["reference"]) for p in december["payments"]] == [("0.03", ref)]

    result = await bk.top_up(cid, "0.10")  # December's last $0.03, then January's $0.03 (no invoice yet)
    assert result.applied_to_receivable == 60_000_000 and result.grant.granted == 40_000_000
    november, december = await bk.invoices(cid)
    assert (december["payment_status"], december["amount_paid"]) == ("paid", "0.06")
    assert len(november["payments"]) == 2  # a paid invoice takes nothing more
    await _verified(bk)


async def test_a_postpaid_top_up_pays_no_invoice(bk: BillingKit) -> None:
    cid = await bk.customer("post", billing_mode="postpaid")
    await bk.event(cid, "model-a", 1000, 500)
    await bk.close(NOV_GRACE_OVER)
    result = await bk.top_up(cid, "1.00")  # postpaid: a top-up is credit, invoices are paid by payments
    assert result.applied_to_receivable == 0
    [invoice] = await bk.invoices(cid)
    assert invoice["payment_status"] == "open" and invoice["payments"] == []
    await _verified(bk)


async def test_verify_finds_invoice_payments_that_no_entry_paid(bk: BillingKit) -> None:
    cid = await bk.customer("forged", overdraft="1.00")
    for _ in range(3):
        await bk.event(cid, "model-a", 1000, 500)
    await bk.close(NOV_GRACE_OVER)
    result = await bk.top_up(cid, "0.05")
    [invoice] = await bk.invoices(cid)
    await _verified(bk)
    entry_id = await _entry_of_lot(bk, result.grant.id)

    async def forge(conn) -> None:  # one more cent recorded against the top-up, which paid only $0.05
        await conn.exec_driver_sql(
            """INSERT INTO invoice_payments (id, lane, invoice_id, customer_id, amount, reference, entry_id, created_at)
               SELECT 'pay_forged', lane, id, customer_id, 10000000, 'forged', %s, now() FROM invoices
                WHERE id = %s""", (entry_id, invoice["id"]))
    await bk.db.run(forge)
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    [failed] = [c for c in report.checks if not c.ok]
    assert failed.name == "invoices" and "invoice payments 60000000" in str(failed), failed


async def test_top_ups_before_a_close_pay_its_invoice_oldest_period_first(bk: BillingKit) -> None:
    """Top-ups that paid the receivable while its usage was not invoiced yet (the period open,
    or ended and in its grace window while the next one runs) pay the invoices finalized later,
    oldest period first: the invoices showed it all open and refused its payment as overpayment."""
    cid = await bk.customer("early", overdraft="1.00")
    for _ in range(3):
        await bk.event(cid, "model-a", 1000, 500)  # November: $0.09 on the receivable
    first = await bk.top_up(cid, "0.04")  # November still open: pays $0.04 of it
    bk.clock.now = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)  # November ended, not closed (grace)
    await bk.event(cid, "model-a", 1000, 500)  # December: $0.03; $0.08 owed in all
    second = await bk.top_up(cid, "0.07")  # $0.07 of it, billed in December
    assert (first.applied_to_receivable, second.applied_to_receivable) == (40_000_000, 70_000_000)
    await bk.close(NOV_GRACE_OVER)
    [november] = await bk.invoices(cid)
    assert (november["amount_due"], november["payment_status"], november["amount_paid"]) == ("0.09", "paid", "0.09")
    assert [(p["amount"], p["reference"], p["entry_id"]) for p in november["payments"]] == [
        ("0.04", f"topup:{first.grant.id}", await _entry_of_lot(bk, first.grant.id)),
        ("0.05", f"topup:{second.grant.id}", await _entry_of_lot(bk, second.grant.id))]
    bk.clock.now = DEC_5
    await bk.event(cid, "model-a", 1000, 500)
    await bk.event(cid, "model-a", 1000, 500)  # December: $0.09 in all, $0.02 of it paid by the second
    await bk.close(DEC_GRACE_OVER)
    november, december = await bk.invoices(cid)
    assert len(november["payments"]) == 2
    assert (december["amount_due"], december["payment_status"], december["amount_paid"]) == (
        "0.09", "partially_paid", "0.02")
    assert [(p["amount"], p["reference"]) for p in december["payments"]] == [("0.02", f"topup:{second.grant.id}")]
    with pytest.raises(OverpaymentError):  # $0.07 is owed, and due
        await bk.pay(cid, december["id"], "0.08", "wire-1")
    paid = await bk.pay(cid, december["id"], "0.07", "wire-1")
    assert paid.status == "paid"
    wallet = await bk.service.wallet(cid)
    assert wallet.receivable == 0
    await _verified(bk)


async def test_a_top_up_before_the_close_and_one_after_pay_the_invoice_between_them(bk: BillingKit) -> None:
    cid = await bk.customer("split", overdraft="1.00")
    for _ in range(3):
        await bk.event(cid, "model-a", 1000, 500)  # $0.09
    before = await bk.top_up(cid, "0.05")
    await bk.close(NOV_GRACE_OVER)
    [invoice] = await bk.invoices(cid)
    assert (invoice["payment_status"], invoice["amount_paid"]) == ("partially_paid", "0.05")
    after = await bk.top_up(cid, "1.00")  # $0.04 of it pays the rest, $0.96 is credit
    assert after.applied_to_receivable == 40_000_000 and after.grant.granted == 960_000_000
    [invoice] = await bk.invoices(cid)
    assert (invoice["payment_status"], invoice["amount_paid"]) == ("paid", "0.09")
    assert [(p["amount"], p["reference"]) for p in invoice["payments"]] == [
        ("0.05", f"topup:{before.grant.id}"), ("0.04", f"topup:{after.grant.id}")]
    await _verified(bk)


def _settlement(invoice: dict) -> dict:
    """What the customer reads as paid and still owed on an invoice, and by which payments (an
    upcoming invoice's have no id yet: none is recorded before the close)."""
    return {"amount_due": invoice["amount_due"], "amount_paid": invoice["amount_paid"],
            "amount_remaining": invoice["amount_remaining"],
            "payments": [{k: p[k] for k in ("amount", "reference", "entry_id", "created_at")}
                         for p in invoice["payments"]]}


async def test_the_upcoming_invoice_shows_what_top_ups_paid_as_its_close_will(bk: BillingKit) -> None:
    """A top-up that paid the open period's usage off the receivable pays that period's invoice
    at its close; the upcoming invoice showed the whole $0.09 due and nothing paid, so a customer
    reading it was asked for money already paid."""
    cid = await bk.customer("preview", overdraft="1.00")
    for _ in range(3):
        await bk.event(cid, "model-a", 1000, 500)  # $0.09 on the receivable
    bk.clock.now = datetime(2026, 11, 23, 12, 0, 0, 120000, tzinfo=UTC)
    paid = await bk.top_up(cid, "0.04", reference="card-1")
    upcoming = await bk.upcoming(cid)
    assert (upcoming["amount_due"], upcoming["amount_paid"], upcoming["amount_remaining"]) == ("0.09", "0.04", "0.05")
    assert [(p["amount"], p["reference"], p["entry_id"]) for p in upcoming["payments"]] == [
        ("0.04", f"topup:{paid.grant.id}", await _entry_of_lot(bk, paid.grant.id))]
    # the time as every answer spells one (both said '2026-11-23T12:00:00.12+00:00', jsonb's spelling)
    assert [p["created_at"] for p in upcoming["payments"]] == ["2026-11-23T12:00:00.120000Z"]
    await bk.close(NOV_GRACE_OVER)
    [november] = await bk.invoices(cid)
    assert _settlement(november) == _settlement(upcoming)
    await _verified(bk)


async def test_the_upcoming_invoice_leaves_to_an_unclosed_earlier_period_what_its_close_takes_first(
        bk: BillingKit) -> None:
    """Top-ups pay the invoices finalized later oldest period first: while November waits for its
    close, December's upcoming invoice shows as paid only what November's invoice leaves."""
    cid = await bk.customer("preview2", overdraft="1.00")
    for _ in range(3):
        await bk.event(cid, "model-a", 1000, 500)  # November: $0.09
    first = await bk.top_up(cid, "0.04")
    bk.clock.now = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)  # November ended, not closed (grace)
    await bk.event(cid, "model-a", 1000, 500)  # December: $0.03
    second = await bk.top_up(cid, "0.07")  # $0.04 + $0.07 = $0.11: November's $0.09, then $0.02 of December's
    december = await bk.upcoming(cid)
    assert december["period"]["label"] == "2026-12"
    assert (december["amount_due"], december["amount_paid"], december["amount_remaining"]) == (
        "0.03", "0.02", "0.01")
    assert [(p["amount"], p["reference"]) for p in december["payments"]] == [("0.02", f"topup:{second.grant.id}")]
    await bk.close(NOV_GRACE_OVER)
    assert _settlement(await bk.upcoming(cid)) == _settlement(december)  # November's close changed nothing
    await bk.close(DEC_GRACE_OVER)
    november, closed = await bk.invoices(cid)
    assert [p["reference"] for p in november["payments"]] == [f"topup:{first.grant.id}", f"topup:{second.grant.id}"]
    assert _settlement(closed) == _settlement(december)
    await _verified(bk)


async def test_an_upcoming_invoice_with_nothing_paid_has_all_of_its_amount_due_remaining(bk: BillingKit) -> None:
    cid = await bk.customer("unpaid", billing_mode="postpaid")
    await bk.event(cid, "model-a", 1000, 500)
    await bk.top_up(cid, "1.00")  # postpaid: credit, not a payment of the receivable
    upcoming = await bk.upcoming(cid)
    assert (upcoming["amount_due"], upcoming["amount_paid"], upcoming["amount_remaining"], upcoming["payments"]) == (
        "0.03", "0.00", "0.03", [])

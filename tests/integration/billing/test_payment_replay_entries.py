"""An invoice payment sent again with its `reference` (no Idempotency-Key) is the same payment,
answered again (replayed, posted once): the entry it tells is the one the first posted, as the
invoice lists it, whether that payment was committed earlier or posted earlier in the same batch.
Worked by hand with the seed book: three model-a calls of 1,000 input and 500 output tokens cost
3 x ($0.01 + $0.01 + $0.01 per request) = $0.09 on November's invoice."""

from __future__ import annotations

from datetime import UTC, datetime

from billing_kit import BillingKit

from tests.integration.wallets.wallet_kit import usd
from wallets.commands import PayInvoice

NOV_GRACE_OVER = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)


async def _invoice(bk: BillingKit, cid: str) -> dict:
    await bk.customer(cid, billing_mode="postpaid")
    for _ in range(3):
        await bk.event(cid, "model-a", 1000, 500)
    await bk.close(NOV_GRACE_OVER)
    [invoice] = await bk.invoices(cid)
    assert invoice["amount_due"] == "0.09"
    return invoice


def _pay(cid: str, invoice_id: str, amount: str, reference: str) -> PayInvoice:
    return PayInvoice(customer_id=cid, invoice_id=invoice_id, amount=usd(amount), reference=reference, currency="USD")


async def test_a_payment_sent_again_tells_the_entry_the_first_posted(bk: BillingKit) -> None:
    invoice = await _invoice(bk, "again")
    first = await bk.pay("again", invoice["id"], "0.04", "wire-1")
    again = await bk.pay("again", invoice["id"], "0.04", "wire-1")
    assert (first.replayed, again.replayed) == (False, True)
    [listed] = (await bk.invoices("again"))[0]["payments"]  # posted once: $0.04 of $0.09 paid
    assert (listed["reference"], listed["amount"]) == ("wire-1", "0.04")
    assert isinstance(first.entry_id, int)
    assert again.entry_id == first.entry_id == listed["entry_id"]
    assert (again.paid, again.amount_due) == (usd("0.04"), usd("0.09"))


async def test_a_payment_sent_twice_in_one_batch_tells_the_entry_both_times(bk: BillingKit) -> None:
    invoice = await _invoice(bk, "twice")
    first, again = await bk.service.engine.execute(
        [_pay("twice", invoice["id"], "0.04", "wire-1"), _pay("twice", invoice["id"], "0.04", "wire-1")]
    )
    assert (first.replayed, again.replayed) == (False, True)
    [listed] = (await bk.invoices("twice"))[0]["payments"]
    assert isinstance(first.entry_id, int)
    assert again.entry_id == first.entry_id == listed["entry_id"]

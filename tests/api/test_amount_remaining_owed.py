"""An invoice's `amount_remaining` is at most what the customer owes. A re-rate's money back goes
off the receivable at once, and onto the invoice it corrects only at the next close: in between,
a $10.00 invoice re-rated to $7.00 said $10.00 remaining, and a payment of that was refused, 422
`overpayment` ("exceeds the 7.00 still due"). Now the invoice (its JSON, its page) and the
payment's answer say $7.00, paying it is taken, and the next close marks the invoice paid."""
from __future__ import annotations

from datetime import UTC, datetime

from tests.api.apps import api_client
from tests.api.closing import close_early, utc
from wallets.periods import Cycle, following, period_of

ADMIN = {"Authorization": "Bearer rem-admin"}
CYCLE = Cycle("UTC", None)


async def _book(c, version: str, effective_from: str, price: str) -> None:
    made = await c.post("/v1/price-books", headers=ADMIN, json={
        "id": "rem", "version": version, "currency": "USD", "effective_from": effective_from,
        "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": price}]})
    assert made.status_code == 201, made.text


async def test_an_invoice_a_credit_note_corrects_asks_what_is_owed_and_paying_it_is_taken(scratch_url) -> None:
    async with api_client(scratch_url, admin="rem-admin") as c:
        period = period_of(datetime.now(UTC), CYCLE)
        await _book(c, "v1", "2026-01-01T00:00:00Z", "10")
        created = await c.post("/v1/customers", headers=ADMIN, json={
            "id": "rem", "currency": "USD", "price_book": "rem", "billing": "postpaid"})
        assert created.status_code == 201, created.text
        sent = await c.post("/v1/usage-events", headers=ADMIN, json=[{
            "event_id": "e1", "customer_id": "rem", "model": "model-a", "timestamp": utc(datetime.now(UTC)),
            "usage": {"input_tokens": 1_000_000, "output_tokens": 0}}])
        assert sent.json()["accepted"] == 1, sent.text
        [closed] = (await close_early(c, ADMIN, "rem", period))["closed"]
        invoice_id = closed["invoice_id"]
        await _book(c, "v2", utc(period.start), "7")
        applied = await c.post("/v1/rerate", headers=ADMIN, json={
            "price_book": "rem", "version": "v2", "from": utc(period.start), "to": utc(period.end), "mode": "apply"})
        assert applied.status_code == 200 and len(applied.json()["credit_notes"]) == 1, applied.text
        invoice = (await c.get(f"/v1/invoices/{invoice_id}", headers=ADMIN)).json()
        assert (invoice["amount_due"], invoice["amount_paid"], invoice["amount_remaining"]) == ("10.00", "0.00", "7.00")
        [listed] = (await c.get("/v1/customers/rem/invoices", headers=ADMIN)).json()["invoices"]
        assert listed["amount_remaining"] == "7.00"
        page = await c.get(f"/v1/invoices/{invoice_id}", headers={**ADMIN, "Accept": "text/html"})
        assert "7.00" in page.text
        part = await c.post(f"/v1/invoices/{invoice_id}/payments", headers=ADMIN,
                            json={"amount": "5.00", "reference": "wire-1"})
        assert part.status_code == 201, part.text
        assert (part.json()["amount_remaining"], part.json()["payment_status"]) == ("2.00", "partially_paid")
        rest = await c.post(f"/v1/invoices/{invoice_id}/payments", headers=ADMIN,
                            json={"amount": "2.00", "reference": "wire-2"})
        assert rest.status_code == 201, rest.text
        assert rest.json()["amount_remaining"] in ("0", "0.00")
        replay = await c.post(f"/v1/invoices/{invoice_id}/payments", headers=ADMIN,
                              json={"amount": "2.00", "reference": "wire-2"})
        assert replay.status_code == 200 and replay.json()["amount_remaining"] in ("0", "0.00"), replay.text
        # the next close applies the note's $3.00 to the invoice: paid, nothing owed
        await close_early(c, ADMIN, "rem", following(period, CYCLE))
        invoice = (await c.get(f"/v1/invoices/{invoice_id}", headers=ADMIN)).json()
        assert (invoice["amount_paid"], invoice["amount_remaining"], invoice["payment_status"]) == (
            "10.00", "0.00", "paid")
        wallet = (await c.get("/v1/customers/rem/wallet", headers=ADMIN)).json()
        assert wallet["receivable"] in ("0", "0.00")
        verify = (await c.post("/v1/audit/verify", headers=ADMIN)).json()
        assert verify["ok"], [x for x in verify["checks"] if not x["ok"]]


async def test_an_invoice_owed_less_than_whole_cents_asks_what_can_be_paid_and_paying_it_is_taken(scratch_url) -> None:
    """$10.00 invoiced, a credit note of $3.00, then 1,230 tokens of late usage at the corrected
    $7/M ($0.00861) on the next period: the customer owes $7.00861. The invoice said 7.00861
    remaining, and a payment of that was refused (422 `invalid_amount`: cash is whole cents), as
    was one of $7.01 (422 `overpayment`, "exceeds the 7.00861 still due"): nothing it asked could
    be paid. Now it asks $7.00, the whole cents of what is owed, and paying that is taken. The next
    close nets the note's $3.00 against the period's $0.00861 and rounds the rest to $2.99, which
    it applies to the invoice: $0.01 is left, the 7.00861 rounded to 7.01, and paying it pays all."""
    async with api_client(scratch_url, admin="rem-admin") as c:
        period = period_of(datetime.now(UTC), CYCLE)
        await _book(c, "v1", "2026-01-01T00:00:00Z", "10")
        created = await c.post("/v1/customers", headers=ADMIN, json={
            "id": "frac", "currency": "USD", "price_book": "rem", "billing": "postpaid"})
        assert created.status_code == 201, created.text

        async def usage(event_id: str, tokens: int) -> None:
            sent = await c.post("/v1/usage-events", headers=ADMIN, json=[{
                "event_id": event_id, "customer_id": "frac", "model": "model-a", "timestamp": utc(datetime.now(UTC)),
                "usage": {"input_tokens": tokens, "output_tokens": 0}}])
            assert sent.json()["accepted"] == 1, sent.text

        await usage("e1", 1_000_000)  # $10.00
        [closed] = (await close_early(c, ADMIN, "frac", period))["closed"]
        invoice_id = closed["invoice_id"]
        await _book(c, "v2", utc(period.start), "7")
        applied = await c.post("/v1/rerate", headers=ADMIN, json={
            "price_book": "rem", "version": "v2", "from": utc(period.start), "to": utc(period.end), "mode": "apply"})
        assert [n["total"] for n in applied.json()["credit_notes"]] == ["-3.00"], applied.text
        await usage("e2", 1_230)  # late, billed on the next period: 1,230 x $7/M = $0.00861
        assert (await c.get("/v1/customers/frac/wallet", headers=ADMIN)).json()["receivable"] == "7.00861"
        invoice = (await c.get(f"/v1/invoices/{invoice_id}", headers=ADMIN)).json()
        assert (invoice["amount_due"], invoice["amount_remaining"]) == ("10.00", "7.00")
        too_much = await c.post(f"/v1/invoices/{invoice_id}/payments", headers=ADMIN,
                                json={"amount": "7.01", "reference": "wire-0"})
        assert too_much.status_code == 422 and too_much.json()["amount_due"] == "7.00", too_much.text
        paid = await c.post(f"/v1/invoices/{invoice_id}/payments", headers=ADMIN,
                            json={"amount": invoice["amount_remaining"], "reference": "wire-1"})
        assert paid.status_code == 201, paid.text
        assert (paid.json()["amount_remaining"], paid.json()["payment_status"]) == ("0.00", "partially_paid")
        await close_early(c, ADMIN, "frac", following(period, CYCLE))
        invoice = (await c.get(f"/v1/invoices/{invoice_id}", headers=ADMIN)).json()
        assert (invoice["amount_paid"], invoice["amount_remaining"], invoice["payment_status"]) == (
            "9.99", "0.01", "partially_paid")
        last = await c.post(f"/v1/invoices/{invoice_id}/payments", headers=ADMIN,
                            json={"amount": "0.01", "reference": "wire-2"})
        assert last.status_code == 201 and last.json()["payment_status"] == "paid", last.text
        assert (await c.get("/v1/customers/frac/wallet", headers=ADMIN)).json()["receivable"] in ("0", "0.00")

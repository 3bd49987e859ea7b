"""An invoice payment's `reference` is the finance team's (a wire, a cheque), never one of the
references tokentill gives the money it applies to invoices itself (`topup:<lot>`,
`credit-note:<number>`, `rerate:<id>`, `true-up:<period>`, `rounding:<period>`). An invoice takes
one payment per reference, so a payment recorded by hand as `credit-note:CN-…` (what a person
might write to say the note settled that part) took the name the next close gives the note's money
back on that invoice: that close then failed on the duplicate, and every later one of the
customer too, its periods never closing again."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.api.apps import api_client
from tests.api.closing import close_early, utc
from wallets.periods import Cycle, following, period_of

ADMIN = {"Authorization": "Bearer ref-admin"}
UTC_CYCLE = Cycle("UTC", None)


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="ref-admin") as c:
        yield c


async def _book(client, version: str, effective_from: str, price: str) -> None:
    made = await client.post(
        "/v1/price-books",
        headers=ADMIN,
        json={
            "id": "refs",
            "version": version,
            "currency": "USD",
            "effective_from": effective_from,
            "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": price}],
        },
    )
    assert made.status_code == 201, made.text


async def _credited_invoice(client, cid: str) -> tuple[dict, dict]:
    """A postpaid invoice of $10.00 (1M tokens at $10/M) and the credit note of $2.00 a re-rate
    to $8/M issued against it."""
    period = period_of(datetime.now(UTC), UTC_CYCLE)
    await _book(client, "v1", "2026-01-01T00:00:00Z", "10")
    made = await client.post(
        "/v1/customers", headers=ADMIN, json={"id": cid, "currency": "USD", "price_book": "refs", "billing": "postpaid"}
    )
    assert made.status_code == 201, made.text
    sent = await client.post(
        "/v1/usage-events",
        headers=ADMIN,
        json=[
            {
                "event_id": "e1",
                "customer_id": cid,
                "model": "model-a",
                "timestamp": utc(datetime.now(UTC)),
                "usage": {"input_tokens": 1_000_000, "output_tokens": 0},
            }
        ],
    )
    assert sent.json()["accepted"] == 1, sent.text
    [closed] = (await close_early(client, ADMIN, cid, period))["closed"]
    await _book(client, "v2", utc(period.start), "8")
    applied = await client.post(
        "/v1/rerate",
        headers=ADMIN,
        json={"price_book": "refs", "version": "v2", "from": utc(period.start), "to": utc(period.end), "mode": "apply"},
    )
    assert applied.status_code == 200, applied.text
    [note] = applied.json()["credit_notes"]
    invoice = (await client.get(f"/v1/invoices/{closed['invoice_id']}", headers=ADMIN)).json()
    assert (invoice["amount_due"], note["total"]) == ("10.00", "-2.00")
    return invoice, (await client.get(f"/v1/credit-notes/{note['id']}", headers=ADMIN)).json()


@pytest.mark.parametrize(
    "reserved", ["credit-note:{note}", "topup:lot_1", "rerate:rr_1", "true-up:2026-12", "rounding:2026-12"]
)
async def test_a_payment_under_a_reference_tokentill_gives_its_own_applications_is_refused(client, reserved) -> None:
    invoice, note = await _credited_invoice(client, "refs-1")
    reference = reserved.format(note=note["number"])
    refused = await client.post(
        f"/v1/invoices/{invoice['id']}/payments", headers=ADMIN, json={"amount": "2.00", "reference": reference}
    )
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["code"] == "validation_error" and [f["field"] for f in problem["fields"]] == ["reference"]
    # nothing was recorded, and the next close applies the note's $2.00 to the invoice
    [closed] = (
        await close_early(client, ADMIN, "refs-1", following(period_of(datetime.now(UTC), UTC_CYCLE), UTC_CYCLE))
    )["closed"]
    assert closed["amount_due"] == "0.00"
    invoice = (await client.get(f"/v1/invoices/{invoice['id']}", headers=ADMIN)).json()
    assert [(p["reference"], p["amount"]) for p in invoice["payments"]] == [(f"credit-note:{note['number']}", "2.00")]
    paid = await client.post(
        f"/v1/invoices/{invoice['id']}/payments", headers=ADMIN, json={"amount": "8.00", "reference": "wire-1"}
    )
    assert paid.status_code == 201 and paid.json()["payment_status"] == "paid", paid.text
    wallet = (await client.get("/v1/customers/refs-1/wallet", headers=ADMIN)).json()
    assert wallet["receivable"] == "0.00"
    verify = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]


async def test_a_payment_reference_that_only_looks_alike_is_taken(client) -> None:
    invoice, _ = await _credited_invoice(client, "refs-2")
    for reference in ("credit note CN-1", "TOPUP:lot_1", "wire:topup:1"):
        paid = await client.post(
            f"/v1/invoices/{invoice['id']}/payments", headers=ADMIN, json={"amount": "1.00", "reference": reference}
        )
        assert paid.status_code == 201, paid.text

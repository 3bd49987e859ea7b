"""An invoice names the credit notes correcting it: a re-rate of a closed period issued a credit
note (CN-…, invoice inv_…, total -2.00) that neither GET /v1/invoices/{id} nor the console's
invoice page mentioned, and the console had no page for a credit note.

By hand: book model-a input $10.00/M, output $20.00/M, $0.01 a call; 5 events of 100,000 input
and 500 output tokens: 5 x ($1.00 + $0.01 + $0.01) = $5.10 invoiced. Re-rated at input $6.00/M:
5 x $0.60 = $3.00 for $5.00, a credit note of -$2.00."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.api.apps import api_client, sign_in
from tests.api.closing import utc
from tests.api.test_rerate_api import book
from wallets.periods import Cycle, period_of

ADMIN_KEY = "icn-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def client(scratch_url):
    async with api_client(
        scratch_url, admin=ADMIN_KEY, console=True, books=[book("v1", "2026-01-01T00:00:00Z", "10.00")]
    ) as c:
        yield c


async def test_an_invoice_lists_its_credit_notes_in_its_json_and_on_its_console_page(client) -> None:
    created = await client.post(
        "/v1/customers",
        headers=ADMIN,
        json={"id": "icn-a", "currency": "USD", "price_book": "rrb", "billing": "postpaid"},
    )
    assert created.status_code == 201, created.text
    now = datetime.now(UTC)
    period = period_of(now, Cycle())
    sent = await client.post(
        "/v1/usage-events",
        headers=ADMIN,
        json=[
            {
                "event_id": f"e{i}",
                "customer_id": "icn-a",
                "model": "model-a",
                "timestamp": now.isoformat(),
                "usage": {"input_tokens": 100_000, "output_tokens": 500},
            }
            for i in range(5)
        ],
    )
    assert sent.json()["accepted"] == 5, sent.text
    closed = await client.post(
        "/v1/billing/close",
        headers=ADMIN,
        json={"until": utc(period.end + timedelta(hours=1, seconds=1)), "customer_id": "icn-a", "early": True},
    )
    [invoice] = closed.json()["closed"]
    assert invoice["total"] == "5.10"
    before = (await client.get(f"/v1/invoices/{invoice['invoice_id']}", headers=ADMIN)).json()
    assert before["credit_notes"] == []
    fixed = await client.post("/v1/price-books", headers=ADMIN, json=book("v2", utc(period.start), "6.00"))
    assert fixed.status_code == 201, fixed.text
    applied = await client.post(
        "/v1/rerate",
        headers=ADMIN,
        json={"price_book": "rrb", "version": "v2", "from": utc(period.start), "to": utc(period.end), "mode": "apply"},
    )
    assert applied.status_code == 200, applied.text
    [note] = applied.json()["credit_notes"]
    assert note["total"] == "-2.00" and note["invoice_id"] == invoice["invoice_id"]
    issued = (await client.get(f"/v1/credit-notes/{note['id']}", headers=ADMIN)).json()["issued_at"]

    read = await client.get(f"/v1/invoices/{invoice['invoice_id']}", headers=ADMIN)
    assert read.json()["credit_notes"] == [
        {"id": note["id"], "number": note["number"], "kind": "credit", "total": "-2.00", "issued_at": issued}
    ], read.text
    assert read.json()["total"] == "5.10"  # the frozen document as issued
    listed = (await client.get("/v1/customers/icn-a/invoices", headers=ADMIN)).json()["invoices"]
    assert [i["credit_notes"] for i in listed] == [read.json()["credit_notes"]]

    await sign_in(client, ADMIN_KEY)
    page = await client.get(f"/console/invoices/{invoice['invoice_id']}")
    assert page.status_code == 200, page.text[:300]
    assert f'href="/console/credit-notes/{note["id"]}"' in page.text and note["number"] in page.text
    assert "-2.00" in page.text
    shown = await client.get(f"/console/credit-notes/{note['id']}")
    assert shown.status_code == 200, shown.text[:300]
    assert f"Credit note {note['number']}" in shown.text and "-2.00" in shown.text
    assert invoice["number"] in shown.text
    assert (await client.get("/console/credit-notes/cn_nope")).status_code == 404
    # another customer's key: a 403 page that shows nothing of the note
    other = await client.post("/v1/customers", headers=ADMIN, json={"id": "icn-b", "price_book": "rrb"})
    assert other.status_code == 201, other.text
    key = (await client.post("/v1/api-keys", headers=ADMIN, json={"scope": "customer:icn-b"})).json()["key"]
    await sign_in(client, key)
    refused = await client.get(f"/console/credit-notes/{note['id']}")
    assert refused.status_code == 403 and "Forbidden" in refused.text, refused.text[:300]
    assert "-2.00" not in refused.text and "icn-a" not in refused.text

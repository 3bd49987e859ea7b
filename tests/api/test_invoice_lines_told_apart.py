"""Two lines of one model and token type that the invoice keeps apart (a price version that took
effect mid-period, two rules matching the usage's dimensions) print what sets them apart, on the
page and in the PDF: each printed "m input", at the same unit price, so a reader saw the same
line twice and could not tell which usage was priced by which version or rule."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from pypdf import PdfReader

from tests.api.apps import api_client
from tests.api.closing import close_invoice, utc

ADMIN = {"Authorization": "Bearer apart-admin"}


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="apart-admin") as c:
        yield c


async def _printed(client, invoice_id: str) -> tuple[str, str]:
    page = await client.get(f"/v1/invoices/{invoice_id}", headers={**ADMIN, "Accept": "text/html"})
    pdf = await client.get(f"/v1/invoices/{invoice_id}", headers={**ADMIN, "Accept": "application/pdf"})
    assert page.status_code == pdf.status_code == 200
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    return page.text, text


def _book(version: str, effective_from: str, n_price: str) -> dict:
    # m's input stays at $10/M in both versions; only n's price changes
    return {
        "id": "apart",
        "currency": "USD",
        "effective_from": effective_from,
        "version": version,
        "rules": [
            {"id": "in", "model": "m", "token_type": "input", "price": "10"},
            {"id": "n-in", "model": "n", "token_type": "input", "price": n_price},
        ],
    }


async def test_lines_of_two_price_versions_at_one_price_print_their_versions(client) -> None:
    now = datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    middle = start + (now - start) / 2  # v2 takes effect mid-period, between the two calls
    assert (
        await client.post("/v1/price-books", headers=ADMIN, json=_book("v1", "2026-01-01T00:00:00Z", "5"))
    ).status_code == 201
    assert (await client.post("/v1/price-books", headers=ADMIN, json=_book("v2", utc(middle), "4"))).status_code == 201
    made = await client.post(
        "/v1/customers", headers=ADMIN, json={"id": "apart", "price_book": "apart", "billing": "postpaid"}
    )
    assert made.status_code == 201, made.text
    sent = await client.post(
        "/v1/usage-events",
        headers=ADMIN,
        json=[
            {
                "event_id": "before",
                "customer_id": "apart",
                "model": "m",
                "timestamp": utc(start + (middle - start) / 2),
                "usage": {"input_tokens": 5000, "output_tokens": 0},
            },
            {
                "event_id": "after",
                "customer_id": "apart",
                "model": "m",
                "timestamp": utc(middle + (now - middle) / 2),
                "usage": {"input_tokens": 7000, "output_tokens": 0},
            },
        ],
    )
    assert sent.json()["accepted"] == 2, sent.text
    invoice = await close_invoice(client, ADMIN, "apart")
    # By hand: 5,000 tokens at $10/M under v1 are $0.05, 7,000 under v2 $0.07: two lines, $0.12.
    assert [(ln["price_version"], ln["quantity"], ln["amount"]) for ln in invoice["lines"]] == [
        ("v1", 5000, "0.05"),
        ("v2", 7000, "0.07"),
    ]
    assert invoice["total"] == "0.12"
    page, pdf = await _printed(client, invoice["id"])
    assert "<td>m input (price version v1)</td>" in page and "<td>m input (price version v2)</td>" in page
    assert "m input (price version v1) 5,000 10 per 1M 0.05" in pdf
    assert "m input (price version v2) 7,000 10 per 1M 0.07" in pdf


async def test_lines_of_two_rules_at_one_price_print_their_rules(client) -> None:
    book = {
        "id": "regions",
        "currency": "USD",
        "effective_from": "2026-01-01T00:00:00Z",
        "version": "v1",
        "rules": [
            {"id": "in-us", "model": "m", "token_type": "input", "price": "10", "match": {"region": "us"}},
            {"id": "in-eu", "model": "m", "token_type": "input", "price": "10", "match": {"region": "eu"}},
            {"id": "out", "model": "m", "token_type": "output", "price": "20"},
        ],
    }
    assert (await client.post("/v1/price-books", headers=ADMIN, json=book)).status_code == 201
    made = await client.post(
        "/v1/customers", headers=ADMIN, json={"id": "regions", "price_book": "regions", "billing": "postpaid"}
    )
    assert made.status_code == 201, made.text
    now = datetime.now(UTC)
    sent = await client.post(
        "/v1/usage-events",
        headers=ADMIN,
        json=[
            {
                "event_id": f"e-{region}",
                "customer_id": "regions",
                "model": "m",
                "dimensions": {"region": region},
                "timestamp": utc(now - timedelta(seconds=1)),
                "usage": {"input_tokens": tokens, "output_tokens": 100},
            }
            for region, tokens in (("us", 3000), ("eu", 4000))
        ],
    )
    assert sent.json()["accepted"] == 2, sent.text
    invoice = await close_invoice(client, ADMIN, "regions")
    # By hand: us 3,000 input at $10/M $0.03, eu 4,000 $0.04; 200 output tokens at $20/M $0.004,
    # one line (one rule), printed as before, without a rule: it is told apart already.
    assert sorted(
        (ln["rule_id"], ln["quantity"], ln["amount"]) for ln in invoice["lines"] if ln["kind"] == "usage"
    ) == [("in-eu", 4000, "0.04"), ("in-us", 3000, "0.03"), ("out", 200, "0.00")]
    page, pdf = await _printed(client, invoice["id"])
    assert "<td>m input (rule in-us)</td>" in page and "<td>m input (rule in-eu)</td>" in page
    assert "m input (rule in-us) 3,000 10 per 1M 0.03" in pdf and "m input (rule in-eu) 4,000 10 per 1M 0.04" in pdf
    assert "<td>m output</td>" in page and "m output 200 20 per 1M 0.00" in pdf

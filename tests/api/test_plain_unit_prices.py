"""A tiny unit price, and a tiny exact amount, is written as a plain decimal wherever it leaves
tokentill (JSON, CSV, the console), never in scientific notation: a price of $0.0000005 a call
read "unit_price": "5E-7" (str(Decimal)). The stored lines, the period's rollup items and a
finalized invoice's content keep what they always held (str(Decimal): "5E-7"), so rows written
before group with rows written after, and an issued invoice's content and hash are untouched;
only what is shown is plain (pricing.money.plain: format(d, "f"), the value's own digits).

By hand: the book prices a call at 0.0000005 USD (per call) and model-a input at 0.50 per 1M
tokens. One event of 1 input token: the call's line is 1 x 0.0000005 = 0.0000005, the input's
exact amount 1 x 0.50 / 1,000,000 = 0.0000005 (5E-7 as str(Decimal) wrote both). Its unit price
0.50 is written as it was ("0.50": trailing zeros as the book wrote the price). (Output, at 1.00
per 1M, is priced for the reserve's hold; no output is used.)"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.api.apps import api_client
from tests.api.closing import close_invoice

ADMIN = {"Authorization": "Bearer plain-admin"}
BOOK = {
    "id": "tiny",
    "currency": "USD",
    "effective_from": "2026-01-01T00:00:00Z",
    "rules": [
        {"id": "call", "token_type": "request", "price": "0.0000005"},
        {"id": "a-in", "model": "model-a", "token_type": "input", "price": "0.50"},
        {"id": "a-out", "model": "model-a", "token_type": "output", "price": "1.00"},
    ],
}


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="plain-admin") as c:
        yield c


async def _used(client, cid: str) -> None:
    assert (await client.post("/v1/price-books", headers=ADMIN, json=BOOK)).status_code in (201, 409)
    made = await client.post(
        "/v1/customers", headers=ADMIN, json={"id": cid, "price_book": "tiny", "billing": "postpaid"}
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
                "timestamp": datetime.now(UTC).isoformat(),
                "usage": {"input_tokens": 1, "output_tokens": 0},
            }
        ],
    )
    assert sent.json()["accepted"] == 1, sent.text


def _prices(lines: list[dict]) -> dict[str, str]:
    return {ln["token_type"]: ln["unit_price"] for ln in lines if ln.get("unit_price") is not None and ln["quantity"]}


async def test_a_tiny_unit_price_and_exact_amount_read_as_plain_decimals(client) -> None:
    await _used(client, "tiny-1")
    upcoming = (await client.get("/v1/customers/tiny-1/invoices/upcoming", headers=ADMIN)).json()
    assert _prices(upcoming["lines"]) == {"request": "0.0000005", "input": "0.50"}, upcoming["lines"]
    trace = (await client.get("/v1/audit/charges/e1?customer_id=tiny-1", headers=ADMIN)).json()
    [charge] = trace["charges"] if "charges" in trace else [trace["usage_event"]["charge"]]
    assert _prices(charge["lines"]) == {"request": "0.0000005", "input": "0.50"}, charge["lines"]
    assert {ln["token_type"]: ln["exact_amount"] for ln in charge["lines"]} == {
        "request": "0.0000005",
        "input": "0.0000005",
    }, charge["lines"]
    held = await client.post(
        "/v1/reservations",
        headers=ADMIN,
        json={
            "customer_id": "tiny-1",
            "request_id": "r1",
            "model": "model-a",
            "estimate": {"input_tokens": 1, "max_output_tokens": 1},
        },
    )
    assert held.status_code == 201, held.text
    settled = await client.post(
        f"/v1/reservations/{held.json()['id']}/settle",
        headers=ADMIN,
        json={"usage": {"input_tokens": 1, "output_tokens": 0}},
    )
    assert settled.status_code == 200, settled.text
    assert _prices(settled.json()["lines"]) == {"request": "0.0000005", "input": "0.50"}, settled.text


async def test_an_issued_invoice_stored_as_before_reads_plain_and_verifies(client, scratch_url) -> None:
    """The finalized invoice's content holds "5E-7" as the code before wrote it (and as its hash
    covers): its JSON and CSV read 0.0000005, and verify stays ok."""
    await _used(client, "tiny-2")
    invoice = await close_invoice(client, ADMIN, "tiny-2")
    engine = create_async_engine(scratch_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        async with engine.connect() as conn:
            stored = (
                await conn.execute(
                    text(
                        "SELECT l ->> 'unit_price' FROM invoices i"
                        " CROSS JOIN LATERAL jsonb_array_elements(i.content -> 'lines') l"
                        " WHERE i.id = :id AND l ->> 'token_type' = 'request'"
                    ),
                    {"id": invoice["id"]},
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    assert stored == "5E-7"  # the document as issued, untouched
    assert _prices(invoice["lines"]) == {"request": "0.0000005", "input": "0.50"}, invoice["lines"]
    got = await client.get(f"/v1/invoices/{invoice['id']}", headers={**ADMIN, "Accept": "text/csv"})
    rows = {r["token_type"]: r["unit_price"] for r in csv.DictReader(io.StringIO(got.text)) if r["token_type"]}
    assert rows == {"request": "0.0000005", "input": "0.50"}, got.text
    verify = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]

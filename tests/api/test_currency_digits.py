"""Currencies whose minor unit is not a cent: a yen (JPY, no decimals) and a Kuwaiti dinar (KWD,
three) show their own number of digits wherever an amount reaches a person, and stay exact.
Before, every amount showed at least two decimals: 1000 JPY read "1000.00", 1.5 KWD "1.50"."""
from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from pypdf import PdfReader
from sqlalchemy import text

from ledger.db import connect
from tests.api.apps import api_client, currency_books
from wallets.periods import Cycle, period_of

ADMIN = {"Authorization": "Bearer digits-admin"}
# Per 1M tokens: 1,500 yen; 0.465 dinar.
PRICES = {"JPY": "1500", "KWD": "0.465"}


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="digits-admin", console=True,
                          books=currency_books(PRICES, "input", "output")) as c:
        yield c


async def _customer(client, currency: str, billing: str = "prepaid", **extra) -> str:
    cid = f"{currency.lower()}-{billing}"
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": cid, "currency": currency, "price_book": f"book-{currency}", "billing": billing, **extra})
    assert created.status_code == 201, created.text
    return cid


async def test_a_yen_wallet_shows_whole_yen_and_a_dinar_wallet_three_decimals(client) -> None:
    yen = await _customer(client, "JPY", low_balance_threshold="100")
    created = (await client.get(f"/v1/customers/{yen}", headers=ADMIN)).json()
    assert created["overdraft_limit"] == "0" and created["low_balance_threshold"] == "100"
    topped = await client.post(f"/v1/customers/{yen}/topups", headers=ADMIN,
                               json={"amount": "1000", "reference": "p1"})
    assert topped.status_code == 201, topped.text
    body = topped.json()
    assert body["applied_to_receivable"] == "0"
    assert body["grant"]["granted"] == "1000" and body["grant"]["remaining"] == "1000"
    assert body["wallet"]["available"] == "1000" and body["wallet"]["reserved"] == "0"
    assert body["wallet"]["receivable"] == "0" and body["wallet"]["overdraft_limit"] == "0"

    dinar = await _customer(client, "KWD")
    topped = await client.post(f"/v1/customers/{dinar}/topups", headers=ADMIN,
                               json={"amount": "1.5", "reference": "p1"})
    wallet = topped.json()["wallet"]
    assert wallet["available"] == "1.500" and wallet["reserved"] == "0.000" and wallet["overdraft_limit"] == "0.000"


async def test_a_settle_in_yen_keeps_the_exact_fraction_of_a_yen_a_call_costs(client) -> None:
    yen = await _customer(client, "JPY")
    await client.post(f"/v1/customers/{yen}/topups", headers=ADMIN, json={"amount": "1000", "reference": "p1"})
    held = await client.post("/v1/reservations", headers=ADMIN, json={
        "customer_id": yen, "request_id": "r1", "model": "model-a", "amount": "2"})
    assert held.status_code == 201 and held.json()["amount"] == "2", held.text
    settled = await client.post(f"/v1/reservations/{held.json()['id']}/settle", headers=ADMIN, json={
        "usage": {"input_tokens": 1000, "output_tokens": 0}, "final": True})
    assert settled.status_code == 200, settled.text
    # 1,000 tokens at 1,500 yen per 1M: 1.5 yen, exact (not rounded to whole yen in the ledger)
    assert settled.json()["charged"] == "1.5" and settled.json()["released"] == "0.5"
    assert settled.json()["lines"][0]["amount"] == "1.5"
    released = await client.post("/v1/reservations", headers=ADMIN, json={
        "customer_id": yen, "request_id": "r2", "model": "model-a", "amount": "3"})
    gone = await client.post(f"/v1/reservations/{released.json()['id']}/release", headers=ADMIN)
    assert gone.json()["released"] == "3", gone.text
    wallet = (await client.get(f"/v1/customers/{yen}/wallet", headers=ADMIN)).json()
    assert wallet["available"] == "998.5"


async def _usage(client, cid: str, tokens: list[int]) -> None:
    now = datetime.now(UTC)
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": f"e{i}", "customer_id": cid, "model": "model-a", "timestamp": now.isoformat(),
         "usage": {"input_tokens": n, "output_tokens": 0}} for i, n in enumerate(tokens)])
    assert sent.json()["accepted"] == len(tokens), sent.text


async def test_the_usage_report_in_yen_shows_whole_yen(client) -> None:
    yen = await _customer(client, "JPY", "postpaid")
    await _usage(client, yen, [2000, 2000])  # 3 yen each
    rows = (await client.get(f"/v1/customers/{yen}/usage?group_by=model", headers=ADMIN)).json()["rows"]
    assert [(r["quantity"], r["amount"]) for r in rows] == [(4000, "6")]


async def _closed(client, cid: str) -> dict:
    period = period_of(datetime.now(UTC), Cycle("UTC", None))
    closed = await client.post("/v1/billing/close", headers=ADMIN, json={
        "until": (period.end + timedelta(hours=1, seconds=1)).isoformat(), "customer_id": cid, "early": True})
    assert closed.status_code == 200, closed.text
    [one] = closed.json()["closed"]
    return one


async def test_a_yen_invoice_shows_whole_yen_lines_and_totals_and_ties_out(client) -> None:
    yen = await _customer(client, "JPY", "postpaid")
    await _usage(client, yen, [1000, 1000, 1000])  # 1.5 yen each: 4.5 yen, billed as one line of 4 (half to even)
    upcoming = (await client.get(f"/v1/customers/{yen}/invoices/upcoming", headers=ADMIN)).json()
    [usage, rounding] = upcoming["lines"]
    assert usage["amount"] == "4" and rounding["kind"] == "rounding" and rounding["amount"] == "0.5"
    assert upcoming["total"] == "4.5" and upcoming["subtotals"]["usage"] == "4"
    assert upcoming["subtotals"]["discounts"] == "0" and upcoming["top_ups"] == "0"
    closed = await _closed(client, yen)
    # the amount due is whole yen: 4.5 half to even is 4, the 0.5 yen posted to the rounding account
    assert closed["total"] == "4.5" and closed["amount_due"] == "4"
    invoice = (await client.get(f"/v1/invoices/{closed['invoice_id']}", headers=ADMIN)).json()
    assert [ln["amount"] for ln in invoice["lines"]] == ["4", "0.5"]
    assert invoice["opening_balance"] == {"credits": "0", "reserved": "0", "receivable": "0"}
    assert invoice["amount_due"] == "4" and invoice["amount_paid"] == "0" and invoice["amount_remaining"] == "4"
    assert invoice["amount_due_rounding"] == "-0.5" and invoice["closing_balance"]["receivable"] == "4"
    paid = await client.post(f"/v1/invoices/{closed['invoice_id']}/payments", headers=ADMIN,
                             json={"amount": "4", "reference": "wire-1"})
    assert paid.status_code == 201, paid.text
    assert paid.json()["amount"] == "4" and paid.json()["amount_paid"] == "4"
    assert paid.json()["amount_remaining"] == "0" and paid.json()["payment_status"] == "paid"


async def test_a_dinar_invoice_shows_three_decimals_in_json_html_and_csv(client) -> None:
    dinar = await _customer(client, "KWD", "postpaid")
    await _usage(client, dinar, [1_000_000, 1_000_000])  # 0.465 each
    closed = await _closed(client, dinar)
    path = f"/v1/invoices/{closed['invoice_id']}"
    invoice = (await client.get(path, headers=ADMIN)).json()
    assert invoice["total"] == "0.930" and invoice["lines"][0]["amount"] == "0.930"
    assert invoice["top_ups"] == "0.000" and invoice["amount_due"] == "0.930"
    html = (await client.get(path, headers={**ADMIN, "Accept": "text/html"})).text
    assert "0.930" in html and "0.000" in html and "0.00<" not in html
    csv_text = (await client.get(path, headers={**ADMIN, "Accept": "text/csv"})).text
    assert ",0.930,KWD," in csv_text
    pdf = (await client.get(path, headers={**ADMIN, "Accept": "application/pdf"})).content
    printed = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "0.930" in printed and "0.000" in printed


async def test_the_console_shows_a_yen_wallet_and_its_usage_in_whole_yen(client) -> None:
    yen = await _customer(client, "JPY")
    await client.post(f"/v1/customers/{yen}/topups", headers=ADMIN, json={"amount": "1000", "reference": "p1"})
    await _usage(client, yen, [2000, 2000])  # 3 yen each
    token = re.search(r'name="_csrf_token" value="([^"]+)"', (await client.get("/console/sign-in")).text).group(1)
    await client.post("/console/sign-in", data={"key": "digits-admin", "_csrf_token": token})
    page = (await client.get(f"/console/customers/{yen}")).text
    available = re.search(r'data-figure="available">.*?<div class="value">([^<]*)<', page, re.S)
    assert available is not None and available.group(1) == "994", page
    assert 'class="figure owed"' not in page
    day = datetime.now(UTC).date().isoformat()
    usage = (await client.get(f"/console/customers/{yen}/usage", params={"from": day, "to": day})).text
    assert ">6<" in usage and "6.00" not in usage, usage


async def test_webhook_payloads_show_the_currency_digits(client, scratch_url) -> None:
    yen = await _customer(client, "JPY", low_balance_threshold="500")
    await client.post(f"/v1/customers/{yen}/topups", headers=ADMIN, json={"amount": "1000", "reference": "p1"})
    held = await client.post("/v1/reservations", headers=ADMIN, json={
        "customer_id": yen, "request_id": "big", "model": "model-a", "amount": "600"})
    assert held.status_code == 201, held.text
    dinar = await _customer(client, "KWD", "postpaid")
    await _usage(client, dinar, [1_000_000])
    await _closed(client, dinar)
    db = connect(scratch_url, pool_size=1)
    try:
        rows = await db.read(lambda conn: conn.execute(text(
            "SELECT topic, payload FROM outbox WHERE topic IN ('balance.low', 'invoice.finalized') ORDER BY id")))
        payloads = {row.topic: row.payload for row in rows}
    finally:
        await db.dispose()
    assert payloads["balance.low"]["available"] == "400" and payloads["balance.low"]["threshold"] == "500"
    finalized = payloads["invoice.finalized"]
    assert finalized["total"] == "0.465" and finalized["amount_due"] == "0.465" and finalized["currency"] == "KWD"


async def test_a_yen_rerate_and_its_credit_note_show_whole_yen(client) -> None:
    yen = await _customer(client, "JPY", "postpaid")
    await _usage(client, yen, [2000, 2000])  # 3 yen each at 1,500 yen per 1M
    closed = await _closed(client, yen)
    period = period_of(datetime.now(UTC), Cycle("UTC", None))
    start, end = (t.isoformat().replace("+00:00", "Z") for t in (period.start, period.end))
    fixed = await client.post("/v1/price-books", headers=ADMIN, json={
        "id": "book-JPY", "version": "v2", "currency": "JPY", "effective_from": start,
        "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "1000"},
                  {"id": "out", "model": "model-a", "token_type": "output", "price": "1000"}]})
    assert fixed.status_code == 201, fixed.text
    body = {"price_book": "book-JPY", "version": "v2", "from": start, "to": end}
    seen = (await client.post("/v1/rerate", headers=ADMIN, json={**body, "mode": "preview"})).json()
    # by hand: 4,000 tokens, 6 yen at 1,500 per 1M, 4 yen at 1,000
    assert seen["delta"] == "-2" and seen["customers"][0]["old_amount"] == "6", seen
    assert seen["customers"][0]["lines"][0]["new_amount"] == "4"
    done = (await client.post("/v1/rerate", headers=ADMIN, json={**body, "mode": "apply"})).json()
    [note] = done["credit_notes"]
    assert note["total"] == "-2" and note["invoice_id"] == closed["invoice_id"], done

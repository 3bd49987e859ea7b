"""A unit price in the console says what unit it prices: per 1M tokens, per call, as the
invoice's own renderings say it."""
from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from api.demo import PRICE_BOOK
from tests.api.apps import api_client, sign_in

ADMIN_KEY = "console-unit-prices-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def test_the_invoice_and_the_trace_say_per_what_a_unit_price_is(database_url):
    """1,000 input tokens at 10.00 per 1M and a call at 0.01: the invoice page's and the charge
    trace's Unit price read a bare "10.00" beside a quantity of 1,000 and an amount of 0.01."""
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        book, customer = f"ubook-{uuid.uuid4().hex[:8]}", f"units-{uuid.uuid4().hex[:8]}"
        assert (await client.post("/v1/price-books", headers=ADMIN, json={**PRICE_BOOK, "id": book})).status_code == 201
        assert (await client.post("/v1/customers", headers=ADMIN, json={
            "id": customer, "price_book": book, "billing": "postpaid"})).status_code == 201
        used = await client.post("/v1/usage-events", headers=ADMIN, json=[{
            "event_id": "priced-1", "customer_id": customer, "model": "model-a",
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "usage": {"input_tokens": 1000}}])
        assert used.status_code == 200 and used.json()["accepted"] == 1, used.text
        await sign_in(client, ADMIN_KEY)
        invoice = await client.get(f"/console/customers/{customer}/invoices/upcoming")
        trace = await client.get("/console/audit/trace", params={"request_id": "priced-1", "customer_id": customer})
        for page in (invoice, trace):
            assert page.status_code == 200
            prices = re.findall(r'<td class="num" data-unit-price>([^<]*)</td>', page.text)
            assert "10.00 per 1M" in prices and "0.01 each" in prices, prices

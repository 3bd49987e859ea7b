"""The usage page shows a customer's days in its own time zone, as its invoices count its
periods: a Tokyo customer's month is Tokyo's. The page showed UTC days and a UTC month, so usage
at 05:00 in Tokyo on the 1st fell on the UTC day before, in the UTC month before: the page's
"this month" and the invoice's "usage so far" did not agree."""
from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from api.demo import PRICE_BOOK
from tests.api.apps import api_client, sign_in

ADMIN_KEY = "console-usage-zone-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def test_the_usage_page_counts_days_in_the_customers_time_zone(database_url):
    now = datetime.now(UTC)
    zone = "Etc/GMT-14" if now.hour >= 12 else "Etc/GMT+12"  # UTC+14 or UTC-12: another day than UTC's now
    local_day = now.astimezone(ZoneInfo(zone)).date().isoformat()
    assert local_day != now.date().isoformat()
    customer = f"zone-{uuid.uuid4().hex[:8]}"
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        book = f"zbook-{uuid.uuid4().hex[:8]}"
        assert (await client.post("/v1/price-books", headers=ADMIN, json={**PRICE_BOOK, "id": book})).status_code == 201
        assert (await client.post("/v1/customers", headers=ADMIN, json={
            "id": customer, "price_book": book, "time_zone": zone})).status_code == 201
        sent = await client.post("/v1/usage-events", headers=ADMIN, json=[{
            "event_id": f"e-{customer}", "customer_id": customer, "model": "model-a",
            "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "usage": {"input_tokens": 1000}}])
        assert sent.status_code == 200, sent.text
        upcoming = (await client.get(f"/v1/customers/{customer}/invoices/upcoming", headers=ADMIN)).json()
        await sign_in(client, ADMIN_KEY)
        for query in (f"?from={local_day}&to={local_day}", ""):  # the day asked; this month, the customer's
            page = await client.get(f"/console/customers/{customer}/usage{query}")
            assert page.status_code == 200, page.text[-800:]
            assert f"({zone} days)" in page.text
            total = re.search(r'data-figure="usage-total">([^<]*)<', page.text).group(1)
            assert total == upcoming["total"], (query, total, upcoming["total"])
            data = json.loads(re.search(r'<script type="application/json" id="usage-data">(.*?)</script>',
                                        page.text, re.S).group(1))
            assert data["api"]["time_zone"] == zone  # the chart's data is the usage API's, for that zone
            api = (await client.get(f"/v1/customers/{customer}/usage", headers=ADMIN, params=data["api"])).json()
            assert {r["day"] for r in api["rows"]} == {local_day}
            drawn = {(day, s["model"], s["token_type"]): amount for s in data["series"]
                     for day, amount in zip(data["days"], s["amounts"], strict=True) if amount != "0.00"}
            assert drawn == {(r["day"], r["model"], r["token_type"]): r["amount"] for r in api["rows"]}

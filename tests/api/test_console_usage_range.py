"""The usage page's range of days: a range the API cannot express is refused as the API
refuses it (422, a page naming the field), never a 500."""
from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from api.demo import PRICE_BOOK
from tests.api.apps import api_client, sign_in

ADMIN_KEY = "console-usage-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.mark.parametrize("query", ["from=9999-12-01&to=9999-12-31", "from=0999-12-01&to=0999-12-31",
                                   "from=2026-03-10&to=2026-03-01", "from=2026-02-30"])
async def test_a_range_out_of_bounds_is_a_422_page(database_url, query):
    """The last day of year 9999 has no next day to end the range at: it was a 500."""
    customer = f"range-{uuid.uuid4().hex[:8]}"
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        assert (await client.post("/v1/customers", headers=ADMIN, json={"id": customer})).status_code == 201
        await sign_in(client, ADMIN_KEY)
        page = await client.get(f"/console/customers/{customer}/usage?{query}")
        assert page.status_code == 422 and "text/html" in page.headers["content-type"], page.status_code
        assert 'role="alert"' in page.text


async def test_the_usage_page_of_a_customer_with_a_free_allowance_lists_its_allowance_line(database_url):
    """A free allowance pays usage with a negative line of no token type: the page read each
    amount as a positive one and answered 422 "amount: must not be negative" (a discount's line
    did the same), and past that it sorted the series by (model, token type), comparing None
    with a string. Such a customer could not see its usage at all."""
    customer = f"allow-{uuid.uuid4().hex[:8]}"
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        book = f"abook-{uuid.uuid4().hex[:8]}"
        assert (await client.post("/v1/price-books", headers=ADMIN, json={**PRICE_BOOK, "id": book})).status_code == 201
        assert (await client.post("/v1/customers", headers=ADMIN,
                                  json={"id": customer, "price_book": book})).status_code == 201
        now = datetime.now(UTC)
        overrides = await client.put(f"/v1/customers/{customer}/price-overrides", headers=ADMIN, json={
            "effective_from": (now - timedelta(days=40)).strftime("%Y-%m-%dT00:00:00Z"),
            "free_allowances": [{"id": "free-1", "amount": "0.004"}]})
        assert overrides.status_code < 300, overrides.text
        sent = await client.post("/v1/usage-events", headers=ADMIN, json=[{
            "event_id": f"e-{customer}", "customer_id": customer, "model": "model-a",
            "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "usage": {"input_tokens": 1000}}])
        assert sent.status_code == 200, sent.text
        day = now.date().isoformat()
        api = (await client.get(f"/v1/customers/{customer}/usage", headers=ADMIN, params={
            "from": f"{day}T00:00:00Z", "to": (now + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z"),
            "group_by": "day,model,token_type"})).json()["rows"]
        assert any(row["token_type"] is None for row in api), api  # the allowance's line
        await sign_in(client, ADMIN_KEY)
        page = await client.get(f"/console/customers/{customer}/usage?from={day}&to={day}")
        assert page.status_code == 200, re.findall(r"role=\"alert\">.*?</div>", page.text, re.S)
        total = sum(Decimal(row["amount"]) for row in (await client.get(  # a row per token type
            f"/v1/customers/{customer}/usage", headers=ADMIN, params={
                "from": f"{day}T00:00:00Z", "to": (now + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z"),
                "group_by": ""})).json()["rows"])
        assert f'data-figure="usage-total">{total}<' in page.text
        for row in api:
            assert f"<td class=\"num\">{row['amount']}</td>" in page.text
        assert "<td>model-a</td><td>free allowance</td>" in page.text

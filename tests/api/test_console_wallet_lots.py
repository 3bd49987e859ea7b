"""The wallet page's credit lots: a page at a time, in the order they are spent."""
from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime, timedelta

from api.console import customer as console_customer
from tests.api.apps import api_client, sign_in

ADMIN_KEY = "console-lots-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def test_every_lot_is_listed_once_a_page_at_a_time_in_spending_order(database_url, monkeypatch):
    """A wallet of many lots (a grant a day, say) listed every one on the wallet page at once.
    Now a page of them at a time, in consumption order (priority, expiry, age), each once."""
    monkeypatch.setattr(console_customer, "WALLET_LOTS", 3)
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        customer = f"lots-{uuid.uuid4().hex[:8]}"
        assert (await client.post("/v1/customers", headers=ADMIN, json={"id": customer})).status_code == 201
        soon = datetime.now(UTC) + timedelta(days=30)
        for n, (priority, expires) in enumerate([(100, None), (10, None), (100, soon), (10, soon + timedelta(days=1)),
                                                 (100, None), (50, soon), (10, soon)]):
            body = {"amount": f"{n + 1}.00", "priority": priority, "reference": f"lot {n}"}
            if expires is not None:
                body["expires_at"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
            topped = await client.post(f"/v1/customers/{customer}/topups", json=body,
                                       headers={**ADMIN, "Idempotency-Key": f"{customer}-{n}"})
            assert topped.status_code == 201, topped.text
        wallet = (await client.get(f"/v1/customers/{customer}/wallet", headers=ADMIN)).json()
        expected = [g["id"] for g in wallet["grants"]]
        assert len(expected) == 7
        await sign_in(client, ADMIN_KEY)
        seen: list[str] = []
        url: str | None = f"/console/customers/{customer}"
        while url is not None and len(seen) <= len(expected):
            page = await client.get(url)
            assert page.status_code == 200
            rows = re.findall(r'<tr data-lot="([^"]+)">', page.text)
            assert 0 < len(rows) <= 3, rows
            assert 'data-figure="available"' in page.text  # the balances on every page
            seen += rows
            found = re.search(r'<a href="([^"]+)" rel="next">', page.text)
            url = None if found is None else html.unescape(found.group(1))
        assert seen == expected
        bad = await client.get(f"/console/customers/{customer}", params={"lots": "bm90LW91cnM"})
        assert bad.status_code == 400 and "invalid_cursor" in bad.text

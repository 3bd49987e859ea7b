"""The console's trial balance in a ledger of several currencies: each currency is one click
away, and the page opens on one that has postings."""
from __future__ import annotations

import re
import uuid

from litestar.testing import AsyncTestClient

from api.app import create_app
from api.settings import Settings

ADMIN_KEY = "console-tb-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _field(text: str, name: str) -> str:
    return re.search(rf'name="{name}"[^>]*? value="([^"]*)"', text).group(1)


async def _credited(client, currency: str, amount: str) -> str:
    customer = f"tb-{currency.lower()}-{uuid.uuid4().hex[:8]}"
    assert (await client.post("/v1/customers", headers=ADMIN,
                              json={"id": customer, "currency": currency})).status_code == 201
    topped = await client.post(f"/v1/customers/{customer}/topups", headers={**ADMIN, "Idempotency-Key": customer},
                               json={"amount": amount, "reference": "tb"})
    assert topped.status_code in (200, 201), topped.text
    return customer


async def test_every_currency_of_the_ledger_has_its_trial_balance_a_click_away(database_url):
    """A ledger in EUR and in JPY (and USD, if other tests posted some): the page showed one
    currency and offered no way to the others but editing the address."""
    app = create_app(Settings(admin_key=ADMIN_KEY, scheduler=False), database_url)
    async with AsyncTestClient(app=app, base_url="https://console.test") as client:
        eur, jpy = await _credited(client, "EUR", "12.50"), await _credited(client, "JPY", "700")
        token = _field((await client.get("/console/sign-in")).text, "_csrf_token")
        await client.post("/console/sign-in", data={"key": ADMIN_KEY, "_csrf_token": token}, follow_redirects=False)
        page = await client.get("/console/audit")
        assert page.status_code == 200
        links = dict(re.findall(r'<a href="/console/audit\?currency=([A-Z]{3})"[^>]*>([A-Z]{3})</a>', page.text))
        assert {"EUR", "JPY"} <= set(links), links
        for currency, customer, amount in (("EUR", eur, "12.50"), ("JPY", jpy, "700.00")):
            shown = await client.get("/console/audit", params={"currency": currency})
            assert shown.status_code == 200
            assert f"Every account in {currency}" in shown.text
            lot = rf"<code>liability:customer:{customer}:lot:\w+</code></td>"
            assert re.search(rf"{lot}<td[^>]*>[^<]*</td><td[^>]*>{re.escape(amount)}</td>", shown.text), shown.text

"""The console's trial balance in a ledger of several currencies: each currency is one click
away, and the page opens on one that has postings."""
from __future__ import annotations

import html
import re
import uuid

from api.console import auditor
from tests.api.apps import api_client, sign_in

ADMIN_KEY = "console-tb-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _currency() -> str:
    """A currency of this test alone (three capital letters)."""
    return "".join(chr(65 + b % 26) for b in uuid.uuid4().bytes[:3])


async def _credited(client, currency: str, amount: str) -> str:
    customer = f"tb-{currency.lower()}-{uuid.uuid4().hex[:8]}"
    assert (await client.post("/v1/customers", headers=ADMIN,
                              json={"id": customer, "currency": currency})).status_code == 201
    topped = await client.post(f"/v1/customers/{customer}/topups", headers={**ADMIN, "Idempotency-Key": customer},
                               json={"amount": amount, "reference": "tb"})
    assert topped.status_code in (200, 201), topped.text
    return customer


async def test_every_currency_of_the_ledger_has_its_trial_balance_a_click_away(database_url):
    """A ledger in two more currencies (and USD, if other tests posted some): the page showed one
    currency and offered no way to the others but editing the address."""
    one, two = _currency(), _currency()
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        first, second = await _credited(client, one, "12.50"), await _credited(client, two, "700")
        await sign_in(client, ADMIN_KEY)
        page = await client.get("/console/audit")
        assert page.status_code == 200
        links = dict(re.findall(r'<a href="/console/audit\?currency=([A-Z]{3})"[^>]*>([A-Z]{3})</a>', page.text))
        assert {one, two} <= set(links), links
        for currency, customer, amount in ((one, first, "12.50"), (two, second, "700.00")):
            shown = await client.get("/console/audit", params={"currency": currency})
            assert shown.status_code == 200
            assert f"Every account in {currency}" in shown.text
            lot = rf"<code>liability:customer:{customer}:lot:\w+</code></td>"
            assert re.search(rf"{lot}<td[^>]*>[^<]*</td><td[^>]*>{re.escape(amount)}</td>", shown.text), shown.text


async def test_every_account_of_the_trial_balance_is_reachable_a_page_at_a_time(database_url, monkeypatch):
    """Every lot is an account: a ledger of many lots listed every account on one page (100,000
    lots, 100,000 rows). Now a page of accounts at a time, by code, under the whole totals."""
    monkeypatch.setattr(auditor, "TRIAL_BALANCE_PAGE", 5)
    currency = _currency()
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        for amount in ("1.00", "2.00", "3.00", "4.00"):
            await _credited(client, currency, amount)
        expected = [a["account"] for a in (await client.get(
            "/v1/audit/trial-balance", params={"currency": currency}, headers=ADMIN)).json()["accounts"]]
        assert len(expected) > 5
        await sign_in(client, ADMIN_KEY)
        seen: list[str] = []
        url: str | None = f"/console/audit?currency={currency}"
        while url is not None and len(seen) <= len(expected):
            page = await client.get(url)
            assert page.status_code == 200
            rows = re.findall(r'<tr data-account="([^"]+)">', page.text)
            assert 0 < len(rows) <= 5
            assert 'data-figure="total-debits"' in page.text  # the whole ledger's totals on every page
            seen += rows
            found = re.search(r'<a href="([^"]+)" rel="next">', page.text)
            url = None if found is None else html.unescape(found.group(1))
        assert seen == sorted(expected)

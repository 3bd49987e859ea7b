"""An invoice's renderings downloaded from the console are not kept by the browser, as its pages
are not (`Cache-Control: no-store`): a PDF opened in the browser from the invoices page stayed in
its HTTP cache past the sign-out (Back showed it again without asking the server), readable by
whoever used the browser next. The journal export already said no-store; the HTML rendering said it
too; the PDF and the CSV said nothing."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from api.demo import PRICE_BOOK
from tests.api.apps import api_client, sign_in
from wallets.periods import Cycle, period_of

ADMIN_KEY = "console-downloads-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
async def console(database_url):
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        book = f"dl-{uuid.uuid4().hex[:8]}"
        assert (await client.post("/v1/price-books", headers=ADMIN, json={**PRICE_BOOK, "id": book})).status_code == 201
        customer = f"dl-{uuid.uuid4().hex[:8]}"
        assert (await client.post("/v1/customers", headers=ADMIN, json={"id": customer, "price_book": book,
                                                                          "billing": "postpaid"})).status_code == 201
        used = await client.post("/v1/usage-events", headers=ADMIN, json=[{
            "event_id": f"dl-{customer}", "customer_id": customer, "model": "model-a",
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "usage": {"input_tokens": 1000}}])
        assert used.status_code == 200, used.text
        closed = await client.post("/v1/billing/close", headers=ADMIN, json={
            "until": (period_of(datetime.now(UTC), Cycle()).end + timedelta(hours=2)).isoformat(),
            "customer_id": customer, "early": True})
        assert closed.status_code == 200, closed.text
        await sign_in(client, ADMIN_KEY)
        yield client, customer, closed.json()["closed"][0]["invoice_id"]


@pytest.mark.parametrize("fmt", ["pdf", "csv", "html"])
@pytest.mark.parametrize("which", ["finalized", "upcoming"])
async def test_an_invoice_download_is_not_kept_by_the_browser(console, fmt, which):
    client, customer, invoice = console
    path = (f"/console/invoices/{invoice}" if which == "finalized"
            else f"/console/customers/{customer}/invoices/upcoming")
    answer = await client.get(f"{path}/{fmt}")
    assert answer.status_code == 200, answer.text[:300]
    assert "no-store" in answer.headers.get("cache-control", ""), dict(answer.headers)
    assert answer.headers.get("x-content-type-options") == "nosniff"

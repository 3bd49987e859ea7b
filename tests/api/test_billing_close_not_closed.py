"""POST /v1/billing/close with a period it could not close answered 200 with the others only:
the caller (an operator, a runbook) could not tell an invoice was missing. The answer now names
each period not closed, by customer, with the reason (`not_closed`, empty when all closed)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.settings import Settings
from tests.api.test_invoice_bill_to import ADMIN, _customer_with_usage
from tests.api.test_invoice_renderings import SEED
from tests.integration.wallets.wallet_kit import refusing
from wallets.commands import ClosePeriod
from wallets.periods import Cycle, period_of


@pytest.fixture
async def client(scratch_url):
    app = create_app(Settings(admin_key="billto-admin", scheduler=False), scratch_url)
    async with AsyncTestClient(app=app) as c:
        assert (await c.post("/v1/price-books", headers=ADMIN, json=SEED)).status_code == 201
        yield c


async def test_a_period_the_close_could_not_close_is_named_in_the_answer(client, monkeypatch):
    await _customer_with_usage(client, "stuck", None)
    await _customer_with_usage(client, "fine", None)
    refusing(ClosePeriod, "stuck", monkeypatch)
    period = period_of(datetime.now(UTC), Cycle("UTC", None))
    until = (period.end + timedelta(hours=1, seconds=1)).isoformat()
    answer = await client.post("/v1/billing/close", headers=ADMIN, json={"until": until, "early": True})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [c["customer_id"] for c in body["closed"]] == ["fine"]
    assert body["not_closed"] == [{"customer_id": "stuck", "reason": "refused for the test"}]

    monkeypatch.undo()
    again = (await client.post("/v1/billing/close", headers=ADMIN, json={"until": until, "early": True})).json()
    assert [c["customer_id"] for c in again["closed"]] == ["stuck"] and again["not_closed"] == []

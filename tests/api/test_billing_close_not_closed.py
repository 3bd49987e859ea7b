"""POST /v1/billing/close with a period it could not close answered 200 with the others only:
the caller (an operator, a runbook) could not tell an invoice was missing. The answer now names
each period not closed, by customer, with the reason (`not_closed`, empty when all closed)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.api.apps import api_client
from tests.api.test_invoice_bill_to import ADMIN, _customer_with_usage
from tests.api.test_invoice_renderings import SEED
from tests.integration.wallets.wallet_kit import refusing
from wallets.billing import UNEXPECTED
from wallets.commands import ClosePeriod
from wallets.core.decide import RULES
from wallets.periods import Cycle, period_of


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="billto-admin", books=[SEED]) as c:
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


async def test_an_unexpected_failure_is_named_without_its_text(client, monkeypatch):
    """A refusal's message is the reason; an unexpected error's text (an exception's, which may
    show SQL or internals) stays in the server's log, and the answer says only that it happened.
    It held back the others of its batch (the close answered 500, none closed): they close."""
    for name in ("broken", "fine-20", "fine-39", "fine-40", "fine-a"):  # fine-20, 39, 40 in broken's lane
        await _customer_with_usage(client, name, None)
    real = RULES[ClosePeriod]

    def rule(state, cmd, now, book):
        if cmd.customer_id == "broken":
            raise RuntimeError("SELECT secret FROM internals")
        return real(state, cmd, now, book)

    monkeypatch.setitem(RULES, ClosePeriod, rule)
    period = period_of(datetime.now(UTC), Cycle("UTC", None))
    until = (period.end + timedelta(hours=1, seconds=1)).isoformat()
    answer = await client.post("/v1/billing/close", headers=ADMIN, json={"until": until, "early": True})
    assert answer.status_code == 200, answer.text
    assert answer.json()["not_closed"] == [{"customer_id": "broken", "reason": UNEXPECTED}]
    assert sorted(c["customer_id"] for c in answer.json()["closed"]) == ["fine-20", "fine-39", "fine-40", "fine-a"]
    assert "secret" not in answer.text

"""A misspelt field of an invoice payment or a billing close is a 422 naming it, and nothing is
done, as for the wallet calls. Dropped, `curency: "EUR"` recorded a euro wire on a dollar invoice
as dollars (the currency defaults to the invoice's), and `customer: "acme"` on an early close
closed every customer's period early, numbering their invoices before their periods ended."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.api.apps import api_client
from tests.api.closing import close_early
from wallets.periods import Cycle, period_of

ADMIN = {"Authorization": "Bearer typo-admin"}


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="typo-admin") as c:
        yield c


async def _owing(client, cid: str) -> None:
    """A postpaid customer that used $1.00 (100,000 tokens at $10/M) this period."""
    customer = {"id": cid, "currency": "USD", "price_book": "typos", "billing": "postpaid"}
    made = await client.post("/v1/customers", headers=ADMIN, json=customer)
    assert made.status_code == 201, made.text
    sent = await client.post(
        "/v1/usage-events",
        headers=ADMIN,
        json=[
            {
                "event_id": "e1",
                "customer_id": cid,
                "model": "model-a",
                "timestamp": datetime.now(UTC).isoformat(),
                "usage": {"input_tokens": 100_000, "output_tokens": 0},
            }
        ],
    )
    assert sent.json()["accepted"] == 1, sent.text


@pytest.fixture
async def book(client) -> None:
    made = await client.post(
        "/v1/price-books",
        headers=ADMIN,
        json={
            "id": "typos",
            "currency": "USD",
            "effective_from": "2026-01-01T00:00:00Z",
            "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "10"}],
        },
    )
    assert made.status_code == 201, made.text


def _refused(response, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error" and [f["field"] for f in body["fields"]] == [field], body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": "1.00", "reference": "wire-eur", "curency": "EUR"}, "curency"),
        ({"amount": "1.00", "reference": "wire-1", "memo": "March"}, "memo"),
    ],
)
async def test_an_invoice_payment_with_a_misspelt_field_is_not_recorded(client, book, body, field) -> None:
    await _owing(client, "typo-pay")
    [closed] = (await close_early(client, ADMIN, "typo-pay"))["closed"]
    _refused(await client.post(f"/v1/invoices/{closed['invoice_id']}/payments", headers=ADMIN, json=body), field)
    invoice = (await client.get(f"/v1/invoices/{closed['invoice_id']}", headers=ADMIN)).json()
    assert (invoice["payments"], invoice["amount_remaining"]) == ([], "1.00")
    wallet = (await client.get("/v1/customers/typo-pay/wallet", headers=ADMIN)).json()
    assert wallet["receivable"] == "1.00"


async def test_a_close_with_a_misspelt_field_closes_nothing(client, book) -> None:
    for cid in ("typo-a", "typo-b"):
        await _owing(client, cid)
    period = period_of(datetime.now(UTC), Cycle("UTC", None))
    until = (period.end + timedelta(hours=1, seconds=1)).isoformat().replace("+00:00", "Z")
    _refused(
        await client.post(
            "/v1/billing/close", headers=ADMIN, json={"until": until, "early": True, "customer": "typo-a"}
        ),
        "customer",
    )
    for cid in ("typo-a", "typo-b"):
        listed = (await client.get(f"/v1/customers/{cid}/invoices", headers=ADMIN)).json()
        assert listed["invoices"] == [], (cid, listed)


async def test_a_close_of_a_customer_that_does_not_exist_is_not_found(client, book) -> None:
    """A mistyped id (`typo_a` for `typo-a`) answered 200 with nothing closed, as if nothing were
    due, where every other call naming an unknown customer is 404."""
    await _owing(client, "typo-a")
    period = period_of(datetime.now(UTC), Cycle("UTC", None))
    until = (period.end + timedelta(hours=1, seconds=1)).isoformat().replace("+00:00", "Z")
    answer = await client.post(
        "/v1/billing/close", headers=ADMIN, json={"until": until, "early": True, "customer_id": "typo_a"}
    )
    assert answer.status_code == 404, answer.text
    assert answer.json()["code"] == "not_found"
    listed = (await client.get("/v1/customers/typo-a/invoices", headers=ADMIN)).json()
    assert listed["invoices"] == []

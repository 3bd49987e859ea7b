"""A hold of 0 on an empty prepaid wallet, over HTTP (the rule: tests/unit/wallets/test_zero_holds.py):
a priced model's call is 402 `insufficient_funds`, a free model's (price 0) is held at 0."""
from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from tests.api.apps import api_client


@pytest.fixture
async def client(db, database_url):
    async with api_client(database_url, admin="zero-admin", send_admin=True) as c:
        yield c


async def test_a_hold_of_0_on_an_empty_prepaid_wallet_starts_only_a_free_call(client: AsyncTestClient, tag: str):
    book = {"id": f"zero-{tag}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
            "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "10.00"},
                      {"id": "out", "model": "model-a", "token_type": "output", "price": "20.00"},
                      {"id": "free-in", "model": "model-free", "token_type": "input", "price": "0"},
                      {"id": "free-out", "model": "model-free", "token_type": "output", "price": "0"}]}
    assert (await client.post("/v1/price-books", json=book)).status_code == 201
    cid = f"zero-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book["id"]})).status_code == 201

    async def reserve(request_id: str, model: str, **hold) -> tuple[int, str | None]:
        """The answer's status and its `code` (a refusal) or `amount` (a hold)."""
        answer = await client.post("/v1/reservations", json={
            "customer_id": cid, "request_id": request_id, "model": model, **hold})
        body = answer.json()
        return answer.status_code, body.get("code", body.get("amount"))

    assert await reserve("r1", "model-a", amount="0") == (402, "insufficient_funds")
    assert await reserve("r2", "model-a", estimate={"input_tokens": 0, "max_output_tokens": 0}) == \
        (402, "insufficient_funds")
    assert await reserve("r3", "model-free", estimate={"input_tokens": 1000, "max_output_tokens": 500}) == \
        (201, "0.00")
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"})).status_code == 201
    assert await reserve("r4", "model-a", amount="0") == (201, "0.00")

"""A hold of 0 on an empty prepaid wallet, over HTTP (the rule: tests/unit/wallets/test_zero_holds.py):
a priced model's call is 402 `insufficient_funds`, a free model's (price 0) is held at 0."""
from __future__ import annotations

from litestar.testing import AsyncTestClient


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


async def test_a_hold_of_0_over_http_is_refused_for_a_model_any_of_whose_types_a_settle_charges(
        client: AsyncTestClient, tag: str):
    """The rule of tests/unit/wallets/test_zero_hold_rules.py over HTTP, on an empty prepaid wallet:
    input at $0 and reasoning at $10 per 1M with no output rule (1,000 reasoning tokens settle at
    $0.01); input and output at $0 with cached input at $10 per 1M (1,000 cached tokens: $0.01);
    input and output at $0.0002 per 1M (one token of each is 0.4 of an atomic unit, rounded to 0,
    but 1M of each settle at $0.0004): each is 402. An embeddings model at $0 with no output rule is
    free: held at 0."""
    book = {"id": f"zero-o-{tag}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
            "rules": [{"id": "r-in", "model": "model-r", "token_type": "input", "price": "0"},
                      {"id": "r-reasoning", "model": "model-r", "token_type": "reasoning", "price": "10"},
                      {"id": "c-in", "model": "model-c", "token_type": "input", "price": "0"},
                      {"id": "c-out", "model": "model-c", "token_type": "output", "price": "0"},
                      {"id": "c-cached", "model": "model-c", "token_type": "cached_input", "price": "10"},
                      {"id": "t-in", "model": "model-t", "token_type": "input", "price": "0.0002"},
                      {"id": "t-out", "model": "model-t", "token_type": "output", "price": "0.0002"},
                      {"id": "e-in", "model": "model-e", "token_type": "input", "price": "0"}]}
    posted = await client.post("/v1/price-books", json=book)
    assert posted.status_code == 201, posted.text
    cid = f"zero-o-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book["id"]})).status_code == 201
    for model in ("model-r", "model-c", "model-t"):
        answer = await client.post("/v1/reservations", json={
            "customer_id": cid, "request_id": f"{model}-0", "model": model, "amount": "0"})
        assert (answer.status_code, answer.json().get("code")) == (402, "insufficient_funds"), (model, answer.text)
    answer = await client.post("/v1/reservations", json={
        "customer_id": cid, "request_id": "e", "model": "model-e", "estimate": {"input_tokens": 2000,
                                                                               "max_output_tokens": 0}})
    assert (answer.status_code, answer.json().get("amount")) == (201, "0.00"), answer.text

"""A reserve whose estimate has no prompt, for a model its book prices on output alone (a speech or
image model's output): held for its output budget, as its settle of output alone is charged. It was
422 `unpriced_model` naming `input`, a price that 0 prompt tokens do not need."""

from __future__ import annotations

from litestar.testing import AsyncTestClient


async def test_an_estimate_with_no_prompt_is_held_for_a_model_priced_on_output_alone(
    client: AsyncTestClient, tag: str
) -> None:
    book = {
        "id": f"no-prompt-{tag}",
        "currency": "USD",
        "effective_from": "2026-01-01T00:00:00Z",
        "rules": [{"id": "v-out", "model": "model-v", "token_type": "output", "price": "15.00"}],
    }
    assert (await client.post("/v1/price-books", json=book)).status_code == 201
    cid = f"no-prompt-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book["id"]})).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"})).status_code == 201

    async def reserve(request_id: str, model: str, prompt: int, output: int) -> tuple[int, dict]:
        estimate = {"input_tokens": prompt, "max_output_tokens": output}
        answer = await client.post(
            "/v1/reservations",
            json={"customer_id": cid, "request_id": request_id, "model": model, "estimate": estimate},
        )
        return answer.status_code, answer.json()

    status, held = await reserve("r1", "model-v", 0, 1000)
    assert (status, held.get("amount")) == (201, "0.015"), held  # 1,000 output tokens at $15 per 1M
    settled = await client.post(
        f"/v1/reservations/{held['id']}/settle",
        json={"usage": {"input_tokens": 0, "output_tokens": 800}, "final": True},
    )
    assert settled.status_code == 200, settled.text
    assert (settled.json()["charged"], settled.json()["released"]) == ("0.012", "0.003")  # 800 x $15 / 1M
    assert (await client.get(f"/v1/customers/{cid}/wallet")).json()["available"] == "0.988"
    status, prompted = await reserve("r2", "model-v", 10, 1000)
    assert (status, prompted["code"]) == (422, "unpriced_model")  # a prompt needs its price
    status, unknown = await reserve("r3", "model-zzz", 0, 0)
    assert (status, unknown["code"]) == (422, "unpriced_model")  # a model no rule names is refused still

"""Every mutating wallet route under an Idempotency-Key: the replay answers the first answer's
status and bytes, refusals included (answers are kept as an outcome code and a body; api/ maps
the code to the status, the same way for the first answer and every replay)."""
from __future__ import annotations

from litestar.testing import AsyncTestClient


async def _twice(client: AsyncTestClient, path: str, key: str, body: dict | None = None):
    headers = {"Idempotency-Key": key}
    first = await client.post(path, json=body, headers=headers) if body is not None else \
        await client.post(path, headers=headers)
    again = await client.post(path, json=body, headers=headers) if body is not None else \
        await client.post(path, headers=headers)
    assert (again.status_code, again.content) == (first.status_code, first.content), (first.text, again.text)
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.headers["content-type"] == first.headers["content-type"]
    return first


async def test_each_wallet_call_replays_its_first_answer_byte_for_byte(client: AsyncTestClient, tag: str, book: str):
    cid = f"replay-{tag}"
    created = await _twice(client, "/v1/customers", f"c-{tag}", {"id": cid, "name": "R", "price_book": book})
    assert created.status_code == 201
    topup = await _twice(client, f"/v1/customers/{cid}/topups", f"t-{tag}", {"amount": "1.00"})
    assert topup.status_code == 201 and topup.json()["wallet"]["available"] == "1.00"
    grant = await _twice(client, f"/v1/customers/{cid}/grants", f"g-{tag}",
                         {"amount": "0.50", "expires_at": "2099-01-01T00:00:00+02:00"})
    assert grant.status_code == 201
    refused = await _twice(client, "/v1/reservations", f"r0-{tag}",
                           {"customer_id": cid, "request_id": "too-big", "model": "model-a", "amount": "9.00"})
    assert refused.status_code == 402 and refused.json()["code"] == "insufficient_funds"
    held = await _twice(client, "/v1/reservations", f"r1-{tag}",
                        {"customer_id": cid, "request_id": "ok", "model": "model-a",
                         "estimate": {"input_tokens": 1000, "max_output_tokens": 100}})
    assert held.status_code == 201
    rid = held.json()["id"]
    settled = await _twice(client, f"/v1/reservations/{rid}/settle", f"s-{tag}",
                           {"usage": {"input_tokens": 1000, "output_tokens": 10}})
    assert settled.status_code == 200 and settled.json()["charged"] == "0.0202"
    closed = await _twice(client, f"/v1/reservations/{rid}/release", f"x-{tag}")
    assert closed.status_code == 409 and closed.json()["reservation_status"] == "settled"
    again = await _twice(client, "/v1/reservations", f"r2-{tag}",
                         {"customer_id": cid, "request_id": "two", "model": "model-a", "amount": "0.10"})
    released = await _twice(client, f"/v1/reservations/{again.json()['id']}/release", f"y-{tag}")
    assert released.status_code == 200 and released.json()["released"] == "0.10"
    version = await _twice(client, "/v1/price-books", f"p-{tag}", {
        "id": f"other-{tag}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
        "rules": [{"id": "in", "model": "m", "token_type": "input", "price": "1"}]})
    assert version.status_code == 201
    unpriced = await _twice(client, "/v1/reservations", f"r3-{tag}",
                            {"customer_id": cid, "request_id": "u", "model": "model-zzz",
                             "estimate": {"input_tokens": 1}})
    assert unpriced.status_code == 422 and unpriced.json()["code"] == "unpriced_model"


async def test_an_existing_customer_answers_200_and_replays_so(client: AsyncTestClient, tag: str, book: str):
    body = {"id": f"twice-{tag}", "name": "T", "price_book": book}
    assert (await client.post("/v1/customers", json=body)).status_code == 201
    exists = await _twice(client, "/v1/customers", f"e-{tag}", body)
    assert exists.status_code == 200

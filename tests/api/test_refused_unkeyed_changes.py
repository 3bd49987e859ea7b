"""Guard (the leftover of 2759e76 and ca74de9): three checks now run after a call's Idempotency-Key is
read, so an unkeyed call they refuse opens its transaction, and takes its locks, before it is
refused: a budget create a rule refuses (a minute budget with a time_zone), a webhook endpoint at an
address the policy refuses, a limited key's move of a customer to a book it may not read. Sent many at
once beside calls that succeed on the same customer (its lane's reserves and budget creates,
renames) and on the same routes, each refused one is a 422 naming its field, writes nothing, and
holds up none of the others: every one is answered, the ones that may succeed all succeed."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.api.apps import bearer

pytestmark = pytest.mark.usefixtures("no_endpoint_left")
RULES = [
    {"id": "in", "model": "model-a", "token_type": "input", "price": "10.00"},
    {"id": "out", "model": "model-a", "token_type": "output", "price": "20.00"},
]


async def _customer(c: httpx.AsyncClient, cid: str) -> None:
    book = {"id": cid, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": RULES}
    assert (await c.post("/v1/price-books", json=book)).status_code == 201
    made = await c.post("/v1/customers", json={"id": cid, "price_book": cid, "billing": "postpaid"})
    assert made.status_code == 201, made.text


def _fields(answer: httpx.Response) -> tuple[int, str, tuple[str, ...]]:
    body = answer.json()
    return answer.status_code, body.get("code"), tuple(f["field"] for f in body.get("fields", []))


async def test_refused_budget_creates_write_nothing_and_hold_up_neither_creates_nor_reserves(http):
    c, _ = http
    cid = f"ru-b-{uuid.uuid4().hex[:8]}"
    await _customer(c, cid)
    good = {"customer_id": cid, "window": "day", "metric": "tokens", "limit": 1_000_000}
    bad = {**good, "window": "minute", "time_zone": "Asia/Tokyo"}  # 422 time_zone: a minute takes none
    estimate = {"input_tokens": 100, "max_output_tokens": 100}
    reserves = [
        c.post(
            "/v1/reservations",
            json={"customer_id": cid, "request_id": f"r{i}", "model": "model-a", "estimate": estimate},
        )
        for i in range(6)
    ]
    answers = await asyncio.gather(
        *[c.post("/v1/budgets", json=bad) for _ in range(8)],
        *[c.post("/v1/budgets", json={**good, "name": f"ok{i}"}) for i in range(4)],
        *reserves,
    )
    refused, made, held = answers[:8], answers[8:12], answers[12:]
    assert {_fields(a) for a in refused} == {(422, "validation_error", ("time_zone",))}
    assert [a.status_code for a in made + held] == [201] * 10, [a.text for a in made + held]
    listed = (await c.get("/v1/budgets", params={"customer_id": cid})).json()["budgets"]
    assert sorted(b["name"] for b in listed) == [f"ok{i}" for i in range(4)]  # none of the refused 8
    # each day budget counts the 6 holds of 100 + 100 tokens, whichever it was made before or after
    assert {b["used"] + b["held"] for b in listed} == {6 * 200}


async def test_refused_webhook_creates_write_nothing_and_hold_up_no_other_create(http):
    c, _ = http
    tag = uuid.uuid4().hex[:8]
    answers = await asyncio.gather(
        *[
            c.post("/v1/webhook-endpoints", json={"url": f"http://10.0.0.{i + 1}/{tag}", "topics": ["*"]})
            for i in range(6)
        ],
        *[
            c.post("/v1/webhook-endpoints", json={"url": f"https://hooks.example.com/{tag}/{i}", "topics": ["*"]})
            for i in range(4)
        ],
    )
    assert {_fields(a) for a in answers[:6]} == {(422, "validation_error", ("url",))}
    assert [a.status_code for a in answers[6:]] == [201] * 4
    listed = [e["url"] for e in (await c.get("/v1/webhook-endpoints")).json() if tag in e["url"]]
    assert sorted(listed) == [f"https://hooks.example.com/{tag}/{i}" for i in range(4)]


async def test_a_limited_keys_refused_moves_write_nothing_and_hold_up_no_other_change(http):
    c, _ = http
    tag = uuid.uuid4().hex[:8]
    a, other = f"ru-a-{tag}", f"ru-o-{tag}"
    for cid in (a, other):
        await _customer(c, cid)
    created = await c.post("/v1/api-keys", json={"scope": "admin", "customers": [a]})
    assert created.status_code == 201, created.text
    key = bearer(created.json()["key"])
    answers = await asyncio.gather(
        *[c.patch(f"/v1/customers/{a}", json={"price_book": other}, headers=key) for _ in range(6)],
        *[c.patch(f"/v1/customers/{a}", json={"name": f"n{i}"}, headers=key) for i in range(4)],
    )
    assert {_fields(a) for a in answers[:6]} == {(422, "validation_error", ("price_book",))}
    assert [x.status_code for x in answers[6:]] == [200] * 4
    assert (await c.get(f"/v1/customers/{a}")).json()["price_book"] == a
    assert len((await c.get(f"/v1/customers/{a}/changes")).json()["changes"]) == 4  # the renames alone

"""`POST /v1/usage-events`: each item of `rejected` names its `index`, its 0-based position in
the request, and `rejected` comes in request order. Before, the events refused as written
(a future timestamp, an empty usage) came first and those refused by rating (an unpriced model)
after them, with nothing but event_id and customer_id to map them back to what was sent.

Book: model-a input $10.00 per 1M tokens."""
from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from tests.api.apps import book_customer


@pytest.fixture
async def customer(client: AsyncTestClient, tag: str) -> str:
    return await book_customer(client, f"brej-{tag}", "input")


def _event(cid: str, event_id: str, **changes) -> dict:
    return {"event_id": event_id, "customer_id": cid, "model": "model-a", "timestamp": "2026-11-10T10:00:00Z",
            "usage": {"input_tokens": 1000}, **changes}


async def test_rejected_items_name_their_index_in_request_order(client, customer):
    sent = await client.post("/v1/usage-events", json=[
        _event(customer, "ok-1"),
        _event(customer, "unpriced", model="model-unpriced"),      # refused by rating
        _event(customer, "future", timestamp="2999-01-01T00:00:00Z"),  # refused as written
        _event(customer, "ok-2"),
        _event(customer, "empty", usage={}),                         # refused as written
        _event(customer, "unpriced-2", model="model-unpriced"),     # refused by rating
    ])
    assert sent.status_code == 200, sent.text
    answer = sent.json()
    assert answer["accepted"] == 2 and answer["duplicates"] == 0
    assert [r["event_id"] for r in answer["rejected"]] == ["unpriced", "future", "empty", "unpriced-2"]
    assert [(r["index"], r["event_id"]) for r in answer["rejected"]] == [
        (1, "unpriced"), (2, "future"), (4, "empty"), (5, "unpriced-2")]
    assert all(r["customer_id"] == customer and r["code"] and r["detail"] for r in answer["rejected"])


async def test_a_replay_under_the_same_key_answers_the_same_indexes(client, customer):
    body = [_event(customer, "empty", usage={}), _event(customer, "ok")]
    first = await client.post("/v1/usage-events", json=body, headers={"Idempotency-Key": "brej-replay"})
    again = await client.post("/v1/usage-events", json=body, headers={"Idempotency-Key": "brej-replay"})
    assert first.json() == again.json()
    assert [(r["index"], r["event_id"]) for r in again.json()["rejected"]] == [(0, "empty")]

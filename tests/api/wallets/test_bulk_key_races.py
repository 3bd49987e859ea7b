"""A bulk call (POST /v1/usage-events, POST /v1/settlements) under an Idempotency-Key that other
calls with other bodies send at the same moment: the calls refused as `idempotency_conflict`
moved nothing, and only the call answered 200 was charged. Real concurrency: a live server and
one thread per call."""
from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx

from tests.api.test_sdk_durability import ADMIN

CALLS = 4
EVENTS = 300  # per call: enough work that the calls overlap
EVENT_COST = Decimal("0.02")  # 1,000 input tokens at $10/M + $0.01 a request


def _at_once(url: str, path: str, key: str, bodies: list[Any]) -> list[httpx.Response]:
    """Each body POSTed to `path` under `key`, all calls released together."""
    start = threading.Barrier(len(bodies))

    def send(body: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN}", "Idempotency-Key": key}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
            start.wait()
            return http.post(path, json=body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


def _customer(http: httpx.Client, book: str) -> str:
    cid = f"race-{uuid.uuid4().hex[:10]}"
    created = http.post("/v1/customers", json={"id": cid, "price_book": book, "billing": "postpaid"})
    assert created.status_code == 201, created.text
    return cid


def _codes(responses: list[httpx.Response]) -> list[tuple[int, str | None]]:
    return sorted((r.status_code, r.json().get("code")) for r in responses)


def test_usage_event_calls_refused_as_a_conflict_record_none_of_their_events(live):
    url, book = live
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        cid = _customer(http, book)
        bodies = [[{"event_id": f"call{i}-{j}", "customer_id": cid, "model": "model-a",
                    "timestamp": "2026-12-01T00:00:00Z", "usage": {"input_tokens": 1000}} for j in range(EVENTS)]
                  for i in range(CALLS)]
        answers = _at_once(url, "/v1/usage-events", f"key-{cid}", bodies)
        assert _codes(answers) == [(200, None)] + [(409, "idempotency_conflict")] * (CALLS - 1)
        assert [r.json() for r in answers if r.status_code == 200] == [
            {"accepted": EVENTS, "duplicates": 0, "rejected": []}]
        usage = http.get(f"/v1/customers/{cid}/usage", params={"group_by": "model"}).json()["rows"]
        assert [(row["token_type"], row["quantity"], row["charges"], row["amount"]) for row in usage] == [
            ("input", EVENTS * 1000, EVENTS, f"{EVENTS * Decimal('0.01'):.2f}"),  # a row per token type
            ("request", EVENTS, EVENTS, f"{EVENTS * Decimal('0.01'):.2f}")]
        assert Decimal(http.get(f"/v1/customers/{cid}/wallet").json()["receivable"]) == EVENTS * EVENT_COST


def test_settlement_calls_refused_as_a_conflict_settle_none_of_their_reservations(live):
    url, book = live
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        cid = _customer(http, book)
        reservations = [[http.post("/v1/reservations", json={
            "customer_id": cid, "request_id": f"call{i}-{j}", "model": "model-a", "amount": "0.05"}).json()["id"]
            for j in range(50)] for i in range(CALLS)]
        bodies = [[{"reservation_id": rid, "usage": {"input_tokens": 1000}} for rid in ids] for ids in reservations]
        answers = _at_once(url, "/v1/settlements", f"key-{cid}", bodies)
        assert _codes(answers) == [(200, None)] + [(409, "idempotency_conflict")] * (CALLS - 1)
        for ids, answer in zip(reservations, answers, strict=True):
            statuses = {http.get(f"/v1/reservations/{rid}").json()["status"] for rid in ids}
            assert statuses == ({"settled"} if answer.status_code == 200 else {"held"}), answer.status_code

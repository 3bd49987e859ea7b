"""The order of a create's refusals (README, Errors): the key first (401, 403), then the body as
sent (422 naming the field), then what it names (404 not_found, 409). A body refused in itself for
a customer that does not exist is told what is wrong with the body, on every create route."""

from __future__ import annotations

import uuid

import pytest

from tests.api.apps import api_client

ADMIN = "order-admin"
MISSING = f"order-missing-{uuid.uuid4().hex[:8]}"
DAY = {"customer_id": MISSING, "window": "day", "metric": "money", "limit": "1.00"}

CASES = [
    ("/v1/budgets", {**DAY, "model": "gpt-4?"}, "model"),
    ("/v1/budgets", {**DAY, "thresholds": [50, 50]}, "thresholds"),
    ("/v1/budgets", {**DAY, "window": "minute", "time_zone": "Europe/Paris"}, "time_zone"),
    ("/v1/budgets", {**DAY, "time_zone": "Mars/Olympus"}, "time_zone"),
    ("/v1/budgets", {**DAY, "limit": "abc"}, "limit"),  # guard: checked at the edge already
    (f"/v1/customers/{MISSING}/topups", {"amount": "abc"}, "amount"),  # guard
    (f"/v1/customers/{MISSING}/grants", {"amount": "1.00", "priority": 500}, "priority"),  # guard
    ("/v1/reservations", {"customer_id": MISSING, "request_id": "r", "model": "m", "amount": "-1"}, "amount"),  # guard
]


@pytest.mark.parametrize("path, body, field", CASES, ids=[f"{p.split('/')[-1]}-{f}" for p, _, f in CASES])
async def test_a_body_refused_in_itself_for_a_customer_that_does_not_exist_is_422_before_404(
    database_url: str, path: str, body: dict, field: str
):
    async with api_client(database_url, admin=ADMIN, send_admin=True) as client:
        for key in ({}, {"Idempotency-Key": uuid.uuid4().hex}):
            answer = await client.post(path, json=body, headers=key)
            fields = [f["field"] for f in answer.json().get("fields", [])]
            assert (answer.status_code, answer.json()["code"], fields) == (422, "validation_error", [field]), (
                answer.text
            )


async def test_a_valid_budget_for_a_customer_that_does_not_exist_is_404(database_url: str):
    """Guard: the same day budget, valid, is 404 not_found naming the customer, with a key or none."""
    async with api_client(database_url, admin=ADMIN, send_admin=True) as client:
        for key in ({}, {"Idempotency-Key": uuid.uuid4().hex}):
            answer = await client.post("/v1/budgets", json=DAY, headers=key)
            assert (answer.status_code, answer.json()["code"]) == (404, "not_found"), answer.text
            assert MISSING in answer.json()["detail"]

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


# The same order on calls that name what they change in their path (README, Errors): a body refused
# in itself is 422 naming its field, though the budget, invoice or reservation named does not exist.
PATH_CASES = [
    # thresholds are distinct percentages from 1 to 1000: [500] is valid (a missing budget's is 404)
    ("PATCH", f"/v1/budgets/bud_{MISSING}", {"thresholds": [50, 50]}, "thresholds"),
    ("POST", f"/v1/invoices/inv_{MISSING}/payments", {"amount": "abc", "reference": "order-ref"}, "amount"),
    # named as a settle of a reservation that exists names it
    ("POST", f"/v1/reservations/res_{MISSING}/settle", {"usage": {"input_tokens": -1}}, "input_tokens"),
]


@pytest.mark.parametrize(
    "method, path, body, field", PATH_CASES, ids=["budget-thresholds", "payment-amount", "settle-usage"]
)
async def test_a_body_refused_in_itself_for_a_path_that_names_nothing_is_422_before_404(
    database_url: str, method: str, path: str, body: dict, field: str
):
    async with api_client(database_url, admin=ADMIN, send_admin=True) as client:
        for key in ({}, {"Idempotency-Key": uuid.uuid4().hex}):
            answer = await client.request(method, path, json=body, headers=key)
            fields = [f["field"] for f in answer.json().get("fields", [])]
            assert (answer.status_code, answer.json()["code"], fields) == (422, "validation_error", [field]), (
                answer.text
            )

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


# The same order on every call with a body that names what it changes in its path (every route of
# api/routes with a path id and a body; a release takes no body, a DELETE none): a body refused in
# itself is 422 naming its field, though the budget, invoice, reservation, customer, grant or webhook
# endpoint named does not exist. The field is the one the same body names where the thing exists.
PAST = "2000-01-01T00:00:00Z"  # before any now: a lot must expire in the future
PATH_CASES = [
    # thresholds are distinct percentages from 1 to 1000: [500] is valid (a missing budget's is 404)
    ("budget-thresholds", "PATCH", f"/v1/budgets/bud_{MISSING}", {"thresholds": [50, 50]}, "thresholds"),
    # a limit no metric takes (money: a decimal string; a count: an integer from 1): it was 404, as its
    # words wait for the budget's metric; "10.00" and 10 are limits of some metric, so theirs stays 404
    ("budget-limit-text", "PATCH", f"/v1/budgets/bud_{MISSING}", {"limit": "abc"}, "limit"),
    ("budget-limit-bool", "PATCH", f"/v1/budgets/bud_{MISSING}", {"limit": True}, "limit"),
    ("budget-limit-negative", "PATCH", f"/v1/budgets/bud_{MISSING}", {"limit": -1}, "limit"),
    ("payment-amount", "POST", f"/v1/invoices/inv_{MISSING}/payments", {"amount": "abc", "reference": "order-ref"},
     "amount"),
    # tokentill's own namespace of references (topup:, rerate:, ...): refused from the body alone
    ("payment-reference", "POST", f"/v1/invoices/inv_{MISSING}/payments", {"amount": "1.00", "reference": "topup:x"},
     "reference"),
    # named as a settle of a reservation that exists names it
    ("settle-usage", "POST", f"/v1/reservations/res_{MISSING}/settle", {"usage": {"input_tokens": -1}},
     "input_tokens"),
    ("capture-usage", "POST", f"/v1/reservations/res_{MISSING}/settle",
     {"usage": {"input_tokens": -1}, "final": False, "capture_id": "c1"}, "input_tokens"),
    ("capture-id", "POST", f"/v1/reservations/res_{MISSING}/settle",
     {"usage": {"input_tokens": 1}, "final": False, "capture_id": ""}, "capture_id"),
    ("extend-ttl", "POST", f"/v1/reservations/res_{MISSING}/extend", {"ttl_seconds": 0}, "ttl_seconds"),
    ("customer-limit", "PATCH", f"/v1/customers/{MISSING}", {"overdraft_limit": "abc"}, "overdraft_limit"),
    ("topup-expiry", "POST", f"/v1/customers/{MISSING}/topups", {"amount": "1.00", "expires_at": PAST},
     "expires_at"),
    ("grant-expiry", "POST", f"/v1/customers/{MISSING}/grants", {"amount": "1.00", "expires_at": PAST},
     "expires_at"),
    ("reversal-amount", "POST", f"/v1/customers/{MISSING}/grants/lot_{MISSING}/reverse", {"amount": "abc"},
     "amount"),
    ("refund-amount", "POST", f"/v1/customers/{MISSING}/refunds", {"amount": "abc", "reference": "wire-1"},
     "amount"),
    # a discount is a percentage more than 0 and at most 100
    ("overrides-percent", "PUT", f"/v1/customers/{MISSING}/price-overrides",
     {"discounts": [{"id": "d", "percent": "150"}]}, "discounts[0].percent"),
    ("endpoint-in-flight", "PATCH", f"/v1/webhook-endpoints/we_{MISSING}", {"max_in_flight": 0}, "max_in_flight"),
    # the operator's address policy (none allowed here): decided before the endpoint is looked up
    ("endpoint-url", "PATCH", f"/v1/webhook-endpoints/we_{MISSING}", {"url": "http://10.7.7.7/hook"}, "url"),
    ("rotation-grace", "POST", f"/v1/webhook-endpoints/we_{MISSING}/rotate-secret",
     {"previous_secret_valid_seconds": -1}, "previous_secret_valid_seconds"),
    ("redrive-until", "POST", f"/v1/webhook-endpoints/we_{MISSING}/redrive",
     {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
]


@pytest.mark.parametrize("method, path, body, field", [c[1:] for c in PATH_CASES], ids=[c[0] for c in PATH_CASES])
async def test_a_body_refused_in_itself_for_a_path_that_names_nothing_is_422_before_404(
    database_url: str, method: str, path: str, body: dict, field: str
):
    """Without a key and under one, twice under the same key (a refusal of the body is never kept:
    the second is decided again, and is the same 422, not a replay)."""
    async with api_client(database_url, admin=ADMIN, send_admin=True) as client:
        keyed = {"Idempotency-Key": uuid.uuid4().hex}
        for key in ({}, keyed, keyed):
            answer = await client.request(method, path, json=body, headers=key)
            fields = [f["field"] for f in answer.json().get("fields", [])]
            assert (answer.status_code, answer.json()["code"], fields) == (422, "validation_error", [field]), (
                answer.text
            )
            assert answer.headers.get("idempotent-replayed") is None


async def test_a_change_of_a_missing_budget_to_a_limit_some_metric_takes_is_404(database_url: str):
    """Guard: "10.00" (a money limit) and 10 (a count) are limits of some metric: a missing budget's
    change to either is 404 not_found, with a key or none."""
    async with api_client(database_url, admin=ADMIN, send_admin=True) as client:
        for limit in ("10.00", 10):
            for key in ({}, {"Idempotency-Key": uuid.uuid4().hex}):
                answer = await client.patch(f"/v1/budgets/bud_{MISSING}", json={"limit": limit}, headers=key)
                assert (answer.status_code, answer.json()["code"]) == (404, "not_found"), answer.text

"""Every route that takes an amount refuses a bad one in the same words (one table, so the
messages cannot drift apart again): through HTTP, each row's status, code, field and detail.

By hand:
- "1.0000000001" has 10 decimals. An amount's atomic unit is 10^-9 of its currency in every
  currency (README, Rounding), so 9 decimals is the most any amount may have; cash (a top-up, a
  grant, a refund, a lot's reversal, an invoice payment, an overdraft limit) is in whole minor units
  (README, Cash is in whole minor units), so where the route knows the currency its limit is that
  currency's: USD 2 decimals, JPY none, the same 422 `invalid_amount` as "100.5" yen is told. What
  is not cash (a hold's amount, a low-balance threshold, a budget's limit, a free allowance, a
  book's max_charge_per_request) keeps the 9 (`validation_error`).
- "-1.00" is below 0, "0" is not more than 0, "1000000000.01" is past 1,000,000,000.
- A free allowance's and a book's max_charge_per_request answered msgspec's "Expected `str`
  matching regex ..." before."""

from __future__ import annotations

import pytest

from tests.api.apps import api_client

ADMIN = {"Authorization": "Bearer amounts-admin"}
BOOKS = [
    {
        "id": f"amt-{c.lower()}",
        "currency": c,
        "effective_from": "2026-01-01T00:00:00Z",
        "rules": [
            {"id": "in", "model": "model-a", "token_type": "input", "price": "1.00"},
            {"id": "out", "model": "model-a", "token_type": "output", "price": "2.00"},
        ],
    }
    for c in ("USD", "JPY")
]
TEN = "1.0000000001"
NINE = f"{TEN} has 10 decimals, more than the 9 an amount may have"
JPY = ("invalid_amount", f"JPY amounts have no decimals: {TEN}")
USD = ("invalid_amount", f"USD amounts have 2 decimals: {TEN}")
VALIDATION = "validation_error"
BOOK = {
    "id": "amt-bad",
    "currency": "USD",
    "effective_from": "2026-01-01T00:00:00Z",
    "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "1.00"}],
}
RESERVE = {"customer_id": "amt-jpy", "request_id": "r1", "model": "model-a"}
NEW_JPY = {"id": "amt-new", "currency": "JPY", "price_book": "amt-jpy"}

# (method, path, body with the amount as {}, field, value, code, message)
CASES = [
    ("POST", "/v1/customers/amt-usd/topups", {}, "amount", TEN, *USD),
    ("POST", "/v1/customers/amt-jpy/topups", {}, "amount", TEN, *JPY),
    ("POST", "/v1/customers/amt-jpy/topups", {}, "amount", "-1.00", VALIDATION, "must be more than 0, not -1.00"),
    (
        "POST",
        "/v1/customers/amt-jpy/topups",
        {},
        "amount",
        "1000000000.01",
        VALIDATION,
        "1000000000.01 is more than 1000000000, the most an amount may be",
    ),
    ("POST", "/v1/customers/amt-jpy/grants", {}, "amount", TEN, *JPY),
    ("POST", "/v1/customers/amt-jpy/grants", {}, "amount", "0", VALIDATION, "must be more than 0, not 0"),
    ("POST", "/v1/customers/amt-jpy/grants/no-lot/reverse", {}, "amount", TEN, *JPY),
    ("POST", "/v1/customers/amt-jpy/refunds", {"reference": "r1"}, "amount", TEN, *JPY),
    ("POST", "/v1/invoices/no-invoice/payments", {"reference": "w1", "currency": "JPY"}, "amount", TEN, *JPY),
    # no currency sent, no invoice to read it from: the atomic unit's 9 (422 before 404)
    ("POST", "/v1/invoices/no-invoice/payments", {"reference": "w1"}, "amount", TEN, VALIDATION, NINE),
    ("POST", "/v1/customers", NEW_JPY, "overdraft_limit", TEN, *JPY),
    ("POST", "/v1/customers", NEW_JPY, "overdraft_limit", "-1.00", VALIDATION, "must be 0 or more, not -1.00"),
    ("POST", "/v1/customers", NEW_JPY, "low_balance_threshold", TEN, VALIDATION, NINE),
    ("POST", "/v1/customers", NEW_JPY, "max_charge_per_request", "-1.00", VALIDATION, "must be more than 0, not -1.00"),
    ("PATCH", "/v1/customers/amt-jpy", {}, "overdraft_limit", TEN, *JPY),
    ("POST", "/v1/reservations", RESERVE, "amount", TEN, VALIDATION, NINE),
    ("POST", "/v1/reservations", RESERVE, "amount", "-1.00", VALIDATION, "must be 0 or more, not -1.00"),
    (
        "POST",
        "/v1/budgets",
        {"customer_id": "amt-jpy", "window": "month", "metric": "money"},
        "limit",
        TEN,
        VALIDATION,
        NINE,
    ),
    ("PATCH", "/v1/budgets/no-budget", {}, "limit", "-1.00", VALIDATION, "must be more than 0, not -1.00"),
    (
        "PUT",
        "/v1/customers/amt-jpy/price-overrides",
        "free_allowances",
        "free_allowances[0].amount",
        TEN,
        VALIDATION,
        NINE,
    ),
    (
        "PUT",
        "/v1/customers/amt-jpy/price-overrides",
        "free_allowances",
        "free_allowances[0].amount",
        "-1.00",
        VALIDATION,
        "must be more than 0, not -1.00",
    ),
    ("POST", "/v1/price-books", BOOK, "max_charge_per_request", TEN, VALIDATION, NINE),
    ("POST", "/v1/price-books", BOOK, "max_charge_per_request", "0", VALIDATION, "must be more than 0, not 0"),
]


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="amounts-admin", books=BOOKS) as c:
        for currency in ("USD", "JPY"):
            made = await c.post(
                "/v1/customers",
                headers=ADMIN,
                json={"id": f"amt-{currency.lower()}", "currency": currency, "price_book": f"amt-{currency.lower()}"},
            )
            assert made.status_code == 201, made.text
        yield c


def _body(shape: dict | str, field: str, value: str) -> dict:
    if shape == "free_allowances":  # a list of items, the amount one's field
        return {"free_allowances": [{"id": "a1", "amount": value}]}
    return {**shape, field: value}


@pytest.mark.parametrize(("method", "path", "shape", "field", "value", "code", "message"), CASES)
async def test_every_route_taking_an_amount_refuses_a_bad_one_in_the_same_words(
    client, method: str, path: str, shape: dict | str, field: str, value: str, code: str, message: str
) -> None:
    refused = await client.request(method, path, headers=ADMIN, json=_body(shape, field, value))
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert (problem["code"], problem["fields"][0], problem["detail"]) == (
        code,
        {"field": field, "message": message},
        f"{field}: {message}",
    ), refused.text
    if code == "invalid_amount":  # the currency told, and its decimals: JPY 0, USD 2
        assert (problem["currency"], problem["decimals"]) == (message[:3], {"JPY": 0, "USD": 2}[message[:3]])

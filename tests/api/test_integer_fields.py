"""Integer fields of the wallet API take JSON integers only: a number written with a fraction or an
exponent (100.0, 1e2) is refused with one message, naming the field, wherever the integer goes (a
field msgspec converts, or a count the domain reads from a usage object or an estimate). No float
on a money or token path: 100.0 was charged as 100 while 1.5 was refused."""
from __future__ import annotations

import uuid

import pytest

from pricing.usage import NOT_AN_INTEGER

# Webhook endpoints made here are deleted after each test (tests/conftest.py): left enabled on the
# session's database, every later file's events were handed to them, for hosts nothing here reaches.
pytestmark = pytest.mark.usefixtures("no_endpoint_left")

PROBLEM = "application/problem+json"
CID = "c-integers"


def _cases() -> list[tuple[str, str, str, str]]:
    """(method, path, body with N where the number goes, field named)."""
    reserve = '{"customer_id": "c-integers", "request_id": "UID", "model": "m", '
    return [
        ("POST", "/v1/reservations", reserve + '"estimate": {"input_tokens": N}}', "estimate.input_tokens"),
        ("POST", "/v1/reservations", reserve + '"estimate": {"input_tokens": 1, "max_output_tokens": N}}',
         "estimate.max_output_tokens"),
        ("POST", "/v1/reservations", reserve + '"amount": "1.00", "ttl_seconds": N}', "ttl_seconds"),
        ("POST", "/v1/reservations/RES/extend", '{"ttl_seconds": N}', "ttl_seconds"),
        ("POST", "/v1/reservations/RES/settle", '{"usage": {"input_tokens": N}}', "input_tokens"),
        ("POST", "/v1/reservations/RES/settle", '{"openai_usage": {"prompt_tokens": N, "completion_tokens": 1}}',
         "prompt_tokens"),  # a settle names the count within its usage object
        ("POST", "/v1/reservations/RES/settle",
         '{"anthropic_usage": {"input_tokens": 1, "output_tokens": N}}', "output_tokens"),
        ("POST", "/v1/usage-events", '[{"event_id": "UID", "customer_id": "c-integers", "model": "m", '
         '"timestamp": "2026-01-01T00:00:00Z", "usage": {"output_tokens": N}}]', "output_tokens"),
        ("POST", f"/v1/customers/{CID}/topups", '{"amount": "1", "priority": N}', "priority"),
        ("POST", "/v1/budgets", '{"customer_id": "c-integers", "window": "day", "metric": "tokens", "limit": N}',
         "limit"),
        ("POST", "/v1/budgets", '{"customer_id": "c-integers", "window": "day", "metric": "tokens", "limit": 5, '
         '"thresholds": [N]}', "thresholds[0]"),
        ("POST", "/v1/customers", '{"id": "c-UID", "billing_anchor_day": N}', "billing_anchor_day"),
        ("POST", "/v1/webhook-endpoints", '{"url": "https://example.com/h", "topics": ["*"], "max_in_flight": N}',
         "max_in_flight"),
    ]


@pytest.fixture
async def customer(client) -> str:
    book = {"id": "b-integers", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
            "rules": [{"id": "in", "model": "m", "token_type": "input", "price": "1.00"},
                      {"id": "out", "model": "m", "token_type": "output", "price": "2.00"}]}
    response = await client.post("/v1/price-books", json=book)
    assert response.status_code in (200, 201), response.text
    response = await client.post("/v1/customers", json={"id": CID, "price_book": "b-integers"})
    assert response.status_code in (200, 201), response.text
    response = await client.post(f"/v1/customers/{CID}/topups", json={"amount": "100.00"})
    assert response.status_code == 201, response.text
    held = await client.post("/v1/reservations", json={"customer_id": CID, "request_id": uuid.uuid4().hex,
                                                       "model": "m", "amount": "1.00"})
    assert held.status_code == 201, held.text
    return held.json()["id"]


def _named(message: str) -> list[dict[str, str]]:
    """A rejected event's detail, "field: message; ...", as the fields a 422 lists."""
    return [dict(zip(("field", "message"), part.split(": ", 1), strict=True)) for part in message.split("; ")]


def _refused(response) -> list[dict[str, str]]:
    """The fields a 422 problem+json of code validation_error names."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["code"] == "validation_error"
    return response.json()["fields"]


async def _new_budget(client, metric: str, limit: int | str) -> str:
    """A day budget of `metric` for the file's customer on a model it never reserves; its id."""
    created = await client.post("/v1/budgets", json={"customer_id": CID, "window": "day", "metric": metric,
                                                     "limit": limit, "model": "not-m"})
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def _patch_limit(client, budget: str, number: str):
    """PATCH the budget's limit to `number`, written as is in the JSON body."""
    return await client.patch(f"/v1/budgets/{budget}", content='{"limit": N}'.replace("N", number),
                              headers={"Content-Type": "application/json"})


async def _send(client, method: str, path: str, body: str, number: str, reservation: str):
    unique = uuid.uuid4().hex
    return await client.request(method, path.replace("RES", reservation),
                                content=body.replace("N", number).replace("UID", unique),
                                headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("number", ["10.0", "1e1", "1E1", "10.000", "1.0e1", "100e-1"])
@pytest.mark.parametrize(("method", "path", "body", "field"), _cases())
async def test_an_integer_field_refuses_a_number_with_a_fraction_or_an_exponent(
        client, customer, number, method, path, body, field):
    response = await _send(client, method, path, body, number, customer)
    if path == "/v1/usage-events":  # the batch answers 200; the event is rejected, naming the field
        assert response.status_code == 200, response.text
        rejected = response.json()["rejected"]
        assert len(rejected) == 1 and rejected[0]["code"] == "validation_error", response.text
        fields = _named(rejected[0]["detail"])
    else:
        fields = _refused(response)
    assert {"field": field, "message": NOT_AN_INTEGER} in fields, fields


@pytest.mark.parametrize(("method", "path", "body", "field"), _cases())
async def test_a_number_with_a_fraction_is_refused_with_the_same_message(client, customer, method, path, body, field):
    """1.5 was refused before, in two wordings; it is refused as 10.0 is."""
    response = await _send(client, method, path, body, "1.5", customer)
    data = response.json()
    fields = _named(data["rejected"][0]["detail"]) if path == "/v1/usage-events" else data["fields"]
    assert {"field": field, "message": NOT_AN_INTEGER} in fields, fields


# a dimension value is a string, an integer or a boolean (schemas.Dimension): a number with a fraction
# or an exponent where it goes is refused as in an integer field, as a price book's `match` value is
DIMENSION_CASES = [
    ("/v1/reservations", '{"customer_id": "c-integers", "request_id": "UID", "model": "m", "amount": "1.00", '
     '"dimensions": {"feature": "chat", "tier": N}}', "dimensions.tier"),
    ("/v1/usage-events", '[{"event_id": "UID", "customer_id": "c-integers", "model": "m", '
     '"timestamp": "2026-01-01T00:00:00Z", "usage": {"output_tokens": 1}, "dimensions": {"feature": "chat", '
     '"tier": N}}]', "[0].dimensions.tier"),
]


@pytest.mark.parametrize("number", ["1.5", "2.0", "1e1"])
@pytest.mark.parametrize(("path", "body", "field"), DIMENSION_CASES)
async def test_a_dimension_value_with_a_fraction_or_an_exponent_is_refused_as_an_integer_is(
        client, customer, number, path, body, field):
    """It was 422 with msgspec's words on a field no one sent: "[0].dimensions[...]: Expected
    `bool | int | str`, got `float`". Nothing is held or recorded (the whole body is refused, as
    a NUL in a dimension is)."""
    response = await _send(client, "POST", path, body, number, customer)
    assert _refused(response) == [{"field": field, "message": NOT_AN_INTEGER}]


@pytest.mark.parametrize("number", ["10.0", "1e1", "1.5"])
async def test_a_budget_change_refuses_a_count_limit_with_a_fraction_or_an_exponent(client, customer, number):
    """PATCH /v1/budgets/{id} answered msgspec's "limit: Expected `int | str | null`, got `float`"
    where POST /v1/budgets says NOT_AN_INTEGER; the limit stays 5."""
    budget = await _new_budget(client, "tokens", 5)  # on model not-m: the file's reserves are not counted
    response = await _patch_limit(client, budget, number)
    assert _refused(response) == [{"field": "limit", "message": NOT_AN_INTEGER}]
    assert (await client.get(f"/v1/budgets/{budget}")).json()["limit"] == 5


MONEY_LIMIT = 'a money limit is a decimal string, such as "10.00"'


@pytest.mark.parametrize("number", ["10.0", "1e1", "1.5"])
async def test_a_money_budgets_limit_given_as_a_number_is_told_it_is_a_decimal_string(client, customer, number):
    """A money limit is a decimal string (README, Budgets): `"limit": 10.0` on a money budget was
    told NOT_AN_INTEGER, "digits only", as if 10 would do (it is refused too, with the words below),
    by POST and by PATCH, which learns the budget's metric only when it reads the budget. Nothing is
    made or changed: the budget's limit stays "5.00"."""
    body = '{"customer_id": "c-integers", "window": "day", "metric": "money", "limit": N, "model": "not-m"}'
    before = (await client.get("/v1/budgets", params={"customer_id": CID})).json()["budgets"]
    response = await client.post("/v1/budgets", content=body.replace("N", number),
                                 headers={"Content-Type": "application/json"})
    assert _refused(response) == [{"field": "limit", "message": MONEY_LIMIT}]
    assert (await client.get("/v1/budgets", params={"customer_id": CID})).json()["budgets"] == before
    budget = await _new_budget(client, "money", "5.00")
    response = await _patch_limit(client, budget, number)
    assert _refused(response) == [{"field": "limit", "message": MONEY_LIMIT}]
    assert (await client.get(f"/v1/budgets/{budget}")).json()["limit"] == "5.00"

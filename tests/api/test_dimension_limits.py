"""One limit on a usage dimension's name and string value wherever one is taken: 1 to 200
characters (a string value at most 200), as a budget's dimensions always took them. A name of 201
characters was recorded on a reserve, a usage event, a price rule's match or the gateway's
x-tokentill-dimensions, but no budget could name it and the usage report refused to group by it
(`group_by` was at most 200 characters in all: a 200-character name beside `model` was refused
too). Now each entry refuses it, 422 `validation_error` naming the field, nothing written, and the
report groups by any name an entry takes.

Book: model-a input $10.00 per 1M tokens: 1,000 input tokens are $0.01."""

from __future__ import annotations

import uuid

import pytest
from litestar.testing import AsyncTestClient

from api.routes.schemas import Dimensions
from api.routes.wire import shaped
from tests.api.apps import book_customer, send_usage
from wallets.errors import WalletValidationError

LONGEST, TOO_LONG = "n" * 200, "n" * 201
SENT = [({TOO_LONG: "v"}, "name"), ({"feature": TOO_LONG}, "value")]


@pytest.fixture
async def customer(client: AsyncTestClient) -> str:
    return await book_customer(client, f"dimlim-{uuid.uuid4().hex[:8]}", "input")


def _fields(answer) -> list[str]:
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "validation_error", answer.text
    return [f["field"] for f in answer.json()["fields"]]


@pytest.mark.parametrize(("dimensions", "what"), SENT)
async def test_a_reserve_refuses_a_dimension_over_200_characters(client, customer, dimensions, what):
    body = {"customer_id": customer, "request_id": "r1", "model": "model-a", "amount": "0.01"}
    fields = _fields(await client.post("/v1/reservations", json={**body, "dimensions": dimensions}))
    assert all(f.startswith("dimensions") for f in fields), fields
    made = await client.post("/v1/reservations", json=body)  # nothing written: the same request id is new
    assert made.status_code == 201, made.text


@pytest.mark.parametrize(("dimensions", "what"), SENT)
async def test_a_usage_event_refuses_a_dimension_over_200_characters(client, customer, dimensions, what):
    event = {
        "customer_id": customer,
        "model": "model-a",
        "event_id": "e1",
        "timestamp": "2026-11-10T10:00:00Z",
        "usage": {"input_tokens": 1000},
    }
    fields = _fields(await client.post("/v1/usage-events", json=[{**event, "dimensions": dimensions}]))
    assert all(f.startswith("[0].dimensions") for f in fields), fields
    sent = await client.post("/v1/usage-events", json=[event])  # nothing written: the event is no duplicate
    assert (sent.status_code, sent.json()["accepted"], sent.json()["duplicates"]) == (200, 1, 0), sent.text


@pytest.mark.parametrize(("dimensions", "what"), SENT)
async def test_a_price_rule_matches_no_dimension_over_200_characters(client, dimensions, what):
    book = {
        "id": f"dimlim-{uuid.uuid4().hex[:8]}",
        "currency": "USD",
        "effective_from": "2026-01-01T00:00:00Z",
        "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "10.00", "match": dimensions}],
    }
    assert all(f.startswith("rules[0].match") for f in _fields(await client.post("/v1/price-books", json=book)))
    assert (await client.get(f"/v1/price-books/{book['id']}")).status_code == 404


@pytest.mark.parametrize(("dimensions", "what"), SENT)
async def test_a_budget_refuses_a_dimension_over_200_characters(client, customer, dimensions, what):  # guard
    budget = {"customer_id": customer, "window": "month", "metric": "money", "limit": "1.00", "dimensions": dimensions}
    assert all(f.startswith("dimensions") for f in _fields(await client.post("/v1/budgets", json=budget)))


@pytest.mark.parametrize(("dimensions", "what"), SENT)
def test_the_gateway_s_dimensions_header_is_read_as_the_api_s_dimensions(dimensions, what):
    """x-tokentill-dimensions is shaped as Dimensions (api.gateway.proxy), refused as a 422 when it is not."""
    with pytest.raises(WalletValidationError):
        shaped(dimensions, Dimensions)
    assert shaped({LONGEST: LONGEST}, Dimensions) == {LONGEST: LONGEST}


async def test_the_report_groups_by_a_name_of_200_characters_beside_others(client, customer):
    await send_usage(
        client,
        customer,
        [
            {
                "event_id": "e1",
                "timestamp": "2026-11-10T10:00:00Z",
                "usage": {"input_tokens": 1000},
                "dimensions": {LONGEST: LONGEST},
            },
            {
                "event_id": "e2",
                "timestamp": "2026-11-10T11:00:00Z",
                "usage": {"input_tokens": 3000},
                "dimensions": {LONGEST: "b"},
            },
        ],
    )
    report = await client.get(f"/v1/customers/{customer}/usage", params={"group_by": f"model,{LONGEST}"})
    assert report.status_code == 200, report.text
    assert report.json()["rows"] == [  # 1,000 and 3,000 input tokens at $10.00 per 1M: $0.01 and $0.03
        {"model": "model-a", LONGEST: "b", "token_type": "input", "quantity": 3000, "amount": "0.03", "charges": 1},
        {"model": "model-a", LONGEST: LONGEST, "token_type": "input", "quantity": 1000, "amount": "0.01", "charges": 1},
    ]
    refused = await client.get(f"/v1/customers/{customer}/usage", params={"group_by": f"model,{TOO_LONG}"})
    assert _fields(refused) == ["group_by"]

"""PUT/GET /v1/customers/{id}/price-overrides over HTTP: versions appended in order, read by the
customer's own key, and every bad input refused as problem+json with its stable code, nothing
stored."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.api.apps import api_client
from tests.api.closing import utc

ADMIN = {"Authorization": "Bearer po-admin"}
BOOK = {"id": "pob", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"},
    {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
    {"id": "b-in", "model": "model-b", "token_type": "input", "price": "1.00"},
    {"id": "call", "token_type": "request", "price": "0.01"}]}
CONTRACT = {"contract_prices": [{"id": "acme-a-in", "model": "model-a", "token_type": "input", "price": "8.00"}],
            "discounts": [{"id": "acme-10", "model": "model-a", "percent": "10"}],
            "free_allowances": [{"id": "acme-free", "amount": "5.00"}]}


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="po-admin", books=[BOOK]) as c:
        made = await c.post("/v1/customers", headers=ADMIN, json={"id": "po-acme", "currency": "USD",
                                                                   "price_book": "pob"})
        assert made.status_code == 201, made.text
        yield c


URL = "/v1/customers/po-acme/price-overrides"


async def test_a_version_is_stored_read_back_and_the_same_put_again_is_that_version(client) -> None:
    put = await client.put(URL, headers=ADMIN, json=CONTRACT)
    assert put.status_code == 201, put.text
    first = put.json()
    assert first["version"] == 1 and first["contract_prices"] == CONTRACT["contract_prices"]
    assert first["discounts"] == CONTRACT["discounts"] and first["free_allowances"] == CONTRACT["free_allowances"]
    again = await client.put(URL, headers=ADMIN, json=CONTRACT)
    assert again.status_code == 200 and again.json() == first
    later = utc(datetime.now(UTC) + timedelta(days=30))
    second = await client.put(URL, headers=ADMIN, json={"effective_from": later, "discounts": []})
    assert second.status_code == 201 and second.json()["version"] == 2, second.text
    read = await client.get(URL, headers=ADMIN)
    assert read.status_code == 200
    body = read.json()
    assert body["current"] == first  # version 2 is not in force yet
    assert [v["version"] for v in body["versions"]] == [1, 2]
    assert body["versions"][1]["effective_from"] == later and body["versions"][1]["contract_prices"] == []


async def test_a_version_must_take_effect_after_the_latest_one(client) -> None:
    at = datetime.now(UTC) + timedelta(days=1)
    assert (await client.put(URL, headers=ADMIN, json={**CONTRACT, "effective_from": utc(at)})).status_code == 201
    earlier = await client.put(URL, headers=ADMIN, json={"effective_from": utc(at - timedelta(hours=1))})
    assert earlier.status_code == 422 and earlier.json()["code"] == "validation_error"
    assert earlier.json()["fields"][0]["field"] == "effective_from"
    # the version it must follow is named as every answer writes a time: UTC with a Z
    assert earlier.json()["fields"][0]["message"].startswith(f"must be after {utc(at)}, when version 1 takes effect")
    assert [v["version"] for v in (await client.get(URL, headers=ADMIN)).json()["versions"]] == [1]



async def test_the_same_set_put_now_while_it_is_scheduled_for_later_is_refused_not_taken_as_in_force(client) -> None:
    """The set scheduled for tomorrow, PUT again without `effective_from` ("now"), was 200 with
    tomorrow's version: the admin read it as in force, and a call today was charged the book's
    $10/M, not the $8/M contract. "Now" is before the latest version, as for any other set: 422."""
    at = utc(datetime.now(UTC) + timedelta(days=1))
    assert (await client.put(URL, headers=ADMIN, json={**CONTRACT, "effective_from": at})).status_code == 201
    now = await client.put(URL, headers=ADMIN, json=CONTRACT)
    assert now.status_code == 422, now.text
    assert now.json()["fields"][0]["field"] == "effective_from"
    assert now.json()["fields"][0]["message"].startswith(f"must be after {at}, when version 1 takes effect")
    # at its own time, it is that version still (a retry of the scheduling PUT)
    again = await client.put(URL, headers=ADMIN, json={**CONTRACT, "effective_from": at})
    assert again.status_code == 200 and again.json()["version"] == 1
    assert [v["version"] for v in (await client.get(URL, headers=ADMIN)).json()["versions"]] == [1]


BAD = [
    ({"contract_prices": [{"id": "x", "model": "model-zzz", "price": "1"}]}, "contract_prices[0].model"),
    ({"discounts": [{"id": "x", "model": "model-zzz", "percent": "5"}]}, "discounts[0].model"),
    ({"contract_prices": [{"id": "x", "model": "model-a", "token_type": "tokens", "price": "1"}]},
     "contract_prices[0].token_type"),
    ({"contract_prices": [{"id": "x", "model": "model-a", "price": "-1.00"}]}, "contract_prices[0].price"),
    ({"contract_prices": [{"id": "x", "model": "model-a", "price": "ten"}]}, "contract_prices[0].price"),
    ({"contract_prices": [{"id": "x", "model": "model-a", "price": 1.5}]}, "contract_prices[0].price"),
    ({"contract_prices": [{"id": "x", "model": "model-a", "price": "1"},
                          {"id": "y", "model": "model-a", "price": "2"}]}, "contract_prices[1]"),
    ({"contract_prices": [{"id": "x", "price": "1"}]}, "contract_prices[0].model"),
    ({"discounts": [{"id": "x", "percent": "100.5"}]}, "discounts[0].percent"),
    ({"discounts": [{"id": "x", "percent": "0"}]}, "discounts[0].percent"),
    ({"discounts": [{"id": "x", "percent": "-5"}]}, "discounts[0].percent"),
    ({"discounts": [{"id": "x", "percent": "60"}, {"id": "y", "percent": "50"}]}, "discounts"),
    ({"free_allowances": [{"id": "x", "amount": "0"}]}, "free_allowances[0].amount"),
    ({"discounts": [{"id": "x", "percent": "5"}], "free_allowances": [{"id": "x", "amount": "1"}]}, "id"),
    ({"surprise": []}, "surprise"),  # an unknown field is named itself (7542f3b)
]


async def test_bad_overrides_are_validation_errors_naming_the_field_and_store_nothing(client) -> None:
    for change, field in BAD:  # one app for every case: each is a request, not a database
        refused = await client.put(URL, headers=ADMIN, json=change)
        assert refused.status_code == 422, (change, refused.text)
        problem = refused.json()
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert problem["code"] == "validation_error"
        assert field in [f["field"] for f in problem["fields"]], (change, problem)
    assert "surprise" in problem["detail"]
    assert (await client.get(URL, headers=ADMIN)).json()["versions"] == []


async def test_an_unknown_customer_is_not_found_and_keys_other_than_admin_only_read(client) -> None:
    missing = await client.put("/v1/customers/nobody/price-overrides", headers=ADMIN, json=CONTRACT)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert (await client.get("/v1/customers/nobody/price-overrides", headers=ADMIN)).status_code == 404
    assert (await client.put(URL, headers=ADMIN, json=CONTRACT)).status_code == 201
    made = await client.post("/v1/api-keys", headers=ADMIN, json={"scope": "customer:po-acme"})
    own = {"Authorization": f"Bearer {made.json()['key']}"}
    assert (await client.get(URL, headers=own)).json()["current"]["version"] == 1
    refused = await client.put(URL, headers=own, json={})
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    other = await client.post("/v1/customers", headers=ADMIN, json={"id": "po-other", "currency": "USD",
                                                                     "price_book": "pob"})
    assert other.status_code == 201
    peek = await client.get("/v1/customers/po-other/price-overrides", headers=own)
    assert peek.status_code == 403 and peek.json()["code"] == "forbidden"


@pytest.mark.parametrize(("unit", "field", "quantity"), [
    ("web_search", "web_search_calls", 2), ("audio_seconds", "audio_seconds", 7_200),
    ("input_characters", "input_characters", 2_000_000)])
async def test_a_tool_price_for_every_model_makes_no_unknown_model_priced(client, unit, field, quantity) -> None:
    """A format 2 book with `unpriced: zero`: model-a input at $10 per 1M and a unit that is no
    token at $0.01 for every model (no model): web searches a call, audio an hour, characters per
    1M. Before, that rule made every model one the book prices (searches until 180d768; audio and
    characters until now): a contract price for model-zzz was stored (201) and never applied, a
    hold of $0.50 for model-aa was taken, and a usage event of model-aa's 1M input tokens and 2
    searches (2 hours: 7,200 s; 2M characters) was charged $0.02 (2 x $0.01), its tokens free. Now
    each is refused: 422 naming contract_prices[0].model, 422 unpriced_model, and the event
    rejected unpriced_model, nothing charged; model-a's event (1M input and the same 2 of the
    unit) is charged $10.00 + $0.02 = $10.02."""
    book = {"id": "po-tools", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
            "unpriced": "zero", "rules": [{"id": "a-in", "model": "model-a", "token_type": "input", "price": "10"},
                                          {"id": "search", "token_type": unit, "price": "0.01"}]}
    assert (await client.post("/v1/price-books", headers=ADMIN, json=book)).status_code == 201
    made = await client.post("/v1/customers", headers=ADMIN, json={"id": "po-tools", "currency": "USD",
                                                                   "price_book": "po-tools"})
    assert made.status_code == 201, made.text
    url = "/v1/customers/po-tools/price-overrides"
    contract = await client.put(url, headers=ADMIN, json={
        "contract_prices": [{"id": "zzz", "model": "model-zzz", "price": "1"}]})
    assert contract.status_code == 422, contract.text
    assert [f["field"] for f in contract.json()["fields"]] == ["contract_prices[0].model"]
    await client.post("/v1/customers/po-tools/topups", headers=ADMIN, json={"amount": "20.00"})
    hold = await client.post("/v1/reservations", headers=ADMIN, json={
        "customer_id": "po-tools", "request_id": "aa", "model": "model-aa", "amount": "0.50"})
    assert hold.status_code == 422 and hold.json()["code"] == "unpriced_model", hold.text
    at = utc(datetime.now(UTC) - timedelta(minutes=1))
    usage = {"input_tokens": 1_000_000, field: quantity}
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": "aa", "customer_id": "po-tools", "model": "model-aa", "timestamp": at, "usage": usage},
        {"event_id": "a", "customer_id": "po-tools", "model": "model-a", "timestamp": at, "usage": usage}])
    body = sent.json()
    assert body["accepted"] == 1, body
    assert [(r["event_id"], r["code"]) for r in body["rejected"]] == [("aa", "unpriced_model")]
    wallet = (await client.get("/v1/customers/po-tools/wallet", headers=ADMIN)).json()
    assert wallet["available"] == "9.98"  # 20.00 - 10.02


async def test_a_contract_price_for_the_request_fee_of_a_model_a_rule_names_is_taken(client) -> None:
    """A format 2 book with `unpriced: zero`: model-a input at $10 per 1M, and model-x's calls at a
    $0.05 fee (a rule naming model-x, of type `request`): model-x is a model the book prices (its
    tokens free, its calls $0.05), so a contract price of model-x's fee applies. Before, the
    overrides' model check left out every `request` rule, the named one too, and refused the
    contract (422 naming contract_prices[0].model: "no rule ... prices model 'model-x'"), while a
    named model's tool rule counted. By hand now: stored (201); a usage event of model-x with 1,000
    input tokens is charged its fee at the contract's $0.02 (tokens free): $1.00 - $0.02 = $0.98."""
    book = {"id": "po-fee", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
            "unpriced": "zero", "rules": [{"id": "a-in", "model": "model-a", "token_type": "input", "price": "10"},
                                          {"id": "x-call", "model": "model-x", "token_type": "request",
                                           "price": "0.05"}]}
    assert (await client.post("/v1/price-books", headers=ADMIN, json=book)).status_code == 201
    made = await client.post("/v1/customers", headers=ADMIN, json={"id": "po-fee", "currency": "USD",
                                                                   "price_book": "po-fee"})
    assert made.status_code == 201, made.text
    contract = await client.put("/v1/customers/po-fee/price-overrides", headers=ADMIN, json={
        "effective_from": "2026-01-01T00:00:00Z",
        "contract_prices": [{"id": "x-fee", "model": "model-x", "token_type": "request", "price": "0.02"}]})
    assert contract.status_code == 201, contract.text
    await client.post("/v1/customers/po-fee/topups", headers=ADMIN, json={"amount": "1.00"})
    at = utc(datetime.now(UTC) - timedelta(minutes=1))
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": "x", "customer_id": "po-fee", "model": "model-x", "timestamp": at,
         "usage": {"input_tokens": 1000}}])
    assert sent.json()["accepted"] == 1, sent.json()
    wallet = (await client.get("/v1/customers/po-fee/wallet", headers=ADMIN)).json()
    assert wallet["available"] == "0.98"  # 1.00 - 0.02

"""The served OpenAPI document says what the server does: every pattern it publishes is the
language the server accepts, replays are documented, and schema-violating input is refused as
problem+json (never a 500); an integer is a JSON integer, never 7.0."""
from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from litestar.testing import AsyncTestClient

from api import audit_cli
from api.cli import instant
from api.routes.formats import AMOUNT, DATE_TIME, POSITIVE_AMOUNT, PRICE, matches
from api.routes.wire import amount_in, time_in
from ledger.accounts import ensure_asset
from ledger.db import Database, connect
from pricing.books import TOKEN_TYPES
from pricing.parse import parse_time
from pricing.text import PATTERN as TEXT_PATTERN
from pricing.units import FORMAT_1_TYPES
from pricing.usage import NOT_AN_INTEGER
from tests.api.apps import api_client
from tests.conftest import _migrated
from wallets.errors import WalletValidationError

ADMIN = {"Authorization": "Bearer test-admin"}
PROBLEM = "application/problem+json"
BOOK = {"currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
        "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "10.00"}]}


@pytest.fixture(scope="module")
def own_url(server_url: str) -> Iterator[str]:
    """A database of this module's own: its tests create webhook endpoints subscribed to every
    topic at hosts no test serves, to which every later test's dispatcher (in the shared database)
    would fan out its events and spend its attempts (the webhook isolation tests then missed
    their deliveries in the whole suite)."""
    yield from _migrated(server_url, f"tokentill_conformance_{os.getpid()}")


@pytest.fixture(scope="module")
async def own_db(own_url: str) -> AsyncIterator[Database]:
    database = connect(own_url, pool_size=2)
    await database.run(lambda conn: ensure_asset(conn, "USD", 9))
    yield database
    await database.dispose()


@pytest.fixture
async def client(own_db, own_url):
    async with api_client(own_url, send_admin=True) as c:
        yield c


@pytest.fixture
async def document(client) -> dict:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()


def _body_schema(document: dict, path: str) -> dict:
    return document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


def _accepts(parse, value: str) -> bool:
    try:
        parse(value)
    except WalletValidationError:
        return False
    return True


AMOUNTS = ["0", "0.0", "0.000000001", "0.0000000001", "1", "1.", ".5", "01", "-1", "+1", "1e3", "10.00",
           "999999999.999999999", "1000000000", "1000000000.000000000", "1000000000.000000001", "1 ", "1\n",
           "\u0663", "0.5", "0.100000000", "NaN"]


@pytest.mark.parametrize("value", AMOUNTS)
def test_the_server_takes_exactly_the_amounts_the_patterns_describe(value: str):
    assert _accepts(lambda v: amount_in(v, "amount"), value) == matches(POSITIVE_AMOUNT, value)
    assert _accepts(lambda v: amount_in(v, "amount", positive=False), value) == matches(AMOUNT, value)


TIMES = ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.123456789+05:30", "2024-02-29T23:59:59-23:59",
         "2100-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-01-01t00:00:00z", "20260101T000000Z",
         "2026-01-01 00:00:00Z", "2026-01-01T00:00:00", "2026-01-01T00:00Z", "2026-01-01T00:00:00+0000",
         "0999-12-31T23:59:59Z", "1000-01-01T00:00:00+23:59", "9998-12-31T23:59:59-23:59",
         "9999-12-31T00:00:00Z", "2026-W01-1T00:00:00Z", "2026-01-01T00:00:00Z\n", "2026-01-01T24:00:00Z"]


@pytest.mark.parametrize("value", TIMES)
def test_the_server_takes_exactly_the_times_the_pattern_describes(value: str):
    assert _accepts(lambda v: time_in(v, "at"), value) == matches(DATE_TIME, value)


@pytest.mark.parametrize("text", ["2026-01-01t12:00:00z", "2026-01-01T12:00:00z", "2026-01-01t12:00:00Z",
                                  "2026-01-01t13:00:00+01:00"])
def test_a_lowercase_t_or_z_is_read_as_its_uppercase_wherever_a_time_is_parsed(text: str):
    """RFC 3339 5.6 NOTE: "T" and "Z" may be written "t" and "z". The pattern, the routes, a price
    book, the CLI's times and the audit commands' --from/--to all refused them."""
    at = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert matches(DATE_TIME, text)
    assert time_in(text, "at") == at
    assert parse_time(text) == at
    assert instant(text) == at
    assert audit_cli.parse_time(text) == at


def test_the_patterns_mean_the_same_in_json_schema_and_python():
    for pattern in (AMOUNT, POSITIVE_AMOUNT, PRICE, DATE_TIME):
        assert pattern.startswith("^") and pattern.endswith("$")
        assert not re.search(r"\\d|\(\?[=!<]", pattern), "no \\d (Unicode digits in Python), no lookarounds"


async def test_the_document_publishes_what_the_server_enforces(document: dict):
    top_up = _body_schema(document, "/v1/customers/{customer_id}/topups")
    assert top_up["properties"]["amount"]["pattern"] == POSITIVE_AMOUNT
    assert top_up["properties"]["expires_at"]["anyOf"][0]["pattern"] == DATE_TIME
    customer = _body_schema(document, "/v1/customers")
    assert customer["properties"]["overdraft_limit"]["anyOf"][0]["pattern"] == AMOUNT
    book = _body_schema(document, "/v1/price-books")
    assert set(book["required"]) == {"id", "currency", "effective_from", "rules"}
    rule = book["properties"]["rules"]["items"]
    assert rule["additionalProperties"] is False and set(rule["properties"]["token_type"]["enum"]) == set(TOKEN_TYPES)
    assert rule["properties"]["price"]["anyOf"][0] == {"type": "string", "pattern": PRICE,
                                                       "description": "A decimal string (never a JSON number)"}
    reservation = _body_schema(document, "/v1/reservations")
    assert [branch["required"] for branch in reservation["oneOf"]] == [["estimate"], ["amount"]]
    usage = document["paths"]["/v1/customers/{customer_id}/usage"]["get"]
    assert {p["name"]: p["schema"].get("pattern") for p in usage["parameters"]}["from"] == DATE_TIME
    assert "422" in usage["responses"]


async def test_creating_routes_document_the_200_of_a_replay(document: dict):
    # a payment reference sent again answers 200 with the first answer: a top-up, a cash refund and
    # an invoice payment (their 200 was undocumented: a client generated from the document had none)
    for path in ("/v1/customers", "/v1/price-books", "/v1/reservations", "/v1/customers/{customer_id}/topups",
                 "/v1/customers/{customer_id}/refunds", "/v1/invoices/{invoice_id}/payments"):
        responses = document["paths"][path]["post"]["responses"]
        assert {"200", "201"} <= set(responses), path
        assert responses["200"]["content"]["application/json"]["schema"] == \
            responses["201"]["content"]["application/json"]["schema"]


async def test_a_customer_posted_again_answers_200_with_the_documented_body(client: AsyncTestClient, tag: str):
    body = {"id": f"c-{tag}", "overdraft_limit": "0"}
    first = await client.post("/v1/customers", json=body)
    again = await client.post("/v1/customers", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()


async def test_an_integer_is_a_json_integer_and_neither_a_float_nor_a_string(client: AsyncTestClient, tag: str):
    cid = f"c-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid})).status_code == 201
    as_float = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1", "priority": 7.0})
    assert as_float.status_code == 422  # no float where an integer goes, whole or not (test_integer_fields)
    assert as_float.json()["fields"] == [{"field": "priority", "message": NOT_AN_INTEGER}]
    as_text = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1", "priority": "7"})
    assert as_text.status_code == 422 and as_text.json()["fields"][0]["field"] == "priority"
    held = await client.post("/v1/reservations", json={"customer_id": cid, "request_id": "r", "model": "m",
                                                       "amount": "0.5", "ttl_seconds": "60"})
    assert held.status_code == 422 and held.headers["content-type"].startswith(PROBLEM)


@pytest.mark.parametrize("body", [
    {"id": "bad\n"}, {"id": "ok", "currency": "USD\n"}, {"id": "ok", "overdraft_limit": "01"},
    {"id": "ok", "low_balance_threshold": "-0"}, {"id": "ok", "name": 5},
])
async def test_a_customer_outside_the_schema_is_refused(client: AsyncTestClient, body: dict):
    response = await client.post("/v1/customers", json=body)
    assert response.status_code == 422 and response.json()["code"] == "validation_error"


@pytest.mark.parametrize(("change", "field"), [
    ({"id": "no spaces"}, "id"),
    ({"rules": [{"id": "in", "token_type": "input", "price": 5.0}]}, "rules[0].price"),
    ({"rules": [{"id": "in", "token_type": "input", "price": 1.5}]}, "rules[0].price"),
    ({"rules": [{"id": "in", "token_type": "input", "price": "01"}]}, "rules[0].price"),
    ({"rules": [{"id": "in", "token_type": "input", "price": "1", "match": [None, None]}]}, "rules[0].match"),
    ({"rules": [{"id": "in", "token_type": "input", "tiers": 5}]}, "rules[0].tiers"),
    ({"effective_from": "20260101T000000Z"}, "effective_from"),
    ({"version": 7}, "version"),
])
async def test_a_price_book_outside_the_schema_is_a_validation_problem(
        client: AsyncTestClient, tag: str, change: dict, field: str):
    response = await client.post("/v1/price-books", json={**BOOK, "id": f"b-{tag}", **change})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert field in {f["field"] for f in response.json()["fields"]}


@pytest.mark.parametrize(("change", "field"), [
    ({"rules": [{"id": "t", "token_type": "input", "price": "1", "match": {"tier": 2.0}}]}, "rules[0].match.tier"),
    ({"rules": [{"id": "t", "token_type": "input", "tiers": [{"up_to": 1000.0, "price": "2"},
                                                              {"up_to": None, "price": "1"}]}]},
     "rules[0].tiers[0].up_to"),
    ({"context_window": 1e5}, "context_window"),
])
async def test_a_price_book_refuses_a_number_with_a_fraction_or_exponent_where_an_integer_goes(
        client: AsyncTestClient, tag: str, change: dict, field: str):
    """As the wallet routes do (tests/api/test_integer_fields.py): 1000.0 tokens was taken as 1000."""
    response = await client.post("/v1/price-books", json={**BOOK, "id": f"b-{tag}", **change})
    assert response.status_code == 422, response.text
    assert {"field": field, "message": NOT_AN_INTEGER} in response.json()["fields"], response.text


@pytest.mark.parametrize("body", [
    {}, {"estimate": {"input_tokens": 1}, "amount": "1"}, {"estimate": None, "amount": None}])
async def test_a_reservation_needs_exactly_one_of_estimate_and_amount(client: AsyncTestClient, tag: str, body: dict):
    response = await client.post("/v1/reservations", json={"customer_id": f"c-{tag}", "request_id": "r",
                                                           "model": "m", **body})
    assert response.status_code == 422 and response.json()["code"] == "validation_error"


async def test_the_usage_report_refuses_times_and_groups_outside_the_schema(client: AsyncTestClient, tag: str):
    cid = f"c-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid})).status_code == 201
    ok = await client.get(f"/v1/customers/{cid}/usage",
                          params={"from": "2026-01-01T00:00:00+01:00", "group_by": "model, feature"})
    assert ok.status_code == 200, ok.text
    for params in ({"from": "yesterday"}, {"to": "2026-01-01"}, {"group_by": "model,,kind"}, {"group_by": "a\tb"}):
        refused = await client.get(f"/v1/customers/{cid}/usage", params=params)
        assert refused.status_code == 422 and refused.headers["content-type"].startswith(PROBLEM), params


async def test_a_usage_batch_over_its_documented_size_is_refused(client: AsyncTestClient):
    event = {"event_id": "e", "customer_id": "c", "model": "m", "timestamp": "2026-01-01T00:00:00Z"}
    response = await client.post("/v1/usage-events", json=[event] * 1001)
    assert response.status_code == 422 and response.json()["code"] == "validation_error"


# What schemathesis found (st run ... -c all: positive_data_acceptance): inputs the document took
# and the server refused, for want of a published rule. Each rule is now in the document, and
# the server takes exactly its language.

def _body(document: dict, path: str, method: str = "post") -> dict:
    return document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


MONEY_LIMITS = ["10.00", "0.000000001", "1000000000", "0", "0.0", "", "-1", "01", "1e3", "1000000000.1", "1\n"]


async def test_a_money_budget_limit_is_the_published_positive_amount(client: AsyncTestClient, document: dict, tag: str):
    schema = _body(document, "/v1/budgets")
    string = next(b for b in schema["properties"]["limit"]["anyOf"] if b.get("type") == "string")
    assert string["pattern"] == POSITIVE_AMOUNT
    # the limit's type follows the metric: a string for money, an integer for counts
    by_metric = {branch["properties"]["limit"]["type"]: branch["properties"]["metric"] for branch in schema["oneOf"]}
    assert by_metric["string"] == {"const": "money"} and "money" not in by_metric["integer"]["enum"]
    cid = f"c-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid})).status_code == 201
    for limit in MONEY_LIMITS:
        response = await client.post("/v1/budgets", json={"customer_id": cid, "window": "day", "metric": "money",
                                                          "limit": limit})
        assert (response.status_code == 201) == matches(POSITIVE_AMOUNT, limit), (limit, response.text)
    for metric, limit in (("tokens", "10"), ("money", 10)):
        response = await client.post("/v1/budgets", json={"customer_id": cid, "window": "day", "metric": metric,
                                                          "limit": limit})
        assert response.status_code == 422 and response.json()["fields"][0]["field"] == "limit"


async def test_a_price_books_max_charge_is_the_published_positive_amount(client: AsyncTestClient, document: dict,
                                                                         tag: str):
    schema = _body(document, "/v1/price-books")["properties"]["max_charge_per_request"]
    assert schema["anyOf"][0]["pattern"] == POSITIVE_AMOUNT
    for i, value in enumerate([*MONEY_LIMITS, "0.5000000001", "1.0000000000"]):
        response = await client.post("/v1/price-books", json={**BOOK, "id": f"b-{tag}-{i}",
                                                              "max_charge_per_request": value})
        assert (response.status_code == 201) == matches(POSITIVE_AMOUNT, value), (value, response.text)
        if response.status_code != 201:
            assert response.json()["code"] == "validation_error"


TOPICS = ["*", "balance.*", "invoice.finalized", "webhook_endpoint.disabled", "balance.low.x1", "", "balance",
          "foo.bar", "Balance.low", "balance.low\n", "balance..low", "balance.*.low"]
URLS = ["https://hooks.example.com/m", "HTTP://hooks.example.com:8080/a?b=1", "https://hooks.example.com/p@x",
        "0", "ftp://hooks.example.com/", "https://u@hooks.example.com/", "https://hooks.example.com/#",
        "https://hooks.example.com/#f", "\x01https://hooks.example.com/", "https://hooks.example.com/\x01",
        "https://hooks.example.com/a b", "https://hooks.example.com/\u3000", "https://hooks.example.com\ufeff/",
        "https://hooks.example.com:65535/", "https://hooks.example.com:065535/", "https://hooks.example.com:/",
        "https://hooks.example.com:0/", "https://hooks.example.com:00/",
        "https://hooks.example.com:65536/", "https://hooks.example.com:x/", "https://:443/", "https://a:b:443/",
        "https://[2001:db8::1/"]


async def test_webhook_topics_and_urls_are_the_published_patterns(client: AsyncTestClient, document: dict):
    schema = _body(document, "/v1/webhook-endpoints")["properties"]
    topic_pattern, url_pattern = schema["topics"]["items"]["pattern"], schema["url"]["pattern"]
    for topic in TOPICS:
        response = await client.post("/v1/webhook-endpoints", json={"url": URLS[0], "topics": [topic]})
        assert (response.status_code == 201) == matches(topic_pattern, topic), (topic, response.text)
    for url in URLS:  # the pattern decides each of these
        response = await client.post("/v1/webhook-endpoints", json={"url": url, "topics": ["*"]})
        assert (response.status_code == 201) == matches(url_pattern, url), (url, response.text)
        if response.status_code != 201:
            assert response.json()["fields"][0]["field"] == "url"
    # in the pattern, but a name no resolver takes (a label over 63 characters): refused at once,
    # where it was taken and its deliveries failed out of the record, for ever
    # (and a host IDNA 2008, the webhook client's, refuses)
    for url in (f"https://{'a' * 64}.example.com/", "https://a\u00a7b.example.com/"):
        response = await client.post("/v1/webhook-endpoints", json={"url": url, "topics": ["*"]})
        assert response.status_code == 422 and response.json()["fields"][0]["field"] == "url", url


async def test_a_redrive_names_exactly_one_of_event_id_and_since(client: AsyncTestClient, document: dict):
    assert _body(document, "/v1/webhook-endpoints/{endpoint_id}/redrive")["oneOf"] == [
        {"required": ["event_id"], "properties": {"event_id": {"type": "string"}}},
        {"required": ["since"], "properties": {"since": {"type": "string"}}}]
    for body in ({}, {"event_id": "e", "since": "2026-01-01T00:00:00Z"}, {"event_id": None, "since": None}):
        response = await client.post("/v1/webhook-endpoints/we_missing/redrive", json=body)
        assert response.status_code == 422 and response.json()["code"] == "validation_error", body
    response = await client.post("/v1/webhook-endpoints/we_missing/redrive", json={"event_id": "e", "since": None})
    assert response.status_code == 404


async def test_a_redrive_field_sent_as_null_is_one_left_out(client: AsyncTestClient):
    """As the body's oneOf reads `since: null` beside `event_id` (left out), so does the handler
    every other optional field: `until`, `since_event_id` or `until_event_id` null beside
    `event_id` is left out (validated, then 404 for the endpoint), where a value is refused naming
    it; `failed_only` is a boolean, and null is a 422 naming it (beside `since` too)."""
    url = "/v1/webhook-endpoints/we_missing/redrive"
    for field in ("until", "since_event_id", "until_event_id"):
        left_out = await client.post(url, json={"event_id": "e", field: None})
        given = await client.post(url, json={"event_id": "e", field: "2026-01-01T00:00:00Z"})
        assert (left_out.status_code, given.status_code) == (404, 422), field
        assert given.json()["fields"][0]["field"] == field
    for body in ({"event_id": "e", "failed_only": None}, {"since": "2026-01-01T00:00:00Z", "failed_only": None}):
        refused = await client.post(url, json=body)
        assert refused.status_code == 422 and refused.json()["fields"][0]["field"] == "failed_only", body


async def test_a_cursor_is_published_as_what_the_server_makes(client: AsyncTestClient, document: dict, tag: str):
    for path in ("/v1/journal", "/v1/accounts/{code}/statement"):
        cursor = next(p for p in document["paths"][path]["get"]["parameters"] if p["name"] == "cursor")
        assert cursor["schema"]["minLength"] == 1 and cursor["schema"]["pattern"] == "^[A-Za-z0-9_-]+$"
    cid = f"c-{tag}"  # two entries of its own, so that a page of one has a next page
    assert (await client.post("/v1/customers", json={"id": cid})).status_code == 201
    for _ in range(2):
        assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1"})).status_code == 201
    page = await client.get("/v1/journal", params={"limit": 1})
    assert page.status_code == 200 and matches("^[A-Za-z0-9_-]+$", page.json()["next_cursor"])
    for bad in ("", "!!", "AAAA"):
        refused = await client.get("/v1/journal", params={"cursor": bad})
        assert refused.status_code == 400 and refused.json()["code"] == "invalid_cursor", bad


async def test_an_upper_case_url_scheme_is_refused_not_a_500(client: AsyncTestClient):
    # the table's CHECK wants a lower-case scheme: urlsplit's lower-casing let HTTP:// reach it
    response = await client.post("/v1/webhook-endpoints", json={"url": "HTTPS://hooks.example.com/", "topics": ["*"]})
    assert response.status_code == 422 and response.json()["fields"][0]["field"] == "url"


@pytest.mark.parametrize(("change", "taken"), [
    ({"unpriced": "zero"}, False), ({"format": 1, "unpriced": "zero"}, False), ({"unpriced": "error"}, True),
    ({"format": 2, "unpriced": "zero"}, True),
    ({"rules": [{"id": "s", "token_type": "audio_seconds", "price": "1"}]}, False),
    ({"format": 2, "rules": [{"id": "s", "token_type": "audio_seconds", "price": "1"}]}, True),
    ({"rules": [{"id": "in", "token_type": "input", "price": "1", "label": "peak"}]}, False),
    ({"rules": [{"id": "in", "token_type": "input", "price": "1", "prompt_tiers": []}]}, True),
    ({"format": 2, "rules": [{"id": "in", "token_type": "input", "price": "1", "source_date": "2026-01-01"}]}, True),
    ({"format": 2, "rules": [{"id": "in", "token_type": "input", "price": "1",
                              "source_date": "\u0662\u0660\u0662\u0666-\u0660\u0661-\u0660\u0661"}]}, False),
])
async def test_format_2_fields_need_format_2_as_the_document_says(
        client: AsyncTestClient, document: dict, tag: str, change: dict, taken: bool):
    rule = _body(document, "/v1/price-books")["anyOf"]
    assert rule[0] == {"required": ["format"], "properties": {"format": {"const": 2}}}
    assert rule[1]["properties"]["unpriced"] == {"enum": [None, "error"]}
    assert set(rule[1]["properties"]["rules"]["items"]["properties"]["token_type"]["enum"]) == set(FORMAT_1_TYPES)
    response = await client.post("/v1/price-books", json={**BOOK, "id": f"b-{tag}", **change})
    assert (response.status_code == 201) == taken, response.text
    if not taken:
        assert response.json()["code"] == "validation_error"


async def test_the_document_states_distinct_thresholds_named_dimensions_and_a_bigint_cursor(
        client: AsyncTestClient, document: dict, tag: str):
    cid = f"c-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid})).status_code == 201
    assert _body(document, "/v1/budgets")["properties"]["thresholds"]["uniqueItems"] is True
    twice = await client.post("/v1/budgets", json={"customer_id": cid, "window": "day", "metric": "requests",
                                                   "limit": 10, "thresholds": [50, 50]})
    assert twice.status_code == 422 and twice.json()["fields"][0]["field"] == "thresholds"
    for path in ("/v1/reservations", "/v1/usage-events"):
        schema = _body(document, path)
        assert (schema.get("items") or schema)["properties"]["dimensions"]["propertyNames"] == {
            "minLength": 1, "maxLength": 200, "pattern": TEXT_PATTERN}  # the rule of free text (pricing.text)
    unnamed = await client.post("/v1/reservations", json={"customer_id": cid, "request_id": "r", "model": "m",
                                                          "amount": "1", "dimensions": {"": 1}})
    assert unnamed.status_code == 422 and unnamed.json()["fields"][0]["field"] == "dimensions"
    for path in ("/v1/webhook-endpoints/{endpoint_id}/attempts", "/v1/webhook-endpoints/{endpoint_id}/deliveries"):
        [before] = [p for p in document["paths"][path]["get"]["parameters"] if p["name"] == "before"]
        assert before["schema"]["maximum"] == 2**63 - 1
    endpoint = await client.post("/v1/webhook-endpoints", json={"url": URLS[0], "topics": ["*"]})
    attempts = f"/v1/webhook-endpoints/{endpoint.json()['id']}/attempts"
    assert (await client.get(attempts, params={"before": 2**63 - 1})).status_code == 200
    beyond = await client.get(attempts, params={"before": 2**63})
    assert beyond.status_code == 422 and beyond.json()["code"] == "validation_error"

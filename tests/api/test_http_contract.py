"""The HTTP contract at the edge (API.md's general rules, and what a demanding client expects of
JSON over HTTP): a body means one thing or is refused, a query parameter the route does not take
is named rather than ignored, and every refusal is problem+json with a stable code."""
from __future__ import annotations

import gzip
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import jsonschema_rs  # schemathesis brings it
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar import Litestar
from sqlalchemy import text

from api.routes.wire import repeated_key
from ledger.db import Database
from tests.api.apps import ADMIN_KEY, api_app, api_client, book_customer
from wallets.periods import Cycle, period_of

# Webhook endpoints made here are deleted after each test (tests/conftest.py): left enabled on the
# session's database, every later file's events were handed to them, for hosts nothing here reaches.
pytestmark = pytest.mark.usefixtures("no_endpoint_left")

ADMIN = {"Authorization": "Bearer test-admin"}
JSON = {**ADMIN, "Content-Type": "application/json"}


@pytest.fixture
async def client(db, database_url):
    async with api_client(database_url) as c:
        yield c


@pytest.fixture
async def customer(client, tag) -> str:
    return await book_customer(client, f"contract-{tag}", "input", billing="prepaid", admin=ADMIN_KEY)


def _refused(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code and body["status"] == status
    return body


async def _available(client, cid: str) -> str:
    return (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()["available"]


# (path, body, the field the answer names): the same key twice in one object, at any depth.
DUPLICATES = [
    ("/v1/customers/{cid}/topups", b'{"amount": "1.00", "amount": "1000.00"}', "amount"),
    ("/v1/reservations", b'{"customer_id": "{cid}", "request_id": "dup", "model": "model-a", '
                         b'"estimate": {"input_tokens": 1, "max_output_tokens": 1, "input_tokens": 900}}',
     "estimate.input_tokens"),
    ("/v1/usage-events", b'[{"event_id": "e1", "customer_id": "{cid}", "model": "model-a", '
                         b'"timestamp": "2026-06-01T00:00:00Z", "usage": {"input_tokens": 1}}, '
                         b'{"event_id": "e2", "customer_id": "{cid}", "customer_id": "other", "model": "model-a", '
                         b'"timestamp": "2026-06-01T00:00:00Z", "usage": {"input_tokens": 1}}]',
     "[1].customer_id"),
    ("/v1/customers/{cid}/topups", b'{"amount": "1.00", "\\u0061mount": "1000.00"}', "amount"),  # the same key, escaped
    # the colon an escape adds makes up for the one the repeated key takes away
    ("/v1/customers/{cid}/topups", b'{"reference": "a", "reference": "\\u003a", "amount": "1.00"}', "reference"),
]


@pytest.mark.parametrize("path, body, field", DUPLICATES, ids=[d[2] for d in DUPLICATES])
async def test_a_key_given_twice_in_one_object_is_refused_naming_it(client, customer, path, body, field):
    """Before: the last of the two won ({"amount": "1.00", "amount": "1000.00"} topped up 1000.00,
    201), while a proxy, a log or a signature check that reads the first saw 1.00."""
    response = await client.post(path.format(cid=customer), headers=JSON,
                                 content=body.replace(b"{cid}", customer.encode()))
    body = _refused(response, 422, "validation_error")
    assert body["fields"] == [{"field": field, "message": "given more than once in one object"}]
    assert await _available(client, customer) == "0.00"


async def test_colons_and_escapes_in_strings_are_not_taken_for_duplicate_keys(client):
    name = 'a:b "c": \\u003a :'
    content = b'{"scope": "auditor", "name": "a:b \\"c\\": \\\\u003a \\u003a"}'
    created = await client.post("/v1/api-keys", headers=JSON, content=content)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == name


@pytest.mark.parametrize("path, unknown", [
    ("/v1/customers/{cid}/usage?grop_by=model", "grop_by"),           # a typo of group_by
    ("/v1/journal?customr={cid}", "customr"),                         # a typo of customer: every entry
    ("/v1/customers/{cid}?expand=wallet", "expand"),                  # a route that takes none
    ("/v1/journal?limit=5&limit=1", "limit"),                          # given twice: which one?
])
async def test_a_query_parameter_the_route_does_not_take_is_refused_naming_it(client, customer, path, unknown):
    """Before: ignored, 200: `/v1/journal?customr=acme` answered every customer's entries, and
    `?limit=5&limit=1` answered 5."""
    response = await client.get(path.format(cid=customer), headers=ADMIN)
    body = _refused(response, 422, "validation_error")
    assert [f["field"] for f in body["fields"]] == [unknown]


async def test_the_query_parameters_a_route_takes_are_still_taken(client, customer):
    response = await client.get(f"/v1/customers/{customer}/usage?group_by=model&from=2026-01-01T00:00:00Z",
                                headers=ADMIN)
    assert response.status_code == 200, response.text
    assert (await client.get(f"/v1/journal?customer={customer}&limit=1", headers=ADMIN)).status_code == 200


async def test_a_compressed_body_is_415_not_malformed_json(client, customer):
    """Before: 422 "JSON is malformed: invalid character (byte 0)" on `body`, for a body that
    was well-formed JSON, gzipped (RFC 9110 15.5.16: an unsupported content coding is a 415)."""
    response = await client.post(f"/v1/customers/{customer}/topups", content=gzip.compress(b'{"amount": "1.00"}'),
                                 headers={**JSON, "Content-Encoding": "gzip"})
    body = _refused(response, 415, "unsupported_media_type")
    assert "Content-Encoding" in body["detail"]
    plain = await client.post(f"/v1/customers/{customer}/topups", content=b'{"amount": "1.00"}',
                              headers={**JSON, "Content-Encoding": "identity"})
    assert plain.status_code == 201, plain.text


@pytest.mark.parametrize(("coding", "status"), [
    (None, 201), ("identity", 201), (" Identity ", 201), ("deflate", 415), ("identity, gzip", 415)])
async def test_a_body_without_a_content_coding_or_identity_is_taken_and_any_other_is_a_problem_415(
        client, customer, coding, status):
    """Guard (67a0974, README Request limits): a plain body with no Content-Encoding, or
    `identity` (any case, spaces around it), is taken: 201, topped up 1.00; any other coding,
    a list that names one beside identity too, is 415 application/problem+json, code
    unsupported_media_type, naming the coding, nothing topped up."""
    before = await _available(client, customer)
    headers = {**JSON, **({} if coding is None else {"Content-Encoding": coding})}
    response = await client.post(f"/v1/customers/{customer}/topups", content=b'{"amount": "1.00"}', headers=headers)
    if status == 201:
        assert response.status_code == 201, response.text
        assert Decimal(await _available(client, customer)) == Decimal(before) + 1
        return
    body = _refused(response, 415, "unsupported_media_type")
    assert body["detail"] == f"Content-Encoding {coding.strip()} is not supported: send the body uncompressed"
    assert await _available(client, customer) == before


@pytest.mark.parametrize("content, headers, message", [
    (b"", ADMIN, "a JSON body is required"),
    (b"", JSON, "a JSON body is required"),
    (b"null", JSON, "Expected `object`, got `null`"),
    (b"[]", JSON, "Expected `object`, got `array`"),
])
async def test_a_missing_or_wrong_kind_of_body_names_the_body(client, customer, content, headers, message):
    """Before: the field was `data` (the handler's own argument) and, for no body, the message `'data'`."""
    response = await client.post(f"/v1/customers/{customer}/topups", content=content, headers=headers)
    body = _refused(response, 422, "validation_error")
    assert body["fields"] == [{"field": "body", "message": message}]


def _tiered(tag: str, **rule) -> dict:
    return {"id": f"big-{tag}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
            "rules": [{"id": "in", "model": "model-a", "token_type": "input", **rule}]}


@pytest.mark.parametrize("rule, field", [
    ({"tiers": [{"up_to": 2**64 + 1, "price": "1"}, {"price": "2"}]}, "rules[0].tiers[0].up_to"),
    ({"tiers": [{"up_to": 2**63, "price": "1"}, {"price": "2"}]}, "rules[0].tiers[0].up_to"),
    ({"price": "1", "prompt_tiers": [{"above": 2**63, "price": "2"}]}, "rules[0].prompt_tiers[0].above"),
    ({"price": "1", "match": {"tier": 2**63}}, "rules[0].match[...]"),
])
async def test_an_integer_beyond_int64_in_a_price_book_is_refused(client, tag, rule, field):
    """Before: 201, the book kept `"up_to": 18446744073709551617` (no int64 reader can load it back;
    usage dimensions were already bounded to bigint, a rule's match on them was not)."""
    response = await client.post("/v1/price-books", json=_tiered(tag, **rule), headers=ADMIN)
    body = _refused(response, 422, "validation_error")
    assert [f["field"] for f in body["fields"]] == [field]
    largest = {k: v for k, v in rule.items()}
    if "tiers" in rule:
        largest["tiers"] = [{"up_to": 2**63 - 1, "price": "1"}, {"price": "2"}]
        assert (await client.post("/v1/price-books", json=_tiered(tag, **largest), headers=ADMIN)).status_code == 201


class Pairs(list):
    """An object as written: its (key, value) pairs, a key perhaps repeated."""


_KEYS = st.sampled_from(["a", ":", "a:"])
_PAIRS = st.recursive(
    st.integers() | st.sampled_from([":", "x", "a:b", "::"]),
    lambda inner: st.lists(inner, max_size=3) | st.lists(st.tuples(_KEYS, inner), max_size=4).map(Pairs),
    max_leaves=20)


def _written(value, escape: bool) -> str:
    if isinstance(value, Pairs):
        return "{" + ", ".join(f"{_written(k, escape)}: {_written(v, escape)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_written(v, escape) for v in value) + "]"
    text = json.dumps(value)
    return text.replace(":", "\\u003a") if escape and isinstance(value, str) else text


def _repeats(value) -> bool:
    if isinstance(value, Pairs):
        keys = [k for k, _ in value]
        return len(set(keys)) < len(keys) or any(_repeats(v) for _, v in value)
    return isinstance(value, list) and any(_repeats(v) for v in value)


@given(_PAIRS, st.booleans())
@settings(max_examples=300)
def test_a_repeated_key_is_found_exactly_when_there_is_one(value, escape):
    body = _written(value, escape).encode()
    assert (repeated_key(body, msgspec.json.decode(body)) is not None) == _repeats(value)


def _v1_routes(app: Litestar) -> list[tuple[str, str]]:
    """(method, path) of every /v1 route, found in the app rather than listed by hand."""
    routes = []
    for route in app.routes:
        if route.path.startswith("/v1/"):
            path = re.sub(r"\{(\w+):\w+\}", lambda m: f"{m.group(1)}-nope", route.path)
            routes += [(m, path) for m in getattr(route, "route_handler_map", {}) if m != "OPTIONS"]
    return sorted(set(routes))


async def test_every_v1_route_refuses_an_unknown_query_parameter_and_documents_the_422(client):
    app = client.app
    routes = _v1_routes(app)
    assert len(routes) >= 45 and ("DELETE", "/v1/api-keys/key_id-nope") in routes
    for method, path in routes:
        response = await client.request(method, path + "?zz_unknown=1", headers=ADMIN)
        body = _refused(response, 422, "validation_error")
        assert [f["field"] for f in body["fields"]] == ["zz_unknown"], (method, path)
    document = app.openapi_schema.to_schema()
    undocumented = [(method, path) for path, operations in document["paths"].items() if path.startswith("/v1/")
                    for method, operation in operations.items() if "422" not in operation["responses"]]
    assert undocumented == []


async def test_head_is_answered_as_get_without_its_content(client, customer):
    """RFC 9110 9.1: a general-purpose server supports GET and HEAD. Before: HEAD /healthz, and
    HEAD on every /v1 resource, was 405 (Allow: GET, OPTIONS), so an uptime check or `curl -I`
    saw the service as broken."""
    for path, headers in (("/healthz", {}), (f"/v1/customers/{customer}", ADMIN), ("/schema/openapi.json", {})):
        got, head = await client.get(path, headers=headers), await client.head(path, headers=headers)
        assert got.status_code == head.status_code == 200, (path, head.status_code)
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == str(len(got.content))
    refused = await client.head(f"/v1/customers/{customer}")  # no key: the GET's refusal, without its content
    assert refused.status_code == 401 and refused.content == b""
    assert refused.headers["content-type"].startswith("application/problem+json")
    options = await client.options(f"/v1/customers/{customer}", headers=ADMIN)
    assert set(options.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "OPTIONS", "PATCH"}
    wrong = await client.put(f"/v1/customers/{customer}", headers=ADMIN)
    assert wrong.status_code == 405 and set(wrong.headers["allow"].replace(" ", "").split(",")) == {
        "GET", "HEAD", "OPTIONS", "PATCH"}
    post_only = await client.head("/v1/reservations", headers=ADMIN)
    assert post_only.status_code == 405 and "HEAD" not in post_only.headers["allow"]


def test_the_secret_a_creating_call_shows_once_is_a_required_field_of_its_answer():
    """API.md: 201 {"id", "key", "scope", "customers", "created_at"}. Before: the document made
    `key` (and a webhook endpoint's `secret`) optional, so a client generated from it had to
    treat the one chance to read the secret as maybe absent."""
    app = api_app("postgresql://unused/unused")
    schemas = app.openapi_schema.to_schema()["components"]["schemas"]
    assert "key" in schemas["CreatedApiKeyResponse"]["required"]
    assert "secret" in schemas["CreatedWebhookEndpointResponse"]["required"]


@pytest.mark.parametrize("path", ["/v1/nothing", "/nothing", "/v1/customers/a/b/c"])
async def test_options_on_an_unknown_path_is_a_404_problem_not_a_crash(client, path):
    """Before: 500 with no body and no content type (the Allow completion read the route of a
    request that had none), where GET on the same path is 404 not_found."""
    response = await client.options(path, headers=ADMIN)
    _refused(response, 404, "not_found")


def _resolved(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].split("/")[-1]]
    return schema


def test_the_document_types_the_usage_report_api_md_makes_stable():
    """API.md (stable): GET /v1/customers/{id}/usage → {"rows": [{…group keys, "quantity",
    "amount"}]}. Before: the document said only "an object", so a client generated from it had
    no `rows`, and schemathesis could check nothing of the answer."""
    app = api_app("postgresql://unused/unused")
    document = app.openapi_schema.to_schema()
    ok = document["paths"]["/v1/customers/{customer_id}/usage"]["get"]["responses"]["200"]
    report = _resolved(document, ok["content"]["application/json"]["schema"])
    assert {"customer_id", "from", "to", "group_by", "rows"} <= set(report["required"])
    row = _resolved(document, report["properties"]["rows"]["items"])
    assert {"quantity", "amount", "charges"} <= set(row["required"])
    assert row["properties"]["quantity"]["type"] == "integer" and row["properties"]["amount"]["type"] == "string"
    assert row.get("additionalProperties", True) is not False  # the group keys


def test_the_document_types_the_reservation_api_md_makes_stable():
    """API.md (stable): GET /v1/reservations/{id} → its state and entries. Before: "an object"."""
    app = api_app("postgresql://unused/unused")
    document = app.openapi_schema.to_schema()
    ok = document["paths"]["/v1/reservations/{reservation_id}"]["get"]["responses"]["200"]
    view = _resolved(document, ok["content"]["application/json"]["schema"])
    assert {"id", "request_id", "customer_id", "status", "amount", "charged", "released", "expires_at",
            "holds", "charges", "entries"} <= set(view["required"])
    assert view["properties"]["status"]["enum"] == ["held", "capturing", "settled", "released", "expired"]


def _conforms(client, path: str, body: dict, method: str = "get") -> None:
    """The answer validates against the 200 the served document declares for it."""
    document = client.app.openapi_schema.to_schema()
    schema = document["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]}).validate(body)


async def test_a_reservation_and_a_usage_report_keep_to_their_documented_schemas(client, customer):
    def conforms(path: str, body: dict) -> None:
        _conforms(client, path, body)

    assert (await client.post(f"/v1/customers/{customer}/topups", json={"amount": "10"}, headers=ADMIN)).is_success
    held = await client.post("/v1/reservations", headers=ADMIN, json={
        "customer_id": customer, "request_id": "typed", "model": "model-a", "amount": "1.00"})
    open_view = await client.get(f"/v1/reservations/{held.json()['id']}", headers=ADMIN)
    conforms("/v1/reservations/{reservation_id}", open_view.json())
    settled = await client.post(f"/v1/reservations/{held.json()['id']}/settle", headers=ADMIN,
                                json={"usage": {"input_tokens": 1000}, "final": True})
    assert settled.status_code == 200, settled.text
    view = (await client.get(f"/v1/reservations/{held.json()['id']}", headers=ADMIN)).json()
    assert view["entries"] and view["charges"]
    conforms("/v1/reservations/{reservation_id}", view)
    report = (await client.get(f"/v1/customers/{customer}/usage?group_by=model,day", headers=ADMIN)).json()
    assert report["rows"]
    conforms("/v1/customers/{customer_id}/usage", report)


async def test_a_budget_change_and_delete_replayed_by_their_idempotency_keys_answer_the_first_answer(
        client, customer, tag):
    """API.md: mutating calls accept Idempotency-Key, a replay answers the first response (same
    status and body), another body under it is idempotency_conflict. Before: PATCH and DELETE
    /v1/budgets/{id} ignored it: a DELETE retried after a lost answer was 404 not_found, and a
    PATCH under a used key applied whatever it carried."""
    made = await client.post("/v1/budgets", headers=ADMIN, json={
        "customer_id": customer, "window": "month", "metric": "tokens", "limit": 1000})
    assert made.status_code == 201, made.text
    path = f"/v1/budgets/{made.json()['id']}"
    change = {**ADMIN, "Idempotency-Key": f"change-{tag}"}
    first = await client.patch(path, headers=change, json={"limit": 2000})
    again = await client.patch(path, headers=change, json={"limit": 2000})
    assert first.status_code == again.status_code == 200, again.text
    assert again.content == first.content and again.headers.get("idempotent-replayed") == "true"
    other = await client.patch(path, headers=change, json={"limit": 3000})
    _refused(other, 409, "idempotency_conflict")
    assert (await client.get(path, headers=ADMIN)).json()["limit"] == 2000
    gone = {**ADMIN, "Idempotency-Key": f"delete-{tag}"}
    deleted = await client.delete(path, headers=gone)
    retried = await client.delete(path, headers=gone)
    assert deleted.status_code == retried.status_code == 200, retried.text
    assert retried.content == deleted.content and retried.headers.get("idempotent-replayed") == "true"
    _refused(await client.delete(path, headers=ADMIN), 404, "not_found")  # without the key: gone


async def test_a_body_sent_to_a_route_that_takes_none_is_refused_not_ignored(client, customer):
    """Before: ignored. POST /v1/reservations/{id}/release with {"amount": "0.50"} (a partial
    release, as the caller thought) released the whole hold, 200; every other field of a body
    is named when misspelt, this one was not read at all."""
    assert (await client.post(f"/v1/customers/{customer}/topups", json={"amount": "10"}, headers=ADMIN)).is_success
    held = await client.post("/v1/reservations", headers=ADMIN, json={
        "customer_id": customer, "request_id": "no-body", "model": "model-a", "amount": "1.00"})
    path = f"/v1/reservations/{held.json()['id']}"
    partial = await client.post(f"{path}/release", json={"amount": "0.50"}, headers=ADMIN)
    body = _refused(partial, 422, "validation_error")
    assert body["fields"] == [{"field": "amount", "message": "unknown field: this route takes no body"}]
    assert (await client.get(path, headers=ADMIN)).json()["status"] == "held"
    for content in (b"[1]", b"{bad"):
        _refused(await client.post(f"{path}/release", content=content, headers=JSON), 422, "validation_error")
    _refused(await client.post("/v1/audit/verify", json={"checks": ["bounds"]}, headers=ADMIN), 422,
             "validation_error")
    released = await client.post(f"{path}/release", content=b"{}", headers=JSON)  # nothing said: taken
    assert released.status_code == 200, released.text
    for content, headers in ((b" null ", JSON), (b"", ADMIN)):  # taken too: answered as released already
        again = await client.post(f"{path}/release", content=content, headers=headers)
        assert again.status_code == 200 and again.json()["status"] == "released", again.text


@pytest.mark.parametrize("path, media_types", [
    ("/v1/invoices/{invoice_id}", {"application/json", "text/html", "application/pdf", "text/csv"}),
    ("/v1/customers/{customer_id}/invoices/upcoming", {"application/json", "text/html", "application/pdf",
                                                      "text/csv"}),
    ("/v1/credit-notes/{credit_note_id}", {"application/json", "text/html", "application/pdf"}),
])
def test_the_document_lists_every_media_type_a_document_route_answers_in(path, media_types):
    """API.md: GET /v1/invoices/{id} is JSON, and `Accept: text/html` or `application/pdf` for a
    person. Before: the document listed application/json only (with an empty schema), so a
    client read from it could not know the others, and a checker flagged them as undocumented."""
    app = api_app("postgresql://unused/unused")
    ok = app.openapi_schema.to_schema()["paths"][path]["get"]["responses"]["200"]
    assert set(ok["content"]) == media_types
    assert ok["content"]["application/pdf"]["schema"] == {"type": "string", "format": "binary"}


LISTS = ["/v1/journal", "/v1/budgets", "/v1/accounts/platform:revenue:USD/statement",
         "/v1/webhook-endpoints/none/deliveries", "/v1/webhook-endpoints/none/attempts"]


@pytest.mark.parametrize("query", ["limit=1.0", "limit=1e0", "limit=+1", "limit= 1", "limit=0x1", "limit=1_0"])
@pytest.mark.parametrize("path", LISTS)
async def test_a_non_integer_limit_is_a_422_naming_it(client, path, query):
    """Before: `?limit=1.0` (msgspec's lax conversion of a whole float) answered one item per page,
    though the document says `integer`. Now an integer query parameter that is not digits is a 422
    naming it."""
    body = _refused(await client.get(f"{path}?{query}", headers=ADMIN), 422, "validation_error")
    assert [f["field"] for f in body["fields"]] == ["limit"], body


@pytest.mark.parametrize("query", ["limit=0", "limit=1001"])
@pytest.mark.parametrize("path", [*LISTS, "/v1/customers/none/invoices", "/v1/receivables/ageing",
                                  "/v1/customers/none/usage?from=2026-12-01T00:00:00Z&to=2027-01-01T00:00:00Z"])
async def test_a_limit_out_of_range_is_a_422_whose_detail_names_it(client, path, query):
    """A limit out of range (1 to 1,000) was a 422 whose `fields` named `limit` but whose detail was
    Litestar's "Validation failed for GET /v1/journal?limit=0", the request echoed back, where every
    other refusal's detail says the field and what is wrong with it ("limit: must be an integer:
    digits only"). Now the detail is the fields' messages, each after its field."""
    sep = "&" if "?" in path else "?"
    body = _refused(await client.get(f"{path}{sep}{query}", headers=ADMIN), 422, "validation_error")
    assert [f["field"] for f in body["fields"]] == ["limit"], body
    bound = "Expected `int` >= 1" if query == "limit=0" else "Expected `int` <= 1000"
    assert body["detail"] == f"limit: {bound}", body


@pytest.mark.parametrize("path", LISTS[3:])
async def test_a_non_integer_before_is_a_422_naming_it(client, path):
    body = _refused(await client.get(f"{path}?before=2.0", headers=ADMIN), 422, "validation_error")
    assert [f["field"] for f in body["fields"]] == ["before"], body


@pytest.mark.parametrize("path", LISTS[3:])
async def test_an_empty_event_id_filter_is_a_422_naming_it_not_an_empty_log(client, path):
    """`?event_id=` names no event: an endpoint's log of it was 200 with no items (its one bound was
    a length of at most 200), as for an event never sent there, where the journal's empty
    `request_id` is a 422 naming it. Now the same: 422 `validation_error` on `event_id`, before the
    endpoint (`none`) is looked up."""
    body = _refused(await client.get(f"{path}?event_id=", headers=ADMIN), 422, "validation_error")
    assert [f["field"] for f in body["fields"]] == ["event_id"], body


@pytest.mark.parametrize("path", ["/v1/journal?limit=1", "/v1/budgets?limit=7",
                                  "/v1/journal?limit=1000"])
async def test_an_integer_query_parameter_in_digits_is_taken(client, path):
    response = await client.get(path, headers=ADMIN)
    assert response.status_code == 200, response.text


TYPED = [("/v1/audit/charges/{request_id}", "get"), ("/v1/customers/{customer_id}/invoices", "get"),
         ("/v1/billing/close", "post"), ("/v1/rerate", "post"), ("/v1/customers/{customer_id}/credit-notes", "get"),
         ("/v1/webhook-endpoints/{endpoint_id}/deliveries", "get"),
         ("/v1/webhook-endpoints/{endpoint_id}/attempts", "get")]


@pytest.mark.parametrize(("path", "method"), TYPED)
def test_the_document_types_the_answers_of_audit_invoices_rerates_and_webhook_logs(path, method):
    """Before: each of these 200s was documented as a bare "object" (additionalProperties {}), so
    a client generated from the document got untyped answers. Now each names its fields."""
    app = api_app("postgresql://unused/unused")
    document = app.openapi_schema.to_schema()
    ok = document["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
    answer = _resolved(document, ok)
    assert answer.get("required") and answer.get("properties"), answer


async def test_audit_invoices_rerates_and_webhook_logs_keep_to_their_documented_schemas(
        client, db: Database, tag: str):
    """Real answers (a reservation's and a usage event's trace, a close, the invoices, a rerate
    previewed and applied with its credit note, a webhook endpoint's deliveries and attempts)
    validate against the served document's schemas: a response drifting from its schema fails."""
    def utc(at: datetime) -> str:
        return at.isoformat().replace("+00:00", "Z")

    def book(version: str, effective_from: str, price: str) -> dict:
        return {"id": f"typed-{tag}", "version": version, "currency": "USD", "effective_from": effective_from,
                "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": price}]}

    cid = f"typed-{tag}"
    assert (await client.post("/v1/price-books", headers=ADMIN, json=book("v1", "2026-01-01T00:00:00Z",
                                                                          "10.00"))).status_code == 201
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": cid, "currency": "USD", "price_book": f"typed-{tag}", "billing": "postpaid"})
    assert created.status_code == 201, created.text
    now = datetime.now(UTC)
    period = period_of(now, Cycle())
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": f"{tag}-e{i}", "customer_id": cid, "model": "model-a", "timestamp": now.isoformat(),
         "usage": {"input_tokens": 100_000}} for i in range(2)])
    assert sent.json()["accepted"] == 2, sent.text
    held = await client.post("/v1/reservations", headers=ADMIN, json={
        "customer_id": cid, "request_id": f"{tag}/1", "model": "model-a", "amount": "1.00"})
    assert held.status_code == 201, held.text
    # Ids of this test's own (a trace by a request id other tests also used names several customers).
    for request_id in (f"{tag}-e0", f"{tag}%2F1"):
        trace = await client.get(f"/v1/audit/charges/{request_id}", headers=ADMIN)
        assert trace.status_code == 200, trace.text
        _conforms(client, "/v1/audit/charges/{request_id}", trace.json())
    released = await client.post(f"/v1/reservations/{held.json()['id']}/release", headers=ADMIN)
    assert released.status_code == 200, released.text

    closed = await client.post("/v1/billing/close", headers=ADMIN, json={
        "until": utc(period.end + timedelta(hours=1, seconds=1)), "customer_id": cid, "early": True})
    assert closed.status_code == 200 and closed.json()["closed"], closed.text
    _conforms(client, "/v1/billing/close", closed.json(), "post")
    paid = await client.post(f"/v1/invoices/{closed.json()['closed'][0]['invoice_id']}/payments", headers=ADMIN,
                             json={"amount": "0.50", "reference": "wire-1"})
    assert paid.status_code == 201, paid.text
    invoices = (await client.get(f"/v1/customers/{cid}/invoices", headers=ADMIN)).json()
    assert invoices["invoices"][0]["payments"]
    _conforms(client, "/v1/customers/{customer_id}/invoices", invoices)

    assert (await client.post("/v1/price-books", headers=ADMIN,
                              json=book("v2", utc(period.start), "6.00"))).status_code == 201
    body = {"price_book": f"typed-{tag}", "version": "v2", "from": utc(period.start), "to": utc(period.end),
            "customer_id": cid}
    for mode in ("preview", "apply"):
        rerated = await client.post("/v1/rerate", headers=ADMIN, json={**body, "mode": mode})
        assert rerated.status_code == 200 and rerated.json()["customers"], rerated.text
        _conforms(client, "/v1/rerate", rerated.json(), "post")
    assert rerated.json()["credit_notes"]
    notes = (await client.get(f"/v1/customers/{cid}/credit-notes", headers=ADMIN)).json()
    assert notes["credit_notes"]
    _conforms(client, "/v1/customers/{customer_id}/credit-notes", notes)

    endpoint = await client.post("/v1/webhook-endpoints", headers=ADMIN,
                                 json={"url": "https://hooks.example.com/typed", "topics": ["invoice.paid"]})
    assert endpoint.status_code == 201, endpoint.text
    eid = endpoint.json()["id"]

    async def logged(conn) -> None:
        delivery = (await conn.execute(text(
            """INSERT INTO webhook_deliveries (endpoint_id, event_id, topic, payload, event_at)
               VALUES (:e, :v, 'invoice.paid', '{}', now()) RETURNING id"""), {"e": eid, "v": f"evt_{tag}"})).scalar()
        await conn.execute(text(
            """INSERT INTO webhook_attempts (delivery_id, endpoint_id, event_id, attempt, attempted_at, status_code,
                                             latency_ms, error, succeeded)
               VALUES (:d, :e, :v, 1, now(), 500, 12, NULL, false),
                      (:d, :e, :v, 2, now(), NULL, 3, 'timeout', false)"""),
            {"d": delivery, "e": eid, "v": f"evt_{tag}"})

    await db.committed(logged)
    for log in ("deliveries", "attempts"):
        page = (await client.get(f"/v1/webhook-endpoints/{eid}/{log}?limit=1", headers=ADMIN)).json()
        assert page["items"] and page["next"] is not None
        _conforms(client, f"/v1/webhook-endpoints/{{endpoint_id}}/{log}", page)


# Every route that answers a kept answer under an Idempotency-Key (wire.respond), with
# Idempotent-Replayed: true when it does.
IDEMPOTENT = [("post", "/v1/budgets"), ("patch", "/v1/budgets/{budget_id}"), ("delete", "/v1/budgets/{budget_id}"),
              ("post", "/v1/customers"), ("post", "/v1/customers/{customer_id}/topups"),
              ("post", "/v1/customers/{customer_id}/grants"), ("post", "/v1/invoices/{invoice_id}/payments"),
              ("post", "/v1/api-keys"), ("post", "/v1/price-books"),
              ("put", "/v1/customers/{customer_id}/price-overrides"), ("post", "/v1/reservations"),
              ("post", "/v1/reservations/{reservation_id}/settle"),
              ("post", "/v1/reservations/{reservation_id}/release"),
              ("post", "/v1/reservations/{reservation_id}/extend"), ("post", "/v1/settlements"),
              ("post", "/v1/usage-events"), ("post", "/v1/webhook-endpoints"),
              ("patch", "/v1/webhook-endpoints/{endpoint_id}"), ("delete", "/v1/webhook-endpoints/{endpoint_id}"),
              ("post", "/v1/webhook-endpoints/{endpoint_id}/rotate-secret"),
              ("post", "/v1/webhook-endpoints/{endpoint_id}/redrive")]


def _document() -> dict:
    return api_app("postgresql://unused/unused").openapi_schema.to_schema()


def test_every_503_and_429_describes_its_retry_after():
    """Before: no response in the document had headers, though every 503 is sent with
    Retry-After (and a 429 of a rolling budget window too): a client could not learn of it."""
    document, seen = _document(), 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status in ("503", "429"):
                response = operation.get("responses", {}).get(status) if isinstance(operation, dict) else None
                if response is None:
                    continue
                seen += 1
                header = (response.get("headers") or {}).get("Retry-After")
                assert header is not None, (method, path, status)
                assert header["schema"]["type"] == "integer" and header["required"] is (status == "503")
    assert seen > 50


@pytest.mark.parametrize(("method", "path"), IDEMPOTENT)
def test_a_route_that_replays_describes_idempotent_replayed(method, path):
    """Before: Idempotent-Replayed (sent on a kept answer) was in no response of the document."""
    responses = _document()["paths"][path][method]["responses"]
    ok = [status for status in responses if status.startswith("2")]
    assert ok
    for status in ok:
        header = (responses[status].get("headers") or {}).get("Idempotent-Replayed")
        assert header is not None and header["schema"]["enum"] == ["true"] and not header["required"], status


def test_a_route_that_never_replays_does_not_describe_it():
    responses = _document()["paths"]["/v1/journal"]["get"]["responses"]
    assert "Idempotent-Replayed" not in (responses["200"].get("headers") or {})


async def test_a_replayed_top_up_sends_the_header_its_document_describes(client, customer):
    headers = {**ADMIN, "Idempotency-Key": "typed-replay"}
    first = await client.post(f"/v1/customers/{customer}/topups", json={"amount": "1.00"}, headers=headers)
    again = await client.post(f"/v1/customers/{customer}/topups", json={"amount": "1.00"}, headers=headers)
    assert "idempotent-replayed" not in first.headers and again.headers["idempotent-replayed"] == "true"
    described = client.app.openapi_schema.to_schema()["paths"]["/v1/customers/{customer_id}/topups"]["post"]
    assert "Idempotent-Replayed" in described["responses"][str(again.status_code)]["headers"]

"""Refused at the edge (issue 9, items 7 and 9): values PostgreSQL cannot store, JSON nested too
deep and bodies that are not JSON each answer problem+json at once, before any wallet batch runs,
so that one bad request never fails (and re-runs) the batch of everyone else."""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.routes import wire
from api.routes.wire import _fitted, _Unfit, instant_text, nested_too_deep, shaped, spellings, time_in, unstorable
from ledger.model import request_hash
from wallets.errors import WalletValidationError

ADMIN = {"Authorization": "Bearer test-admin"}
JSON = {"Content-Type": "application/json"}
NUL = "\u0000"
MAX_JSON_DEPTH = 32  # arrays and objects within one another, as the README documents


@pytest.fixture
def batches(app: Litestar) -> list[int]:
    """The size of every wallet transaction the app runs from here on (Engine.execute's calls)."""
    engine = app.state.services.wallets.engine
    sizes: list[int] = []
    run = engine.execute

    async def counted(commands, **kw):
        sizes.append(len(commands))
        return await run(commands, **kw)

    engine.execute = counted
    return sizes


@pytest.fixture
async def world(client: AsyncTestClient, batches: list[int], tag: str) -> dict[str, str]:
    """A customer with credit and an open reservation; `batches` is cleared once it exists."""
    book = {"id": f"book-{tag}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
            "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "10.00"},
                      {"id": "out", "model": "model-a", "token_type": "output", "price": "20.00"}]}
    assert (await client.post("/v1/price-books", json=book)).status_code == 201
    cid = f"edge-{tag}"
    created = await client.post("/v1/customers", json={"id": cid, "price_book": f"book-{tag}"})
    assert created.status_code == 201, created.text
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "100"})).status_code == 201
    held = await client.post("/v1/reservations", json={"customer_id": cid, "request_id": f"held-{tag}",
                                                       "model": "model-a", "amount": "1"})
    assert held.status_code == 201, held.text
    batches.clear()
    return {"customer": cid, "reservation": held.json()["id"], "tag": tag}


def _reserve(w: dict[str, str], **fields: Any) -> dict[str, Any]:
    return {"customer_id": w["customer"], "request_id": f"r-{w['tag']}", "model": "model-a", "amount": "1",
            **fields}


def _event(w: dict[str, str], **fields: Any) -> dict[str, Any]:
    return {"event_id": f"e-{w['tag']}", "customer_id": w["customer"], "model": "model-a",
            "timestamp": "2026-06-01T00:00:00Z", "usage": {"input_tokens": 1}, **fields}


def _book(w: dict[str, str], **rule: Any) -> dict[str, Any]:
    return {"id": f"nul-{w['tag']}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
            "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "1", **rule}]}


# (path, body, the field the answer names): a NUL in every kind of string a body carries.
NUL_CASES = [
    ("/v1/reservations", lambda w: _reserve(w, dimensions={"feature": f"chat{NUL}"}), "dimensions.feature"),
    ("/v1/reservations", lambda w: _reserve(w, dimensions={f"fea{NUL}ture": "chat"}), "dimensions"),
    ("/v1/reservations", lambda w: _reserve(w, request_id=f"r{NUL}-{w['tag']}"), "request_id"),
    ("/v1/reservations", lambda w: _reserve(w, model=f"model-a{NUL}"), "model"),
    ("/v1/reservations", lambda w: _reserve(w, amount=None, estimate={
        "messages": [{"role": "user", "content": f"hi{NUL}"}], "max_output_tokens": 5}),
     "estimate.messages[0].content"),
    ("/v1/reservations", lambda w: _reserve(w, amount=None, estimate={"prompt": f"hi{NUL}"}), "estimate.prompt"),
    ("/v1/reservations/{reservation}/settle", lambda w: {"openai_usage": {
        "prompt_tokens": 1, "completion_tokens": 1, "service_tier": f"default{NUL}"}},
     "openai_usage.service_tier"),
    ("/v1/reservations/{reservation}/settle", lambda w: {"usage": {"input_tokens": 1}, "final": False,
                                                         "capture_id": f"c{NUL}"}, "capture_id"),
    ("/v1/usage-events", lambda w: [_event(w, dimensions={"feature": f"x{NUL}"})], "[0].dimensions.feature"),
    ("/v1/usage-events", lambda w: [_event(w, event_id=f"e{NUL}")], "[0].event_id"),
    ("/v1/customers/{customer}/topups", lambda w: {"amount": "1", "reference": f"inv{NUL}"}, "reference"),
    ("/v1/customers/{customer}/grants", lambda w: {"amount": "1", "reason": f"promo{NUL}"}, "reason"),
    ("/v1/customers", lambda w: {"id": f"n-{w['tag']}", "name": f"Acme{NUL}"}, "name"),
    ("/v1/price-books", lambda w: _book(w, source=f"list{NUL}"), "rules[0].source"),
    ("/v1/price-books", lambda w: _book(w, match={"tier": f"x{NUL}"}), "rules[0].match.tier"),
    ("/v1/api-keys", lambda w: {"scope": "auditor", "customers": [f"a{NUL}"]}, "customers[0]"),
]


@pytest.mark.parametrize("path, body, field", NUL_CASES, ids=[c[2] for c in NUL_CASES])
async def test_a_nul_anywhere_in_a_body_is_refused_naming_its_field_before_any_batch(
        client, world, batches, path, body, field):
    response = await client.post(path.format(**world), json=body(world))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_error"
    assert response.json()["fields"][0]["field"] == field
    assert batches == []


async def test_a_nul_in_a_path_parameter_is_refused_before_any_batch(client, world, batches):
    response = await client.post("/v1/customers/edge%00x/topups", json={"amount": "1"})
    assert response.status_code == 422 and response.json()["code"] == "validation_error"
    assert response.json()["fields"][0]["field"] == "customer_id"
    assert batches == []


async def test_a_lone_surrogate_is_refused_in_a_body_and_where_data_is_shaped(client, world, batches):
    body = '{"customer_id": "' + world["customer"] + '", "request_id": "r\\ud800", "model": "m", "amount": "1"}'
    response = await client.post("/v1/reservations", content=body.encode(), headers=JSON)
    assert response.status_code == 422 and response.json()["code"] == "validation_error"
    assert batches == []
    with pytest.raises(WalletValidationError) as refused:
        shaped({"scope": "auditor", "name": "x\udc00"}, dict)
    assert refused.value.context["fields"][0]["field"] == "name"


UNPAIRED = "invalid JSON string: unpaired surrogate (a \\ud800 to \\udfff escape not in a high-low pair)"
# Raw bodies (json= would escape the backslash): a high surrogate alone, one followed by a letter's
# escape, a low one alone; every typed route decodes its body in wire.guard_request.
SURROGATE_CASES = [
    ("/v1/customers/{customer}/topups", '{{"amount": "1", "reference": "pay\\ud800"}}', "reference"),
    ("/v1/customers/{customer}/topups", '{{"amount": "1", "reference": "pay\\ud800\\u0041"}}', "reference"),
    ("/v1/customers/{customer}/grants", '{{"amount": "1", "reason": "\\udc00"}}', "reason"),
    ("/v1/reservations", '{{"customer_id": "{customer}", "request_id": "r\\ud800", "model": "model-a", '
                         '"amount": "1"}}', "request_id"),
    ("/v1/usage-events", '[{{"event_id": "e\\ud800", "customer_id": "{customer}", "model": "model-a", '
                         '"timestamp": "2026-11-23T10:00:00Z", "usage": {{"input_tokens": 1}}}}]', "[0].event_id"),
    ("/v1/price-books", '{{"id": "b-{tag}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", '
                        '"rules": [{{"id": "in\\ud800", "token_type": "input", "price": "1"}}]}}', "rules[0].id"),
]


@pytest.mark.parametrize("path, body, field", SURROGATE_CASES,
                         ids=["topup", "topup-then-letter", "grant-low", "reserve", "usage-events", "price-book"])
async def test_an_unpaired_surrogate_in_a_json_body_is_named_not_a_truncated_input(
        client, world, batches, path, body, field):
    """A lone surrogate escape in a JSON string was 422 with msgspec's words, "Input data was
    truncated" (or "JSON is malformed: invalid utf-16 surrogate pair (byte 37)"), on `body`: the
    body was whole. It is 422 `validation_error` saying what is wrong, naming the field, as a NUL
    there is; nothing written (no batch, the wallet as it was)."""
    before = (await client.get(f"/v1/customers/{world['customer']}/wallet")).json()
    response = await client.post(path.format(**world), content=body.format(**world).encode(), headers=JSON)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert (problem["code"], problem["detail"]) == ("validation_error", f"{field}: {UNPAIRED}")
    assert problem["fields"] == [{"field": field, "message": UNPAIRED}]
    assert batches == []
    assert (await client.get(f"/v1/customers/{world['customer']}/wallet")).json() == before


async def test_a_surrogate_pair_in_a_json_body_is_its_character(client, world):
    """The guard names unpaired surrogates only: a pair (U+1F600 as \\ud83d\\ude00) is text."""
    body = '{"amount": "1", "reference": "pay \\ud83d\\ude00"}'
    response = await client.post(f"/v1/customers/{world['customer']}/topups", content=body.encode(), headers=JSON)
    assert response.status_code == 201, response.text


# What the database's CHECKs and column types refuse, refused by the schema instead.
SCHEMA_CASES = [
    ("/v1/reservations", lambda w: _reserve(w, customer_id="no such id!"), "customer_id"),
    ("/v1/reservations", lambda w: _reserve(w, dimensions={"n": 2**63}), "dimensions[...]"),
    ("/v1/usage-events", lambda w: [_event(w, customer_id="x" * 101)], "[0].customer_id"),
    ("/v1/usage-events", lambda w: [_event(w, dimensions={"n": -(2**63) - 1})], "[0].dimensions[...]"),
]


@pytest.mark.parametrize("path, body, field", SCHEMA_CASES, ids=[c[2] for c in SCHEMA_CASES])
async def test_values_the_database_would_refuse_are_schema_errors(client, world, batches, path, body, field):
    response = await client.post(path, json=body(world))
    assert response.status_code == 422, response.text
    assert [f["field"] for f in response.json()["fields"]] == [field]
    assert batches == []


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def test_json_nested_500_deep_is_a_validation_problem_not_a_500(client, world, batches):
    body = ('{"customer_id": "' + world["customer"] + '", "request_id": "r", "model": "model-a", '
            '"estimate": {"messages": ' + _nested(500) + "}}")
    response = await client.post("/v1/reservations", content=body.encode(), headers=JSON)
    assert response.status_code == 422, response.text
    assert response.json()["fields"][0] == {"field": "body", "message": f"JSON nested deeper than {MAX_JSON_DEPTH}"
                                                                       " arrays and objects"}
    assert batches == []


@pytest.mark.parametrize("route", ["release", "verify"])
async def test_deep_json_to_a_route_that_takes_no_body_is_a_validation_problem_not_a_500(
        client, world, batches, route):
    """A route without a body (a release, audit verify, a DELETE) still reads what is sent, to refuse
    anything but nothing, `{}` or `null`; that reading recursed into 10,000 nested arrays and
    failed (RecursionError): 500 internal_error. Now refused at the depth limit, as a body is."""
    path = f"/v1/reservations/{world['reservation']}/release" if route == "release" else "/v1/audit/verify"
    response = await client.post(path, content=_nested(10_000).encode(), headers=JSON)
    assert response.status_code == 422, response.text
    assert response.json()["fields"][0] == {"field": "body", "message": "this route takes no body"}
    assert batches == []
    assert (await client.get(f"/v1/reservations/{world['reservation']}")).json()["status"] == "held"


async def test_a_mebibyte_of_nesting_is_refused_fast(client):
    body = b"[" * (1 << 20)
    started = time.perf_counter()
    response = await client.post("/v1/api-keys", content=body, headers=JSON)
    elapsed = time.perf_counter() - started
    assert response.status_code == 422 and response.json()["fields"][0]["field"] == "body"
    assert elapsed < 5, f"{elapsed:.3f} s"  # refused by a scan, not parsed: far under the 30 s a client waits


async def test_the_depth_limit_counts_arrays_and_objects_but_not_brackets_in_strings(client):
    def key_body(customers: str, name: str = "k") -> bytes:
        return ('{"scope": "auditor", "name": ' + json.dumps(name) + ', "customers": ' + customers + "}").encode()

    at_limit = await client.post("/v1/api-keys", content=key_body(_nested(MAX_JSON_DEPTH - 1)), headers=JSON)
    assert at_limit.status_code == 422 and at_limit.json()["fields"][0]["field"] == "customers[0]"
    over = await client.post("/v1/api-keys", content=key_body(_nested(MAX_JSON_DEPTH)), headers=JSON)
    assert over.status_code == 422 and over.json()["fields"][0]["field"] == "body"
    brackets = "[{" * 40 + '\\"[' * 30 + "\\\\"  # 172 characters, escapes included
    named = await client.post("/v1/api-keys", content=key_body("[]", brackets), headers=JSON)
    assert named.status_code == 201, named.text
    assert named.json()["name"] == brackets


def _depth(value: Any) -> int:
    if isinstance(value, dict | list):
        return 1 + max(map(_depth, value.values() if isinstance(value, dict) else value), default=0)
    return 0


_TEXT = st.lists(st.sampled_from(['[', ']', '{', '}', '"', '\\', '\\"[', 'x', '\u00e9']), max_size=5).map("".join)
_JSON = st.recursive(st.none() | st.integers() | _TEXT,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                     max_leaves=60)


@given(_JSON, st.integers(min_value=1, max_value=12), st.booleans())
def test_the_bracket_scan_measures_the_depth_a_parser_would(value, limit, ascii_only):
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert nested_too_deep(body, limit) == (_depth(value) > limit)


_UNFIT_TEXT = st.lists(st.sampled_from(["a", "\x00", "\ud800", "\U0001f600", "\u00e9"]), max_size=3).map("".join)
_UNFIT_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _UNFIT_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_UNFIT_TEXT, inner, max_size=3), max_leaves=30)


@given(_UNFIT_JSON)
def test_shaping_refuses_exactly_what_unstorable_names_and_keeps_floats_floats(value):
    """shaped() checks in one walk (wire._fitted); it must refuse what `unstorable` finds, with
    its field and message, and otherwise give the value itself: a whole float (5.0) stays a float,
    for an integer field to refuse."""
    problem = unstorable(value)
    try:
        fitted = _fitted(value)
    except _Unfit:
        assert problem is not None
        with pytest.raises(WalletValidationError) as refused:
            shaped(value, Any)
        assert refused.value.context == WalletValidationError(*problem).context
    else:
        assert problem is None
        assert fitted is value


def _body_routes(app: Litestar) -> list[tuple[str, str]]:
    """(method, path) of every route that takes a body (POST, PATCH, …), found in the app rather
    than listed by hand."""
    paths = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if "data" in handler.parsed_fn_signature.parameters:
                path = route.path.replace("{customer_id:str}", "nobody").replace("{reservation_id:str}", "res_nope")
                paths += [(method, path) for method in handler.http_methods]
    return sorted(set(paths))


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/xml", "multipart/form-data; boundary=x",
                                          "application/json; charset=utf-16", None])
async def test_a_body_that_is_not_json_is_415_on_every_route_that_takes_one(app, client, batches, content_type):
    routes = _body_routes(app)
    assert len(routes) >= 8 and ("POST", "/v1/reservations") in routes
    headers = {} if content_type is None else {"Content-Type": content_type}
    for method, path in routes:
        response = await client.request(method, path, content=b'{"amount": "1"}', headers=headers)
        assert response.status_code == 415, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "unsupported_media_type"
    assert batches == []


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8", "application/merge-patch+json"])
async def test_json_media_types_are_taken(client, content_type):
    response = await client.post("/v1/api-keys", content=b'{"scope": "auditor"}',
                                 headers={"Content-Type": content_type})
    assert response.status_code == 201, response.text


async def test_a_route_without_a_body_needs_no_content_type(client, world):
    response = await client.post(f"/v1/reservations/{world['reservation']}/release")
    assert response.status_code == 200, response.text


async def test_a_time_at_any_offset_the_api_takes_is_stored_as_utc_not_refused_by_postgresql(client, world):
    """RFC 3339 and the API's own pattern take offsets up to ±23:59, PostgreSQL's timestamptz at
    most ±15:59: a grant's expiry, a usage event's time and a close's `until` at +17:19 were 422
    "a value in the request cannot be stored" on `body`, the whole batch of events refused."""
    w = world
    grant = await client.post(f"/v1/customers/{w['customer']}/grants",
                              json={"amount": "1", "expires_at": "2099-01-01T17:19:00+17:19"})
    assert grant.status_code == 201, grant.text
    assert grant.json()["grant"]["expires_at"] == "2099-01-01T00:00:00Z"  # the same instant, in UTC
    events = await client.post("/v1/usage-events", json=[_event(w, timestamp="2026-06-01T17:19:00+17:19")])
    assert events.json() == {"accepted": 1, "duplicates": 0, "rejected": []}, events.text
    closed = await client.post("/v1/billing/close", json={"until": "2027-01-02T17:19:00+17:19", "early": True,
                                                          "customer_id": w["customer"]})
    assert closed.status_code == 200 and len(closed.json()["closed"]) >= 1, closed.text


@pytest.mark.parametrize("value", [{}, [], None, {"a": 1}])
@pytest.mark.parametrize("path", ["/v1/reservations", "/v1/usage-events"])
async def test_a_dimension_value_that_is_not_a_string_an_integer_or_a_boolean_is_named_by_its_key(
        client, world, batches, path, value):
    """It was 422 with msgspec's words on a field no one sent: "dimensions[...]: Expected
    `bool | int | str`, got `object`". Now the dimension is named, with pricing's words for it."""
    body: Any = _reserve(world, dimensions={"feature": "chat", "tier": value})
    field = "dimensions.tier"
    if path == "/v1/usage-events":
        body, field = [_event(world, dimensions={"feature": "chat", "tier": value})], "[0].dimensions.tier"
    response = await client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_error"
    assert response.json()["fields"] == [{"field": field, "message": "must be a string, int or bool"}]
    assert batches == []


async def test_a_time_written_with_a_lowercase_t_or_z_is_the_same_instant(client, world):
    """RFC 3339 (5.6, NOTE) lets the "T" and "Z" of a date-time be written "t" and "z": each was 422
    "must be an RFC 3339 date-time" (a price book's: "not an RFC 3339 date-time"), in a body and
    in a query alike. Each is now the instant its uppercase spelling is."""
    w = world
    grant = await client.post(f"/v1/customers/{w['customer']}/grants",
                              json={"amount": "1", "expires_at": "2099-01-01t00:00:00z"})
    assert grant.status_code == 201, grant.text
    assert grant.json()["grant"]["expires_at"] == "2099-01-01T00:00:00Z"
    book = {"id": f"lower-{w['tag']}", "currency": "USD", "effective_from": "2026-02-01t10:30:00Z",
            "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "10.00"}]}
    created = await client.post("/v1/price-books", json=book)
    assert created.status_code == 201, created.text
    assert created.json()["effective_from"] == "2026-02-01T10:30:00Z"
    events = await client.post("/v1/usage-events", json=[_event(w, timestamp="2026-06-01T00:00:00z",
                                                                usage={"input_tokens": 1000})])
    assert events.json() == {"accepted": 1, "duplicates": 0, "rejected": []}, events.text
    path = f"/v1/customers/{w['customer']}/usage"
    lower = await client.get(path, params={"from": "2026-06-01t00:00:00z", "to": "2026-06-02t00:00:00Z"})
    upper = await client.get(path, params={"from": "2026-06-01T00:00:00Z", "to": "2026-06-02T00:00:00Z"})
    assert lower.status_code == 200, lower.text
    assert lower.json() == upper.json()
    assert "0.01" in lower.text  # 1,000 input tokens at $10.00 a million, the event's alone in that day


async def test_a_usage_event_sent_again_with_its_time_spelled_otherwise_is_a_duplicate(app, client, world):
    """Its body's hash read the timestamp as sent, so the same event resent by a client whose
    serializer now writes Z for z (or +00:00, or .000) was 'sent before with another body' and
    rejected: 2026-06-01t00:00:00z then 2026-06-01T00:00:00Z, idempotency_conflict. It now hashes
    the instant; another instant is still a conflict. An event kept before, whose hash is of the
    text it was sent with, is still a duplicate when sent so again."""
    w = world
    first = await client.post("/v1/usage-events", json=[_event(w, timestamp="2026-06-01t00:00:00z")])
    assert first.json() == {"accepted": 1, "duplicates": 0, "rejected": []}, first.text
    for spelled in ("2026-06-01T00:00:00Z", "2026-06-01T00:00:00.000+00:00", "2026-06-01T02:00:00+02:00"):
        again = await client.post("/v1/usage-events", json=[_event(w, timestamp=spelled)])
        assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}, (spelled, again.text)
    other = await client.post("/v1/usage-events", json=[_event(w, timestamp="2026-06-01T00:00:01Z")])
    assert [r["code"] for r in other.json()["rejected"]] == ["idempotency_conflict"], other.text
    # kept before: the hash of the text as sent (+00:00), as the route made it then
    kept = _event(w, event_id=f"old-{w['tag']}", timestamp="2026-06-01T00:00:00+00:00")
    assert (await client.post("/v1/usage-events", json=[kept])).json()["accepted"] == 1
    await _kept_as_sent(app, w, kept)
    again = await client.post("/v1/usage-events", json=[kept])
    assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}, again.text
    checked = (await client.post("/v1/audit/verify")).json()
    assert checked["ok"], [c for c in checked["checks"] if not c["ok"]]


async def test_a_usage_event_resent_a_fraction_of_a_microsecond_later_is_a_conflict(app, client, world):
    """The hash read the instant as a datetime keeps it, to the microsecond (PostgreSQL's too), so
    10:00:00.1234561Z and 10:00:00.1234569Z (800 ns apart) both hashed as 10:00:00.123456Z and the
    second, another instant, was a duplicate. Now the hash keeps the fraction as sent: 9 digits,
    .1234561 = .123456100 (trailing zeros) at +02:00 = 12:00:00.123456100+02:00 is the same
    instant, a duplicate; .1234569 is another, idempotency_conflict. The event is kept once, at
    10:00:00.123456 (microseconds), charged once; an event sent with 6 digits hashes as before."""
    w = world
    kept = _event(w, timestamp="2026-06-01T10:00:00.1234561Z")
    assert (await client.post("/v1/usage-events", json=[kept])).json()["accepted"] == 1
    for same in ("2026-06-01T10:00:00.1234561Z", "2026-06-01t10:00:00.123456100z",
                 "2026-06-01T12:00:00.1234561+02:00"):
        again = await client.post("/v1/usage-events", json=[{**kept, "timestamp": same}])
        assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}, (same, again.text)
    for other in ("2026-06-01T10:00:00.1234569Z", "2026-06-01T10:00:00.123456Z"):
        later = await client.post("/v1/usage-events", json=[{**kept, "timestamp": other}])
        assert [r["code"] for r in later.json()["rejected"]] == ["idempotency_conflict"], (other, later.text)
    # under an Idempotency-Key likewise: the same instant replays, the other is 409
    key = {"Idempotency-Key": f"fine-{w['tag']}"}
    batch = [_event(w, event_id=f"fine-{w['tag']}", timestamp="2026-06-01T10:00:00.1234561Z")]
    first = await client.post("/v1/usage-events", headers=key, json=batch)
    assert first.json() == {"accepted": 1, "duplicates": 0, "rejected": []}, first.text
    same = await client.post("/v1/usage-events", headers=key,
                             json=[{**batch[0], "timestamp": "2026-06-01T10:00:00.12345610Z"}])
    assert (same.status_code, same.headers.get("idempotent-replayed")) == (200, "true"), same.text
    other = await client.post("/v1/usage-events", headers=key,
                              json=[{**batch[0], "timestamp": "2026-06-01T10:00:00.1234569Z"}])
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict"), other.text
    micro = _event(w, event_id=f"micro-{w['tag']}", timestamp="2026-06-01T10:00:00.5+00:00")
    assert (await client.post("/v1/usage-events", json=[micro])).json()["accepted"] == 1
    async with app.state.services.db.engine.connect() as conn:
        stored = (await conn.exec_driver_sql(
            "SELECT request_hash FROM usage_events WHERE customer_id = %s AND event_id = %s",
            (w["customer"], micro["event_id"]))).scalar_one()
    # .5 as 6 digits, as wire_time spells it since c1c9c09: its hash unchanged
    assert bytes(stored) == request_hash({**micro, "timestamp": "2026-06-01T10:00:00.500000Z", "openai_usage": None,
                                          "anthropic_usage": None, "dimensions": {}})


SPELLINGS = ("2026-12-01T10:00:00+00:00", "2026-12-01t10:00:00z", "2026-12-01T10:00:00.000Z")


async def _forge(app: Litestar, table: str, where: str, args: tuple, hashed: bytes) -> None:
    """A row kept before the hash read the instant: its request_hash rewritten to what was kept then,
    and created then, before the upgrade to 0080 (`_kept_before_the_upgrade`)."""
    async with app.state.services.db.engine.begin() as conn:
        await conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        done = await conn.exec_driver_sql(f"UPDATE {table} SET request_hash = %s WHERE {where}", (hashed, *args))
        assert done.rowcount >= 1
    await _kept_before_the_upgrade(app, table, where, args)


async def _kept_before_the_upgrade(app: Litestar, table: str, where: str, args: tuple) -> None:
    """Rows as a version before 0080 kept them: created before ledger_settings.instant_hashes_since
    (from which every usage event's and usage batch key's hash reads its times as instants)."""
    async with app.state.services.db.engine.begin() as conn:
        await conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        done = await conn.exec_driver_sql(
            f"UPDATE {table} SET created_at = (SELECT instant_hashes_since FROM ledger_settings) - interval '1 second' "
            f"WHERE {where}", args)
        assert done.rowcount >= 1


async def _kept_as_sent(app: Litestar, w: dict[str, str], event: dict[str, Any]) -> None:
    """`event` (posted) as kept before c1c9c09: its usage event's and charge's request_hash of the
    body with its timestamp's text as sent (both keep it: verify ties them)."""
    as_sent = {"event_id": event["event_id"], "customer_id": w["customer"], "model": "model-a",
               "timestamp": event["timestamp"], "usage": event["usage"], "openai_usage": None,
               "anthropic_usage": None, "dimensions": {}}
    for table in ("usage_events", "charges"):
        await _forge(app, table, "customer_id = %s AND event_id = %s", (w["customer"], event["event_id"]),
                     request_hash(as_sent))


async def _charges(client: AsyncTestClient, w: dict[str, str]) -> list[tuple[int, str]]:
    """The customer's usage of December 1st: (charges, amount) per row."""
    report = await client.get(f"/v1/customers/{w['customer']}/usage", params={
        "from": "2026-12-01T00:00:00Z", "to": "2026-12-02T00:00:00Z", "group_by": "model"})
    assert report.status_code == 200, report.text
    return [(r["charges"], r["amount"]) for r in report.json()["rows"]]


async def test_a_usage_batch_sent_again_under_its_key_with_times_spelled_otherwise_replays(app, client, world):
    """The Idempotency-Key's hash read the body as sent, so the same batch resent with its
    timestamp spelled otherwise (+00:00, t and z, .000) under the same key was 409
    idempotency_conflict, though each event in it is the same instant. It now replays the first
    answer, posting nothing; another instant under the key is still a conflict. A key kept
    before (its hash of the body as sent) still replays the body sent so again."""
    w = world
    key = {"Idempotency-Key": f"batch-{w['tag']}"}
    first = await client.post("/v1/usage-events", headers=key,
                              json=[_event(w, timestamp="2026-12-01T10:00:00Z", usage={"input_tokens": 1000})])
    assert first.json() == {"accepted": 1, "duplicates": 0, "rejected": []}, first.text
    for spelled in SPELLINGS:
        again = await client.post("/v1/usage-events", headers=key,
                                  json=[_event(w, timestamp=spelled, usage={"input_tokens": 1000})])
        assert (again.status_code, again.headers.get("idempotent-replayed")) == (200, "true"), (spelled, again.text)
        assert again.json() == first.json()
    other = await client.post("/v1/usage-events", headers=key,
                              json=[_event(w, timestamp="2026-12-01T10:00:01Z", usage={"input_tokens": 1000})])
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict"), other.text
    assert await _charges(client, w) == [(1, "0.01")]  # 1,000 input tokens at $10.00 a million, once
    # kept before: the key's hash of the body as sent (+00:00), as the route made it then
    body = [_event(w, event_id=f"old-{w['tag']}", timestamp="2026-12-01T11:00:00+00:00",
                   usage={"input_tokens": 2000})]
    old = {"Idempotency-Key": f"old-batch-{w['tag']}"}
    kept = await client.post("/v1/usage-events", headers=old, json=body)
    assert kept.json()["accepted"] == 1, kept.text
    as_sent = json.dumps(["POST", "/v1/usage-events", body], sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False).encode()
    await _forge(app, "idempotency_keys", "key = %s", (old["Idempotency-Key"],), hashlib.sha256(as_sent).digest())
    again = await client.post("/v1/usage-events", headers=old, json=body)
    assert (again.status_code, again.json()) == (200, kept.json()), again.text
    assert await _charges(client, w) == [(2, "0.03")]  # and 2,000 at $10.00 a million: $0.02 more


async def test_an_event_kept_before_the_hash_read_the_instant_is_a_duplicate_in_another_spelling(
        app, client, world):
    """An event kept before c1c9c09 has the hash of its body with the timestamp as sent then:
    kept with +00:00 and sent again with Z (the spelling its hash now reads) it matched neither
    the instant's hash nor the text's, and was rejected idempotency_conflict. It is a duplicate
    in any usual spelling of that instant (t or T; Z, z, +00:00 or -00:00, or the offset it is
    sent at; no fraction or .0 to .000000000), and another instant is still a conflict."""
    w = world
    utc = ("2026-12-01T10:00:00Z", *SPELLINGS, "2026-12-01T10:00:00.000000-00:00")
    for n, (kept_as, resent) in enumerate([
            ("2026-12-01T10:00:00+00:00", utc), ("2026-12-01T10:00:00.000Z", utc),
            ("2026-12-01T12:00:00+02:00", ("2026-12-01t12:00:00.000+02:00", "2026-12-01T12:00:00.0+02:00"))]):
        event = _event(w, event_id=f"kept{n}-{w['tag']}", timestamp=kept_as, usage={"input_tokens": 1000})
        assert (await client.post("/v1/usage-events", json=[event])).json()["accepted"] == 1
        await _kept_as_sent(app, w, event)
        for spelled in (*resent, kept_as):
            again = await client.post("/v1/usage-events", json=[{**event, "timestamp": spelled}])
            assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}, (kept_as, spelled, again.text)
        other = await client.post("/v1/usage-events", json=[{**event, "timestamp": "2026-12-01T10:00:01Z"}])
        assert [r["code"] for r in other.json()["rejected"]] == ["idempotency_conflict"], other.text
    assert await _charges(client, w) == [(3, "0.03")]  # three events of 1,000 input tokens at $10.00 a million
    checked = (await client.post("/v1/audit/verify")).json()
    assert checked["ok"], [c for c in checked["checks"] if not c["ok"]]


def test_the_spellings_of_an_instant_are_each_that_instant():
    """Whole seconds in UTC: T or t (2) x no fraction or .0 to .000000000 (10) x Z, z, +00:00,
    -00:00 (4) = 80, and the text as sent first; sent at +02:00, 20 more at +02:00 (2 x 10). A
    half second: .5 to .500000000 (9 digit counts), 2 x 9 x 4 = 72."""
    at = time_in("2026-12-01T10:00:00Z", "t")
    utc = spellings(at, "2026-12-01t10:00:00z")
    assert (len(utc), len(set(utc)), utc[0]) == (81, 80, "2026-12-01t10:00:00z")
    assert {"2026-12-01T10:00:00+00:00", "2026-12-01T10:00:00.000Z", "2026-12-01T10:00:00.000000-00:00"} <= set(utc)
    local = spellings(at, "2026-12-01T12:00:00+02:00")
    assert len(set(local)) == 100 and "2026-12-01t12:00:00.000+02:00" in local
    half = spellings(time_in("2026-12-01T10:00:00.5Z", "t"), "2026-12-01T10:00:00.5Z")
    assert len(set(half)) == 72 and "2026-12-01T10:00:00.500+00:00" in half and "2026-12-01T10:00:00Z" not in half
    assert {time_in(text, "t") for text in utc + local} == {at}


def test_an_instant_finer_than_a_microsecond_is_hashed_and_spelled_whole():
    """.1234567 (7 digits): the hash's text keeps them all, in UTC (12:00 at +02:00 is 10:00Z);
    6 digits or fewer, wire_time as before (.5 is .500000). Its spellings: .1234567, .12345670,
    .123456700 (3) x T or t (2) x Z, z, +00:00, -00:00 (4) = 24, and the text as sent first and
    wire_time's .123456Z (an event kept since c1c9c09 was hashed so) last: 26; sent at +02:00,
    3 x 2 = 6 more: 32. Not .123456000: another instant."""
    sent = "2026-12-01T12:00:00.1234567+02:00"
    at = time_in(sent, "t")
    assert instant_text(at, sent) == "2026-12-01T10:00:00.1234567Z"
    assert instant_text(at, "2026-12-01T10:00:00.123456700z") == "2026-12-01T10:00:00.1234567Z"
    half, whole = "2026-12-01T10:00:00.5Z", "2026-12-01T10:00:00.000000000Z"
    assert instant_text(time_in(half, "t"), half) == "2026-12-01T10:00:00.500000Z"
    assert instant_text(time_in(whole, "t"), whole) == "2026-12-01T10:00:00Z"
    utc = spellings(at, "2026-12-01T10:00:00.1234567Z")
    assert (len(utc), len(set(utc)), utc[-1]) == (26, 25, "2026-12-01T10:00:00.123456Z")
    assert "2026-12-01t10:00:00.123456700-00:00" in utc and "2026-12-01T10:00:00.123456000Z" not in utc
    local = spellings(at, sent)
    assert len(local) == 32 and "2026-12-01t12:00:00.12345670+02:00" in local


async def test_an_event_kept_before_at_one_offset_is_a_duplicate_sent_at_another(app, client, world):
    """An event kept before c1c9c09 at +02:00 (12:00:00+02:00, its hash of that text) and sent now
    at another offset of the same instant (10:00:00Z, 15:30:00+05:30, 05:00:00.000-05:00) was
    idempotency_conflict: the respellings tried only UTC and the offset it is sent at now. Every
    offset a zone keeps (a multiple of 15 minutes, -12:00 to +14:00) is tried too: a duplicate.
    Another instant, a second or a microsecond later, is still a conflict. Charged once:
    1,000 input tokens at $10.00 a million = $0.01."""
    w = world
    kept_as = "2026-12-01T12:00:00+02:00"
    event = _event(w, event_id=f"offset-{w['tag']}", timestamp=kept_as, usage={"input_tokens": 1000})
    assert (await client.post("/v1/usage-events", json=[event])).json()["accepted"] == 1
    await _kept_as_sent(app, w, event)
    for spelled in ("2026-12-01T10:00:00Z", "2026-12-01T15:30:00+05:30", "2026-12-01t05:00:00.000-05:00"):
        again = await client.post("/v1/usage-events", json=[{**event, "timestamp": spelled}])
        assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}, (spelled, again.text)
    for other in ("2026-12-01T10:00:01Z", "2026-12-01T12:00:00.000001+02:00", "2026-12-01T16:00:00+05:30"):
        later = await client.post("/v1/usage-events", json=[{**event, "timestamp": other}])
        assert [r["code"] for r in later.json()["rejected"]] == ["idempotency_conflict"], (other, later.text)
    assert await _charges(client, w) == [(1, "0.01")]
    checked = (await client.post("/v1/audit/verify")).json()
    assert checked["ok"], [c for c in checked["checks"] if not c["ok"]]


def _key_hash(body: list[dict[str, Any]]) -> bytes:
    """An Idempotency-Key's hash of a usage batch: sha256 of ["POST", path, body], canonical JSON."""
    text = json.dumps(["POST", "/v1/usage-events", body], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).digest()


async def test_a_usage_batch_kept_before_under_its_key_replays_respelled(app, client, world):
    """A key kept before 8ef7fcc has the hash of the batch as sent: two events sent as
    11:00:00.000+00:00 and 11:00:01.500+00:00 (one serializer: 3 digits, +00:00) and sent again as
    11:00:00Z and 11:00:01.5Z was 409 idempotency_conflict. Each uniform spelling of the batch is
    tried (T or t; Z, z, +00:00, -00:00 or each event's own offset; fractions of a fixed width 0-9,
    zero fraction kept or left out): it replays the first answer and posts nothing. Another
    instant (11:00:02Z for the second) is still 409. Charged once: 1,000 + 2,000 input tokens at
    $10.00 a million = $0.01 + $0.02, two charges."""
    w = world
    body = [_event(w, event_id=f"k1-{w['tag']}", timestamp="2026-12-01T11:00:00.000+00:00",
                   usage={"input_tokens": 1000}),
            _event(w, event_id=f"k2-{w['tag']}", timestamp="2026-12-01T11:00:01.500+00:00",
                   usage={"input_tokens": 2000})]
    key = {"Idempotency-Key": f"older-{w['tag']}"}
    first = await client.post("/v1/usage-events", headers=key, json=body)
    assert first.json() == {"accepted": 2, "duplicates": 0, "rejected": []}, first.text
    await _forge(app, "idempotency_keys", "key = %s", (key["Idempotency-Key"],), _key_hash(body))
    for stamps in (("2026-12-01T11:00:00Z", "2026-12-01T11:00:01.5Z"),
                   ("2026-12-01t11:00:00.000000z", "2026-12-01T13:00:01.5+02:00"),
                   ("2026-12-01T11:00:00.000+00:00", "2026-12-01T11:00:01.500+00:00")):
        again = await client.post("/v1/usage-events", headers=key,
                                  json=[{**e, "timestamp": t} for e, t in zip(body, stamps, strict=True)])
        assert (again.status_code, again.headers.get("idempotent-replayed")) == (200, "true"), (stamps, again.text)
        assert again.json() == first.json()
    other = await client.post("/v1/usage-events", headers=key,
                              json=[body[0], {**body[1], "timestamp": "2026-12-01T11:00:02Z"}])
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict"), other.text
    assert await _charges(client, w) == [(2, "0.03")]


async def test_a_usage_batch_kept_at_the_microsecond_under_its_key_replays(app, client, world):
    """A key kept between 8ef7fcc and e8ee375 hashed the batch with each time as wire_time, to the
    microsecond: 12:00:00.1234561Z kept as .123456Z. Sent again as it was (its hash now keeps
    .1234561) it was 409. It replays now, and so does .123456100Z; the record kept no finer than
    the microsecond, so .1234569Z (same microsecond) replays too, while .123457Z (1 us later) and
    12:00:01Z are 409. Charged once: 1,000 input tokens at $10.00 a million = $0.01."""
    w = world
    body = [_event(w, event_id=f"fine-{w['tag']}", timestamp="2026-12-01T12:00:00.1234561Z",
                   usage={"input_tokens": 1000})]
    key = {"Idempotency-Key": f"micro-{w['tag']}"}
    first = await client.post("/v1/usage-events", headers=key, json=body)
    assert first.json() == {"accepted": 1, "duplicates": 0, "rejected": []}, first.text
    await _forge(app, "idempotency_keys", "key = %s", (key["Idempotency-Key"],),
                 _key_hash([{**body[0], "timestamp": "2026-12-01T12:00:00.123456Z"}]))
    for same in ("2026-12-01T12:00:00.1234561Z", "2026-12-01T12:00:00.123456100Z", "2026-12-01T12:00:00.1234569Z"):
        again = await client.post("/v1/usage-events", headers=key, json=[{**body[0], "timestamp": same}])
        assert (again.status_code, again.headers.get("idempotent-replayed")) == (200, "true"), (same, again.text)
    for other in ("2026-12-01T12:00:00.123457Z", "2026-12-01T12:00:01Z"):
        later = await client.post("/v1/usage-events", headers=key, json=[{**body[0], "timestamp": other}])
        assert (later.status_code, later.json()["code"]) == (409, "idempotency_conflict"), (other, later.text)
    assert await _charges(client, w) == [(1, "0.01")]


async def test_a_usage_batch_reads_each_timestamp_once(client, world, monkeypatch):
    """The route read each event's time twice (the key's hash, then the event's command): a batch
    of 3 events with 3 times under a key made 6 time_in calls and 6 instant_text; now 3 and 3."""
    import api.routes.usage as usage
    calls = {"time_in": 0, "instant_text": 0}

    def counting(name, real):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(usage, "time_in", counting("time_in", usage.time_in))
    monkeypatch.setattr(usage, "instant_text", counting("instant_text", usage.instant_text))
    w = world
    batch = [_event(w, event_id=f"once{n}-{w['tag']}", timestamp=f"2026-12-01T10:00:0{n}+00:00") for n in range(3)]
    sent = await client.post("/v1/usage-events", headers={"Idempotency-Key": f"once-{w['tag']}"}, json=batch)
    assert sent.json() == {"accepted": 3, "duplicates": 0, "rejected": []}, sent.text
    assert calls == {"time_in": 3, "instant_text": 3}


async def test_an_event_kept_at_another_instant_is_a_conflict_without_respelling(app, client, world, monkeypatch):
    """An event id kept at 10:00:00Z and sent with 10:00:01Z is another instant: no spelling of
    the second is the first's, so none is hashed (each respelled event costs up to 2,161 sha256:
    81 usual spellings + 104 other offsets x 2 x 10). The kept instant is read first; only an
    event kept at the same microsecond is respelled: 1 of these 2 conflicts."""
    import api.routes.usage as usage
    respelled: list[str] = []
    real = usage._respelled

    def counting(command, event):
        respelled.append(event.timestamp)
        return real(command, event)

    monkeypatch.setattr(usage, "_respelled", counting)
    w = world
    kept = [_event(w, event_id=f"at{n}-{w['tag']}", timestamp="2026-12-01T10:00:00Z") for n in range(2)]
    assert (await client.post("/v1/usage-events", json=kept)).json()["accepted"] == 2
    for event in kept:  # as kept before 0080 (one kept since is respelled at no instant)
        await _kept_before_the_upgrade(app, "usage_events", "customer_id = %s AND event_id = %s",
                                       (w["customer"], event["event_id"]))
    sent = await client.post("/v1/usage-events", json=[
        {**kept[0], "timestamp": "2026-12-01T10:00:01Z"},
        {**kept[1], "timestamp": "2026-12-01T12:00:00+02:00", "usage": {"input_tokens": 2}}])
    assert [r["code"] for r in sent.json()["rejected"]] == ["idempotency_conflict"] * 2, sent.text
    assert respelled == ["2026-12-01T12:00:00+02:00"]


def test_the_spellings_at_every_offset_and_of_a_batch_are_each_that_instant():
    """zone_spellings: offsets every 15 minutes from -12:00 to +14:00 are (720 + 840) / 15 + 1 =
    105, 104 without UTC's; whole seconds, T or t (2) x no fraction or 1-9 digits (10) = 20 each:
    2,080 sent in UTC, 103 x 20 = 2,060 sent at +02:00 (spellings has that one). A batch spelled
    alike: T or t (2) x Z, z, +00:00, -00:00 or its own (5) x 18 fraction styles (0 digits, 1, or
    2 to 9 with a zero fraction written or left out: 1 + 1 + 8 x 2) = 180."""
    from api.routes.wire import uniform_spellings, zone_spellings
    at = time_in("2026-12-01T10:00:00Z", "t")
    utc, local = list(zone_spellings(at, "2026-12-01T10:00:00Z")), list(zone_spellings(at, "2026-12-01T12:00:00+02:00"))
    assert (len(utc), len(set(utc)), len(local)) == (2080, 2080, 2060)
    assert {"2026-12-01T12:00:00+02:00", "2026-12-01t15:45:00.000+05:45", "2026-11-30T22:00:00-12:00",
            "2026-12-02T00:00:00.000000000+14:00"} <= set(utc)
    assert "2026-12-01T12:00:00+02:00" not in local and "2026-12-01T10:00:00+00:00" not in utc + local
    assert {time_in(text, "t") for text in utc + local} == {at}
    half = time_in("2026-12-01T10:00:01.5Z", "t")
    batch = list(uniform_spellings([(at, "2026-12-01T10:00:00Z"), (half, "2026-12-01T12:00:01.5+02:00")]))
    assert len(batch) == len(set(batch)) == 180
    assert ("2026-12-01T10:00:00.000+00:00", "2026-12-01T10:00:01.500+00:00") in batch  # 3 digits, +00:00
    assert ("2026-12-01t10:00:00z", "2026-12-01t10:00:01.5z") in batch  # none needed, z
    assert ("2026-12-01T10:00:00Z", "2026-12-01T12:00:01.500000+02:00") in batch  # own, 6 digits, zero left out
    assert all((time_in(a, "t"), time_in(b, "t")) == (at, half) for a, b in batch)


async def test_an_events_respellings_are_hashed_before_the_lanes_transaction(app, client, world, monkeypatch):
    """A batch's events are decided in one transaction per lane, under the lane's writer lock.
    An event met with another hash and kept at the same instant was submitted again carrying all
    its respellings (up to 2,161 sha256 of its body, looked in by record_usage: 3.1 ms of CPU for
    one that matches none, measured, so 3.1 s for 1,000 such events) and they were hashed inside
    that transaction. They are hashed before it, against the hash kept (read with the instant):
    the event found is submitted again with that one hash (one comparison in the transaction),
    one not found is not submitted again. Kept: A at 12:00:00+02:00 under its pre-c1c9c09 hash,
    B at 10:00:00Z with 1,000 input tokens; both created before 0080, so both are searched (B,
    kept since, would be a conflict with no search at all, and its "not found" untested). Sent:
    A as 10:00:00Z (a duplicate), B as 10:00:00Z with 2,000 (another body: a conflict), B's 2,161
    spellings hashed and none its hash. Charged once each: 2 x 1,000 input tokens at $10.00 a
    million = 2 x $0.01 = $0.02."""
    w = world
    a = _event(w, event_id=f"lane-a-{w['tag']}", timestamp="2026-12-01T12:00:00+02:00", usage={"input_tokens": 1000})
    b = _event(w, event_id=f"lane-b-{w['tag']}", timestamp="2026-12-01T10:00:00Z", usage={"input_tokens": 1000})
    assert (await client.post("/v1/usage-events", json=[a, b])).json()["accepted"] == 2
    kept = request_hash({"event_id": a["event_id"], "customer_id": w["customer"], "model": "model-a",
                         "timestamp": a["timestamp"], "usage": a["usage"], "openai_usage": None,
                         "anthropic_usage": None, "dimensions": {}})
    for table in ("usage_events", "charges"):  # both keep it (verify ties them)
        await _forge(app, table, "customer_id = %s AND event_id = %s", (w["customer"], a["event_id"]), kept)
    await _kept_before_the_upgrade(app, "usage_events", "customer_id = %s AND event_id = %s",
                                   (w["customer"], b["event_id"]))
    made = _counting_hashes(monkeypatch)
    wallets = app.state.services.wallets
    submitted: list[list[Any]] = []
    real = wallets.submit_many

    async def recording(commands):
        submitted.append([c.earlier for c in commands])
        return await real(commands)

    monkeypatch.setattr(wallets, "submit_many", recording)
    sent = await client.post("/v1/usage-events", json=[
        {**a, "timestamp": "2026-12-01T10:00:00Z"}, {**b, "usage": {"input_tokens": 2000}}])
    body = sent.json()
    assert (body["accepted"], body["duplicates"], [r["code"] for r in body["rejected"]]) == (
        0, 1, ["idempotency_conflict"]), sent.text
    assert submitted == [[(), ()], [(kept,)]]
    assert 2161 < made[0] <= 2 * 2161, made  # B searched in full (2,161), A until its hash was found
    assert await _charges(client, w) == [(2, "0.02")]
    checked = (await client.post("/v1/audit/verify")).json()
    assert checked["ok"], [c for c in checked["checks"] if not c["ok"]]


async def test_a_keyed_batchs_respellings_are_hashed_before_the_keys_transaction(app, client, world, monkeypatch):
    """A key kept with another hash than the batch's had its batch's respellings (up to 182
    sha256 of the whole batch: as sent, at the microsecond, 2 x 5 x 18 uniform; 0.2-0.4 s of CPU
    for 1,000 events, measured in 4071aae) hashed inside the claim's transaction, holding the
    key's lock. The claim is made first as the batch is now; where the key was kept with another
    hash, that hash is read and looked for among them before the transaction, and the key claimed
    again with the one found: a key kept before 8ef7fcc (11:00:00.000+00:00) sent as 11:00:00Z
    replays (claims: the batch's own hash, then that one kept); sent as 11:00:01Z, another
    instant, it is 409 after one claim. Charged once: 1,000 input tokens at $10.00 a million =
    $0.01."""
    w = world
    body = [_event(w, event_id=f"kc-{w['tag']}", timestamp="2026-12-01T11:00:00.000+00:00",
                   usage={"input_tokens": 1000})]
    key = {"Idempotency-Key": f"claim-{w['tag']}"}
    first = await client.post("/v1/usage-events", headers=key, json=body)
    assert first.json() == {"accepted": 1, "duplicates": 0, "rejected": []}, first.text
    kept = _key_hash(body)
    await _forge(app, "idempotency_keys", "key = %s", (key["Idempotency-Key"],), kept)
    wallets = app.state.services.wallets
    claims: list[Any] = []
    real = wallets.claim

    async def recording(idem):
        claims.append(idem.earlier)
        return await real(idem)

    monkeypatch.setattr(wallets, "claim", recording)
    again = await client.post("/v1/usage-events", headers=key, json=[{**body[0], "timestamp": "2026-12-01T11:00:00Z"}])
    assert (again.status_code, again.headers.get("idempotent-replayed")) == (200, "true"), again.text
    assert again.json() == first.json()
    assert claims == [(), (kept,)]
    claims.clear()
    other = await client.post("/v1/usage-events", headers=key, json=[{**body[0], "timestamp": "2026-12-01T11:00:01Z"}])
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict"), other.text
    assert claims == [()]
    assert await _charges(client, w) == [(1, "0.01")]


def _counting_hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many respellings `wire.Hashes` hashed (one sha256 each), counted as each is made."""
    from api.routes import wire
    made = [0]
    real = wire.Hashes.__iter__

    def counted(self):
        for digest in real(self):
            made[0] += 1
            yield digest

    monkeypatch.setattr(wire.Hashes, "__iter__", counted)
    return made


async def test_a_truly_conflicting_event_or_key_is_respelled_only_where_kept_before_hashes_read_instants(
        app, client, world, monkeypatch):
    """An event id met with another body at the same instant had its body hashed in every spelling
    an event kept before c1c9c09 may hold: 10:00:00Z, T or t (2) x no fraction or 1-9 digits (10)
    x Z, z, +00:00, -00:00 (4) = 80 and the text as sent, 81, then 104 other offsets x 2 x 10 =
    2,080: 2,161 sha256 of the request's CPU for each event, though an event kept since 0080 holds
    the hash of its instant alone (created after ledger_settings.instant_hashes_since): 3 such
    events resent with 2,000 input tokens made 3 x 2,161 = 6,483 hashes, a 1,000-event batch
    2,161,000 (4.4-4.8 s of CPU hashing alone). Now none. A keyed batch likewise: a key kept since 0080 whose
    batch comes at another instant is 409 with none of its 1 (as sent) + 180 uniform = 181 batch
    hashes made. Rows kept before (created_at before the setting) are still searched, in full
    where they match nothing: 2,161 for an event, 181 for a key. Charged once each: 3 + 1 events
    of 1,000 input tokens at $10.00 a million = 4 x $0.01 = $0.04."""
    w = world
    kept = [_event(w, event_id=f"true{n}-{w['tag']}", timestamp="2026-12-01T10:00:00Z",
                   usage={"input_tokens": 1000}) for n in range(3)]
    assert (await client.post("/v1/usage-events", json=kept)).json()["accepted"] == 3
    key = {"Idempotency-Key": f"true-{w['tag']}"}
    keyed = [_event(w, event_id=f"truekey-{w['tag']}", timestamp="2026-12-01T11:00:00Z", usage={"input_tokens": 1000})]
    assert (await client.post("/v1/usage-events", headers=key, json=keyed)).json()["accepted"] == 1
    made = _counting_hashes(monkeypatch)
    conflicting = [{**e, "usage": {"input_tokens": 2000}} for e in kept]
    sent = await client.post("/v1/usage-events", json=conflicting)
    assert [r["code"] for r in sent.json()["rejected"]] == ["idempotency_conflict"] * 3, sent.text
    assert made == [0]
    other = await client.post("/v1/usage-events", headers=key, json=[{**keyed[0], "timestamp": "2026-12-01T11:00:01Z"}])
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict"), other.text
    assert made == [0]
    # kept before 0080 (as an older version kept them): searched as before, every spelling
    await _kept_before_the_upgrade(app, "usage_events", "customer_id = %s AND event_id = %s",
                                   (w["customer"], kept[0]["event_id"]))
    await _kept_before_the_upgrade(app, "idempotency_keys", "key = %s", (key["Idempotency-Key"],))
    sent = await client.post("/v1/usage-events", json=conflicting)
    assert [r["code"] for r in sent.json()["rejected"]] == ["idempotency_conflict"] * 3, sent.text
    assert made == [2161]
    other = await client.post("/v1/usage-events", headers=key, json=[{**keyed[0], "timestamp": "2026-12-01T11:00:01Z"}])
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict"), other.text
    assert made == [2161 + 181]
    assert await _charges(client, w) == [(4, "0.04")]


async def test_a_conflicts_respelling_search_lets_the_event_loop_serve_other_requests(app, client, world, monkeypatch):
    """The respellings of conflicting events kept before 0080 were hashed in one go on the event
    loop: up to 2,161 sha256 an event, 2,161,000 (~5 s of CPU) for a batch of 1,000, and every other
    request of the worker (reserves included) waited for the whole search. The loop now turns after
    every wire.PACE = 64 texts put in place. Run on the app's own loop (the test client's portal):
    4 events kept before 0080 at 10:00:00Z, resent with other usage, are searched in full (4 x 2,161
    = 8,644 hashes), and a 5th kept as sent at +05:30 (15:30:00+05:30) and resent as 10:00:00Z is
    still a duplicate, found among the other offsets (not counted: it stops where found). A ticker
    task sees at most 64 hashes made between two of its turns (one text each); main made all 8,644+
    between two. GET /healthz, sent once the search has begun, is answered while the batch is still
    being searched. A keyed batch of those 5 events under a key kept before 0080, resent at other
    instants, hashes 1 (as sent) + 180 uniform = 181 spellings of 5 texts each: at most
    ceil(64 / 5) = 13 hashes between two turns (main: 181). Nothing more is charged: the first 5
    of 1,000 input tokens at $10.00 a million, 5 x $0.01 = $0.05."""
    assert wire.PACE == 64  # the bounds below: 64 hashes of one text, ceil(64 / 5) = 13 of 5
    w = world
    kept = [_event(w, event_id=f"loop{n}-{w['tag']}", timestamp="2026-12-01T10:00:00Z",
                   usage={"input_tokens": 1000}) for n in range(4)]
    offset = _event(w, event_id=f"loop-offset-{w['tag']}", timestamp="2026-12-01T15:30:00+05:30",
                    usage={"input_tokens": 1000})
    key = {"Idempotency-Key": f"loop-{w['tag']}"}
    assert (await client.post("/v1/usage-events", headers=key, json=[*kept, offset])).json()["accepted"] == 5
    for event in kept:
        await _kept_before_the_upgrade(app, "usage_events", "customer_id = %s AND event_id = %s",
                                       (w["customer"], event["event_id"]))
    await _kept_as_sent(app, w, offset)
    await _kept_before_the_upgrade(app, "idempotency_keys", "key = %s", (key["Idempotency-Key"],))
    made = _counting_hashes(monkeypatch)
    conflicting = [{**e, "usage": {"input_tokens": 2000}} for e in kept]
    resent = {**offset, "timestamp": "2026-12-01T10:00:00Z"}
    later = [{**e, "timestamp": "2026-12-01T10:00:01Z"} for e in (*kept, offset)]

    async def on_the_apps_loop(path: str, body: Any, headers: dict[str, str], health: bool) -> Any:
        """The request sent with a ticker beside it (the hashes made between two of its turns) and,
        once hashing has begun, GET /healthz: (answer, gaps, hashes made when /healthz answered)."""
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                     headers={**client.headers, **headers}) as c:
            start = made[0]
            sent = asyncio.ensure_future(c.post(path, json=body))
            gaps, last, health_at = [], start, None
            while not sent.done():
                await asyncio.sleep(0)
                gaps.append(made[0] - last)
                last = made[0]
                if health and health_at is None and made[0] > start:
                    ok = await c.get("/healthz")
                    assert ok.status_code == 200, ok.text
                    health_at = (made[0] - start, sent.done())
            return await sent, max(gaps), health_at

    portal = client.blocking_portal
    answer, gap, health_at = portal.call(on_the_apps_loop, "/v1/usage-events", [*conflicting, resent], {}, True)
    assert answer.json()["duplicates"] == 1, answer.text
    assert [r["code"] for r in answer.json()["rejected"]] == ["idempotency_conflict"] * 4, answer.text
    assert made[0] > 4 * 2161  # the 4 searched in full, and the one found after some of its own
    assert gap <= 64, gap
    assert health_at is not None and health_at[0] < 4 * 2161 and not health_at[1], health_at
    made[0] = 0
    answer, gap, _ = portal.call(on_the_apps_loop, "/v1/usage-events", later, key, False)
    assert (answer.status_code, answer.json()["code"]) == (409, "idempotency_conflict"), answer.text
    assert made[0] == 181
    assert gap <= 13, gap
    assert await _charges(client, w) == [(5, "0.05")]

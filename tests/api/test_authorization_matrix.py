"""Every route x every key shape: 401 without a key, 403 outside the key's scope or customers,
404 for an id a limited key looks up among its own customers that only another used, success
otherwise. Two customers use the same request id and the same event id, and no response to a
key limited to one customer ever carries the other's data."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from api.demo import PRICE_BOOK
from tests.api.apps import api_app, api_client
from wallets.periods import Cycle, period_of

ADMIN = {"Authorization": "Bearer matrix-admin"}
OWN, OTHER = f"own-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
BOOK = f"matrix-{uuid.uuid4().hex[:8]}"
SHARED_REQ, SHARED_EVT = f"shared-req-{uuid.uuid4().hex[:8]}", f"shared-evt-{uuid.uuid4().hex[:8]}"
# Marks carried by each customer's own data (dimensions, references): never in another's answers.
MARK = {OWN: f"mark-own-{uuid.uuid4().hex[:8]}", OTHER: f"mark-other-{uuid.uuid4().hex[:8]}"}

# Key shapes: "<scope>:own" is the scope limited to customer OWN (customers list), and likewise
# ":other"; "customer:own" is the scope customer:OWN. The unlimited shapes see both customers.
SCOPES = ["none", "admin", "admin:own", "admin:other", "inference", "inference:own", "inference:other",
          "auditor", "auditor:own", "auditor:other", "customer:own", "customer:other"]
SEES = {scope: {OWN, OTHER} for scope in SCOPES}
SEES.update({s: {OWN} for s in SCOPES if s.endswith(":own")})
SEES.update({s: {OTHER} for s in SCOPES if s.endswith(":other")})

UNLIMITED = {"admin", "inference", "auditor"}
ADMINS_OWN = {"admin", "admin:own"}
INFERENCE_OWN = {"admin", "admin:own", "inference", "inference:own"}
AUDITORS_OWN = {"admin", "admin:own", "auditor", "auditor:own"}
AUDITORS_OTHER = {"admin:other", "auditor:other"}
JOURNAL_READERS = AUDITORS_OWN | AUDITORS_OTHER | {"customer:own", "customer:other"}
READ_OWN = {"admin", "admin:own", "inference", "inference:own", "auditor", "auditor:own", "customer:own"}
INVOICE_READERS_OWN = {"admin", "admin:own", "auditor", "auditor:own", "customer:own"}
PUBLIC = set(SCOPES)
LIMITED_OTHER = {"admin:other", "inference:other", "auditor:other", "customer:other"}

# (method, path, body, {scopes: outcome}). Outcome "ok" is success (any status but 401, 403
# and the route's other listed statuses); a scope not listed gets 401 without a key, else 403.
# {own}, {res}, {req}, {book}: a customer's own things. A route naming them is tested for OWN and
# again, mirrored, for OTHER (":own" and ":other" swapped). {shared_req}, {shared_evt}: ids both used.
ROUTES = [
    ("GET", "/healthz", None, {frozenset(PUBLIC): "ok"}),
    ("GET", "/readyz", None, {frozenset(PUBLIC): "ok"}),
    ("GET", "/metrics", None, {frozenset(PUBLIC): "ok"}),
    ("GET", "/v1/audit/trial-balance", None, {frozenset(AUDITORS_OWN | AUDITORS_OTHER): "ok"}),
    ("GET", "/v1/audit/trial-balance?at=2026-01-01T00:00:00Z", None, {frozenset(AUDITORS_OWN | AUDITORS_OTHER): "ok"}),
    ("GET", "/v1/journal", None, {frozenset(JOURNAL_READERS): "ok"}),
    ("GET", "/v1/journal?customer={own}", None, {frozenset(AUDITORS_OWN | {"customer:own"}): "ok"}),
    ("GET", "/v1/journal?account={recv}", None,
     {frozenset(AUDITORS_OWN | {"customer:own"}): "ok", frozenset(AUDITORS_OTHER | {"customer:other"}): 404}),
    ("GET", "/v1/accounts/{recv}/statement", None,
     {frozenset(AUDITORS_OWN | {"customer:own"}): "ok", frozenset(AUDITORS_OTHER | {"customer:other"}): 404}),
    ("GET", "/v1/accounts/{recv}/balance", None,
     {frozenset(AUDITORS_OWN | {"customer:own"}): "ok", frozenset(AUDITORS_OTHER | {"customer:other"}): 404}),
    ("GET", "/v1/accounts/income:platform:usage:USD/statement", None, {frozenset({"admin", "auditor"}): "ok"}),
    ("GET", "/v1/accounts/income:platform:usage:USD/balance?at=2026-01-01T00:00:00Z", None,
     {frozenset({"admin", "auditor"}): "ok"}),
    ("POST", "/v1/audit/verify", None, {frozenset({"admin", "auditor"}): "ok"}),
    ("GET", "/v1/audit/charges/{req}", None, {frozenset(AUDITORS_OWN): "ok", frozenset(AUDITORS_OTHER): 404}),
    ("GET", "/v1/audit/charges/{req}?customer_id={own}", None, {frozenset(AUDITORS_OWN): "ok"}),
    ("GET", "/v1/audit/charges/{shared_req}", None,
     {frozenset({"admin:own", "auditor:own"} | AUDITORS_OTHER): "ok", frozenset({"admin", "auditor"}): 422}),
    ("GET", "/v1/audit/charges/{shared_req}?customer_id={own}", None, {frozenset(AUDITORS_OWN): "ok"}),
    ("GET", "/v1/audit/charges/{shared_evt}", None,
     {frozenset({"admin:own", "auditor:own"} | AUDITORS_OTHER): "ok", frozenset({"admin", "auditor"}): 422}),
    ("GET", "/v1/audit/charges/{shared_evt}?customer_id={own}", None, {frozenset(AUDITORS_OWN): "ok"}),
    ("POST", "/v1/api-keys", {"scope": "auditor"}, {frozenset({"admin"}): "ok"}),
    ("GET", "/v1/api-keys", None, {frozenset({"admin"}): "ok"}),
    ("DELETE", "/v1/api-keys/key_missing", None, {frozenset({"admin"}): "ok"}),
    ("POST", "/v1/price-books", {**PRICE_BOOK, "id": f"{BOOK}-2"}, {frozenset({"admin"}): "ok"}),
    ("POST", "/v1/price-books/import", {"source": "genai-prices", "provider": "openai", "model": "gpt-4o"},
     {frozenset({"admin"}): "ok"}),
    ("PUT", "/v1/customers/{own}/price-overrides", {}, {frozenset(ADMINS_OWN): "ok"}),
    ("GET", "/v1/customers/{own}/price-overrides", None, {frozenset(READ_OWN): "ok"}),
    ("GET", "/v1/price-books/{book}", None, {frozenset(UNLIMITED | {"admin:own", "inference:own", "auditor:own"}): "ok",
                                            frozenset({"admin:other", "inference:other", "auditor:other"}): 404}),
    ("GET", "/v1/price-books/{book}/versions/" + PRICE_BOOK["effective_from"],
     None, {frozenset(UNLIMITED | {"admin:own", "inference:own", "auditor:own"}): "ok",
            frozenset({"admin:other", "inference:other", "auditor:other"}): 404}),
    ("POST", "/v1/customers", {"id": "x", "currency": "USD", "price_book": BOOK}, {frozenset({"admin"}): "ok"}),
    ("GET", "/v1/customers/{own}", None, {frozenset(READ_OWN): "ok"}),
    ("GET", "/v1/customers/{own}/wallet", None, {frozenset(READ_OWN): "ok"}),
    ("PATCH", "/v1/customers/{own}", {"name": "matrix"}, {frozenset(ADMINS_OWN): "ok"}),
    ("GET", "/v1/customers/{own}/changes", None, {frozenset(AUDITORS_OWN): "ok"}),
    ("GET", "/v1/customers/{own}/usage", None, {frozenset(READ_OWN): "ok"}),
    ("POST", "/v1/customers/{own}/topups", {"amount": "1.00"}, {frozenset(ADMINS_OWN): "ok"}),
    ("GET", "/v1/customers/{own}/invoices", None, {frozenset(INVOICE_READERS_OWN): "ok"}),
    ("GET", "/v1/customers/{own}/invoices/upcoming", None, {frozenset(INVOICE_READERS_OWN): "ok"}),
    ("GET", "/v1/invoices/{inv}", None, {frozenset(INVOICE_READERS_OWN): "ok"}),
    ("POST", "/v1/invoices/{inv}/payments", {"amount": "0.01", "reference": "matrix"}, {frozenset(ADMINS_OWN): "ok"}),
    ("POST", "/v1/billing/close", {"until": "2000-01-01T00:00:00Z"}, {frozenset({"admin"}): "ok"}),
    ("GET", "/v1/receivables/ageing", None, {frozenset({"admin"}): "ok"}),
    ("GET", "/v1/receivables/ageing?customer={own}", None, {frozenset({"admin"}): "ok"}),
    ("POST", "/v1/rerate", {"price_book": BOOK, "version": "missing", "from": "2026-01-01T00:00:00Z",
                            "to": "2026-02-01T00:00:00Z", "mode": "preview"}, {frozenset({"admin"}): "ok"}),
    ("GET", "/v1/customers/{own}/credit-notes", None, {frozenset(INVOICE_READERS_OWN): "ok"}),
    ("GET", "/v1/credit-notes/cn_missing", None,
     {frozenset(INVOICE_READERS_OWN | AUDITORS_OTHER | {"customer:other"}): 404}),
    ("POST", "/v1/customers/{own}/grants", {"amount": "1.00"}, {frozenset(ADMINS_OWN): "ok"}),
    ("POST", "/v1/customers/{own}/grants/lot_missing/reverse", {}, {frozenset(ADMINS_OWN): "ok"}),  # 404: none
    ("POST", "/v1/customers/{own}/refunds", {"amount": "0.01", "reference": "matrix"},
     {frozenset(ADMINS_OWN): "ok"}),  # 409: nothing overpaid
    ("GET", "/v1/customers/{own}/refundable", None, {frozenset(ADMINS_OWN): "ok"}),
    ("POST", "/v1/reservations", {"customer_id": "{own}", "request_id": "r", "model": "model-a", "amount": "0.01"},
     {frozenset(INFERENCE_OWN): "ok"}),
    ("GET", "/v1/reservations/{res}", None, {frozenset(READ_OWN): "ok"}),
    ("POST", "/v1/reservations/{res}/settle", {"usage": {"input_tokens": 1}}, {frozenset(INFERENCE_OWN): "ok"}),
    ("POST", "/v1/reservations/{res}/release", {}, {frozenset(INFERENCE_OWN): "ok"}),
    ("POST", "/v1/reservations/{res}/extend", {"ttl_seconds": 3600}, {frozenset(INFERENCE_OWN): "ok"}),
    # webhooks act on the whole platform: admin keys not limited to customers only
    ("POST", "/v1/webhook-endpoints", {"url": "https://hooks.example.com/m", "topics": ["webhook_endpoint.disabled"]},
     {frozenset({"admin"}): "ok"}),
    ("GET", "/v1/webhook-endpoints", None, {frozenset({"admin"}): "ok"}),
    ("GET", "/v1/webhook-endpoints/we_missing", None, {frozenset({"admin"}): "ok"}),
    ("PATCH", "/v1/webhook-endpoints/we_missing", {"enabled": False}, {frozenset({"admin"}): "ok"}),
    ("DELETE", "/v1/webhook-endpoints/we_missing", None, {frozenset({"admin"}): "ok"}),
    ("POST", "/v1/webhook-endpoints/we_missing/rotate-secret", {}, {frozenset({"admin"}): "ok"}),
    ("POST", "/v1/webhook-endpoints/we_missing/redrive", {"since": "2026-01-01T00:00:00Z"},
     {frozenset({"admin"}): "ok"}),
    ("GET", "/v1/webhook-endpoints/we_missing/deliveries", None, {frozenset({"admin"}): "ok"}),
    ("GET", "/v1/webhook-endpoints/we_missing/attempts", None, {frozenset({"admin"}): "ok"}),
    ("POST", "/v1/budgets", {"customer_id": "{own}", "window": "day", "metric": "money", "limit": "100.00"},
     {frozenset(ADMINS_OWN | {"customer:own"}): "ok"}),
    ("GET", "/v1/budgets", None, {frozenset(set(SCOPES) - {"none"}): "ok"}),  # only what the key may see
    ("GET", "/v1/budgets?customer_id={own}", None, {frozenset(READ_OWN): "ok"}),
    ("GET", "/v1/budgets/{bud}", None, {frozenset(READ_OWN): "ok", frozenset(LIMITED_OTHER): 404}),
    # {bud} was set by the operator: the customer's own key reads it but may not change it
    ("PATCH", "/v1/budgets/{bud}", {"thresholds": [50]}, {frozenset(ADMINS_OWN): "ok", frozenset({"customer:own"}): 403,
                                                         frozenset({"admin:other", "customer:other"}): 404}),
    ("DELETE", "/v1/budgets/bud_missing", None,
     {frozenset({"admin", "admin:own", "admin:other", "customer:own", "customer:other"}): 404}),
    # a batch refuses, event by event, what the key may not post, and posts none of it
    ("POST", "/v1/usage-events", [{"event_id": "e", "customer_id": "{own}", "model": "model-a",
                                   "timestamp": "2026-11-23T10:00:00Z", "usage": {"input_tokens": 1}}],
     {frozenset(INFERENCE_OWN): "ok", frozenset({"admin:other", "inference:other"}): "rejected"}),
    # so does a bulk settle, item by item
    ("POST", "/v1/settlements", [{"reservation_id": "{res}", "usage": {"input_tokens": 1}}],
     {frozenset(INFERENCE_OWN): "ok", frozenset({"admin:other", "inference:other"}): "item forbidden"}),
]
OWNED = ("{own}", "{res}", "{req}", "{book}", "{recv}", "{bud}", "{inv}")


def _mirror(scope: str) -> str:
    if scope.endswith(":own"):
        return scope.removesuffix(":own") + ":other"
    if scope.endswith(":other"):
        return scope.removesuffix(":other") + ":own"
    return scope


CASES = []
for _method, _path, _body, _outcomes in ROUTES:
    CASES.append((_method, _path, _body, "own", _outcomes))
    if any(name in f"{_path}{_body}" for name in OWNED):
        CASES.append((_method, _path, _body, "other",
                      {frozenset(_mirror(s) for s in scopes): outcome for scopes, outcome in _outcomes.items()}))


@pytest.fixture(scope="module")
async def world(database_url):
    async with api_client(database_url, admin="matrix-admin") as client:
        names = {}
        for customer in (OWN, OTHER):
            book = f"{BOOK}-{customer}"  # each customer's own book: a limited key reads its own only
            assert (await client.post("/v1/price-books", headers=ADMIN,
                                      json={**PRICE_BOOK, "id": book})).status_code == 201
            assert (await client.post("/v1/customers", headers=ADMIN, json={
                "id": customer, "currency": "USD", "price_book": book, "billing": "postpaid"})).status_code == 201
            await client.post(f"/v1/customers/{customer}/topups", headers=ADMIN,
                              json={"amount": "5.00", "reference": MARK[customer]})
            marked = {"mark": MARK[customer]}
            reservation = (await client.post("/v1/reservations", headers=ADMIN, json={
                "customer_id": customer, "request_id": f"matrix-{uuid.uuid4().hex}", "model": "model-a",
                "amount": "0.10", "dimensions": marked})).json()
            shared = await client.post("/v1/reservations", headers=ADMIN, json={
                "customer_id": customer, "request_id": SHARED_REQ, "model": "model-a", "amount": "0.10",
                "dimensions": marked})
            assert shared.status_code == 201, shared.text
            sent = await client.post("/v1/usage-events", headers=ADMIN, json=[{
                "event_id": SHARED_EVT, "customer_id": customer, "model": "model-a",
                "timestamp": "2026-11-23T10:00:00Z", "usage": {"input_tokens": 1000}, "dimensions": marked}])
            assert sent.json()["accepted"] == 1, sent.text
            closed = await client.post("/v1/billing/close", headers=ADMIN, json={
                "until": (period_of(datetime.now(UTC), Cycle()).end + timedelta(hours=2)).isoformat(),
                "customer_id": customer, "early": True})
            assert closed.status_code == 200, closed.text
            invoice = closed.json()["closed"][0]["invoice_id"]
            budget = await client.post("/v1/budgets", headers=ADMIN, json={
                "customer_id": customer, "name": MARK[customer], "window": "month", "metric": "money",
                "limit": "100.00"})
            assert budget.status_code == 201, budget.text
            names[customer] = {"own": customer, "res": reservation["id"], "req": reservation["request_id"],
                               "book": book, "bud": budget.json()["id"], "shared_req": SHARED_REQ,
                               "shared_evt": SHARED_EVT, "recv": f"asset:customer:{customer}:receivable",
                               "inv": invoice}
        keys = {"none": {}, "admin": ADMIN}
        for name in SCOPES[2:]:
            scope, _, limit = name.partition(":")
            if scope == "customer":
                scope, customers = f"customer:{OWN if limit == 'own' else OTHER}", []
            else:
                customers = {"own": [OWN], "other": [OTHER], "": []}[limit]
            created = (await client.post("/v1/api-keys", headers=ADMIN,
                                         json={"scope": scope, "customers": customers})).json()
            keys[name] = {"Authorization": f"Bearer {created['key']}"}
        yield client, keys, names


def _fill(value, names):
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


def test_the_matrix_covers_every_route(database_url):
    """Every API route; the console's pages (signed in by cookie) have their own matrix, in
    tests/api/test_console_authorization.py."""
    app = api_app(database_url, admin="x")
    served = {(method, route.path) for route in app.routes for method in getattr(route, "methods", ())
              if method not in ("OPTIONS", "HEAD") and not route.path.startswith(("/schema", "/console"))}
    tested = {(method, path.partition("?")[0].replace("{own}", "{customer_id:str}")
               .replace("{res}", "{reservation_id:str}").replace("{shared_req}", "{request_id:path}")
               .replace("{shared_evt}", "{request_id:path}").replace("{req}", "{request_id:path}")
               .replace("key_missing", "{key_id:str}").replace("we_missing", "{endpoint_id:str}")
               .replace("{book}", "{book_id:str}").replace(PRICE_BOOK["effective_from"], "{version:path}")
               .replace("{recv}", "{code:str}").replace("income:platform:usage:USD", "{code:str}")
               .replace("{bud}", "{budget_id:str}").replace("bud_missing", "{budget_id:str}")
               .replace("{inv}", "{invoice_id:str}").replace("cn_missing", "{credit_note_id:str}")
                   .replace("lot_missing", "{grant_id:str}"))
              for method, path, _, _ in ROUTES}
    assert served == tested


def _expected(outcomes: dict[frozenset[str], object], scope: str) -> object:
    for scopes, outcome in outcomes.items():
        if scope in scopes:
            return outcome
    return 401 if scope == "none" else 403


@pytest.mark.usefixtures("no_endpoint_left")  # tests/conftest.py: an admin's POST makes one each time
@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("method, path, body, target, outcomes", CASES,
                         ids=[f"{m} {p} [{t}]" for m, p, _, t, _ in CASES])
async def test_route_by_key_shape(world, method, path, body, target, outcomes, scope):
    client, keys, names = world
    customer = OWN if target == "own" else OTHER
    kwargs = {"headers": {**keys[scope], "Idempotency-Key": uuid.uuid4().hex}}
    if body is not None:
        kwargs["json"] = _fill(body, names[customer])
    response = await client.request(method, _fill(path, names[customer]), **kwargs)
    expected = _expected(outcomes, scope)
    assert response.status_code < 500, response.text
    if expected == "ok":
        refusals = {401, 403} | {o for o in outcomes.values() if isinstance(o, int)}
        assert response.status_code not in refusals, response.text
    elif expected == "rejected":
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == 0 and response.json()["rejected"][0]["code"] == "forbidden"
    elif expected == "item forbidden":
        assert response.status_code == 200, response.text
        assert [r["body"]["code"] for r in response.json()["results"]] == ["forbidden"]
    else:
        assert response.status_code == expected, response.text
        assert response.json()["code"] == {401: "unauthorized", 403: "forbidden", 404: "not_found",
                                           422: "validation_error"}[expected]
    # zero cross-customer reads: nothing of a customer the key may not see, in any answer (but
    # the path the key itself sent, which a problem echoes as its `instance`)
    shown = response.text.replace(f'"instance":"{response.request.url.path}"', "")
    sent = f"{response.request.url}{kwargs.get('json')}"
    for unseen in {OWN, OTHER} - SEES[scope]:
        # nor its id, unless the request named it (a reservation or invoice id names no customer)
        assert unseen in sent or unseen not in response.text, response.text
        assert MARK[unseen] not in response.text, response.text
        assert f"customer:{unseen}:" not in shown, response.text  # its account codes
        assert f"{BOOK}-{unseen}" not in response.text or path.startswith("/v1/price-books"), response.text



def _scopes(outcomes: dict[frozenset[str], object]) -> set[str]:
    return {scope for scopes in outcomes for scope in scopes}


BODIES = [b"{not json", b'{"zz": [1], "id": 7}', b"[1, 2]", b'"text"']
WITH_BODY = [(m, p, o, "{own}" in f"{b}" and "{own}" not in p) for m, p, b, o in ROUTES
             if m in ("POST", "PUT", "PATCH", "DELETE")]


@pytest.mark.parametrize("key", ["none", "a bad key", "customer:other"])
@pytest.mark.parametrize("method, path, outcomes, named", WITH_BODY, ids=[f"{m} {p}" for m, p, _, _ in WITH_BODY])
async def test_a_malformed_body_is_refused_for_the_key_first_whatever_the_body(world, method, path, outcomes, named,
                                                                               key):
    """Guard: no key, or one that is not a key, is 401 unauthorized before anything of the body is
    read, for every body (not JSON, unknown fields, an array, a string); a key whose scope the
    route refuses (customer:other, on a route of customer own's or the platform's) is 403 forbidden
    likewise: a caller is never told what a body it may not send should look like. A route whose
    customer is named in the body (`named`: a budget, a reservation) is a route the key may call
    for its own customer: which customer is read from the body, so a malformed one is 422 there."""
    client, keys, names = world
    expected = {"none": 401, "a bad key": 401}.get(key) or _expected(outcomes, key)
    if expected not in (401, 403) or (named and key == "customer:other" and expected == 403
                                      and "customer:own" in _scopes(outcomes)):
        pytest.skip(f"{key} may call {method} {path}")
    headers = {"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex,
               **({"Authorization": "Bearer tt_not_a_key"} if key == "a bad key" else keys[key])}
    code = {401: "unauthorized", 403: "forbidden"}[expected]
    for body in BODIES:
        response = await client.request(method, _fill(path, names[OWN]), content=body, headers=headers)
        assert (response.status_code, response.json()["code"]) == (expected, code), (body, response.text)

"""Every route x every scope: 401 without a key, 403 outside the key's scope or customers,
success otherwise. A customer key never reads another customer's data."""
from __future__ import annotations

import uuid

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.demo import PRICE_BOOK
from api.settings import Settings

ADMIN = {"Authorization": "Bearer matrix-admin"}
OWN, OTHER = f"own-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
BOOK = f"matrix-{uuid.uuid4().hex[:8]}"
SCOPES = ["none", "admin", "inference", "inference:other", "auditor", "customer:own", "customer:other"]

# (method, path, body, scopes allowed). {own}: a customer the keys are tested against; {res}: its
# reservation. "customer:own"/"inference:other" stand for keys of customer OWN / limited to OTHER.
READ_OWN = {"admin", "inference", "auditor", "customer:own"}
ROUTES = [
    ("GET", "/healthz", None, set(SCOPES)),
    ("GET", "/readyz", None, set(SCOPES)),
    ("GET", "/metrics", None, set(SCOPES)),
    ("GET", "/v1/audit/trial-balance", None, {"admin", "auditor"}),
    ("POST", "/v1/audit/verify", None, {"admin", "auditor"}),
    ("GET", "/v1/audit/charges/{req}", None, {"admin", "auditor"}),
    ("POST", "/v1/api-keys", {"scope": "auditor"}, {"admin"}),
    ("GET", "/v1/api-keys", None, {"admin"}),
    ("DELETE", "/v1/api-keys/key_missing", None, {"admin"}),
    ("POST", "/v1/price-books", {**PRICE_BOOK, "id": f"{BOOK}-2"}, {"admin"}),
    ("GET", f"/v1/price-books/{BOOK}", None, {"admin", "auditor", "inference", "inference:other"}),
    ("POST", "/v1/customers", {"id": "x", "currency": "USD", "price_book": BOOK}, {"admin"}),
    ("GET", "/v1/customers/{own}", None, READ_OWN),
    ("GET", "/v1/customers/{own}/wallet", None, READ_OWN),
    ("GET", "/v1/customers/{own}/usage", None, READ_OWN),
    ("POST", "/v1/customers/{own}/topups", {"amount": "1.00"}, {"admin"}),
    ("POST", "/v1/customers/{own}/grants", {"amount": "1.00"}, {"admin"}),
    ("POST", "/v1/reservations", {"customer_id": "{own}", "request_id": "r", "model": "model-a", "amount": "0.01"},
     {"admin", "inference"}),
    ("GET", "/v1/reservations/{res}", None, READ_OWN),
    ("POST", "/v1/reservations/{res}/settle", {"usage": {"input_tokens": 1}}, {"admin", "inference"}),
    ("POST", "/v1/reservations/{res}/release", {}, {"admin", "inference"}),
    ("POST", "/v1/usage-events", [{"event_id": "e", "customer_id": "{own}", "model": "model-a",
                                   "timestamp": "2026-11-23T10:00:00Z", "usage": {"input_tokens": 1}}],
     {"admin", "inference"}),
]


@pytest.fixture(scope="module")
async def world(database_url):
    app = create_app(Settings(admin_key="matrix-admin", scheduler=False), database_url)
    async with AsyncTestClient(app=app) as client:
        assert (await client.post("/v1/price-books", headers=ADMIN, json={**PRICE_BOOK, "id": BOOK})).status_code == 201
        for customer in (OWN, OTHER):
            await client.post("/v1/customers", headers=ADMIN,
                              json={"id": customer, "currency": "USD", "price_book": BOOK})
            await client.post(f"/v1/customers/{customer}/topups", headers=ADMIN, json={"amount": "5.00"})
        reservation = (await client.post("/v1/reservations", headers=ADMIN, json={
            "customer_id": OWN, "request_id": f"matrix-{uuid.uuid4().hex}", "model": "model-a",
            "amount": "0.10"})).json()
        keys = {"none": {}, "admin": ADMIN}
        specs = {"inference": ("inference", []), "inference:other": ("inference", [OTHER]),
                 "auditor": ("auditor", []), "customer:own": (f"customer:{OWN}", []),
                 "customer:other": (f"customer:{OTHER}", [])}
        for name, (scope, customers) in specs.items():
            created = (await client.post("/v1/api-keys", headers=ADMIN,
                                         json={"scope": scope, "customers": customers})).json()
            keys[name] = {"Authorization": f"Bearer {created['key']}"}
        yield client, keys, {"own": OWN, "res": reservation["id"], "req": reservation["request_id"]}


def _fill(value, names):
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


def test_the_matrix_covers_every_route(database_url):
    app = create_app(Settings(admin_key="x", scheduler=False), database_url)
    served = {(method, route.path) for route in app.routes for method in getattr(route, "methods", ())
              if method not in ("OPTIONS", "HEAD") and not route.path.startswith("/schema")}
    tested = {(method, path.replace("{own}", "{customer_id:str}").replace("{res}", "{reservation_id:str}")
               .replace("{req}", "{request_id:str}").replace("key_missing", "{key_id:str}")
               .replace(BOOK, "{book_id:str}")) for method, path, _, _ in ROUTES}
    assert served == tested


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("method, path, body, allowed", ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
async def test_route_by_scope(world, method, path, body, allowed, scope):
    client, keys, names = world
    kwargs = {"headers": {**keys[scope], "Idempotency-Key": uuid.uuid4().hex}}
    if body is not None:
        kwargs["json"] = _fill(body, names)
    response = await client.request(method, _fill(path, names), **kwargs)
    if path == "/v1/usage-events" and scope == "inference:other":
        # a batch refuses each event the key may not post, by event, and posts none of them
        assert response.status_code == 200
        assert response.json()["accepted"] == 0 and response.json()["rejected"][0]["code"] == "forbidden"
    elif scope in allowed:
        assert response.status_code not in (401, 403), response.text
    elif scope == "none":
        assert response.status_code == 401, response.text
    else:
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "forbidden"

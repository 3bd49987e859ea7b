"""The console's pages x key shapes: the same authorization as the API (api.auth), applied to a
key signed in by cookie. A page outside the key's scope or customers is a 403 page; without a
session, every page sends to the sign-in page."""
from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from api.demo import PRICE_BOOK
from tests.api.apps import api_app, api_client, sign_in
from wallets.periods import Cycle, period_of

ADMIN_KEY = "console-matrix-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
OWN, OTHER = f"cown-{uuid.uuid4().hex[:8]}", f"cother-{uuid.uuid4().hex[:8]}"
SHAPES = ["none", "admin", "admin:own", "inference", "inference:own", "auditor", "auditor:own",
          "customer:own", "customer:other"]
READ_OWN = {"admin", "admin:own", "inference", "inference:own", "auditor", "auditor:own", "customer:own"}
AUDITORS = {"admin", "admin:own", "auditor", "auditor:own"}
# (method, page, shapes that get it); every other signed-in shape gets a 403 page.
PAGES = [
    ("GET", "/console", READ_OWN | {"customer:other"}),
    ("GET", "/console/customers/{own}", READ_OWN),
    ("GET", "/console/customers/{own}/usage", READ_OWN),
    ("GET", "/console/customers/{own}/reservations", READ_OWN),
    ("GET", "/console/customers/{own}/budgets", READ_OWN),
    ("GET", "/console/customers/{own}/invoices", READ_OWN - {"inference", "inference:own"}),
    ("GET", "/console/customers/{own}/invoices/upcoming", READ_OWN - {"inference", "inference:own"}),
    ("GET", "/console/customers/{own}/top-up", {"admin", "admin:own"}),
    ("GET", "/console/audit", AUDITORS),
    ("GET", "/console/audit/trace", AUDITORS),
    ("GET", "/console/audit/journal", AUDITORS),
    ("GET", "/console/audit/statement", AUDITORS),
    ("GET", "/console/audit/export", AUDITORS),
    ("GET", "/console/audit/export/download", {"admin", "auditor"}),  # every customer's entries
    ("GET", "/console/audit/verify", AUDITORS),
    ("POST", "/console/audit/verify", {"admin", "auditor"}),  # verify spans every customer
    ("GET", "/console/operator", {"admin"}),
    ("GET", "/console/receivables", {"admin"}),  # every customer's receivable
]
OPEN = {("GET", "/console/sign-in"), ("POST", "/console/sign-in"), ("POST", "/console/sign-out"),
        ("POST", "/console/customers/{own}/top-up"),  # the top-up post: tests/e2e (a browser's form)
        ("GET", "/console/invoices/{invoice_id:str}"),  # a finalized invoice: tests/e2e (a closed period)
        ("GET", "/console/invoices/{invoice_id:str}/{fmt:str}"),
        ("GET", "/console/customers/{own}/invoices/upcoming/{fmt:str}"),
        ("GET", "/console/credit-notes/{credit_note_id:str}")}  # a re-rated closed period's note:
# tests/api/test_invoice_credit_notes.py (its customer's page, another customer's 403, an unknown 404)


def _token(html: str) -> str:
    return re.search(r'name="_csrf_token" value="([^"]+)"', html).group(1)


@pytest.fixture(scope="module")
async def world(database_url):
    app = api_app(database_url, admin=ADMIN_KEY)
    async with api_client(app=app, admin=ADMIN_KEY, console=True) as client:
        book = f"cbook-{uuid.uuid4().hex[:8]}"
        assert (await client.post("/v1/price-books", headers=ADMIN, json={**PRICE_BOOK, "id": book})).status_code == 201
        for customer in (OWN, OTHER):
            assert (await client.post("/v1/customers", headers=ADMIN,
                                      json={"id": customer, "price_book": book})).status_code == 201
        keys = {"admin": ADMIN_KEY}
        for shape in SHAPES[2:]:
            scope, _, limit = shape.partition(":")
            if scope == "customer":
                body = {"scope": f"customer:{OWN if limit == 'own' else OTHER}"}
            else:
                body = {"scope": scope, "customers": [OWN] if limit == "own" else []}
            keys[shape] = (await client.post("/v1/api-keys", headers=ADMIN, json=body)).json()["key"]
        closed = await client.post("/v1/billing/close", headers=ADMIN, json={
            "until": (period_of(datetime.now(UTC), Cycle()).end + timedelta(hours=2)).isoformat(),
            "customer_id": OWN, "early": True})
        assert closed.status_code == 200, closed.text
        yield app, keys, closed.json()["closed"][0]["invoice_id"]


def test_the_matrix_covers_every_page(database_url):
    app = api_app(database_url, admin="x")
    served = {(method, route.path) for route in app.routes for method in getattr(route, "methods", ())
              if method not in ("OPTIONS", "HEAD") and route.path.startswith("/console")
              and not route.path.startswith("/console/static")}
    tested = {(m, p.replace("{own}", "{customer_id:str}")) for m, p, _ in PAGES}
    assert served == tested | {(m, p.replace("{own}", "{customer_id:str}")) for m, p in OPEN}


@pytest.mark.parametrize("shape", SHAPES)
async def test_each_page_by_key_shape(world, shape):
    app, keys, _ = world
    async with api_client(app=app, console=True) as client:
        token = _token((await client.get("/console/sign-in")).text)
        if shape != "none":
            signed = await client.post("/console/sign-in", data={"key": keys[shape], "_csrf_token": token},
                                      follow_redirects=False)
            assert signed.status_code == 303, signed.text
            assert "httponly" in signed.headers["set-cookie"].lower()
            assert "secure" in signed.headers["set-cookie"].lower()
            assert "samesite=strict" in signed.headers["set-cookie"].lower()
            token = _token((await client.get(signed.headers["location"])).text)  # the signed-in session's
        for method, page, allowed in PAGES:
            path = page.format(own=OWN)
            answer = await client.request(method, path, data={"_csrf_token": token} if method == "POST" else None,
                                          follow_redirects=False)
            if shape == "none":
                assert answer.status_code == 303 and "/console/sign-in?next=" in answer.headers["location"], path
            elif shape in allowed:
                assert answer.status_code in (200, 303), (path, answer.status_code, answer.text[:300])
                if shape.endswith(":own"):  # nothing of the customer the key may not see
                    assert OTHER not in answer.text, path
            else:
                assert answer.status_code == 403, (path, answer.status_code)
                assert "text/html" in answer.headers["content-type"] and "Forbidden" in answer.text, path


async def test_another_customers_invoice_is_a_403_page_that_does_not_name_its_customer(world):
    """An invoice id names no customer: the refusal of a key that may not read it names the id
    only (it named the invoice's customer, another tenant's id, before)."""
    app, keys, invoice = world
    async with api_client(app=app, console=True) as client:
        await sign_in(client, keys["customer:other"])
        for page in (f"/console/invoices/{invoice}", f"/console/invoices/{invoice}/pdf"):
            answer = await client.get(page, follow_redirects=False)
            assert answer.status_code == 403 and "Forbidden" in answer.text, page
            assert invoice in answer.text and OWN not in answer.text, page


async def test_a_limited_auditors_filters_naming_another_customers_data_are_answered_as_unknown_ones(world):
    """The auditor pages' filters (a customer, an account, a request id, a currency) that name the
    other customer's data get the answer a name nobody uses gets, in the same words: the pages
    apply the API's rules (403 for a customer named, 404 for an account, a request id or a
    currency the key's customers do not hold), and nothing of the other customer shows."""
    app, keys, _ = world
    async with api_client(app=app, admin=ADMIN_KEY, console=True) as client:
        assert (await client.post(f"/v1/customers/{OTHER}/topups", headers=ADMIN,
                                  json={"amount": "1.00"})).status_code == 201
        request_id = f"theirs-{uuid.uuid4().hex[:8]}"
        assert (await client.post("/v1/reservations", headers=ADMIN, json={
            "customer_id": OTHER, "request_id": request_id, "model": "model-a", "amount": "0.10"})).status_code == 201
        currency = "".join(chr(65 + n % 26) for n in uuid.uuid4().bytes[:3])
        theirs = f"{OTHER}-{currency.lower()}"
        assert (await client.post("/v1/customers", headers=ADMIN,
                                  json={"id": theirs, "currency": currency})).status_code == 201
        nobody, no_currency = f"nobody-{uuid.uuid4().hex[:8]}", "".join(
            chr(65 + n % 26) for n in uuid.uuid4().bytes[3:6])
        await sign_in(client, keys["auditor:own"])
        pairs = [  # (page, its query naming the other's, the same naming nobody's, status)
            ("/console/audit/journal", {"customer": OTHER}, {"customer": nobody}, 403),
            ("/console/audit/journal", {"account": f"asset:customer:{OTHER}:receivable"},
             {"account": f"asset:customer:{nobody}:receivable"}, 404),
            ("/console/audit/journal", {"account": f"asset:platform:cash:{currency}"},
             {"account": f"asset:platform:cash:{no_currency}"}, 404),
            ("/console/audit/statement", {"account": f"asset:customer:{OTHER}:receivable"},
             {"account": f"asset:customer:{nobody}:receivable"}, 404),
            ("/console/audit/trace", {"request_id": request_id}, {"request_id": nobody}, 404),
            ("/console/audit/trace", {"request_id": request_id, "customer_id": OTHER},
             {"request_id": request_id, "customer_id": nobody}, 403),
            ("/console/audit", {"currency": currency}, {"currency": no_currency}, 404),
        ]
        for page, named, unknown, status in pairs:
            shown = {}
            for query, name in ((named, OTHER), (unknown, nobody)):
                answer = await client.get(page, params=query, follow_redirects=False)
                assert answer.status_code == status, (page, query, answer.status_code)
                text = answer.text
                for value in query.values():  # what the key sent is echoed: take it out to compare
                    text = text.replace(value, "<sent>").replace(html.escape(value), "<sent>")
                shown[name] = text.replace(name, "<sent>").replace(currency, "<sent>").replace(no_currency, "<sent>")
            assert shown[OTHER] == shown[nobody], page
            assert OTHER not in shown[OTHER] and theirs not in shown[OTHER], page
        home = await client.get("/console", params={"customer": OTHER}, follow_redirects=False)
        assert home.status_code == 200 and OTHER not in home.text.replace(f'value="{OTHER}"', ""), home.text[:500]


@pytest.mark.parametrize(("shape", "target"), [
    ("admin:own", OTHER), ("customer:own", OWN), ("inference:own", OWN), ("auditor", OWN), ("inference", OWN)],
    ids=lambda value: {OWN: "own", OTHER: "other"}.get(value, value))
async def test_a_top_up_posted_by_a_key_that_may_not_make_it_is_a_403_page_and_writes_nothing(world, shape, target):
    """The post itself, with a valid token and form (the matrix covers the form's page): an admin
    key limited to one customer for another one, and keys of other scopes for their own."""
    app, keys, _ = world
    async with api_client(app=app, admin=ADMIN_KEY, console=True) as client:
        before = (await client.get(f"/v1/customers/{target}/wallet", headers=ADMIN)).json()["grants"]
        token = await sign_in(client, keys[shape])
        answer = await client.post(f"/console/customers/{target}/top-up", follow_redirects=False, data={
            "_csrf_token": token, "idempotency_key": uuid.uuid4().hex, "amount": "9.00", "priority": "100"})
        assert answer.status_code == 403 and "Forbidden" in answer.text, (answer.status_code, answer.text[:300])
        assert (await client.get(f"/v1/customers/{target}/wallet", headers=ADMIN)).json()["grants"] == before

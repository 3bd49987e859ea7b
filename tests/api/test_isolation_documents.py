"""Isolation of what the matrices (test_authorization_matrix, test_console_authorization) name by
a made-up id only, or not at all: another customer's credit note by its real id (JSON, HTML, PDF),
its invoice's renderings, a payment on it under the reference it was paid with, its budget deleted
or changed by its real id, and the console's downloads of its invoices. A key limited to customer A
names B's things and is refused; the refusal names only what the key sent, tells nothing it did
not send, and writes nothing."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.api.apps import api_app, api_client, sign_in
from tests.api.closing import close_early, utc
from wallets.periods import Cycle, period_of

ADMIN_KEY = "isolation-documents-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TAG = uuid.uuid4().hex[:8]
A, B = f"doc-a-{TAG}", f"doc-b-{TAG}"
MARK = f"b-only-{TAG}"  # B's name, its payment reference and its budget's name: never shown to A's keys
KEYS = ["admin:a", "auditor:a", "customer:a"]  # inference keys read no invoices, notes or budgets' writes


@pytest.fixture(scope="module")
async def world(database_url: str) -> AsyncIterator[tuple[Any, dict[str, str], dict[str, str]]]:
    app = api_app(database_url, admin=ADMIN_KEY)
    async with api_client(app=app, admin=ADMIN_KEY, console=True) as client:
        now = datetime.now(UTC)
        period = period_of(now, Cycle("UTC", None))
        for cid in (A, B):
            made = await client.post("/v1/price-books", headers=ADMIN, json={
                "id": f"book-{cid}", "version": "v1", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "10"}]})
            assert made.status_code == 201, made.text
            made = await client.post("/v1/customers", headers=ADMIN, json={
                "id": cid, "price_book": f"book-{cid}", "billing": "postpaid", "name": MARK if cid == B else "A"})
            assert made.status_code == 201, made.text
            sent = await client.post("/v1/usage-events", headers=ADMIN, json=[{
                "event_id": "e1", "customer_id": cid, "model": "model-a", "timestamp": now.isoformat(),
                "usage": {"input_tokens": 150_000}}])  # 150,000 x $10 / 1M = $1.50
            assert sent.json()["accepted"] == 1, sent.text
        [closed] = (await close_early(client, ADMIN, B, period))["closed"]
        invoice = closed["invoice_id"]
        paid = await client.post(f"/v1/invoices/{invoice}/payments", headers=ADMIN,
                                 json={"amount": "1.00", "reference": MARK})
        assert paid.status_code == 201, paid.text
        # B's book at $7: $1.50 - 150,000 x $7 / 1M = $1.05, so $0.45 back on a credit note of B's
        made = await client.post("/v1/price-books", headers=ADMIN, json={
            "id": f"book-{B}", "version": "v2", "currency": "USD", "effective_from": utc(period.start),
            "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "7"}]})
        assert made.status_code == 201, made.text
        applied = await client.post("/v1/rerate", headers=ADMIN, json={
            "price_book": f"book-{B}", "version": "v2", "from": utc(period.start), "to": utc(period.end),
            "mode": "apply"})
        assert applied.status_code == 200, applied.text
        [note] = applied.json()["credit_notes"]
        assert note["customer_id"] == B
        granted = await client.post(f"/v1/customers/{B}/grants", headers=ADMIN, json={"amount": "2.00", "reason": MARK})
        assert granted.status_code == 201, granted.text
        budget = await client.post("/v1/budgets", headers=ADMIN, json={
            "customer_id": B, "name": MARK, "window": "month", "metric": "money", "limit": "100.00"})
        assert budget.status_code == 201, budget.text
        keys = {}
        for name, body in (("admin:a", {"scope": "admin", "customers": [A]}),
                           ("auditor:a", {"scope": "auditor", "customers": [A]}),
                           ("customer:a", {"scope": f"customer:{A}"})):
            created = await client.post("/v1/api-keys", headers=ADMIN, json=body)
            assert created.status_code == 201, created.text
            keys[name] = created.json()["key"]
        yield app, keys, {"invoice": invoice, "note": note["id"], "budget": budget.json()["id"],
                          "lot": granted.json()["grant_id"]}


def _unseen(text: str, *sent: str) -> None:
    """Nothing of B's but what the request itself sent."""
    for value in sent:
        text = text.replace(value, "<sent>")
    assert B not in text and MARK not in text, text


@pytest.mark.parametrize("accept", ["application/json", "text/html", "application/pdf"])
@pytest.mark.parametrize("key", KEYS)
async def test_another_customers_credit_note_and_invoice_in_every_rendering_are_refused_naming_only_their_ids(
        world, key, accept):
    app, keys, ids = world
    async with api_client(app=app) as client:
        for path, what in ((f"/v1/credit-notes/{ids['note']}", f"credit note {ids['note']}"),
                           (f"/v1/invoices/{ids['invoice']}", f"invoice {ids['invoice']}")):
            answer = await client.get(path, headers={"Authorization": f"Bearer {keys[key]}", "Accept": accept})
            assert answer.status_code == 403, (path, answer.status_code, answer.text[:300])
            assert answer.headers["content-type"].startswith("application/problem+json"), path
            assert answer.json()["code"] == "forbidden" and answer.json()["detail"] == f"this key may not access {what}"
            _unseen(answer.text, path)


async def test_a_payment_on_another_customers_invoice_under_the_reference_it_was_paid_with_is_refused_not_answered(
        world):
    """The reference B's payment used is B's: A's admin key sending it again is 403, not the 201 of
    B's payment replayed nor a 409 naming it, and nothing is paid."""
    app, keys, ids = world
    async with api_client(app=app) as client:
        before = (await client.get(f"/v1/invoices/{ids['invoice']}", headers=ADMIN)).json()
        for body in ({"amount": "1.00", "reference": MARK}, {"amount": "0.01", "reference": MARK},
                     {"amount": "0.01", "reference": f"fresh-{TAG}"}):
            answer = await client.post(f"/v1/invoices/{ids['invoice']}/payments", json=body,
                                       headers={"Authorization": f"Bearer {keys['admin:a']}"})
            assert answer.status_code == 403 and answer.json()["code"] == "forbidden", answer.text
            _unseen(answer.text, f"/v1/invoices/{ids['invoice']}/payments")
        after = (await client.get(f"/v1/invoices/{ids['invoice']}", headers=ADMIN)).json()
        # $1.50 due, $1.00 paid by B, $0.45 credited: $0.05 left, as before A's calls
        assert after["amount_remaining"] == before["amount_remaining"] == "0.05", after
        assert [p["reference"] for p in after["payments"]] == [MARK]


@pytest.mark.parametrize("key", ["admin:a", "customer:a"])
async def test_another_customers_budget_deleted_or_changed_by_its_real_id_is_not_found_as_an_unknown_one(world, key):
    app, keys, ids = world
    unknown = f"bud_{uuid.uuid4().hex[:23]}"
    async with api_client(app=app) as client:
        headers = {"Authorization": f"Bearer {keys[key]}"}
        for method, body in (("DELETE", None), ("PATCH", {"limit": "1.00"}), ("GET", None)):
            answers = {}
            for budget in (ids["budget"], unknown):
                answer = await client.request(method, f"/v1/budgets/{budget}", headers=headers,
                                              **({} if body is None else {"json": body}))
                assert answer.status_code == 404, (method, answer.text)
                answers[budget] = answer.text.replace(budget, "<id>")
            assert answers[ids["budget"]] == answers[unknown], method
        kept = await client.get(f"/v1/budgets/{ids['budget']}", headers=ADMIN)
        assert kept.status_code == 200 and kept.json()["limit"] == "100.00", kept.text


@pytest.mark.parametrize("fmt", ["pdf", "html", "csv"])
@pytest.mark.parametrize("key", KEYS)
async def test_the_consoles_downloads_of_another_customers_invoices_are_403_pages_naming_no_customer(
        world, key, fmt):
    app, keys, ids = world
    async with api_client(app=app, console=True) as client:
        await sign_in(client, keys[key])
        for page in (f"/console/invoices/{ids['invoice']}/{fmt}", f"/console/customers/{B}/invoices/upcoming/{fmt}"):
            answer = await client.get(page, follow_redirects=False)
            assert answer.status_code == 403, (page, answer.status_code, answer.headers.get("content-type"))
            assert "text/html" in answer.headers["content-type"] and "Forbidden" in answer.text, page
            _unseen(answer.text, page, f"customer '{B}'", f"customer &#39;{B}&#39;")


@pytest.mark.parametrize("key", ["admin:a", "auditor:a", "customer:a"])
async def test_another_customers_lot_and_reserved_accounts_are_not_found_as_codes_nobody_uses(world, key):
    """The matrix names B's receivable; its lot (a grant's) and reserved accounts are its too: their
    statement, balance (now and at T) and journal filter answer a key limited to A what a code of a
    customer nobody is answers, word for word, and nothing of B's."""
    app, keys, ids = world
    nobody = f"nobody-{TAG}"
    async with api_client(app=app) as client:
        headers = {"Authorization": f"Bearer {keys[key]}"}
        lot = f":lot:{ids['lot']}"
        for theirs, unknown in ((f"liability:customer:{B}{lot}", f"liability:customer:{nobody}{lot}"),
                                (f"liability:customer:{B}:reserved", f"liability:customer:{nobody}:reserved")):
            for path in ("/v1/accounts/{}/statement", "/v1/accounts/{}/balance",
                         "/v1/accounts/{}/balance?at=2027-01-01T00:00:00Z", "/v1/journal?account={}"):
                answers = []
                for code in (theirs, unknown):
                    answer = await client.get(path.format(code), headers=headers)
                    assert answer.status_code == 404 and answer.json()["code"] == "not_found", (path, answer.text)
                    answers.append(answer.text.replace(code, "<code>"))
                assert answers[0] == answers[1], path
                _unseen(answers[0])

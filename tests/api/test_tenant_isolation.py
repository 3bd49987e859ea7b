"""Tenants kept apart: usage event ids are per customer, and a key limited to customers (an
auditor's included) reads and acts on those customers only, and never learns another's ids."""
from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from litestar.testing import AsyncTestClient

from api.routes import cursors
from tests.api.apps import api_client

ADMIN = {"Authorization": "Bearer isolation-admin"}
RULES = [{"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"},
         {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
         {"id": "call", "token_type": "request", "price": "0.01"}]


@pytest.fixture(scope="module")
async def client(database_url: str) -> AsyncIterator[AsyncTestClient]:
    async with api_client(database_url, admin="isolation-admin", send_admin=True) as c:
        yield c


async def _customers(client: AsyncTestClient, *names: str) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    ids = []
    for name in names:
        book = f"iso-{name}-{tag}"
        created = await client.post("/v1/price-books", json={
            "id": book, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": RULES})
        assert created.status_code == 201, created.text
        cid = f"{name}-{tag}"
        response = await client.post("/v1/customers", json={"id": cid, "price_book": book, "billing": "postpaid"})
        assert response.status_code == 201, response.text
        ids.append(cid)
    return ids


async def _key(client: AsyncTestClient, scope: str, customers: list[str]) -> dict[str, str]:
    created = await client.post("/v1/api-keys", json={"scope": scope, "customers": customers})
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['key']}"}


def _event(event_id: str, customer: str, input_tokens: int, output_tokens: int = 0) -> dict:
    return {"event_id": event_id, "customer_id": customer, "model": "model-a",
            "timestamp": "2026-11-23T10:00:00Z",
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}


async def test_another_customers_event_with_the_same_id_is_accepted_and_charged(client: AsyncTestClient):
    a, b = await _customers(client, "evt-a", "evt-b")
    shared = f"shared-evt-{uuid.uuid4().hex[:6]}"
    first = await client.post("/v1/usage-events", json=[_event(shared, a, 1000)])
    assert first.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    # B's own event, other usage, same id: charged, and nothing in the answer mentions A's
    second = await client.post("/v1/usage-events", json=[_event(shared, b, 2000, 10)])
    assert second.json() == {"accepted": 1, "duplicates": 0, "rejected": []}, second.text
    # a replay is still a duplicate for its own customer, both in one batch too
    again = await client.post("/v1/usage-events", json=[_event(shared, a, 1000), _event(shared, b, 2000, 10)])
    assert again.json() == {"accepted": 0, "duplicates": 2, "rejected": []}
    changed = await client.post("/v1/usage-events", json=[_event(shared, a, 7)])
    assert [r["code"] for r in changed.json()["rejected"]] == ["idempotency_conflict"]

    # A: 1,000 in at $10/M + the call $0.01; B: 2,000 in + 10 out at $20/M + the call
    assert (await client.get(f"/v1/customers/{a}/wallet")).json()["receivable"] == "0.02"
    assert (await client.get(f"/v1/customers/{b}/wallet")).json()["receivable"] == "0.0302"
    for customer, charged in ((a, "0.02"), (b, "0.0302")):
        trace = (await client.get(f"/v1/audit/charges/{shared}", params={"customer_id": customer})).json()
        assert (trace["customer_id"], trace["kind"]) == (customer, "usage_event")
        assert [c["charged"] for c in trace["charges"]] == [charged]
        assert [e["kind"] for e in trace["entries"]] == ["usage"]
        assert all(f":{customer}:" in p["account"] for p in trace["entries"][0]["postings"]
                   if ":customer:" in p["account"])
    # two customers used the id: an unlimited key must name one
    ambiguous = await client.get(f"/v1/audit/charges/{shared}")
    assert ambiguous.status_code == 422 and ambiguous.json()["code"] == "validation_error"
    verify = (await client.post("/v1/audit/verify")).json()
    assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]


async def test_events_sent_together_by_two_customers_with_one_id_are_both_charged(client: AsyncTestClient):
    a, b = await _customers(client, "both-a", "both-b")
    shared = f"together-{uuid.uuid4().hex[:6]}"
    body = (await client.post("/v1/usage-events", json=[_event(shared, a, 1000), _event(shared, b, 1000)])).json()
    assert body == {"accepted": 2, "duplicates": 0, "rejected": []}
    for customer in (a, b):
        assert (await client.get(f"/v1/customers/{customer}/wallet")).json()["receivable"] == "0.02"


async def _reserve(client: AsyncTestClient, customer: str, request_id: str, **extra) -> dict:
    response = await client.post("/v1/reservations", json={
        "customer_id": customer, "request_id": request_id, "model": "model-a", "amount": "0.10", **extra})
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_limited_auditor_cannot_read_another_customers_charge_trace(client: AsyncTestClient):
    a, b = await _customers(client, "aud-a", "aud-b")
    auditor_a = await _key(client, "auditor", [a])
    only_b = f"req-b-{uuid.uuid4().hex[:6]}"
    await _reserve(client, b, only_b, dimensions={"secret": "b-only"})

    hidden = await client.get(f"/v1/audit/charges/{only_b}", headers=auditor_a)
    assert hidden.status_code == 404, hidden.text  # as if it did not exist
    assert hidden.json()["code"] == "not_found" and b not in hidden.text and "b-only" not in hidden.text
    named = await client.get(f"/v1/audit/charges/{only_b}", params={"customer_id": b}, headers=auditor_a)
    assert named.status_code == 403 and named.json()["code"] == "forbidden"
    unknown = await client.get(f"/v1/audit/charges/{only_b}", params={"customer_id": f"nobody-{a}"},
                               headers=auditor_a)
    assert unknown.status_code == 403  # the same answer for a customer that does not exist at all

    # an id both used: the limited key sees its own customer's, with or without naming it,
    # and never the 422 that would tell it B used the id too
    shared = f"req-shared-{uuid.uuid4().hex[:6]}"
    mine = await _reserve(client, a, shared)
    await _reserve(client, b, shared, dimensions={"secret": "b-only"})
    for params in ({}, {"customer_id": a}):
        trace = await client.get(f"/v1/audit/charges/{shared}", params=params, headers=auditor_a)
        assert trace.status_code == 200, trace.text
        assert trace.json()["reservation"]["id"] == mine["id"] and "b-only" not in trace.text
    assert (await client.get(f"/v1/audit/charges/{shared}")).status_code == 422  # unlimited: name one
    both = await _key(client, "auditor", [a, b])
    assert (await client.get(f"/v1/audit/charges/{shared}", headers=both)).status_code == 422
    assert (await client.get(f"/v1/audit/charges/{only_b}", headers=both)).status_code == 200


async def test_a_limited_auditor_sees_a_trial_balance_of_its_customers_only(client: AsyncTestClient):
    a, b = await _customers(client, "tb-a", "tb-b")
    for customer in (a, b):
        assert (await client.post(f"/v1/customers/{customer}/topups", json={"amount": "3.00"})).status_code == 201
    auditor_a = await _key(client, "auditor", [a])

    limited = await client.get("/v1/audit/trial-balance", headers=auditor_a)
    assert limited.status_code == 200, limited.text
    body = limited.json()
    assert (body["scope"], body["customers"]) == ("customers", [a])
    assert "balanced" not in body  # a customer's accounts alone are not a whole trial balance
    assert body["accounts"] and all(f":customer:{a}:" in acc["account"] for acc in body["accounts"])
    assert b not in limited.text and ":platform:" not in limited.text
    # the top-up credited A's lot with 3.00, and nothing else of A's moved
    assert (body["total_debits"], body["total_credits"]) == ("0.00", "3.00")

    full = (await client.get("/v1/audit/trial-balance")).json()
    assert (full["scope"], full["balanced"]) == ("ledger", True)
    assert "customers" not in full
    assert any(f":customer:{b}:" in acc["account"] for acc in full["accounts"])


async def _another_currency(client: AsyncTestClient) -> tuple[str, str]:
    """A currency of this test's alone that a new customer holds (topped up), and one nobody holds."""
    theirs = "".join(chr(65 + n % 26) for n in uuid.uuid4().bytes[:3])
    nobodys = "".join(chr(65 + n % 26) for n in uuid.uuid4().bytes[3:6])
    b = f"cur-b-{uuid.uuid4().hex[:8]}"
    assert (await client.post("/v1/customers", json={"id": b, "currency": theirs})).status_code == 201
    assert (await client.post(f"/v1/customers/{b}/topups", json={"amount": "3.00"})).status_code == 201
    return theirs, nobodys


async def test_a_limited_auditor_cannot_tell_which_currencies_other_customers_hold(client: AsyncTestClient):
    """A currency only another customer holds is answered as one no customer holds: 404, in the
    same words, now and `at` a past instant. The key's own customer's currency is answered."""
    (a,) = await _customers(client, "cur-a")
    theirs, nobodys = await _another_currency(client)
    assert (await client.get("/v1/audit/trial-balance", params={"currency": theirs})).status_code == 200
    auditor_a = await _key(client, "auditor", [a])
    for at in ({}, {"at": "2030-01-01T00:00:00Z"}, {"at": "2000-01-01T00:00:00Z"}):
        answers = {}
        for currency in (theirs, nobodys):
            refused = await client.get("/v1/audit/trial-balance", params={"currency": currency, **at},
                                       headers=auditor_a)
            assert refused.status_code == 404, (at, refused.text)
            answers[currency] = refused.json()["detail"].replace(currency, "XXX")
        assert answers[theirs] == answers[nobodys], answers
        own = await client.get("/v1/audit/trial-balance", params={"currency": "USD", **at}, headers=auditor_a)
        assert own.status_code == 200 and own.json()["currencies"] in ([], ["USD"]), own.text
        assert theirs not in own.text


async def test_a_limited_key_cannot_tell_the_platform_accounts_of_another_customers_currency(
        client: AsyncTestClient):
    """A platform account of a currency only another customer holds is answered as an unknown
    code, in the same words, on statements, balances and the journal's `account=`; one of its own
    customers' currency lists their entries in the journal and is refused (403) a statement."""
    (a,) = await _customers(client, "plat-a")
    assert (await client.post(f"/v1/customers/{a}/topups", json={"amount": "3.00"})).status_code == 201
    theirs, nobodys = await _another_currency(client)
    auditor_a = await _key(client, "auditor", [a])
    reads = {"statement": lambda code: client.get(f"/v1/accounts/{code}/statement", headers=auditor_a),
             "balance": lambda code: client.get(f"/v1/accounts/{code}/balance", headers=auditor_a),
             "journal": lambda code: client.get("/v1/journal", params={"account": code}, headers=auditor_a)}
    for name, read in reads.items():
        answers = {}
        for currency in (theirs, nobodys):
            answer = await read(f"asset:platform:cash:{currency}")
            assert answer.status_code == 404, (name, currency, answer.text)
            answers[currency] = answer.json()["detail"].replace(currency, "XXX")
        assert answers[theirs] == answers[nobodys], (name, answers)
    assert (await reads["statement"]("asset:platform:cash:USD")).status_code == 403
    own = await reads["journal"]("asset:platform:cash:USD")
    assert own.status_code == 200, own.text
    assert [e["kind"] for e in own.json()["entries"]] == ["topup"]
    assert {e["customer_id"] for e in own.json()["entries"]} == {a}


async def test_verify_is_refused_to_a_limited_key(client: AsyncTestClient):
    (a,) = await _customers(client, "verify-a")
    refused = await client.post("/v1/audit/verify", headers=await _key(client, "auditor", [a]))
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert (await client.post("/v1/audit/verify", headers=await _key(client, "auditor", []))).status_code == 200


async def test_a_limited_admin_acts_on_its_customers_only_and_not_on_the_platform(client: AsyncTestClient):
    a, b = await _customers(client, "adm-a", "adm-b")
    admin_a = await _key(client, "admin", [a])
    assert (await client.post(f"/v1/customers/{a}/topups", json={"amount": "1.00"}, headers=admin_a)).status_code == 201
    assert (await client.post(f"/v1/customers/{b}/topups", json={"amount": "1.00"}, headers=admin_a)).status_code == 403
    # platform-wide acts would escape the list: a new unlimited key, all keys, shared books, new customers
    for method, path, body in [
        ("POST", "/v1/api-keys", {"scope": "admin"}), ("GET", "/v1/api-keys", None),
        ("DELETE", "/v1/api-keys/key_0000000000000000", None),
        ("POST", "/v1/price-books", {"id": f"x-{a}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                                     "rules": RULES}),
        ("POST", "/v1/customers", {"id": f"new-{a}", "price_book": "standard"}),
    ]:
        response = await client.request(method, path, json=body, headers=admin_a)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["code"] == "forbidden"


async def test_a_limited_key_reads_only_the_price_books_its_customers_use(client: AsyncTestClient):
    a, b = await _customers(client, "book-a", "book-b")
    inference_a = await _key(client, "inference", [a])
    book_a = (await client.get(f"/v1/customers/{a}")).json()["price_book"]
    book_b = (await client.get(f"/v1/customers/{b}")).json()["price_book"]
    assert (await client.get(f"/v1/price-books/{book_a}", headers=inference_a)).status_code == 200
    hidden = await client.get(f"/v1/price-books/{book_b}", headers=inference_a)
    assert hidden.status_code == 404 and hidden.json()["code"] == "not_found"
    missing = await client.get(f"/v1/price-books/nothing-{a}", headers=inference_a)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (await client.get(f"/v1/price-books/{book_b}")).status_code == 200  # unlimited


async def test_a_limited_admin_moves_its_customer_only_to_a_price_book_it_may_read(client: AsyncTestClient):
    """A book none of the key's customers is priced with is answered as missing on a move too:
    moved there, the customer would have opened the book to the key (and its answer to a move
    would tell the book exists). Books its customers use stay open to it."""
    a, a2, b = await _customers(client, "move-a", "move-a2", "move-b")
    admin_a = await _key(client, "admin", [a, a2])
    book_a2 = (await client.get(f"/v1/customers/{a2}")).json()["price_book"]
    book_b = (await client.get(f"/v1/customers/{b}")).json()["price_book"]
    before = (await client.get(f"/v1/customers/{a}")).json()["price_book"]
    for book in (book_b, f"nothing-{a}"):
        moved = await client.patch(f"/v1/customers/{a}", json={"price_book": book}, headers=admin_a)
        assert moved.status_code == 422, moved.text
        assert moved.json()["code"] == "validation_error"
        assert moved.json()["fields"] == [{"field": "price_book", "message": f"no price book {book}"}]
    assert (await client.get(f"/v1/customers/{a}")).json()["price_book"] == before
    assert (await client.get(f"/v1/price-books/{book_b}", headers=admin_a)).status_code == 404
    assert (await client.get(f"/v1/customers/{a}/changes")).json()["changes"] == []
    # a book another of its customers is priced with: moved; an unlimited admin key moves anywhere
    assert (await client.patch(f"/v1/customers/{a}", json={"price_book": book_a2}, headers=admin_a)).status_code == 200
    assert (await client.patch(f"/v1/customers/{a}", json={"price_book": book_b})).status_code == 200


async def test_a_journal_filtered_by_a_request_id_two_customers_used_shows_a_limited_key_its_own(
        client: AsyncTestClient):
    """The same request id and event id, used by A and by B: a key limited to A (an auditor's,
    A's own) filtering the journal by it gets A's entries alone, and an unlimited key both's."""
    a, b = await _customers(client, "jreq-a", "jreq-b")
    shared = f"r1-{uuid.uuid4().hex[:6]}"
    for customer in (a, b):
        await _reserve(client, customer, shared, dimensions={"mark": f"m-{customer}"})
        sent = await client.post("/v1/usage-events", json=[_event(shared, customer, 1000)])
        assert sent.json()["accepted"] == 1, sent.text
    for key in (await _key(client, "auditor", [a]), await _key(client, f"customer:{a}", [])):
        page = await client.get("/v1/journal", params={"request_id": shared}, headers=key)
        assert page.status_code == 200, page.text
        assert sorted(e["kind"] for e in page.json()["entries"]) == ["reserve", "usage"]
        assert {e["customer_id"] for e in page.json()["entries"]} == {a} and b not in page.text
    everyone = (await client.get("/v1/journal", params={"request_id": shared})).json()["entries"]
    assert sorted((e["customer_id"], e["kind"]) for e in everyone) == sorted(
        (c, k) for c in (a, b) for k in ("reserve", "usage"))


async def test_another_customers_grant_reversed_under_a_limited_admins_own_customer_is_not_found(
        client: AsyncTestClient):
    """B's lot id under A's path is answered as a lot A does not have, in the words a made-up id
    gets, and B's lot keeps its money; under B's path the key is refused (403)."""
    a, b = await _customers(client, "rev-a", "rev-b")
    granted = await client.post(f"/v1/customers/{b}/grants", json={"amount": "2.00"})
    assert granted.status_code == 201, granted.text
    lot = granted.json()["grant_id"]
    admin_a = await _key(client, "admin", [a])
    answers = {}
    for grant in (lot, f"lot_{uuid.uuid4().hex[:23]}"):
        refused = await client.post(f"/v1/customers/{a}/grants/{grant}/reverse", json={}, headers=admin_a)
        assert refused.status_code == 404 and refused.json()["code"] == "not_found", refused.text
        assert b not in refused.text
        answers[grant] = refused.json()["detail"].replace(grant, "<id>")
    assert len(set(answers.values())) == 1, answers
    assert (await client.post(f"/v1/customers/{b}/grants/{lot}/reverse", json={},
                              headers=admin_a)).status_code == 403
    grants = (await client.get(f"/v1/customers/{b}/wallet")).json()["grants"]
    assert [g["remaining"] for g in grants if g["id"] == lot] == ["2.00"]


def _decoded(cursor: str) -> list:
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


async def test_cursors_taken_from_another_customers_pages_or_crafted_show_a_limited_key_its_own_entries_only(
        client: AsyncTestClient):
    """A cursor is a position, never a permission: one an unlimited key was given in the journal
    pages the limited key on through its own customer's entries alone; one made for the other
    customer's filter or account is refused as that filter is (403) or as an unknown account is
    (404, for a cursor crafted for a made-up code too)."""
    a, b = await _customers(client, "cur-pg-a", "cur-pg-b")
    for _ in range(3):
        for customer in (a, b):
            assert (await client.post(f"/v1/customers/{customer}/topups", json={"amount": "1.00"})).status_code == 201
    auditor_a = await _key(client, "auditor", [a])
    own = [e["id"] for e in (await client.get("/v1/journal", params={"customer": a})).json()["entries"]]
    assert len(own) == 3
    # the unlimited key's first page stops at one of the first customer's entries: page on as A
    first = (await client.get("/v1/journal", params={"from": "2026-01-01T00:00:00Z", "limit": 1})).json()
    seen, cursor = [], first["next_cursor"]
    while cursor is not None:
        page = await client.get("/v1/journal", params={"from": "2026-01-01T00:00:00Z", "limit": 1, "cursor": cursor},
                                headers=auditor_a)
        assert page.status_code == 200, page.text
        assert b not in page.text
        seen += [e["id"] for e in page.json()["entries"]]
        cursor = page.json()["next_cursor"]
    assert set(seen) <= set(own) and seen == sorted(seen) and seen[-1] == own[-1]
    # B's filtered pages: with B named, refused; without, a cursor of other filters
    theirs = (await client.get("/v1/journal", params={"customer": b, "limit": 1})).json()["next_cursor"]
    named = await client.get("/v1/journal", params={"customer": b, "cursor": theirs}, headers=auditor_a)
    assert named.status_code == 403 and named.json()["code"] == "forbidden"
    unnamed = await client.get("/v1/journal", params={"cursor": theirs}, headers=auditor_a)
    assert unnamed.status_code == 400 and unnamed.json()["code"] == "invalid_cursor"
    # B's account statement, its cursor; and the same cursor crafted for a code nobody has
    lot = (await client.get(f"/v1/customers/{b}/wallet")).json()["grants"][0]["id"]
    code, unknown = f"liability:customer:{b}:lot:{lot}", f"liability:customer:nobody-{b}:lot:{lot}"
    made = (await client.get(f"/v1/accounts/{code}/statement", params={"limit": 1})).json()["next_cursor"]
    assert made is not None  # a full page has a cursor (its top-up's credit: the next page is empty)
    _, _, snapshot, position = _decoded(made)
    answers = {}
    for account in (code, unknown):
        crafted = cursors.encode("statement", [account, None, None], snapshot, position)
        assert account != code or crafted == made
        answer = await client.get(f"/v1/accounts/{account}/statement", params={"cursor": crafted}, headers=auditor_a)
        assert answer.status_code == 404, answer.text
        answers[account] = answer.json()["detail"]
    assert answers[code] == answers[unknown]

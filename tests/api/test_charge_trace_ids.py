"""A charge trace of any request id a reservation accepts (1-200 characters of any kind), sent
percent-encoded as one path segment. Was: an id with a "/" (`chat/42`, or `%2F` literally) was a
route-level 404, as were "." and ".."; and the server read the id from the decoded path, so
`trail/` and `/lead` were answered with the trace of another request, `trail` and `lead`."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
import pytest
from litestar.testing import AsyncTestClient

from tests.api import test_journal_api as journal
from tests.api.apps import api_client
from tests.api.test_http_contract import _conforms
from tests.api.test_journal_api import _lifecycle
from tests.api.test_sdk_durability import ADMIN, new_customer


@pytest.fixture(scope="module")
async def client(database_url: str) -> AsyncIterator[AsyncTestClient]:
    async with api_client(database_url, admin="journal-admin", send_admin=True) as c:
        await c.post("/v1/price-books", json=journal.BOOK)
        yield c


def _segment(request_id: str) -> str:
    """One path segment: every reserved character encoded, dots too (clients drop "." segments)."""
    return quote(request_id, safe="").replace(".", "%2E")


async def test_every_request_id_is_traced_as_itself(client):
    customer = (await _lifecycle(client))["customer"]
    tag = uuid.uuid4().hex[:6]
    ids = [f"chat/{tag}", f"x%2Fy{tag}", f"/{tag}", f"{tag}/", f"{tag}//{tag}", ".", "..", f"q?x={tag}",
           f"h#{tag}", f"sp ace{tag}", f"ü{tag}", f"a\\b{tag}", tag]
    reserved = {}
    for request_id in ids:
        held = await client.post("/v1/reservations", json={
            "customer_id": customer, "request_id": request_id, "model": "model-a", "amount": "0.01"})
        assert held.status_code == 201, held.text
        reserved[request_id] = held.json()["id"]
    for request_id in ids:
        trace = await client.get(f"/v1/audit/charges/{_segment(request_id)}", params={"customer_id": customer})
        assert trace.status_code == 200, (request_id, trace.text)
        body = trace.json()
        assert (body["request_id"], body["reservation"]["id"]) == (request_id, reserved[request_id])


async def test_an_id_of_a_reservation_and_a_usage_event_of_one_customer_traces_both_charges(client):
    """Request ids and event ids are apart: a customer may reserve with an id and report a usage
    event of the same id. The trace showed the reservation alone: the event's charge (0.05) and
    its entry were invisible to an auditor following the id."""
    made = await _lifecycle(client)  # a reservation settled: 0.03
    customer, request_id = made["customer"], made["request_id"]
    sent = await client.post("/v1/usage-events", json=[{
        "event_id": request_id, "customer_id": customer, "model": "model-a",
        "timestamp": "2026-11-23T10:00:00Z", "usage": {"input_tokens": 4000}}])
    assert sent.json()["accepted"] == 1, sent.text
    trace = await client.get(f"/v1/audit/charges/{request_id}", params={"customer_id": customer})
    assert trace.status_code == 200, trace.text
    body = trace.json()
    _conforms(client, "/v1/audit/charges/{request_id}", body)
    assert body["kind"] == "reservation" and body["reservation"]["request_id"] == request_id
    assert body["usage_event"]["event_id"] == request_id
    assert body["usage_event"]["usage"]["canonical"]["input_tokens"] == 4000
    reservation_id = body["reservation"]["id"]
    # 4,000 input at $10/M = 0.04 and the call fee
    assert [(c["reservation_id"], c["event_id"], c["charged"]) for c in body["charges"]] == [
        (reservation_id, None, "0.03"), (None, request_id, "0.05")]
    posted = {e["id"]: e["kind"] for e in body["entries"]}
    assert {c["entry_id"] for c in body["charges"]} <= posted.keys()
    assert list(posted) == sorted(posted)  # one journal, in its order
    journal_page = await client.get("/v1/journal", params={"customer": customer, "limit": 100})
    assert journal_page.status_code == 200, journal_page.text
    # every entry of the customer but its top-up is the request's: the reserve, settle, the event
    others = {e["id"] for e in journal_page.json()["entries"] if e["kind"] != "topup"}
    assert others == posted.keys(), (others, posted)
    # a trace of a reservation's request id alone, or of an event alone, says nothing of the other
    alone = (await client.get(f"/v1/audit/charges/{(await _lifecycle(client))['request_id']}")).json()
    assert alone.get("usage_event") is None and [c["event_id"] for c in alone["charges"]] == [None]


async def test_an_unknown_id_with_a_slash_is_a_problem_not_another_request(client):
    customer = (await _lifecycle(client))["customer"]
    tag = uuid.uuid4().hex[:6]
    held = await client.post("/v1/reservations", json={
        "customer_id": customer, "request_id": tag, "model": "model-a", "amount": "0.01"})
    assert held.status_code == 201, held.text
    for unknown in (f"{tag}/", f"/{tag}", f"{tag}/x"):
        trace = await client.get(f"/v1/audit/charges/{_segment(unknown)}", params={"customer_id": customer})
        assert trace.status_code == 404, (unknown, trace.text)
        assert trace.headers["content-type"].startswith("application/problem+json")
        assert trace.json()["code"] == "not_found" and unknown in trace.json()["detail"]


async def test_an_id_no_reservation_could_have_is_a_problem(client):
    for segment, status in (("%00", 422), ("%FF", 422), ("", 404), ("x" * 300, 404)):
        trace = await client.get(f"/v1/audit/charges/{segment}")
        assert trace.status_code == status, (segment, trace.text)
        assert trace.headers["content-type"].startswith("application/problem+json")


def test_through_a_real_server_the_id_is_read_as_sent(live):
    """uvicorn's raw path (the test client's differs: it keeps the query in it)."""
    url, book = live
    customer, tag = new_customer(url, book), uuid.uuid4().hex[:6]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        for request_id in (f"chat/{tag}", f"{tag}/", f"x%2F{tag}", ".."):
            held = http.post("/v1/reservations", json={
                "customer_id": customer, "request_id": request_id, "model": "model-a", "amount": "0.01"})
            assert held.status_code == 201, held.text
            trace = http.get(f"/v1/audit/charges/{_segment(request_id)}", params={"customer_id": customer})
            assert trace.status_code == 200, (request_id, trace.text)
            assert trace.json()["reservation"]["id"] == held.json()["id"]

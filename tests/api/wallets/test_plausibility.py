"""The plausibility guard (issue 9, item 10): 10^12 tokens settled against a $0.05 hold used to
put a billion dollars on a prepaid customer's receivable. Usage past a price book's (or the
customer's) maximum charge per request, or past a context window, is refused with 422
implausible_usage; the hold stays open for a corrected settle; an admin key may force it, and
the charge's trace says so."""
from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

# model-p: $1,000 per million tokens, in and out, and $0.01 a call: 10^12 tokens cost $10^9.
RULES = [
    {"id": "p-in", "model": "model-p", "token_type": "input", "price": "1000"},
    {"id": "p-out", "model": "model-p", "token_type": "output", "price": "1000"},
    {"id": "q-in", "model": "model-q", "token_type": "input", "price": "1", "context_window": 500},
    {"id": "q-out", "model": "model-q", "token_type": "output", "price": "1"},
    {"id": "call", "token_type": "request", "price": "0.01"},
]
BILLION = {"output_tokens": 10**12}


async def bounded_book(client: AsyncTestClient, tag: str) -> str:
    book = f"plausible-{tag}"
    response = await client.post("/v1/price-books", json={
        "id": book, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": RULES,
        "max_charge_per_request": "1.00", "context_window": 100_000})
    assert response.status_code == 201, response.text
    assert response.json()["max_charge_per_request"] == "1.00"
    return book


async def held(client: AsyncTestClient, tag: str, *, model: str = "model-p", amount: str = "0.05",
               **customer: Any) -> tuple[str, str]:
    """A prepaid customer with $0.05 on a bounded book, and a hold of `amount`: (customer, reservation)."""
    book = await bounded_book(client, tag)
    cid = f"pre-{tag}"
    created = await client.post("/v1/customers", json={"id": cid, "price_book": book, **customer})
    assert created.status_code == 201, created.text
    await client.post(f"/v1/customers/{cid}/topups", json={"amount": "0.05"})
    reserved = await client.post("/v1/reservations", json={"customer_id": cid, "request_id": f"req-{tag}",
                                                           "model": model, "amount": amount})
    assert reserved.status_code == 201, reserved.text
    return cid, reserved.json()["id"]


async def state_of(client: AsyncTestClient, cid: str, rid: str) -> tuple[str, str, str]:
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    return (await client.get(f"/v1/reservations/{rid}")).json()["status"], wallet["reserved"], wallet["receivable"]


async def key(client: AsyncTestClient, scope: str) -> tuple[str, dict[str, str]]:
    created = (await client.post("/v1/api-keys", json={"scope": scope})).json()
    return created["id"], {"Authorization": f"Bearer {created['key']}"}


async def test_a_billion_dollar_settle_is_refused_and_the_hold_stays_for_a_corrected_one(
        client: AsyncTestClient, tag: str):
    cid, rid = await held(client, tag)
    refused = await client.post(f"/v1/reservations/{rid}/settle", json={"usage": BILLION})
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["code"] == "implausible_usage"
    assert (problem["limit"], problem["maximum"], problem["value"], problem["source"]) == (
        "max_charge_per_request", "1.00", "1000000000.01", "price_book")
    assert await state_of(client, cid, rid) == ("held", "0.05", "0.00")

    corrected = await client.post(f"/v1/reservations/{rid}/settle", json={"usage": {"output_tokens": 40}})
    assert corrected.status_code == 200, corrected.text
    assert corrected.json()["charged"] == "0.05"  # 40 x $1,000/M + $0.01
    assert await state_of(client, cid, rid) == ("settled", "0.00", "0.00")


async def test_an_admin_key_forces_it_through_and_the_trace_names_the_key(client: AsyncTestClient, tag: str):
    cid, rid = await held(client, tag)
    inference_id, inference = await key(client, "inference")
    refused = await client.post(f"/v1/reservations/{rid}/settle", json={"usage": BILLION, "force": True},
                                headers=inference)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert await state_of(client, cid, rid) == ("held", "0.05", "0.00")

    admin_id, admin = await key(client, "admin")
    forced = await client.post(f"/v1/reservations/{rid}/settle", json={"usage": BILLION, "force": True},
                               headers=admin)
    assert forced.status_code == 200, forced.text
    assert forced.json()["charged"] == "1000000000.01"
    assert await state_of(client, cid, rid) == ("settled", "0.00", "999999999.96")
    trace = (await client.get(f"/v1/audit/charges/req-{tag}", params={"customer_id": cid})).json()
    record = {"by": admin_id, "limit": "max_charge_per_request", "maximum": "1.00",
              "value": "1000000000.01", "source": "price_book"}
    assert trace["charges"][0]["usage"]["forced"] == record
    settle_entry = next(e for e in trace["entries"] if e["kind"] == "settle")
    assert settle_entry["metadata"]["forced"] == record
    assert admin_id != inference_id


async def test_a_customer_override_replaces_the_books_maximum(client: AsyncTestClient, tag: str):
    cid, rid = await held(client, tag, amount="0.02", max_charge_per_request="0.02")
    assert (await client.get(f"/v1/customers/{cid}")).json()["max_charge_per_request"] == "0.02"
    refused = await client.post(f"/v1/reservations/{rid}/settle", json={"usage": {"output_tokens": 40}})
    assert refused.status_code == 422
    assert (refused.json()["maximum"], refused.json()["value"], refused.json()["source"]) == (
        "0.02", "0.05", "customer")
    fits = await client.post(f"/v1/reservations/{rid}/settle", json={"usage": {"output_tokens": 10}})
    assert fits.status_code == 200 and fits.json()["charged"] == "0.02"


async def test_a_hold_past_the_maximum_charge_is_refused_before_the_call_as_its_settle_would_be(
        client: AsyncTestClient, tag: str):
    """A hold past the maximum starts a call whose settle is refused (implausible_usage): the
    reserve is refused so, up front, nothing held and nothing kept for the request id. The book's
    $1.00: a hold of $1.01, or an estimate of 1,000 output tokens at $1,000/M + $0.01 = $1.01; the
    customer's $0.02 replaces it: $0.03 is refused, $0.02 held."""
    book = await bounded_book(client, tag)
    cid = f"hold-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    await client.post(f"/v1/customers/{cid}/topups", json={"amount": "5.00"})
    for body in ({"amount": "1.01"}, {"estimate": {"input_tokens": 0, "max_output_tokens": 1000}}):
        refused = await client.post("/v1/reservations", json={
            "customer_id": cid, "request_id": f"big-{tag}", "model": "model-p", **body})
        assert refused.status_code == 422, refused.text
        problem = refused.json()
        assert (problem["code"], problem["limit"], problem["maximum"], problem["value"], problem["source"]) == (
            "implausible_usage", "max_charge_per_request", "1.00", "1.01", "price_book")
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["reserved"]) == ("5.00", "0.00")
    fits = await client.post("/v1/reservations", json={  # the same request id: the refusals were not kept
        "customer_id": cid, "request_id": f"big-{tag}", "model": "model-p", "amount": "1.00"})
    assert fits.status_code == 201 and fits.json()["amount"] == "1.00"

    own = f"own-{tag}"
    created = await client.post("/v1/customers", json={"id": own, "price_book": book, "max_charge_per_request": "0.02"})
    assert created.status_code == 201, created.text
    await client.post(f"/v1/customers/{own}/topups", json={"amount": "5.00"})
    refused = await client.post("/v1/reservations", json={
        "customer_id": own, "request_id": f"r-{tag}", "model": "model-p", "amount": "0.03"})
    assert (refused.status_code, refused.json()["maximum"], refused.json()["value"], refused.json()["source"]) == (
        422, "0.02", "0.03", "customer")
    assert (await client.post("/v1/reservations", json={
        "customer_id": own, "request_id": f"r-{tag}", "model": "model-p", "amount": "0.02"})).status_code == 201


async def test_tokens_past_the_context_window_of_the_rules_used_are_refused(client: AsyncTestClient, tag: str):
    cid, rid = await held(client, tag, model="model-q")
    refused = await client.post(f"/v1/reservations/{rid}/settle",
                                json={"usage": {"input_tokens": 400, "output_tokens": 101}})
    assert refused.status_code == 422
    assert (refused.json()["limit"], refused.json()["maximum"], refused.json()["value"]) == ("context_window", 500, 501)
    assert (await state_of(client, cid, rid))[0] == "held"
    fits = await client.post(f"/v1/reservations/{rid}/settle",
                             json={"usage": {"input_tokens": 400, "output_tokens": 100}})
    assert fits.status_code == 200, fits.text


async def test_an_implausible_usage_event_is_rejected_and_can_be_sent_again_corrected(
        client: AsyncTestClient, tag: str):
    cid, _ = await held(client, tag)
    event = {"event_id": f"evt-{tag}", "customer_id": cid, "model": "model-p",
             "timestamp": "2026-11-23T10:00:00Z", "usage": BILLION}
    rejected = (await client.post("/v1/usage-events", json=[event])).json()
    assert rejected["accepted"] == 0
    assert [r["code"] for r in rejected["rejected"]] == ["implausible_usage"]
    accepted = (await client.post("/v1/usage-events", json=[{**event, "usage": {"output_tokens": 10}}])).json()
    assert accepted == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert (await client.get(f"/v1/customers/{cid}/wallet")).json()["receivable"] == "0.02"

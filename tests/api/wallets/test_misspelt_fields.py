"""A misspelt field of a wallet call is a 422 naming it, and nothing is written: dropped, it
would make a customer on the default price book (customers cannot be changed afterwards), a
promotional grant that never expires, a final settle where a capture was meant."""
from __future__ import annotations

import uuid

import pytest
from litestar.testing import AsyncTestClient


async def _customer(client: AsyncTestClient, book: str) -> str:
    cid = f"typo-{uuid.uuid4().hex[:10]}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    return cid


def _refused(response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "validation_error"
    assert [f["field"] for f in body["fields"]] == [field], response.text


async def _wallet(client: AsyncTestClient, cid: str) -> tuple[str, str, int]:
    w = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    return w["available"], w["reserved"], len(w["grants"])


@pytest.mark.parametrize(("body", "field"), [
    ({"pricebook": "enterprise"}, "pricebook"), ({"overdraft": "100.00"}, "overdraft"),
    ({"billing_mode": "postpaid"}, "billing_mode")])
async def test_a_customer_with_a_misspelt_field_is_not_created(client: AsyncTestClient, book: str,
                                                                 body: dict, field: str):
    cid = f"typo-{uuid.uuid4().hex[:10]}"
    _refused(await client.post("/v1/customers", json={"id": cid, "price_book": book, **body}), field)
    assert (await client.get(f"/v1/customers/{cid}")).status_code == 404


@pytest.mark.parametrize(("path", "body", "field"), [
    ("topups", {"amount": "5.00", "expire_at": "2099-01-01T00:00:00Z"}, "expire_at"),
    ("grants", {"amount": "5.00", "expires": "2099-01-01T00:00:00Z"}, "expires"),
    ("grants", {"amount": "5.00", "prority": 10}, "prority")])
async def test_credit_with_a_misspelt_field_is_not_granted(client: AsyncTestClient, book: str,
                                                             path: str, body: dict, field: str):
    cid = await _customer(client, book)
    _refused(await client.post(f"/v1/customers/{cid}/{path}", json=body), field)
    assert await _wallet(client, cid) == ("10.00", "0.00", 1)


async def test_a_reservation_with_a_misspelt_field_holds_nothing(client: AsyncTestClient, book: str):
    cid = await _customer(client, book)
    _refused(await client.post("/v1/reservations", json={
        "customer_id": cid, "request_id": "r1", "model": "model-a", "amount": "1.00", "ttl": 30}), "ttl")
    assert await _wallet(client, cid) == ("10.00", "0.00", 1)


async def test_a_settle_with_a_misspelt_field_charges_nothing_and_the_hold_stays_open(
        client: AsyncTestClient, book: str):
    cid = await _customer(client, book)
    held = await client.post("/v1/reservations", json={
        "customer_id": cid, "request_id": "r1", "model": "model-a", "amount": "1.00"})
    rid = held.json()["id"]
    _refused(await client.post(f"/v1/reservations/{rid}/settle", json={
        "usage": {"input_tokens": 1000}, "fnal": False}), "fnal")
    _refused(await client.post(f"/v1/reservations/{rid}/extend", json={"ttl_seconds": 600, "ttl": 1}), "ttl")
    bulk = await client.post("/v1/settlements", json=[{"reservation_id": rid, "usage": {"input_tokens": 1000},
                                                        "captureid": "c1", "final": False}])
    [item] = bulk.json()["results"]
    assert item["status"] == 422 and [f["field"] for f in item["body"]["fields"]] == ["captureid"], bulk.text
    assert (await client.get(f"/v1/reservations/{rid}")).json()["status"] == "held"
    assert await _wallet(client, cid) == ("9.00", "1.00", 1)


@pytest.mark.parametrize(("body", "field"), [
    ({"max_charge_per_requests": "5.00"}, "max_charge_per_requests"),  # no bound on any call
    ({"context_windows": 128_000}, "context_windows"),
    ({"unpriced_policy": "error"}, "unpriced_policy")])
async def test_a_price_book_version_with_a_misspelt_field_is_not_stored(client: AsyncTestClient, tag: str,
                                                                         body: dict, field: str):
    version = {"id": f"typo-{tag}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
               "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "10.00"}]}
    _refused(await client.post("/v1/price-books", json={**version, **body}), field)
    assert (await client.get(f"/v1/price-books/typo-{tag}")).status_code == 404


@pytest.mark.parametrize("misspelt", ["dimension", "dimensons", "demensions"])
async def test_a_usage_event_with_a_misspelt_field_is_refused_and_nothing_is_charged(
        client: AsyncTestClient, book: str, misspelt: str):
    # Dropped, {"dimension": {"feature": "chat"}} is usage no budget or report by feature sees.
    cid = await _customer(client, book)
    good = {"event_id": "e1", "customer_id": cid, "model": "model-a",
            "timestamp": "2026-01-02T00:00:00Z", "usage": {"input_tokens": 100_000}}
    typo = {**good, "event_id": "e2", misspelt: {"feature": "chat"}}
    _refused(await client.post("/v1/usage-events", json=[good, typo]), f"[1].{misspelt}")
    assert await _wallet(client, cid) == ("10.00", "0.00", 1)  # not even the well-formed event's $1.01
    again = (await client.post("/v1/usage-events", json=[good])).json()
    assert (again["accepted"], again["duplicates"]) == (1, 0)  # e1 was never recorded
    assert await _wallet(client, cid) == ("8.99", "0.00", 1)  # 100k input at $10/1M + $0.01 a call

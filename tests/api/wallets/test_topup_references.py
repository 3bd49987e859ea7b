"""A top-up's `reference` is the payment's id at the processor or bank: one payment is credited
once, as an invoice payment's or a cash refund's reference is. Before, the same payment recorded
twice (a retried webhook, a second worker, a new Idempotency-Key) credited it twice."""
from __future__ import annotations

import uuid

from litestar.testing import AsyncTestClient


async def _customer(client: AsyncTestClient, book: str) -> str:
    cid = f"ref-{uuid.uuid4().hex[:10]}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    return cid


async def _lots(client: AsyncTestClient, cid: str) -> tuple[str, list[str]]:
    w = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    return w["available"], [g["granted"] for g in w["grants"]]


async def test_a_payment_reference_sent_again_is_credited_once(client: AsyncTestClient, book: str):
    cid = await _customer(client, book)
    first = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "100.00", "reference": "pi_123"},
                              headers={"Idempotency-Key": f"a-{cid}"})
    again = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "100.00", "reference": "pi_123"},
                              headers={"Idempotency-Key": f"b-{cid}"})
    bare = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "100.00", "reference": "pi_123"})
    assert first.status_code == 201, first.text
    assert again.status_code == 200 and bare.status_code == 200, (again.text, bare.text)
    for answer in (again, bare):
        assert (answer.json()["grant_id"], answer.json()["entry_id"]) == (first.json()["grant_id"],
                                                                        first.json()["entry_id"])
    assert await _lots(client, cid) == ("100.00", ["100.00"])  # was 300.00 in three lots


async def test_a_payment_reference_with_another_amount_is_a_conflict(client: AsyncTestClient, book: str):
    cid = await _customer(client, book)
    assert (await client.post(f"/v1/customers/{cid}/topups",
                              json={"amount": "100.00", "reference": "pi_456"})).status_code == 201
    other = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "50.00", "reference": "pi_456"})
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict", other.text
    assert other.json()["reference"] == "pi_456"
    assert await _lots(client, cid) == ("100.00", ["100.00"])


async def test_top_ups_without_a_reference_and_other_customers_references_are_their_own(
        client: AsyncTestClient, book: str):
    cid, other = await _customer(client, book), await _customer(client, book)
    for _ in range(2):
        assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "5.00"})).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups",
                              json={"amount": "5.00", "reference": "pi_789"})).status_code == 201
    assert (await client.post(f"/v1/customers/{other}/topups",
                              json={"amount": "5.00", "reference": "pi_789"})).status_code == 201
    assert await _lots(client, cid) == ("15.00", ["5.00", "5.00", "5.00"])
    assert await _lots(client, other) == ("5.00", ["5.00"])

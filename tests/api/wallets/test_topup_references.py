"""A top-up's `reference` is the payment's id at the processor or bank: one payment is credited
once, as an invoice payment's or a cash refund's reference is. Before, the same payment recorded
twice (a retried webhook, a second worker, a new Idempotency-Key) credited it twice."""
from __future__ import annotations

import uuid

import psycopg
from litestar.testing import AsyncTestClient

from tests.api.wallets.conftest import BOOK


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


async def test_one_reference_in_one_lane_for_customers_of_two_currencies_credits_each_its_own(
        client: AsyncTestClient, book: str, database_url: str, tag: str):
    # three customers of one lane (whose top-ups' references the load reads in that lane's tables),
    # two in dollars and one in euros, each paid under the payment reference "pi_shared": each is
    # credited its own amount once, sent again it is answered with its own grant, and none is taken
    # for another's
    eur = f"eur-{tag}"
    made = await client.post("/v1/price-books", json={**BOOK, "id": eur, "currency": "EUR"})
    assert made.status_code == 201, made.text
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        lane_of = {}
        for i in range(400):
            cid = f"ref-{tag}-{i}"
            lane_of[cid] = (await (await conn.execute("SELECT ledger_lane(%s)", (cid,))).fetchone())[0]
    lane = max(set(lane_of.values()), key=list(lane_of.values()).count)
    usd_a, usd_b, euro = [c for c, n in lane_of.items() if n == lane][:3]
    for cid, price_book, currency in ((usd_a, book, "USD"), (usd_b, book, "USD"), (euro, eur, "EUR")):
        made = await client.post("/v1/customers", json={"id": cid, "price_book": price_book, "currency": currency})
        assert made.status_code == 201, made.text
    amounts = {usd_a: "100.00", usd_b: "40.00", euro: "100.00"}
    firsts = [await client.post(f"/v1/customers/{cid}/topups", json={"amount": a, "reference": "pi_shared"})
              for cid, a in amounts.items()]
    assert [f.status_code for f in firsts] == [201, 201, 201], [f.text for f in firsts]
    for (cid, amount), first in zip(amounts.items(), firsts, strict=True):
        again = await client.post(f"/v1/customers/{cid}/topups", json={"amount": amount, "reference": "pi_shared"})
        assert again.status_code == 200, again.text
        assert again.json()["grant_id"] == first.json()["grant_id"]
        assert await _lots(client, cid) == (amount, [amount])
    other = await client.post(f"/v1/customers/{usd_b}/topups", json={"amount": "100.00", "reference": "pi_shared"})
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict", other.text
    assert await _lots(client, usd_b) == ("40.00", ["40.00"])

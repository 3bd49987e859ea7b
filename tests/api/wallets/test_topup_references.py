"""A top-up's `reference` is the payment's id at the processor or bank: one payment is credited
once, as an invoice payment's or a cash refund's reference is. Before, the same payment recorded
twice (a retried webhook, a second worker, a new Idempotency-Key) credited it twice."""
from __future__ import annotations

import asyncio
import uuid

import httpx
import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg.types.json import Jsonb

from tests.advisory_locks import waiting_on_a_lock
from tests.api.apps import ADMIN_KEY, live_server
from tests.api.wallets.conftest import BOOK
from wallets.engine import lane_lock


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


async def test_the_database_refuses_a_second_top_up_entry_under_one_reference(
        client: AsyncTestClient, book: str, database_url: str):
    # the rule answers a reference sent again as its first top-up; the database is the guard for
    # what writes around it: a balanced top-up entry of 100.00 more into the customer's lot written
    # in raw SQL under its reference is refused (23505: it committed before, 200.00 in the lot);
    # under another reference, or none, it is not
    cid = await _customer(client, book)
    first = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "100.00", "reference": "pi_raw"})
    assert first.status_code == 201, first.text
    lot = f"liability:customer:{cid}:lot:{first.json()['grant_id']}"
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            async with conn.transaction():
                await _raw_top_up(conn, cid, "again", lot, {"lot_id": "x", "reference": "pi_raw"})
        for key, metadata in (("other", {"lot_id": "y", "reference": "pi_other"}), ("none", {"lot_id": "z"})):
            async with conn.transaction(force_rollback=True):  # written, then rolled back
                await _raw_top_up(conn, cid, key, lot, metadata)
    assert await _lots(client, cid) == ("100.00", ["100.00"])


async def _raw_top_up(conn: psycopg.AsyncConnection, cid: str, key: str, lot: str, metadata: dict) -> None:
    """A top-up entry of 100.00 (cash in, the lot credited) and its postings, in raw SQL."""
    await conn.execute(
        """WITH e AS (
               INSERT INTO journal_entries (lane, key, request_hash, kind, customer_id, occurred_at, metadata)
               VALUES (ledger_entry_lane(%(c)s), %(k)s, sha256(convert_to(%(k)s, 'UTF8')), 'topup', %(c)s, now(),
                       %(m)s) RETURNING id, lane)
           INSERT INTO postings (lane, entry_id, account_id, stripe, amount)
           SELECT e.lane, e.id, a.id, CASE WHEN a.stripes > 1 THEN e.lane %% a.stripes ELSE 0 END, l.amount
             FROM e, (VALUES ('asset:platform:cash:USD', 100000000000), (%(lot)s, -100000000000)) l (code, amount)
             JOIN accounts a ON a.code = l.code""",
        {"c": cid, "k": f"by-hand:{key}:{cid}", "m": Jsonb(metadata), "lot": lot})


async def test_one_payment_posted_at_once_to_two_servers_is_credited_once(book: str, database_url: str):
    # two servers (each its own engine and connections) on one database are sent the same payment,
    # 100.00 under pi_race, four times each under eight Idempotency-Keys, while another session
    # holds the customer's lane lock; once both servers wait for it, it is let go: one 201, seven
    # 200 with its grant and entry, 100.00 in one lot, one top-up entry
    cid = f"race-{uuid.uuid4().hex[:10]}"
    with live_server(database_url) as one, live_server(database_url) as two:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=one, headers=admin, timeout=60) as a, \
                httpx.AsyncClient(base_url=two, headers=admin, timeout=60) as b:
            assert (await a.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other:
                lane = (await (await other.execute("SELECT ledger_lane(%s)", (cid,))).fetchone())[0]
                await other.execute("SELECT pg_advisory_lock(%s)", (lane_lock(lane),))
                posts = [asyncio.create_task((a, b)[i % 2].post(
                    f"/v1/customers/{cid}/topups", json={"amount": "100.00", "reference": "pi_race"},
                    headers={"Idempotency-Key": f"race-{i}"})) for i in range(8)]
                await waiting_on_a_lock(other, sessions=2)
                await other.execute("SELECT pg_advisory_unlock(%s)", (lane_lock(lane),))
                answers = await asyncio.wait_for(asyncio.gather(*posts), 60)
                entries = (await (await other.execute(
                    "SELECT count(*) FROM journal_entries WHERE customer_id = %s AND kind = 'topup'",
                    (cid,))).fetchone())[0]
            assert sorted(r.status_code for r in answers) == [200] * 7 + [201], [r.text for r in answers]
            assert len({(r.json()["grant_id"], r.json()["entry_id"]) for r in answers}) == 1
            w = (await b.get(f"/v1/customers/{cid}/wallet")).json()
    assert (w["available"], [g["granted"] for g in w["grants"]], entries) == ("100.00", ["100.00"], 1)

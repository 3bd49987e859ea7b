"""Two different calls on one customer at once: each sees the other's effect wholly or not at
all, as one run after the other would. Over real HTTP (the `live` server): the test client runs
one request at a time."""
from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import httpx
import psycopg

from ledger.db import lock_key
from tests.api.test_sdk_durability import ADMIN
from wallets.engine import lane_lock

USAGE = {"input_tokens": 1000, "output_tokens": 400}  # $0.010 + $0.008 + $0.01 a call = $0.028


async def _waiting_on_a_lock(conn: psycopg.AsyncConnection) -> None:
    """Until a session waits for an advisory lock (PostgreSQL tells no one: asked every 5 ms, up to 60 s)."""
    for _ in range(12_000):
        waiting = await (await conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).fetchone()
        if waiting[0]:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("no session waited for an advisory lock")


async def test_overrides_put_without_a_time_never_take_effect_before_a_call_already_charged_without_them(
        live: tuple[str, str], tag: str, database_url: str):
    """A PUT of a customer's overrides without `effective_from` takes effect "now". Here it waits
    for its transaction (another session holds the customer's lane lock, and the lock the PUT
    took alone before: "price-overrides:<customer>") while a call is reserved and settled: the
    call is charged as the version in force at its reservation says (100 % off once in force),
    whichever commits first. Before, the version took effect from when the PUT arrived, 60 ms
    before the call's reservation, and the call, charged before the version committed, paid
    full price ($0.028 for 0.00): a new version changed which version rated usage already
    charged, with nothing to tell a re-rate was due."""
    url, book = live
    cid = f"ovr-{tag}-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60) as client:
        await _race(client, cid, book, database_url)


async def _race(client: httpx.AsyncClient, cid: str, book: str, database_url: str) -> None:
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other:
        lane = (await (await other.execute("SELECT ledger_lane(%s)", (cid,))).fetchone())[0]
        held = [lane_lock(lane), lock_key("price-overrides:" + cid)]
        for key in held:
            await other.execute("SELECT pg_advisory_lock(%s)", (key,))
        put = asyncio.create_task(client.put(f"/v1/customers/{cid}/price-overrides",
                                             json={"discounts": [{"id": "all", "percent": "100"}]}))
        await _waiting_on_a_lock(other)
        await other.execute("SELECT pg_advisory_unlock(%s)", (held[0],))
        reserved = await client.post("/v1/reservations", json={
            "customer_id": cid, "request_id": "r1", "model": "model-a", "amount": "0.10"})
        assert reserved.status_code == 201, reserved.text
        settled = await client.post(f"/v1/reservations/{reserved.json()['id']}/settle", json={"usage": USAGE})
        assert settled.status_code == 200, settled.text
        await other.execute("SELECT pg_advisory_unlock(%s)", (held[1],))
        answered = await asyncio.wait_for(put, 30)
    assert answered.status_code == 201, answered.text
    in_force_from = datetime.fromisoformat(answered.json()["effective_from"])
    reserved_at = datetime.fromisoformat((await client.get(f"/v1/reservations/{reserved.json()['id']}")).json()
                                         ["created_at"])
    expected = "0.00" if reserved_at >= in_force_from else "0.028"
    assert settled.json()["charged"] == expected, (in_force_from, reserved_at, settled.json()["charged"])

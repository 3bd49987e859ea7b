"""How many budgets a customer may have, and the admin listing of every customer's budgets a page
at a time."""
from __future__ import annotations

import asyncio

from litestar.testing import AsyncTestClient


async def _customer(client: AsyncTestClient, cid: str, book: str) -> str:
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    return cid


async def _budgets(client: AsyncTestClient, cid: str, count: int, headers: dict | None = None) -> list[str]:
    async def one(i: int) -> str:
        made = await client.post("/v1/budgets", headers=headers, json={
            "customer_id": cid, "window": "day", "metric": "requests", "limit": 1000 + i, "name": f"b{i}"})
        assert made.status_code == 201, made.text
        return made.json()["id"]

    ids: list[str] = []
    for start in range(0, count, 10):  # ten at a time: the session's pool is shared
        ids += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 10))))
    return ids


async def test_a_customer_has_at_most_100_live_budgets_and_a_deleted_one_makes_room(
        client: AsyncTestClient, tag: str, book: str):
    cid = await _customer(client, f"cap-{tag}", book)
    made = await client.post("/v1/api-keys", json={"scope": f"customer:{cid}"})
    own = {"Authorization": f"Bearer {made.json()['key']}"}
    ids = await _budgets(client, cid, 60) + await _budgets(client, cid, 35, own)
    racing = await asyncio.gather(*(client.post("/v1/budgets", json={
        "customer_id": cid, "window": "minute", "metric": "tokens", "limit": 10 + i}) for i in range(10)))
    assert sorted(r.status_code for r in racing) == [201] * 5 + [409] * 5  # counted under the customer's lock
    ids += [r.json()["id"] for r in racing if r.status_code == 201]
    # before: the 101st (and the 10,000th) was 201, and every reserve of the customer matched each
    for headers in (None, own):
        refused = await client.post("/v1/budgets", headers=headers, json={
            "customer_id": cid, "window": "day", "metric": "requests", "limit": 5})
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        body = refused.json()
        assert (body["code"], body["customer_id"], body["limit"]) == ("too_many_budgets", cid, 100)
    listed = (await client.get(f"/v1/budgets?customer_id={cid}&limit=1000")).json()["budgets"]
    assert sorted(b["id"] for b in listed) == sorted(ids)  # nothing written
    assert (await client.delete(f"/v1/budgets/{ids[0]}")).status_code == 200
    again = await client.post("/v1/budgets", headers=own, json={
        "customer_id": cid, "window": "day", "metric": "requests", "limit": 5})
    assert again.status_code == 201, again.text

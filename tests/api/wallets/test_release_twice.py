"""A release sent again without an Idempotency-Key answers the first release again (200, replayed,
API.md: a replay returns the first response): the entry it tells is the one the first posted."""

from __future__ import annotations

from litestar.testing import AsyncTestClient


async def test_a_keyless_second_release_tells_the_first_release_s_entry(client: AsyncTestClient, tag: str, book: str):
    cid = f"release-twice-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "name": "R", "price_book": book})).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"})).status_code == 201
    held = await client.post(
        "/v1/reservations", json={"customer_id": cid, "request_id": "r", "model": "model-a", "amount": "0.10"}
    )
    assert held.status_code == 201
    rid = held.json()["id"]
    first = await client.post(f"/v1/reservations/{rid}/release")
    again = await client.post(f"/v1/reservations/{rid}/release")
    assert first.status_code == again.status_code == 200
    # the whole hold of 0.10 given back once, by one entry (release:<id>): told both times
    assert first.json()["released"] == again.json()["released"] == "0.10"
    assert isinstance(first.json()["entry_id"], int)
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"

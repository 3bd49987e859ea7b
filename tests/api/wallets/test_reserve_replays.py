"""A reserve's `request_id` sent again answers 200 with the same reservation (API.md). It answered
the first answer, `"held"`, whatever became of the reservation since: released, settled or
expired, the caller retrying the id believed it still held credit. It answers the reservation as
it is now: the same id and hold, its status and expiry of now. Nothing is held again. Under an
`Idempotency-Key` a replay answers the first response, status and body, as every mutating call's.

Book: the demo's (model-a $10/M input, $20/M output, $0.01 a call); $10.00 of credit."""
from __future__ import annotations

from datetime import datetime, timedelta

from litestar.testing import AsyncTestClient

from wallets.expiry import expire_reservations


async def _reserve(client: AsyncTestClient, cid: str, request_id: str, headers: dict | None = None):
    return await client.post("/v1/reservations", json={
        "customer_id": cid, "request_id": request_id, "model": "model-a", "amount": "2.00", "ttl_seconds": 60},
        headers=headers or {})


async def test_a_request_id_sent_again_answers_its_reservation_as_it_is_now(
        client: AsyncTestClient, db, book: str, tag: str):
    cid = f"again-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    first = {rid: (await _reserve(client, cid, rid)).json() for rid in ("r1", "r2", "r3", "r4")}
    assert {rid: r["status"] for rid, r in first.items()} == dict.fromkeys(first, "held")

    still = await _reserve(client, cid, "r1")  # untouched: the first answer
    assert (still.status_code, still.json()) == (200, first["r1"])
    extended = (await client.post(f"/v1/reservations/{first['r1']['id']}/extend", json={"ttl_seconds": 3600})).json()
    settled = await client.post(f"/v1/reservations/{first['r2']['id']}/settle",
                                json={"usage": {"input_tokens": 1000, "output_tokens": 500}})  # $0.03
    assert settled.json()["charged"] == "0.03"
    assert (await client.post(f"/v1/reservations/{first['r3']['id']}/release")).status_code == 200
    expires_at = datetime.fromisoformat(first["r4"]["expires_at"].replace("Z", "+00:00"))
    # past the first expiry: r4's hold given back; r1, extended to an hour, is not due (the statuses
    # below say which; the count is the shared database's, where other files' holds may be due too)
    assert await expire_reservations(db, expires_at + timedelta(seconds=1)) >= 1
    again = {rid: await _reserve(client, cid, rid) for rid in first}
    assert {rid: a.status_code for rid, a in again.items()} == dict.fromkeys(first, 200)
    assert {rid: a.json()["status"] for rid, a in again.items()} == {
        "r1": "held", "r2": "settled", "r3": "released", "r4": "expired"}
    assert again["r1"].json()["expires_at"] == extended["expires_at"]  # its expiry of now
    for rid, a in again.items():  # the same reservation and hold otherwise
        assert {k: v for k, v in a.json().items() if k not in ("status", "expires_at")} == {
            k: v for k, v in first[rid].items() if k not in ("status", "expires_at")}
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["reserved"]) == ("7.97", "2.00")  # 10 - 0.03 - r1's 2.00


async def test_under_an_idempotency_key_a_replay_answers_the_first_response(
        client: AsyncTestClient, book: str, tag: str):
    cid = f"keyed-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    headers = {"Idempotency-Key": f"k-{tag}"}
    first = await _reserve(client, cid, "r1", headers)
    assert (await client.post(f"/v1/reservations/{first.json()['id']}/release")).status_code == 200
    again = await _reserve(client, cid, "r1", headers)
    assert (again.status_code, again.content) == (201, first.content)
    assert again.json()["status"] == "held"  # as first answered; the id alone answers "released"
    assert (await _reserve(client, cid, "r1")).json()["status"] == "released"

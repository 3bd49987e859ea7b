"""`POST /v1/reservations/{id}/extend`: a call running longer than its TTL keeps its hold. The
expiry job leaves an extended reservation alone until its new expiry, and only then gives the
hold back; what cannot be extended is refused with a stable code, as problem+json."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from litestar.testing import AsyncTestClient

from wallets.expiry import expire_reservations


async def _customer(client: AsyncTestClient, cid: str, book: str, amount: str = "10.00") -> str:
    assert (await client.post("/v1/customers", json={"id": cid, "currency": "USD", "price_book": book})
            ).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": amount})).status_code == 201
    return cid


async def _reserve(client: AsyncTestClient, cid: str, request_id: str, ttl_seconds: int = 60) -> dict:
    response = await client.post("/v1/reservations", json={
        "customer_id": cid, "request_id": request_id, "model": "model-a", "amount": "2.00",
        "ttl_seconds": ttl_seconds})
    assert response.status_code == 201, response.text
    return response.json()


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _status(client: AsyncTestClient, rid: str) -> str:
    return (await client.get(f"/v1/reservations/{rid}")).json()["status"]


async def test_an_extended_hold_outlives_its_first_ttl_and_expires_at_its_new_one(
        client: AsyncTestClient, db, book: str, tag: str):
    cid = await _customer(client, f"ext-{tag}", book)
    r = await _reserve(client, cid, "r1", ttl_seconds=60)
    asked = datetime.now(UTC)
    response = await client.post(f"/v1/reservations/{r['id']}/extend", json={"ttl_seconds": 3600})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["status"]) == (r["id"], "held")
    new_expiry = _at(body["expires_at"])
    assert asked + timedelta(seconds=3599) <= new_expiry <= datetime.now(UTC) + timedelta(seconds=3600)
    assert _at((await client.get(f"/v1/reservations/{r['id']}")).json()["expires_at"]) == new_expiry

    # the job run past the old expiry leaves it held: the money stays reserved
    await expire_reservations(db, _at(r["expires_at"]) + timedelta(seconds=1))
    assert await _status(client, r["id"]) == "held"
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["reserved"]) == ("8.00", "2.00")
    # past the new one, it gives the hold back
    await expire_reservations(db, new_expiry + timedelta(seconds=1))
    assert await _status(client, r["id"]) == "expired"
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["reserved"]) == ("10.00", "0.00")
    refused = await client.post(f"/v1/reservations/{r['id']}/extend", json={"ttl_seconds": 3600})
    assert (refused.status_code, refused.json()["code"]) == (409, "reservation_closed")
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["reservation_status"] == "expired"


async def test_an_extension_is_refused_when_it_is_shorter_unknown_or_the_reservation_is_closed(
        client: AsyncTestClient, book: str, tag: str):
    cid = await _customer(client, f"ext-no-{tag}", book)
    r = await _reserve(client, cid, "r1", ttl_seconds=600)
    shorter = await client.post(f"/v1/reservations/{r['id']}/extend", json={"ttl_seconds": 60})
    assert (shorter.status_code, shorter.json()["code"]) == (409, "extension_too_short")
    assert shorter.json()["expires_at"] == r["expires_at"]  # spelled as the reservation's (it said +00:00)
    for bad in ({"ttl_seconds": 0}, {"ttl_seconds": 7 * 86400 + 1}, {}, {"ttl_seconds": "60"}):
        invalid = await client.post(f"/v1/reservations/{r['id']}/extend", json=bad)
        assert (invalid.status_code, invalid.json()["code"]) == (422, "validation_error"), bad
    unknown = await client.post("/v1/reservations/res_nothere/extend", json={"ttl_seconds": 60})
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")

    settled = await _reserve(client, cid, "r2")
    assert (await client.post(f"/v1/reservations/{settled['id']}/settle",
                              json={"usage": {"input_tokens": 1000}})).status_code == 200
    released = await _reserve(client, cid, "r3")
    assert (await client.post(f"/v1/reservations/{released['id']}/release", json={})).status_code == 200
    for closed, status in ((settled, "settled"), (released, "released")):
        refused = await client.post(f"/v1/reservations/{closed['id']}/extend", json={"ttl_seconds": 3600})
        assert (refused.status_code, refused.json()["code"]) == (409, "reservation_closed")
        assert refused.json()["reservation_status"] == status
    assert await _status(client, r["id"]) == "held"


async def test_an_extension_with_an_idempotency_key_is_answered_once(client: AsyncTestClient, book: str, tag: str):
    cid = await _customer(client, f"ext-key-{tag}", book)
    r = await _reserve(client, cid, "r1")
    headers = {"Idempotency-Key": f"extend-{tag}"}
    first = await client.post(f"/v1/reservations/{r['id']}/extend", json={"ttl_seconds": 900}, headers=headers)
    again = await client.post(f"/v1/reservations/{r['id']}/extend", json={"ttl_seconds": 900}, headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.headers.get("idempotent-replayed") == "true" and again.json() == first.json()
    other = await client.post(f"/v1/reservations/{r['id']}/extend", json={"ttl_seconds": 950}, headers=headers)
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict")


async def test_a_key_limited_to_customers_cannot_extend_another_customers_reservation(
        client: AsyncTestClient, book: str, tag: str):
    mine = await _customer(client, f"ext-a-{tag}", book)
    theirs = await _customer(client, f"ext-b-{tag}", book)
    key = await client.post("/v1/api-keys", json={"scope": "inference", "customers": [mine]})
    assert key.status_code == 201, key.text
    auth = {"Authorization": f"Bearer {key.json()['key']}"}
    their_hold = await _reserve(client, theirs, "r1")
    refused = await client.post(f"/v1/reservations/{their_hold['id']}/extend", json={"ttl_seconds": 3600},
                                headers=auth)
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    assert _at((await client.get(f"/v1/reservations/{their_hold['id']}")).json()["expires_at"]) \
        == _at(their_hold["expires_at"])
    my_hold = await _reserve(client, mine, "r1")
    mine_extended = await client.post(f"/v1/reservations/{my_hold['id']}/extend", json={"ttl_seconds": 3600},
                                      headers=auth)
    assert mine_extended.status_code == 200, mine_extended.text


async def test_a_reservation_past_its_expiry_reads_expired_before_the_job_gives_its_hold_back(
        client: AsyncTestClient, db, book: str, tag: str):
    """Once `expires_at` has passed, the reservation is expired whatever is asked: extend says so
    (409 reservation_closed) and so does its read, while its hold stays reserved until the expiry
    job gives it back (a late settle is still charged). The read showed `held` until the job ran."""
    cid = await _customer(client, f"past-{tag}", book)
    r = await _reserve(client, cid, "r1", ttl_seconds=60)
    assert await _status(client, r["id"]) == "held"
    wallets = client.app.state.services.wallets
    clocks = wallets.clock, wallets.engine.clock
    later = _at(r["expires_at"]) + timedelta(seconds=1)  # the server's clock, a minute and a second on
    wallets.clock = wallets.engine.clock = lambda: later
    try:
        refused = await client.post(f"/v1/reservations/{r['id']}/extend", json={"ttl_seconds": 3600})
        assert (refused.status_code, refused.json()["code"]) == (409, "reservation_closed")
        view = (await client.get(f"/v1/reservations/{r['id']}")).json()
        assert (view["status"], view["closed_at"], view["released"]) == ("expired", None, "0.00")
        assert [h["amount"] for h in view["holds"]] == ["2.00"]  # the money moves when the job runs
        trace = (await client.get("/v1/audit/charges/r1", params={"customer_id": cid})).json()
        assert trace["reservation"]["status"] == "expired", trace
        wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
        assert (wallet["available"], wallet["reserved"]) == ("8.00", "2.00")
    finally:
        wallets.clock, wallets.engine.clock = clocks
    await expire_reservations(db, later)
    view = (await client.get(f"/v1/reservations/{r['id']}")).json()
    assert (view["status"], view["released"]) == ("expired", "2.00")

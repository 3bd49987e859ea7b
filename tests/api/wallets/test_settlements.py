"""POST /v1/settlements: up to 1,000 settles in one call, each answered as its single settle
would be, each under its own idempotency key, shared with the single route."""
from __future__ import annotations

import asyncio
import uuid

import httpx
from litestar.testing import AsyncTestClient

USAGE = {"input_tokens": 1000, "output_tokens": 400}  # $0.010 + $0.008 + $0.01 a call = $0.028
TOO_MUCH = {"output_tokens": 10**8}  # $2,000: past the customer's $1.00 per request


async def customer(client: httpx.AsyncClient, book: str, tag: str, **extra) -> str:
    cid = f"bulk-{tag}-{uuid.uuid4().hex[:6]}"
    created = await client.post("/v1/customers", json={"id": cid, "price_book": book, **extra})
    assert created.status_code == 201, created.text
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    return cid


async def reserve(client: httpx.AsyncClient, cid: str) -> str:
    reserved = await client.post("/v1/reservations", json={
        "customer_id": cid, "request_id": f"req-{uuid.uuid4().hex}", "model": "model-a", "amount": "0.10"})
    assert reserved.status_code == 201, reserved.text
    return reserved.json()["id"]


async def wallet(client: httpx.AsyncClient, cid: str) -> tuple[str, str]:
    w = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    return w["available"], w["reserved"]


async def test_each_settle_is_answered_on_its_own_ok_not_found_closed_forbidden_implausible_invalid(
        client: AsyncTestClient, book: str, tag: str):
    own = await customer(client, book, tag, max_charge_per_request="1.00")
    other = await customer(client, book, tag)
    ok, closed, implausible, theirs = (await reserve(client, own), await reserve(client, own),
                                       await reserve(client, own), await reserve(client, other))
    assert (await client.post(f"/v1/reservations/{closed}/release")).status_code == 200
    limited = (await client.post("/v1/api-keys", json={"scope": "inference", "customers": [own]})).json()
    items = [
        {"reservation_id": ok, "usage": USAGE},
        {"reservation_id": f"res_missing_{tag}", "usage": USAGE},
        {"reservation_id": closed, "usage": USAGE},
        {"reservation_id": theirs, "usage": USAGE},
        {"reservation_id": implausible, "usage": TOO_MUCH},
        {"reservation_id": implausible, "usage": {"input_tokens": -1}},
        {"usage": USAGE},
        "not an object",
    ]
    response = await client.post("/v1/settlements", json=items, headers={"Authorization": f"Bearer {limited['key']}"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["status"], r["body"].get("code")) for r in results] == [
        (200, None), (404, "not_found"), (409, "reservation_closed"), (403, "forbidden"),
        (422, "implausible_usage"), (422, "validation_error"), (422, "validation_error"),
        (422, "validation_error")]
    assert results[0]["body"]["charged"] == "0.028" and results[0]["body"]["status"] == "settled"
    assert results[0]["reservation_id"] == ok and not results[0]["replayed"]
    assert other not in results[3]["body"]["detail"], "a refusal reveals nothing of another customer"
    assert "reservation_id" in results[6]["body"]["detail"]
    assert await wallet(client, own) == ("9.872", "0.10")  # 10 - 0.028 - the open hold of 0.10
    assert await wallet(client, other) == ("9.90", "0.10")  # untouched: its hold is still open
    corrected = await client.post("/v1/settlements", json=[{"reservation_id": implausible, "usage": USAGE}])
    assert corrected.json()["results"][0]["status"] == 200, "a refused settle leaves the hold for a corrected one"


async def test_a_replay_answers_what_the_first_answered_and_charges_nothing_more(
        client: AsyncTestClient, book: str, tag: str):
    cid = await customer(client, book, tag)
    keyed, derived, capture = await reserve(client, cid), await reserve(client, cid), await reserve(client, cid)
    items = [{"reservation_id": keyed, "usage": USAGE, "idempotency_key": f"k-{tag}"},
             {"reservation_id": derived, "usage": USAGE},
             {"reservation_id": capture, "usage": {"output_tokens": 100}, "final": False, "capture_id": "c1"}]
    first = (await client.post("/v1/settlements", json=items)).json()["results"]
    again = (await client.post("/v1/settlements", json=items)).json()["results"]
    assert [r["status"] for r in first] == [200, 200, 200] and [r["replayed"] for r in again] == [True] * 3
    assert [r["body"] for r in again] == [r["body"] for r in first]
    assert [r["idempotency_key"] for r in again] == [r["idempotency_key"] for r in first]
    assert first[0]["idempotency_key"] == f"k-{tag}" and first[1]["idempotency_key"].startswith("settle-")
    # 0.028 twice, 100 output tokens ($0.002) and the call ($0.01) once; the capture's hold stays
    assert await wallet(client, cid) == ("9.844", "0.088")
    other_body = await client.post("/v1/settlements", json=[{**items[0], "usage": {"input_tokens": 1}}])
    assert other_body.json()["results"][0]["status"] == 409
    assert other_body.json()["results"][0]["body"]["code"] == "idempotency_conflict"


async def test_a_settle_sent_singly_and_in_bulk_under_one_key_is_charged_once(
        client: AsyncTestClient, book: str, tag: str):
    cid = await customer(client, book, tag)
    single_first, bulk_first = await reserve(client, cid), await reserve(client, cid)
    single = await client.post(f"/v1/reservations/{single_first}/settle", json={"usage": USAGE},
                               headers={"Idempotency-Key": f"one-{tag}"})
    assert single.status_code == 200
    bulk = (await client.post("/v1/settlements", json=[
        {"reservation_id": single_first, "usage": USAGE, "idempotency_key": f"one-{tag}"},
        {"reservation_id": bulk_first, "usage": USAGE, "idempotency_key": f"two-{tag}"}])).json()["results"]
    assert bulk[0]["replayed"] and bulk[0]["body"] == single.json()
    after = await client.post(f"/v1/reservations/{bulk_first}/settle", json={"usage": USAGE},
                              headers={"Idempotency-Key": f"two-{tag}"})
    assert after.headers.get("idempotent-replayed") == "true" and after.json() == bulk[1]["body"]
    assert await wallet(client, cid) == ("9.944", "0.00")  # two settles of 0.028, each once
    for rid in (single_first, bulk_first):
        assert len((await client.get(f"/v1/reservations/{rid}")).json()["charges"]) == 1


async def test_more_than_1000_settles_or_a_body_not_a_list_is_refused_whole(client: AsyncTestClient):
    many = await client.post("/v1/settlements", json=[{"reservation_id": "r", "usage": USAGE}] * 1001)
    assert many.status_code == 422 and many.json()["code"] == "validation_error"
    single = await client.post("/v1/settlements", json={"reservation_id": "r", "usage": USAGE})
    assert single.status_code == 422 and single.json()["code"] == "validation_error"
    assert (await client.post("/v1/settlements", json=[])).json() == {"results": []}


async def test_the_calls_own_idempotency_key_replays_the_whole_answer(client: AsyncTestClient, book: str, tag: str):
    cid = await customer(client, book, tag)
    rid = await reserve(client, cid)
    headers = {"Idempotency-Key": f"call-{tag}"}
    first = await client.post("/v1/settlements", json=[{"reservation_id": rid, "usage": USAGE}], headers=headers)
    again = await client.post("/v1/settlements", json=[{"reservation_id": rid, "usage": USAGE}], headers=headers)
    assert again.headers.get("idempotent-replayed") == "true" and again.content == first.content
    other = await client.post("/v1/settlements", json=[], headers=headers)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"


async def test_two_bulk_calls_at_once_with_the_same_settles_charge_each_once(
        http: tuple[httpx.AsyncClient, str], book: str, tag: str):
    client, _ = http  # the live server: the two bulk calls are in flight together
    cid = await customer(client, book, tag)
    items = [{"reservation_id": await reserve(client, cid), "usage": USAGE} for _ in range(20)]
    first, second = await asyncio.gather(*(client.post("/v1/settlements", json=items) for _ in range(2)))
    pairs = list(zip(first.json()["results"], second.json()["results"], strict=True))
    assert all(a["status"] == b["status"] == 200 and a["body"] == b["body"] for a, b in pairs)
    assert all(a["replayed"] != b["replayed"] for a, b in pairs), "one of each pair is the first, one a replay"
    assert await wallet(client, cid) == ("9.44", "0.00")  # 10 - 20 x 0.028


async def test_a_capture_in_bulk_without_a_capture_id_or_key_is_refused_not_taken_for_a_replay(
        client: AsyncTestClient, book: str, tag: str):
    """Its derived key (reservation, no capture id, body) was the same for every capture of the same
    usage: the second and third captures of 1,000 output tokens answered 200 `replayed` with the
    first's charge, and only one was charged ($0.03 where the single route charged $0.07)."""
    cid = await customer(client, book, tag)
    rid = await reserve(client, cid)
    capture = {"reservation_id": rid, "usage": {"output_tokens": 1000}, "final": False}
    results = (await client.post("/v1/settlements", json=[capture, capture])).json()["results"]
    assert [(r["status"], r["body"].get("code")) for r in results] == [(422, "validation_error")] * 2
    assert all("capture_id" in r["body"]["detail"] for r in results), results
    assert await wallet(client, cid) == ("9.90", "0.10")  # nothing charged, the hold still open
    # with a capture id each, or a key each, each capture is charged once
    keyed = [{**capture, "capture_id": "c1"}, {**capture, "capture_id": "c2"},
             {**capture, "idempotency_key": f"k-{tag}"}]
    first = (await client.post("/v1/settlements", json=keyed)).json()["results"]
    assert [(r["status"], r["replayed"]) for r in first] == [(200, False)] * 3, first
    assert sorted(r["body"]["charged"] for r in first) == ["0.02", "0.02", "0.03"]  # the call's $0.01 once
    again = (await client.post("/v1/settlements", json=keyed)).json()["results"]
    assert [(r["status"], r["replayed"]) for r in again] == [(200, True)] * 3
    final = (await client.post("/v1/settlements", json=[{"reservation_id": rid, "usage": {"output_tokens": 0}}]))
    assert final.json()["results"][0]["status"] == 200, final.text
    assert await wallet(client, cid) == ("9.93", "0.00")


async def test_an_item_the_database_cannot_do_now_is_503_asking_the_whole_calls_wait_in_its_body(
        client: AsyncTestClient, book: str, tag: str, monkeypatch):
    """An item the database could not do (down, its pool full) was answered 503 with no wait: a
    whole call so answered carries `Retry-After: 1`, but an item has no headers, so a client had
    nothing to honour. Its body now asks the same wait as `retry_after_seconds` (1 s)."""
    from sqlalchemy import exc as sa_exc

    from wallets.service import WalletService

    own = await customer(client, book, tag)
    ok, busy = await reserve(client, own), await reserve(client, own)
    owner_of = WalletService.owner_of

    async def pool_full_for_busy(self, reservation_id: str) -> str:
        if reservation_id == busy:
            raise sa_exc.TimeoutError("QueuePool limit reached")  # the pool had no connection in time
        return await owner_of(self, reservation_id)

    monkeypatch.setattr(WalletService, "owner_of", pool_full_for_busy)
    response = await client.post("/v1/settlements", json=[{"reservation_id": ok, "usage": USAGE},
                                                          {"reservation_id": busy, "usage": USAGE}])
    assert response.status_code == 200, response.text
    done, unavailable = response.json()["results"]
    assert done["status"] == 200 and done["body"]["charged"] == "0.028"
    assert unavailable["status"] == 503 and unavailable["body"]["code"] == "service_unavailable", unavailable
    # the whole call's 503 asks `Retry-After: 1`: the item's body asks the same 1 s
    assert unavailable["body"]["retry_after_seconds"] == 1, unavailable
    assert await wallet(client, own) == ("9.872", "0.10")  # 10 - 0.028 - the busy one's hold of 0.10, still open

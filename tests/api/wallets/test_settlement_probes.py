"""Adversarial probes of POST /v1/settlements as a demanding client sends it: the same settle twice
in one call, one key over two bodies, customers of several lanes, the 1,000-item bound and malformed bodies,
two calls of the same settles at once, on one server and on two (an item the database fails for a
non-domain reason: test_bulk_item_faults.py).

Prices (the `book` fixture): model-a $10/M in, $20/M out, $0.01 a call. USAGE = 1,000 in + 400 out:
1,000 x $10/M = $0.010, 400 x $20/M = $0.008, + $0.01 = $0.028 a settle; every hold is $0.10."""
from __future__ import annotations

import asyncio
import uuid

import httpx
from litestar.testing import AsyncTestClient

from ledger.lanes import lane_of
from tests.api.wallets.test_settlements import USAGE, customer, reserve, wallet

SMALL = {"input_tokens": 100, "output_tokens": 0}  # 100 x $10/M = $0.001, + $0.01 = $0.011


async def _charges(client: AsyncTestClient | httpx.AsyncClient, rid: str) -> int:
    return len((await client.get(f"/v1/reservations/{rid}")).json()["charges"])


async def test_the_same_settle_twice_in_one_call_is_charged_once_and_answered_alike(
        client: AsyncTestClient, book: str, tag: str):
    cid = await customer(client, book, tag)
    rid = await reserve(client, cid)
    item = {"reservation_id": rid, "usage": USAGE}
    results = (await client.post("/v1/settlements", json=[item, item])).json()["results"]
    assert [r["status"] for r in results] == [200, 200], results
    assert results[0]["body"] == results[1]["body"] and results[0]["body"]["charged"] == "0.028"
    assert results[0]["idempotency_key"] == results[1]["idempotency_key"]
    assert sorted(r["replayed"] for r in results) == [False, True], "one settles, the other replays it"
    assert await wallet(client, cid) == ("9.972", "0.00")  # 10 - 0.028, once
    assert await _charges(client, rid) == 1
    keyed = await reserve(client, cid)
    item = {"reservation_id": keyed, "usage": USAGE, "idempotency_key": f"twice-{tag}"}
    results = (await client.post("/v1/settlements", json=[item, item])).json()["results"]
    assert [r["status"] for r in results] == [200, 200] and results[0]["body"] == results[1]["body"]
    assert sorted(r["replayed"] for r in results) == [False, True]
    assert await wallet(client, cid) == ("9.944", "0.00")  # 9.972 - 0.028


async def test_one_reservation_under_two_keys_in_one_call_is_settled_once_the_other_closed(
        client: AsyncTestClient, book: str, tag: str):
    cid = await customer(client, book, tag)
    rid = await reserve(client, cid)
    items = [{"reservation_id": rid, "usage": USAGE, "idempotency_key": f"a-{tag}"},
             {"reservation_id": rid, "usage": SMALL, "idempotency_key": f"b-{tag}"}]
    results = (await client.post("/v1/settlements", json=items)).json()["results"]
    assert sorted((r["status"], r["body"].get("code")) for r in results) == [
        (200, None), (409, "reservation_closed")], results
    settled = next(r for r in results if r["status"] == 200)
    # whichever settled, the wallet shows exactly it: 10 - 0.028 or 10 - 0.011
    expected = "9.972" if settled["body"]["charged"] == "0.028" else "9.989"
    assert await wallet(client, cid) == (expected, "0.00")
    assert await _charges(client, rid) == 1


async def test_one_key_over_two_bodies_in_one_call_settles_one_and_refuses_the_other_as_a_conflict(
        client: AsyncTestClient, book: str, tag: str):
    cid = await customer(client, book, tag)
    first, second = await reserve(client, cid), await reserve(client, cid)
    key = f"shared-{tag}"
    items = [{"reservation_id": first, "usage": USAGE, "idempotency_key": key},
             {"reservation_id": second, "usage": USAGE, "idempotency_key": key}]
    results = (await client.post("/v1/settlements", json=items)).json()["results"]
    assert sorted((r["status"], r["body"].get("code")) for r in results) == [
        (200, None), (409, "idempotency_conflict")], results
    # one of the two settled (0.028), the other's hold (0.10) still open: 10 - 0.028 - 0.10
    assert await wallet(client, cid) == ("9.872", "0.10")
    assert sorted([await _charges(client, first), await _charges(client, second)]) == [0, 1]
    # the same key, one reservation, two bodies
    third = await reserve(client, cid)
    items = [{"reservation_id": third, "usage": USAGE, "idempotency_key": f"body-{tag}"},
             {"reservation_id": third, "usage": SMALL, "idempotency_key": f"body-{tag}"}]
    results = (await client.post("/v1/settlements", json=items)).json()["results"]
    assert sorted((r["status"], r["body"].get("code")) for r in results) == [
        (200, None), (409, "idempotency_conflict")], results
    assert await _charges(client, third) == 1
    # and across calls: the key kept answers its first body, refuses the other
    settled = next(items[n] for n, r in enumerate(results) if r["status"] == 200)
    other = next(items[n] for n, r in enumerate(results) if r["status"] == 409)
    again = (await client.post("/v1/settlements", json=[settled, other])).json()["results"]
    assert [(r["status"], r["replayed"], r["body"].get("code")) for r in again] == [
        (200, True, None), (409, False, "idempotency_conflict")], again


async def test_settles_of_customers_in_several_lanes_in_one_call_each_charge_their_own_wallet(
        client: AsyncTestClient, book: str, tag: str):
    # the session database has 16 lanes (tests/conftest.py); customers picked in 4 different ones
    chosen: dict[int, str] = {}
    while len(chosen) < 4:
        cid = f"lane-{tag}-{uuid.uuid4().hex[:6]}"
        chosen.setdefault(lane_of(cid, 16), cid)
    customers = []
    for cid in chosen.values():
        assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
        assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
        customers.append(cid)
    items = [{"reservation_id": await reserve(client, cid), "usage": USAGE if n % 2 == 0 else SMALL}
             for n, cid in enumerate(customers * 3)]
    results = (await client.post("/v1/settlements", json=items)).json()["results"]
    assert [r["status"] for r in results] == [200] * 12, results
    # customers 0 and 2: three settles of 0.028 = 0.084; 1 and 3: three of 0.011 = 0.033
    assert [await wallet(client, cid) for cid in customers] == [
        ("9.916", "0.00"), ("9.967", "0.00"), ("9.916", "0.00"), ("9.967", "0.00")]
    assert (await client.post("/v1/audit/verify")).json()["ok"]


async def test_1000_settles_are_taken_and_1001_refused_whole(client: AsyncTestClient, book: str, tag: str):
    cid = await customer(client, book, tag)
    real = [await reserve(client, cid) for _ in range(3)]
    items = [{"reservation_id": f"res_none_{tag}_{n}", "usage": USAGE} for n in range(997)]
    items += [{"reservation_id": rid, "usage": USAGE} for rid in real]
    response = await client.post("/v1/settlements", json=items)
    assert response.status_code == 200, response.text[:500]
    results = response.json()["results"]
    assert len(results) == 1000 and [r["status"] for r in results[-3:]] == [200] * 3
    assert {r["status"] for r in results[:997]} == {404}
    assert await wallet(client, cid) == ("9.916", "0.00")  # 10 - 3 x 0.028
    fresh = await reserve(client, cid)
    refused = await client.post("/v1/settlements", json=[*items, {"reservation_id": fresh, "usage": USAGE}])
    assert refused.status_code == 422 and refused.json()["code"] == "validation_error"
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert await _charges(client, fresh) == 0 and await wallet(client, cid) == ("9.816", "0.10")
    for body in (None, "x", 5, {"items": []}, [[]]):
        answer = await client.post("/v1/settlements", json=body)
        if body == [[]]:  # an item of the wrong type is that item's own 422
            assert answer.json()["results"][0]["status"] == 422, answer.text
        else:
            assert answer.status_code == 422 and answer.json()["code"] == "validation_error", (body, answer.text)


async def test_two_calls_at_once_with_the_same_settles_in_other_orders_and_lanes_charge_each_once(
        http: tuple[httpx.AsyncClient, str], book: str, tag: str):
    client, _ = http
    customers = [await customer(client, book, f"{tag}{n}") for n in range(3)]
    items = [{"reservation_id": await reserve(client, cid), "usage": USAGE} for cid in customers for _ in range(5)]
    keyed = [{**item, "idempotency_key": f"k{n}-{tag}"} for n, item in enumerate(items)]
    calls = [items, list(reversed(items)), keyed, keyed[::2] + keyed[1::2]]
    answers = await asyncio.gather(*(client.post("/v1/settlements", json=call) for call in calls))
    by_call = [{r["reservation_id"]: r for r in a.json()["results"]} for a in answers]
    for rid in (item["reservation_id"] for item in items):
        # the derived key and the explicit key are two keys of one reservation with one body: the
        # first settles it, every other answer is that settle again (a replay of its key, or of
        # its final settle's body under the other key), one entry
        rows = [answer[rid] for answer in by_call]
        assert all(r["status"] == 200 and r["body"]["charged"] == "0.028" for r in rows), rows
        assert len({r["body"]["entry_id"] for r in rows}) == 1, rows
        assert await _charges(client, rid) == 1
    assert [await wallet(client, cid) for cid in customers] == [("9.86", "0.00")] * 3  # 10 - 5 x 0.028



async def test_two_servers_given_the_same_settles_at_once_charge_each_once_and_answer_alike(
        http: tuple[httpx.AsyncClient, str], database_url: str, book: str, tag: str):
    """Two servers (two apps, two wallet engines, one database): the same settles sent to both at
    once, singly to one and in bulk to the other as well."""
    from tests.api.apps import live_server
    from tests.api.test_sdk_durability import ADMIN

    client, _ = http
    customers = [await customer(client, book, f"{tag}s{n}") for n in range(3)]
    items = [{"reservation_id": await reserve(client, cid), "usage": USAGE, "idempotency_key": f"two-{tag}-{n}"}
             for n, cid in enumerate(customers * 4)]
    with live_server(database_url, admin=ADMIN) as url:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"},
                                     timeout=120) as other:
            singles = [other.post(f"/v1/reservations/{item['reservation_id']}/settle", json={"usage": USAGE},
                                  headers={"Idempotency-Key": item["idempotency_key"]}) for item in items[::3]]
            answers = await asyncio.gather(client.post("/v1/settlements", json=items),
                                           other.post("/v1/settlements", json=items[::-1]), *singles)
    first = {r["reservation_id"]: r for r in answers[0].json()["results"]}
    second = {r["reservation_id"]: r for r in answers[1].json()["results"]}
    for item in items:
        rid = item["reservation_id"]
        assert first[rid]["status"] == second[rid]["status"] == 200, (first[rid], second[rid])
        assert first[rid]["body"] == second[rid]["body"] and first[rid]["body"]["charged"] == "0.028"
        assert await _charges(client, rid) == 1
    for item, single in zip(items[::3], answers[2:], strict=True):
        assert single.status_code == 200 and single.json() == first[item["reservation_id"]]["body"]
    # each customer: 4 settles of 0.028 = 0.112, 10 - 0.112
    assert [await wallet(client, cid) for cid in customers] == [("9.888", "0.00")] * 3





async def test_one_capture_id_thrice_in_a_call_is_one_capture_and_another_body_a_conflict(
        client: AsyncTestClient, book: str, tag: str):
    cid = await customer(client, book, tag)
    rid = await reserve(client, cid)
    cap = {"reservation_id": rid, "usage": {"output_tokens": 1000}, "final": False, "capture_id": "c1"}
    results = (await client.post("/v1/settlements", json=[cap, {**cap, "usage": {"output_tokens": 500}}, cap])).json()
    assert [(r["status"], r["replayed"], r["body"].get("code")) for r in results["results"]] == [
        (200, False, None), (409, False, "idempotency_conflict"), (200, True, None)], results
    # 1,000 out x $20/M = $0.02 + the call's $0.01 = $0.03 once; the hold's 0.07 left open
    assert results["results"][0]["body"]["charged"] == "0.03"
    assert await wallet(client, cid) == ("9.90", "0.07")


async def test_a_malformed_item_naming_its_reservation_is_answered_under_that_id(client: AsyncTestClient):
    # the id is echoed when it is a string (a client maps answers back by it), else null
    items = [{"reservation_id": "res_x", "usage": USAGE, "final": "yes"},
             {"reservation_id": "res_y", "usage": USAGE, "typo": 1},
             {"reservation_id": 7, "usage": USAGE}, {"usage": USAGE}, "res_z"]
    answer = await client.post("/v1/settlements", json=items)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [(r["reservation_id"], r["status"], r["body"]["code"]) for r in results] == [
        ("res_x", 422, "validation_error"), ("res_y", 422, "validation_error"), (None, 422, "validation_error"),
        (None, 422, "validation_error"), (None, 422, "validation_error")], results


async def test_an_item_whose_idempotency_key_is_blank_is_refused_naming_that_field_not_the_header(
        client: AsyncTestClient, book: str, tag: str):
    """An item's `idempotency_key` of white space alone is no key: its 422 names `idempotency_key`,
    the item's field, where it named `Idempotency-Key`, a header the call never sent. Nothing is
    charged: top-up 10.00, one hold of 0.10 left open, so 9.90 available and 0.10 reserved."""
    cid = await customer(client, book, tag)
    rid = await reserve(client, cid)
    answer = await client.post("/v1/settlements", json=[{"reservation_id": rid, "usage": USAGE,
                                                        "idempotency_key": "   "}])
    assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    assert (result["reservation_id"], result["status"], result["body"]["code"]) == (rid, 422, "validation_error")
    assert [f["field"] for f in result["body"]["fields"]] == ["idempotency_key"], result
    assert await wallet(client, cid) == ("9.90", "0.10")
    assert await _charges(client, rid) == 0


async def test_a_capture_after_the_close_with_only_a_key_is_refused_naming_capture_id_on_either_route(
        client: AsyncTestClient, book: str, tag: str):
    """A late capture (after its reservation closed) is charged once by its `capture_id`, the id
    README's late-capture rule names; a capture sent after the close with only a key (the item's
    `idempotency_key`, or the single call's Idempotency-Key) has none, so it stays 409
    `reservation_closed`, now saying why: its detail names `capture_id`. Figures: the final settle
    of USAGE charges 0.028 (10.00 -> 9.972, the hold's 0.072 back); the refused captures charge
    nothing; the same capture with `capture_id` "c1" is charged late without the call's fee (the
    reservation's first charge paid it): 1,000 x $10/M + 400 x $20/M = 0.018, 9.972 -> 9.954."""
    cid = await customer(client, book, tag)
    rid = await reserve(client, cid)
    assert (await client.post(f"/v1/reservations/{rid}/settle", json={"usage": USAGE})).status_code == 200
    late = {"reservation_id": rid, "usage": USAGE, "final": False}
    [result] = (await client.post("/v1/settlements", json=[{**late, "idempotency_key": f"k-{tag}"}])).json()["results"]
    assert (result["status"], result["body"]["code"]) == (409, "reservation_closed"), result
    assert "capture_id" in result["body"]["detail"], result
    single = await client.post(f"/v1/reservations/{rid}/settle", json={"usage": USAGE, "final": False},
                               headers={"Idempotency-Key": f"s-{tag}"})
    assert (single.status_code, single.json()["code"]) == (409, "reservation_closed"), single.text
    assert "capture_id" in single.json()["detail"], single.text
    assert await wallet(client, cid) == ("9.972", "0.00")
    [result] = (await client.post("/v1/settlements", json=[{**late, "capture_id": "c1"}])).json()["results"]
    assert (result["status"], result["body"]["charged"]) == (200, "0.018"), result
    assert await wallet(client, cid) == ("9.954", "0.00")


async def test_the_same_final_settle_under_other_keys_is_answered_replayed_as_it_charges_nothing(
        client: AsyncTestClient, book: str, tag: str):
    """Three items settling one reservation with one body under three keys: the first settles
    (0.028: 10.00 -> 9.972, one charge), the other two are answered its body, nothing charged,
    so they are replays (`replayed`: the first answer given again, API.md), where they said
    `replayed: false`. A fourth under a fifth key in a later call: replayed too."""
    cid = await customer(client, book, tag)
    rid = await reserve(client, cid)
    items = [{"reservation_id": rid, "usage": USAGE, "idempotency_key": f"{n}-{tag}"} for n in range(3)]
    results = (await client.post("/v1/settlements", json=items)).json()["results"]
    assert [r["status"] for r in results] == [200, 200, 200], results
    assert all(r["body"] == results[0]["body"] for r in results) and results[0]["body"]["charged"] == "0.028"
    assert sorted(r["replayed"] for r in results) == [False, True, True], results
    [again] = (await client.post("/v1/settlements", json=[{**items[0], "idempotency_key": f"4-{tag}"}])).json()[
        "results"]
    assert (again["status"], again["replayed"], again["body"]) == (200, True, results[0]["body"]), again
    assert await wallet(client, cid) == ("9.972", "0.00")
    assert await _charges(client, rid) == 1


async def test_an_item_s_key_is_echoed_as_stored_without_its_surrounding_white_space(
        client: AsyncTestClient, book: str, tag: str):
    """An item's `idempotency_key` " k1 " is kept as "k1" (a key is stripped, as the header's is):
    its result echoed " k1 ", a key nothing is stored under. Now "k1", and the same settle sent
    again under "k1" is its replay: 0.028 charged once, 10.00 -> 9.972."""
    cid = await customer(client, book, tag)
    rid = await reserve(client, cid)
    key = f"k1-{tag}"
    [first] = (await client.post("/v1/settlements", json=[{"reservation_id": rid, "usage": USAGE,
                                                             "idempotency_key": f" {key} "}])).json()["results"]
    assert (first["status"], first["idempotency_key"], first["replayed"]) == (200, key, False), first
    [again] = (await client.post("/v1/settlements", json=[{"reservation_id": rid, "usage": USAGE,
                                                             "idempotency_key": key}])).json()["results"]
    assert (again["status"], again["idempotency_key"], again["replayed"]) == (200, key, True), again
    assert await wallet(client, cid) == ("9.972", "0.00")


async def test_the_same_final_settle_under_another_key_on_the_single_route_says_it_is_a_replay(
        client: AsyncTestClient, book: str, tag: str):
    """POST /v1/reservations/R/settle with one body under key a, then under key b: both 200 with
    the first body (1,000 x $10/M + 400 x $20/M + $0.01 = 0.028), charged once (10.00 -> 9.972).
    The second gives the first answer again, nothing charged: a replay, as the bulk route says
    `replayed: true` for it (ed59742), so it carries Idempotent-Replayed: true (it had none)."""
    cid = await customer(client, book, tag)
    rid = await reserve(client, cid)
    first = await client.post(f"/v1/reservations/{rid}/settle", json={"usage": USAGE},
                              headers={"Idempotency-Key": f"a-{tag}"})
    second = await client.post(f"/v1/reservations/{rid}/settle", json={"usage": USAGE},
                               headers={"Idempotency-Key": f"b-{tag}"})
    assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
    assert first.json() == second.json() and first.json()["charged"] == "0.028"
    assert "idempotent-replayed" not in first.headers
    assert second.headers.get("idempotent-replayed") == "true", dict(second.headers)
    assert await wallet(client, cid) == ("9.972", "0.00")
    assert await _charges(client, rid) == 1


async def test_an_item_key_is_counted_after_its_spaces_are_stripped_as_the_header_is(
        client: AsyncTestClient, book: str, tag: str):
    """An item's idempotency_key of 10 spaces + 250 characters is the key "k" x 250 once stripped:
    250 <= 255, as the Idempotency-Key header of the same text is taken. It was 422 (length <= 255:
    260 counted before stripping). Now 200, 0.028 charged (10.00 -> 9.972), and the single route under
    the stripped key replays it, nothing charged twice. 10 spaces + 256 characters is still 422,
    naming idempotency_key (256 > 255)."""
    cid = await customer(client, book, tag)
    rid = await reserve(client, cid)
    key = (tag + "k" * 250)[:250]
    [result] = (await client.post("/v1/settlements", json=[
        {"reservation_id": rid, "usage": USAGE, "idempotency_key": " " * 10 + key}])).json()["results"]
    assert (result["status"], result["idempotency_key"]) == (200, key), result
    assert result["body"]["charged"] == "0.028"
    again = await client.post(f"/v1/reservations/{rid}/settle", json={"usage": USAGE},
                              headers={"Idempotency-Key": key})
    assert (again.status_code, again.json()) == (200, result["body"])
    assert await wallet(client, cid) == ("9.972", "0.00")
    assert await _charges(client, rid) == 1
    other = await reserve(client, cid)
    [long] = (await client.post("/v1/settlements", json=[
        {"reservation_id": other, "usage": USAGE, "idempotency_key": " " * 10 + "k" * 256}])).json()["results"]
    assert (long["status"], long["body"]["code"]) == (422, "validation_error"), long
    assert "idempotency_key" in long["body"]["detail"], long

"""Adversarial probes of POST /v1/usage-events as a demanding client sends it: one event id twice
in one batch (same body, another body), customers of several lanes and the 1,000 bound, a key
that may not post for one item's customer, malformed batches (nothing written), an event that
names a settled reservation, and usage timed in a period already closed.

Prices (the `book` fixture): model-a $10/M in, $20/M out, $0.01 a call. USAGE = 1,000 in + 400 out:
$0.010 + $0.008 + $0.01 = $0.028 an event; SMALL = 100 in: $0.001 + $0.01 = $0.011."""
from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from litestar.testing import AsyncTestClient

from ledger.lanes import lane_of
from tests.api.closing import close_early, utc
from tests.api.wallets.test_settlements import customer, reserve, wallet

USAGE = {"input_tokens": 1000, "output_tokens": 400}
SMALL = {"input_tokens": 100, "output_tokens": 0}
NOW = "2026-11-23T10:00:00Z"


def event(cid: str, event_id: str, usage: dict = USAGE, at: str = NOW, **extra) -> dict:
    return {"event_id": event_id, "customer_id": cid, "model": "model-a", "timestamp": at, "usage": usage, **extra}


async def test_one_event_id_twice_in_a_batch_is_one_event_and_another_body_a_conflict(
        client: AsyncTestClient, book: str, tag: str):
    cid = await customer(client, book, tag)
    answer = (await client.post("/v1/usage-events", json=[event(cid, "dup"), event(cid, "dup")])).json()
    assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (1, 1, []), answer
    assert await wallet(client, cid) == ("9.972", "0.00")  # 10 - 0.028, once
    answer = (await client.post("/v1/usage-events", json=[event(cid, "two", SMALL), event(cid, "two")])).json()
    assert (answer["accepted"], answer["duplicates"]) == (1, 0), answer
    assert [(r["event_id"], r["code"], r["index"]) for r in answer["rejected"]] == [
        ("two", "idempotency_conflict", 1)], answer
    assert await wallet(client, cid) == ("9.961", "0.00")  # the first body's 0.011: 9.972 - 0.011
    # across batches: the kept body again is a duplicate, the other a conflict
    again = (await client.post("/v1/usage-events", json=[event(cid, "two"), event(cid, "two", SMALL)])).json()
    assert (again["accepted"], again["duplicates"]) == (0, 1) and [
        (r["code"], r["index"]) for r in again["rejected"]] == [("idempotency_conflict", 0)], again
    assert await wallet(client, cid) == ("9.961", "0.00")


async def test_1000_events_over_four_lanes_are_each_posted_once_and_1001_refused_whole(
        client: AsyncTestClient, book: str, tag: str):
    chosen: dict[int, str] = {}
    while len(chosen) < 4:  # 16 lanes in the session database (tests/conftest.py)
        cid = f"ulane-{tag}-{uuid.uuid4().hex[:6]}"
        chosen.setdefault(lane_of(cid, 16), cid)
    customers = list(chosen.values())
    for cid in customers:
        assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
        assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    events = [event(customers[n % 4], f"e{n}") for n in range(1000)]
    refused = await client.post("/v1/usage-events", json=[*events, event(customers[0], "one-more")])
    assert refused.status_code == 422 and refused.json()["code"] == "validation_error", refused.text[:300]
    assert [await wallet(client, cid) for cid in customers] == [("10.00", "0.00")] * 4  # nothing written
    answer = (await client.post("/v1/usage-events", json=events)).json()
    assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (1000, 0, []), answer["rejected"][:3]
    # 250 events each at 0.028 = 7.00: 10 - 7.00
    assert [await wallet(client, cid) for cid in customers] == [("3.00", "0.00")] * 4
    assert (await client.post("/v1/audit/verify")).json()["ok"]


async def test_a_malformed_batch_writes_nothing_and_an_empty_one_nothing_either(
        client: AsyncTestClient, book: str, tag: str):
    cid = await customer(client, book, tag)
    good = event(cid, "good")
    rid = await reserve(client, cid)
    assert (await client.post(f"/v1/reservations/{rid}/settle", json={"usage": USAGE})).status_code == 200
    for body in (None, "x", 5, good, [good, "not an event"], [good, [good]], [good, {**good, "event_id": 7}],
                 [good, event(cid, "res", reservation_id=rid)]):
        answer = await client.post("/v1/usage-events", json=body)
        assert answer.status_code == 422 and answer.json()["code"] == "validation_error", (body, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert (await client.post("/v1/usage-events", json=[])).json() == {"accepted": 0, "duplicates": 0, "rejected": []}
    assert await wallet(client, cid) == ("9.972", "0.00")  # the settle's 0.028 alone
    # event ids and request ids are apart: an event named as the settled call's request id is an
    # event of its own (no link to the reservation), charged as one: 9.972 - 0.028
    request_id = (await client.get(f"/v1/reservations/{rid}")).json()["request_id"]
    named = (await client.post("/v1/usage-events", json=[event(cid, request_id)])).json()
    assert (named["accepted"], named["rejected"]) == (1, []), named
    assert await wallet(client, cid) == ("9.944", "0.00")
    answer = (await client.post("/v1/usage-events", json=[good])).json()
    assert (answer["accepted"], answer["duplicates"]) == (1, 0), "the good event was never written"
    assert await wallet(client, cid) == ("9.916", "0.00")  # 9.944 - 0.028


async def test_an_event_a_key_may_not_post_is_forbidden_alone_the_others_posted(
        client: AsyncTestClient, book: str, tag: str):
    own, other = await customer(client, book, tag), await customer(client, book, tag)
    limited = (await client.post("/v1/api-keys", json={"scope": "inference", "customers": [own]})).json()
    answer = (await client.post("/v1/usage-events", json=[event(own, "a"), event(other, "a"), event(own, "b")],
                                headers={"Authorization": f"Bearer {limited['key']}"})).json()
    assert (answer["accepted"], answer["duplicates"]) == (2, 0), answer
    assert [(r["code"], r["index"]) for r in answer["rejected"]] == [("forbidden", 1)], answer
    assert await wallet(client, own) == ("9.944", "0.00") and await wallet(client, other) == ("10.00", "0.00")
    # the other customer's own "a" is its own event (ids are per customer)
    mine = (await client.post("/v1/usage-events", json=[event(other, "a")])).json()
    assert (mine["accepted"], mine["duplicates"]) == (1, 0), mine


async def test_usage_timed_in_a_closed_period_bills_on_the_open_one_and_leaves_the_closed_invoice(
        client: AsyncTestClient, book: str, tag: str):
    cid = await customer(client, book, tag, billing="postpaid")
    period = (await client.get(f"/v1/customers/{cid}/invoices/upcoming")).json()["period"]
    start = period["start"]
    closed_at = datetime.fromisoformat(start.replace("Z", "+00:00")) + timedelta(minutes=1)
    if closed_at > datetime.now(UTC):  # a customer created in the period's first minute: the event is now
        closed_at = datetime.now(UTC) - timedelta(seconds=1)
    first = (await client.post("/v1/usage-events", json=[event(cid, "in", at=utc(closed_at))])).json()
    assert first["accepted"] == 1, first
    [closed] = (await close_early(client, {}, cid))["closed"]
    before = (await client.get(f"/v1/invoices/{closed['invoice_id']}")).content
    late = (await client.post("/v1/usage-events", json=[event(cid, "late", SMALL, at=utc(closed_at))])).json()
    assert (late["accepted"], late["rejected"]) == (1, []), late
    assert (await client.get(f"/v1/invoices/{closed['invoice_id']}")).content == before, "the closed one unchanged"
    upcoming = (await client.get(f"/v1/customers/{cid}/invoices/upcoming")).json()
    assert upcoming["total"] == "0.011", upcoming  # the late event's 0.001 + 0.01 alone
    assert {line.get("original_period") for line in upcoming["lines"] if line["kind"] != "rounding"} == {
        period["label"]}, upcoming["lines"]



async def test_three_calls_at_once_with_the_same_events_post_each_once(http, book: str, tag: str):
    client, _ = http  # the live server: the calls are in flight together
    cid = await customer(client, book, tag)
    events = [event(cid, f"r{n}") for n in range(60)]
    answers = await asyncio.gather(*(client.post("/v1/usage-events", json=events[k:] + events[:k])
                                     for k in (0, 20, 40)))
    counts = [(a.json()["accepted"], a.json()["duplicates"], a.json()["rejected"]) for a in answers]
    assert all(accepted + duplicates == 60 and rejected == [] for accepted, duplicates, rejected in counts), counts
    assert sum(accepted for accepted, _, _ in counts) == 60, counts
    assert await wallet(client, cid) == ("8.32", "0.00")  # 60 x 0.028 = 1.68 once: 10 - 1.68

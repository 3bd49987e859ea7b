"""Copies of a bulk call sent at once under a key that an earlier call released after an item fault
(0fd300a: a 500 item keeps no answer, the key is released). WalletService.claim found the claim and
the `#released` marker and let every copy go ahead at once, claiming nothing again; the copies then
raced on the events, and whichever kept its answer first gave it to both (both told (0, 3) in 1 of
54 rounds, 4 of 4 with the posting copy held 0.2 s). A released key is now claimed again by the
next generation's claim row: one copy runs, the other waits and replays it.

Three events of $0.028 each (1,000 in x $10/M + 400 out x $20/M + $0.01); the middle one fails by a
planted trigger: accepted 2, rejected 1 (10 - 2 x 0.028 = 9.944). Then, trigger dropped, the same
call twice at the same moment (a live server, so both are in flight): the right answer for both is
(accepted 1, duplicates 2): the failed event is posted for the first time by this resend (10 - 3 x
0.028 = 9.916)."""
from __future__ import annotations

import asyncio
import collections
import uuid

import httpx

from tests.api.apps import live_server
from tests.api.test_sdk_durability import ADMIN
from tests.api.wallets.conftest import BOOK
from tests.api.wallets.test_bulk_item_faults import FAIL, _sql
from tests.api.wallets.test_settlements import customer, wallet

ROUNDS = 10


async def _round(client: httpx.AsyncClient, url: str, scratch_url: str) -> tuple:
    tag = uuid.uuid4().hex[:6]
    cid = await customer(client, BOOK["id"], tag)
    await _sql(scratch_url, f"""CREATE TRIGGER probe_fail BEFORE INSERT ON usage_events FOR EACH ROW
                                WHEN (NEW.event_id = 'bad-{tag}') EXECUTE FUNCTION probe_fail()""")
    events = [{"event_id": f"e{n}-{tag}" if n != 1 else f"bad-{tag}", "customer_id": cid,
               "model": "model-a", "timestamp": "2026-11-23T10:00:00Z",
               "usage": {"input_tokens": 1000, "output_tokens": 400}} for n in range(3)]
    key = {"Idempotency-Key": f"events-{tag}"}
    first = (await client.post("/v1/usage-events", json=events, headers=key)).json()
    assert (first["accepted"], first["duplicates"], len(first["rejected"])) == (2, 0, 1), first
    await _sql(scratch_url, "DROP TRIGGER probe_fail ON usage_events")
    copies = await asyncio.gather(*(client.post("/v1/usage-events", json=events, headers=key) for _ in range(2)))
    assert all(r.status_code == 200 for r in copies), [r.text for r in copies]
    assert await wallet(client, cid) == ("9.916", "0.00")  # 10 - 3 x 0.028: posted once
    return tuple(sorted((r.json()["accepted"], r.json()["duplicates"]) for r in copies))


async def test_both_copies_go_ahead_under_a_released_key_and_the_later_answer_can_win(scratch_url: str, monkeypatch):
    """Instrumented: each copy's own (accepted, duplicates) as _recorded computed it (both going ahead
    = the claim held neither); then, with the copy that posted the event held 0.2 s before keeping
    its answer (a scheduling delay: a GC pause, a slow thread), what both clients are told."""
    import json

    from api.routes import usage

    ran: list[tuple[int, int]] = []
    hold = {"on": False}
    original = usage._recorded

    async def recorded(*args, **kwargs):
        response, faulted = await original(*args, **kwargs)
        body = json.loads(response["json"])
        ran.append((body["accepted"], body["duplicates"]))
        if hold["on"] and body["accepted"]:
            await asyncio.sleep(0.2)
        return response, faulted

    monkeypatch.setattr(usage, "_recorded", recorded)
    await _sql(scratch_url, FAIL)
    natural, held = collections.Counter(), collections.Counter()
    with live_server(scratch_url, admin=ADMIN) as url:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=120,
                                     limits=httpx.Limits(max_connections=16)) as client:
            assert (await client.post("/v1/price-books", json=BOOK)).status_code == 201
            for _ in range(ROUNDS):
                ran.clear()
                told = await _round(client, url, scratch_url)
                natural[(told, tuple(sorted(ran[1:])))] += 1
            hold["on"] = True
            for _ in range(4):
                ran.clear()
                told = await _round(client, url, scratch_url)
                held[(told, tuple(sorted(ran[1:])))] += 1
    # right: one copy ran (its own (1, 2)), the other waited on the claim and replayed it; both told (1, 2)
    right = (((1, 2), (1, 2)), ((1, 2),))
    assert (dict(natural), dict(held)) == ({right: ROUNDS}, {right: 4})


async def test_settlement_copies_under_a_released_key_one_settles_and_both_are_told_so(scratch_url: str, monkeypatch):
    """The same race on POST /v1/settlements (0fd300a releases its key on a 5xx item too): three
    settles, the middle one failing by a trigger (its hold whole); trigger dropped, the call twice at
    once under the key, the copy that settles the middle item held 0.2 s before it answers. Right:
    one copy runs, the other waits and replays it: both told the middle item settled by this call
    (replayed false); the wallet 10 - 3 x 0.028 = 9.916 either way (each item has its own key)."""
    from api.routes import settlements

    original = settlements._settle_one

    async def settle_one(*args, **kwargs):
        answer = await original(*args, **kwargs)
        if hold["rid"] == answer.reservation_id and not answer.replayed:
            await asyncio.sleep(0.2)
        return answer

    hold = {"rid": None}
    monkeypatch.setattr(settlements, "_settle_one", settle_one)
    from tests.api.wallets.test_settlements import USAGE, reserve

    await _sql(scratch_url, FAIL)
    told = collections.Counter()
    with live_server(scratch_url, admin=ADMIN) as url:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=120,
                                     limits=httpx.Limits(max_connections=16)) as client:
            assert (await client.post("/v1/price-books", json=BOOK)).status_code == 201
            for _ in range(4):
                tag = uuid.uuid4().hex[:6]
                cid = await customer(client, BOOK["id"], tag)
                rids = [await reserve(client, cid) for _ in range(3)]
                await _sql(scratch_url, f"""CREATE TRIGGER probe_fail BEFORE UPDATE ON reservations FOR EACH ROW
                                            WHEN (NEW.id = '{rids[1]}') EXECUTE FUNCTION probe_fail()""")
                items, key = [{"reservation_id": rid, "usage": USAGE} for rid in rids], {"Idempotency-Key": f"s-{tag}"}
                first = (await client.post("/v1/settlements", json=items, headers=key)).json()["results"]
                assert [r["status"] for r in first] == [200, 500, 200], first
                await _sql(scratch_url, "DROP TRIGGER probe_fail ON reservations")
                hold["rid"] = rids[1]
                copies = await asyncio.gather(*(client.post("/v1/settlements", json=items, headers=key)
                                                for _ in range(2)))
                hold["rid"] = None
                told[tuple(tuple(r["replayed"] for r in c.json()["results"]) for c in copies)] += 1
                assert await wallet(client, cid) == ("9.916", "0.00")
    assert dict(told) == {((True, False, True), (True, False, True)): 4}

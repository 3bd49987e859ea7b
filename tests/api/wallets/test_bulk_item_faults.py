"""One item of a bulk call that the database fails for a reason that is no domain refusal (a bug,
a constraint, a trigger: here a trigger planted on a scratch database) among good ones: the
engine finds it by halving its lane's batch; every other item is answered exactly, the bad one
alone gets its own problem, and nothing of it is half-written (its hold stays whole, no charge
without its usage record).

Prices: model-a $10/M in, $20/M out, $0.01 a call. USAGE = 1,000 in + 400 out = $0.010 + $0.008 +
$0.01 = $0.028 a settle; each hold is $0.10."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from ledger.db import connect
from tests.api.apps import api_client
from tests.api.wallets.conftest import BOOK
from tests.api.wallets.test_settlements import USAGE, customer, reserve, wallet


@pytest.fixture
async def scratch(scratch_url: str) -> AsyncIterator[tuple[AsyncTestClient, str]]:
    async with api_client(scratch_url, send_admin=True, webhooks=False) as c:
        assert (await c.post("/v1/price-books", json=BOOK)).status_code == 201
        yield c, scratch_url


async def _sql(url: str, *statements: str) -> None:
    database = connect(url, pool_size=1)
    try:
        async def run(conn) -> None:
            for statement in statements:
                await conn.execute(text(statement))
        await database.run(run)
    finally:
        await database.dispose()


FAIL = """CREATE FUNCTION probe_fail() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN RAISE EXCEPTION 'probe: a fault that is no domain refusal'; END $$"""


async def _fail_settle(url: str, reservation_id: str) -> None:
    """Plant a trigger that fails the settle of `reservation_id` (the update of its row)."""
    await _sql(url, FAIL, f"""CREATE TRIGGER probe_fail BEFORE UPDATE ON reservations FOR EACH ROW
                              WHEN (NEW.id = '{reservation_id}') EXECUTE FUNCTION probe_fail()""")


async def _events_one_failing(url: str, cid: str, tag: str, count: int, bad: int) -> list[dict]:
    """`count` usage events of USAGE for `cid` ($0.028 each), the one at index `bad` (`bad-{tag}`)
    failed on insert by a planted trigger."""
    await _sql(url, FAIL, f"""CREATE TRIGGER probe_fail BEFORE INSERT ON usage_events FOR EACH ROW
                              WHEN (NEW.event_id = 'bad-{tag}') EXECUTE FUNCTION probe_fail()""")
    return [{"event_id": f"e{n}-{tag}" if n != bad else f"bad-{tag}", "customer_id": cid, "model": "model-a",
             "timestamp": "2026-11-23T10:00:00Z", "usage": USAGE} for n in range(count)]


async def test_a_settle_the_database_fails_among_good_ones_is_its_own_500_the_others_settled(
        scratch: tuple[AsyncTestClient, str]):
    client, url = scratch
    tag = uuid.uuid4().hex[:6]
    cid = await customer(client, "standard", tag)
    rids = [await reserve(client, cid) for _ in range(6)]
    bad = rids[3]
    await _fail_settle(url, bad)
    response = await client.post("/v1/settlements", json=[{"reservation_id": rid, "usage": USAGE} for rid in rids])
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [200, 200, 200, 500, 200, 200], results
    assert results[3]["body"]["code"] == "internal_error" and results[3]["reservation_id"] == bad
    assert "probe" not in results[3]["body"]["detail"], "an internal error's text stays in the log"
    assert all(r["body"]["charged"] == "0.028" for n, r in enumerate(results) if n != 3)
    # five settles of 0.028 = 0.14; the bad one's hold of 0.10 still whole: 10 - 0.14 - 0.10
    assert await wallet(client, cid) == ("9.76", "0.10")
    assert (await client.get(f"/v1/reservations/{bad}")).json()["charges"] == []
    await _sql(url, "DROP TRIGGER probe_fail ON reservations")
    again = (await client.post("/v1/settlements", json=[{"reservation_id": bad, "usage": USAGE}])).json()
    assert again["results"][0]["status"] == 200 and not again["results"][0]["replayed"], again
    assert await wallet(client, cid) == ("9.832", "0.00")  # 10 - 6 x 0.028
    assert (await client.post("/v1/audit/verify")).json()["ok"]


async def test_a_usage_event_the_database_fails_among_good_ones_is_rejected_alone_the_others_posted(
        scratch: tuple[AsyncTestClient, str]):
    client, url = scratch
    tag = uuid.uuid4().hex[:6]
    cid = await customer(client, "standard", tag)
    events = await _events_one_failing(url, cid, tag, 5, 2)
    response = await client.post("/v1/usage-events", json=events)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == 4 and answer["duplicates"] == 0, answer
    assert [(r["event_id"], r["code"], r["index"]) for r in answer["rejected"]] == [
        (f"bad-{tag}", "internal_error", 2)], answer
    assert await wallet(client, cid) == ("9.888", "0.00")  # four events of 0.028: 10 - 0.112
    await _sql(url, "DROP TRIGGER probe_fail ON usage_events")
    again = (await client.post("/v1/usage-events", json=events)).json()
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (1, 4, []), again
    assert await wallet(client, cid) == ("9.86", "0.00")  # 10 - 5 x 0.028
    assert (await client.post("/v1/audit/verify")).json()["ok"]


def _errors(path: str) -> float:
    """The bulk item fault counter's value for `path` (0 before its first item)."""
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value("tokentill_bulk_item_errors_total",
                                     {"path": path, "code": "internal_error", "app_name": "tokentill"}) or 0.0


async def test_a_call_sent_again_under_its_key_after_an_item_fault_replays_the_settled_items_exactly(
        scratch: tuple[AsyncTestClient, str], caplog: pytest.LogCaptureFixture):
    client, url = scratch
    tag = uuid.uuid4().hex[:6]
    cid = await customer(client, "standard", tag)
    rids = [await reserve(client, cid) for _ in range(3)]
    bad = rids[1]
    await _fail_settle(url, bad)
    items, key = [{"reservation_id": rid, "usage": USAGE} for rid in rids], {"Idempotency-Key": f"call-{tag}"}
    errors = _errors("/v1/settlements")
    with caplog.at_level("ERROR", logger="tokentill.api"):
        first = (await client.post("/v1/settlements", json=items, headers=key)).json()["results"]
    assert [(r["status"], r["replayed"]) for r in first] == [(200, False), (500, False), (200, False)], first
    # the log names the item an operator must look at: its reservation and its key
    logged = [r.getMessage() for r in caplog.records if r.exc_info]
    assert any(bad in m and first[1]["idempotency_key"] in m for m in logged), logged
    assert _errors("/v1/settlements") == errors + 1, "the item's 500 is counted: the call's 200 is not an error"
    # two settles of 0.028 = 0.056; the bad one's 0.10 hold whole: 10 - 0.056 - 0.10 = 9.844
    assert await wallet(client, cid) == ("9.844", "0.10")
    await _sql(url, "DROP TRIGGER probe_fail ON reservations")
    second = (await client.post("/v1/settlements", json=items, headers=key)).json()["results"]
    # the call's key kept no answer: every item runs again, the settled ones replayed from their own keys
    assert [(r["status"], r["replayed"]) for r in second] == [(200, True), (200, False), (200, True)], second
    for n in (0, 2):
        assert second[n]["body"] == first[n]["body"] and second[n]["idempotency_key"] == first[n]["idempotency_key"]
    assert second[1]["body"]["charged"] == "0.028" and second[1]["idempotency_key"] == first[1]["idempotency_key"]
    assert await wallet(client, cid) == ("9.916", "0.00")  # 10 - 3 x 0.028 = 9.916: none charged twice
    assert [len((await client.get(f"/v1/reservations/{rid}")).json()["charges"]) for rid in rids] == [1, 1, 1]
    third = (await client.post("/v1/settlements", json=items, headers=key)).json()["results"]
    assert third == second, "a call all of whose items were answered keeps that answer under its key"
    assert await wallet(client, cid) == ("9.916", "0.00")
    assert (await client.post("/v1/audit/verify")).json()["ok"]


async def test_usage_events_sent_again_under_the_calls_key_after_a_fault_post_the_failed_one_alone(
        scratch: tuple[AsyncTestClient, str], caplog: pytest.LogCaptureFixture):
    client, url = scratch
    tag = uuid.uuid4().hex[:6]
    cid = await customer(client, "standard", tag)
    events = await _events_one_failing(url, cid, tag, 3, 1)
    key = {"Idempotency-Key": f"events-{tag}"}
    errors = _errors("/v1/usage-events")
    with caplog.at_level("ERROR", logger="tokentill.api"):
        first = (await client.post("/v1/usage-events", json=events, headers=key)).json()
    assert (first["accepted"], first["duplicates"], [(r["code"], r["index"]) for r in first["rejected"]]) == (
        2, 0, [("internal_error", 1)]), first
    logged = [r.getMessage() for r in caplog.records if r.exc_info]
    assert any(f"bad-{tag}" in m and cid in m for m in logged), logged
    assert _errors("/v1/usage-events") == errors + 1
    assert await wallet(client, cid) == ("9.944", "0.00")  # two events of 0.028: 10 - 0.056
    await _sql(url, "DROP TRIGGER probe_fail ON usage_events")
    second = (await client.post("/v1/usage-events", json=events, headers=key)).json()
    assert (second["accepted"], second["duplicates"], second["rejected"]) == (1, 2, []), second
    assert await wallet(client, cid) == ("9.916", "0.00")  # 10 - 3 x 0.028
    third = (await client.post("/v1/usage-events", json=events, headers=key)).json()
    assert third == second, "the whole answer is kept now"
    assert await wallet(client, cid) == ("9.916", "0.00")


async def test_the_sdks_background_queue_keeps_an_item_answered_500_and_drops_those_answered_200(
        scratch_url: str, spool_dir):
    from api.client import AsyncClient
    from api.spool import Spool
    from tests.api.apps import live_server
    from tests.api.test_sdk_background import Bulk, lifecycle
    from tests.api.test_sdk_durability import ADMIN, live_book, new_customer, reservation

    def money(url: str, cid: str) -> tuple[str, str]:
        w = httpx.get(f"{url}/v1/customers/{cid}/wallet", headers={"Authorization": f"Bearer {ADMIN}"}).json()
        return w["available"], w["reserved"]

    with live_server(scratch_url, admin=ADMIN) as url:
        cid = new_customer(url, live_book(url))
        transport = Bulk()
        transport.open.clear()  # the queue waits until the trigger is planted
        tt = AsyncClient(url, ADMIN, transport=transport, background_settle=True, flush_spool=False)
        blocks = await asyncio.gather(*(lifecycle(tt, cid) for _ in range(3)))
        bad = blocks[1]
        await _fail_settle(scratch_url, bad.id)
        transport.open.set()
        await tt.aclose()
        # the queue may send the three in one call or in two (a settle queued before the others
        # is taken alone): each is sent once, the 500 item not again at once (it waits for a flush)
        sent = sorted(item["reservation_id"] for call in transport.calls for item in call)
        assert sent == sorted(r.id for r in blocks), "each item sent once"
        assert sorted(r["status"] for a in transport.answers for r in a["results"]) == [200, 200, 500]
        [kept] = Spool(tt.spool.path).records()
        assert kept.reservation_id == bad.id, "the 500 item stays spooled, the two answered 200 are struck off"
        # each hold: 1,000 in x $10/M + 500 out x $20/M + $0.01 = $0.03; two settled at $0.028 each:
        # 10 - 2 x 0.028 - 0.03 held = 9.914, 0.03 reserved
        assert money(url, cid) == ("9.914", "0.03")
        await _sql(scratch_url, "DROP TRIGGER probe_fail ON reservations")
        async with AsyncClient(url, ADMIN) as again:  # the next client's flush sends it, once
            await again.wait_replay()
        assert not tt.spool.path.exists()
        assert money(url, cid) == ("9.916", "0.00")  # 10 - 3 x 0.028
        assert [len(reservation(url, r.id)["charges"]) for r in blocks] == [1, 1, 1]

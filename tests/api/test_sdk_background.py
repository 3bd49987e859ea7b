"""The async SDK's background settles against live servers: a block's exit queues its settle in
the spool (on disk before the block exits) and a task sends the queue in bulk through
POST /v1/settlements; a server killed mid-send, an answer lost, or a close before the queue
drained still leave each lifecycle charged exactly once."""
from __future__ import annotations

import asyncio
import json
import threading
from decimal import Decimal

import anyio
import httpx
import pytest

from api.background import BackgroundSettler
from api.client import AsyncClient, Client
from api.spool import Spool
from tests.api.apps import wait_ready
from tests.api.test_sdk_durability import (
    ADMIN,
    ServeProcess,
    assert_charged_once,
    available,
    live_book,
    new_customer,
    reservation,
)


class Bulk(httpx.AsyncBaseTransport):
    """Forwards everything; bulk settle calls wait for `open`, and `hook` may act on each one
    (given the request and the server's answer) before the client sees it."""

    def __init__(self, hook=None) -> None:
        self.inner, self.hook = httpx.AsyncHTTPTransport(), hook
        self.open = asyncio.Event()
        self.open.set()
        self.calls: list[list[dict]] = []
        self.answers: list[dict] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/settlements":
            return await self.inner.handle_async_request(request)
        await self.open.wait()
        self.calls.append(httpx.Response(200, content=request.content).json())
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if self.hook is not None:
            await self.hook(len(self.calls), request)
        if response.status_code == 200:
            self.answers.append(response.json())  # an answer the client saw
        return response


async def lifecycle(tt: AsyncClient, customer: str):
    async with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
        r.record(input_tokens=1000, output_tokens=400)
    return r


async def test_a_blocks_exit_queues_its_settle_on_disk_and_the_queue_goes_in_bulk(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    transport = Bulk()
    transport.open.clear()  # nothing is sent until the blocks have exited
    tt = AsyncClient(url, ADMIN, transport=transport, background_settle=True)
    blocks = await asyncio.gather(*(lifecycle(tt, customer) for _ in range(20)))
    assert all(r.queued and r.settlement is None and r.spooled is None for r in blocks)
    spooled = Spool(tt.spool.path).records()
    assert sorted(rec.idempotency_key for rec in spooled) == sorted(f"{r.id}:settle:0" for r in blocks)
    assert spooled[0].body == {"usage": {"input_tokens": 1000, "output_tokens": 400}, "final": True}
    transport.open.set()
    await tt.aclose()
    assert sum(len(call) for call in transport.calls) == 20 and len(transport.calls) < 20, "sent in bulk"
    assert_each_charged_once(url, customer, blocks)
    assert not tt.spool.path.exists(), "every answered settle is struck off"


def assert_each_charged_once(url: str, customer: str, blocks) -> None:
    for r in blocks:
        view = reservation(url, r.id)
        assert view["status"] == "settled" and view["charged"] == "0.028" and len(view["charges"]) == 1
    wallet = httpx.get(f"{url}/v1/customers/{customer}/wallet", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert Decimal(wallet["available"]) == 10 - len(blocks) * Decimal("0.028") and Decimal(wallet["reserved"]) == 0


async def test_a_server_killed_mid_send_and_an_answer_lost_still_charge_each_lifecycle_once(
        database_url, spool_dir, tmp_path):
    server = ServeProcess(database_url, tmp_path / "serve.log")
    server.start()
    restarted = threading.Event()

    async def kill_after_first(call: int, request: httpx.Request) -> None:
        if call == 1:  # the server has settled the first call's items: kill it and lose the answer
            server.kill()
            threading.Timer(1.0, lambda: (server.start(), restarted.set())).start()
            raise httpx.ReadError("connection reset by peer", request=request)

    try:
        wait_ready(server.url, server.proc)
        customer = new_customer(server.url, live_book(server.url))
        transport = Bulk(kill_after_first)
        tt = AsyncClient(server.url, ADMIN, transport=transport, background_settle=True, backoff_s=0.05,
                         drain_timeout_s=60)
        transport.open.clear()  # the kill comes once every block has exited (a reserve would fail)
        blocks = await asyncio.gather(*(lifecycle(tt, customer) for _ in range(30)))
        transport.open.set()
        await tt.aclose()
        assert restarted.is_set() and len(transport.calls) >= 2
        first_keys = {item["idempotency_key"] for item in transport.calls[0]}
        resent = [result for answer in transport.answers for result in answer["results"]
                  if result["idempotency_key"] in first_keys]
        assert resent and all(result["replayed"] for result in resent), "the lost answer's settles replayed"
        assert_each_charged_once(server.url, customer, blocks)
        assert not tt.spool.path.exists()
    finally:
        restarted.wait(10)
        server.stop()


async def test_what_a_close_could_not_drain_stays_spooled_and_the_next_client_sends_it(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    transport = Bulk()
    transport.open.clear()  # the server never gets the bulk call
    tt = AsyncClient(url, ADMIN, transport=transport, background_settle=True, drain_timeout_s=0.2)
    r = await lifecycle(tt, customer)
    await tt.aclose()
    [record] = Spool(tt.spool.path).records()
    assert record.path == f"/v1/reservations/{r.id}/settle" and record.idempotency_key == f"{r.id}:settle:0"
    async with AsyncClient(url, ADMIN) as again:  # a client on the same spool re-sends it as it starts
        await again.wait_replay()
    assert_charged_once(url, r.id, customer)
    assert not tt.spool.path.exists()


async def test_a_release_and_a_capture_stay_synchronous(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    async with AsyncClient(url, ADMIN, background_settle=True) as tt:
        with pytest.raises(RuntimeError):
            async with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as failed:
                raise RuntimeError("provider down")
        assert not failed.queued and failed.settlement["status"] == "released"
        async with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
            captured = await r.capture(input_tokens=1000, output_tokens=100)
            assert captured["status"] == "capturing"
            r.record(output_tokens=300)
        assert r.queued
    view = reservation(url, r.id)
    assert view["status"] == "settled" and len(view["charges"]) == 2


def test_the_blocking_client_queues_too_and_close_drains_the_queue(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    blocks = []
    with Client(url, ADMIN, background_settle=True) as tt:
        for _ in range(10):
            with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
                r.record(input_tokens=1000, output_tokens=400)
            assert r.queued and r.settlement is None
            blocks.append(r)
    assert_each_charged_once(url, customer, blocks)
    assert not tt.spool.path.exists()


async def test_an_exit_cancelled_while_its_settle_is_written_holds_up_no_other_exit(live, spool_dir):
    """Two blocks exit together, so their settles share one spool write; the first is cancelled
    meanwhile (its handler's cancel scope). The other's exit must still return, and both settles
    go out."""
    url, book = live
    customer = new_customer(url, book)
    go, entered, blocks = asyncio.Event(), asyncio.Semaphore(0), {}

    async def handler(name: str, cancelled: bool) -> None:
        with anyio.CancelScope() as scope:
            async with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
                blocks[name] = r
                r.record(input_tokens=1000, output_tokens=400)
                entered.release()
                await go.wait()
                if cancelled:
                    scope.cancel()  # takes effect at the exit's first await: its settle's write

    async with AsyncClient(url, ADMIN, background_settle=True) as tt:
        tasks = [asyncio.create_task(handler("cancelled", True)), asyncio.create_task(handler("other", False))]
        for _ in tasks:
            await entered.acquire()
        go.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert blocks["other"].queued
    assert_each_charged_once(url, customer, list(blocks.values()))
    assert not tt.spool.path.exists()


class Counting(httpx.BaseTransport):
    """The caller's own transport (its proxy, TLS or socket settings): counts what goes through it."""

    def __init__(self) -> None:
        self.inner, self.paths = httpx.HTTPTransport(), []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return self.inner.handle_request(request)


def test_the_blocking_clients_background_settles_go_through_its_own_transport(live, spool_dir):
    """A blocking client's queue was sent by an httpx client of its own, on a default transport:
    the caller's transport (a proxy, a CA bundle, a Unix socket) was bypassed, so settles that
    only reach the server through it were never delivered. Now they go the way its calls go."""
    url, book = live
    customer = new_customer(url, book)
    transport = Counting()
    with Client(url, ADMIN, transport=transport, background_settle=True) as tt:
        with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
            r.record(input_tokens=1000, output_tokens=400)
        assert r.queued
    assert "/v1/settlements" in transport.paths
    assert_charged_once(url, r.id, customer)


async def test_a_background_settle_the_server_refuses_for_good_is_set_aside_and_logged_as_an_error(
        live, spool_dir, caplog):
    """A queued settle refused for good (409 reservation_closed: its hold was released meanwhile)
    is not sent again but set aside in the `.rejected` file, and said so at ERROR with the
    reservation and the refusal: a charge that will never land. Before, it went there silently."""
    url, book = live
    customer = new_customer(url, book)
    async with AsyncClient(url, ADMIN, background_settle=True) as tt:
        held = await tt.post("/v1/reservations", tt.reserve_body(customer, "model-a", input_tokens=1000,
                                                                  max_output_tokens=500))
        await tt.release(held["id"])
        caplog.set_level("INFO", logger="tokentill.client")
        assert await tt.settle(held["id"], background=True,
                               usage={"input_tokens": 1000, "output_tokens": 400}) is None
    assert held["id"] in tt.spool.rejected_path.read_text() and not tt.spool.path.exists()
    errors = [r.getMessage() for r in caplog.records if r.name == "tokentill.client" and r.levelname == "ERROR"]
    assert any(held["id"] in message and "reservation_closed" in message and str(tt.spool.rejected_path) in message
               for message in errors), errors


class ItemsBusy(httpx.AsyncBaseTransport):
    """Forwards everything but bulk settles, which go in `log` as ("send", their keys). The first
    finds no server (a refused connection) once the blocks have exited (`open`): the next carries
    every queued settle. Of that one, the second and third items never reach the server: they are
    answered in the 200 as the server answers an item it cannot do now, a 503 `service_unavailable`
    (no hint) and a 429 whose body asks for `retry_after_seconds: 7`. Later calls go through."""

    def __init__(self, log: list) -> None:
        self.inner, self.log = httpx.AsyncHTTPTransport(), log
        self.open = asyncio.Event()
        self.sends = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/settlements":
            return await self.inner.handle_async_request(request)
        items = httpx.Response(200, content=request.content).json()
        self.log.append(("send", [item["idempotency_key"] for item in items]))
        self.sends += 1
        if self.sends == 1:
            await self.open.wait()
            raise httpx.ConnectError("connection refused", request=request)
        if self.sends > 2:
            return await self.inner.handle_async_request(request)
        headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
        forwarded = httpx.Request("POST", request.url, headers=headers, json=items[:1])
        response = await self.inner.handle_async_request(forwarded)
        [answered] = httpx.Response(200, content=await response.aread()).json()["results"]
        busy = {"reservation_id": items[1]["reservation_id"], "idempotency_key": items[1]["idempotency_key"],
                "status": 503, "replayed": False,
                "body": {"status": 503, "code": "service_unavailable", "detail": "retry shortly"}}
        limited = {"reservation_id": items[2]["reservation_id"], "idempotency_key": items[2]["idempotency_key"],
                   "status": 429, "replayed": False,
                   "body": {"status": 429, "code": "rate_limited", "detail": "too many", "retry_after_seconds": 7}}
        return httpx.Response(200, json={"results": [answered, busy, limited]})


async def test_items_answered_503_or_429_in_a_200_wait_as_a_whole_call_would_before_they_go_again(
        live, spool_dir, monkeypatch):
    """Items of a bulk call answered 429 or 502-504 (the others answered) were sent again at once,
    with no backoff and no regard for the wait an item asked: a busy server got them straight back.
    Now the queue waits as for a whole call answered so: the capped Retry-After the items ask
    (the largest) plus the jitter of the backoff."""
    url, book = live
    customer = new_customer(url, book)
    log: list = []

    async def recorded(seconds: float) -> None:  # the delay the queue asked for, not waited
        log.append(("sleep", seconds))
        await asyncio.sleep(0)

    monkeypatch.setattr(BackgroundSettler, "_sleep", staticmethod(recorded), raising=False)
    transport = ItemsBusy(log)
    tt = AsyncClient(url, ADMIN, transport=transport, background_settle=True, backoff_s=0.05)
    blocks = await asyncio.gather(*(lifecycle(tt, customer) for _ in range(3)))
    transport.open.set()  # the three are queued: the call after the refused one carries them all
    await tt.aclose()
    keys = sorted(f"{r.id}:settle:0" for r in blocks)
    # refused; a wait; the three; a wait; the two not done, once
    assert [entry[0] for entry in log] == ["send", "sleep", "send", "sleep", "send"], log
    assert sorted(log[2][1]) == keys and log[4][1] == log[2][1][1:], log
    # the second wait (attempt 1): the 429 item's 7 s (under the 30 s cap) + full jitter under
    # backoff_s 0.05 * 2**1 = 0.1 s: between 7 and 7.1 s (the 503 item asked nothing)
    assert 7 <= log[3][1] <= 7.1, log
    assert_each_charged_once(url, customer, blocks)
    assert not tt.spool.path.exists()


async def test_a_settle_under_a_key_the_server_refuses_is_refused_at_the_call_not_queued_and_never_billed(
        live, spool_dir):
    """`tt.settle(..., background=True)` under a caller's key the server refuses (a capture's key
    of 230 characters, past its capture_id's 200; a final's of 256, past an Idempotency-Key's 255)
    answered None, queued, and the queue's item came back 422, set aside in `.rejected`: the call
    was never billed, its caller told it was. Now each is a ValueError at the call, nothing
    spooled, the holds left whole. Then, under the SDK's own keys: each 1,000 output tokens x
    $20/M = $0.02, + $0.01 a call = $0.03 charged; of two holds of $0.10 the capture's keeps its
    0.07 held and the final settle gives its 0.07 back: 10.00 - 0.10 - 0.03 = 9.87 available."""
    url, book = live
    customer = new_customer(url, book)
    used = {"output_tokens": 1000}
    async with AsyncClient(url, ADMIN, background_settle=True) as tt:
        rids = [(await tt.post("/v1/reservations", {"customer_id": customer, "request_id": f"long-key-{n}",
                                                    "model": "model-a", "amount": "0.10"}))["id"] for n in range(2)]
        with pytest.raises(ValueError, match="capture_id"):
            await tt.settle(rids[0], final=False, key="k" * 230, background=True, usage=used)
        with pytest.raises(ValueError, match="Idempotency-Key"):
            await tt.settle(rids[1], key="f" * 256, background=True, usage=used)
        assert not tt.spool.path.exists()
        assert [reservation(url, rid)["charged"] for rid in rids] == ["0.00", "0.00"]
        assert await tt.settle(rids[0], final=False, background=True, usage=used) is None
        assert await tt.settle(rids[1], background=True, usage=used) is None
    assert [(reservation(url, rid)["status"], reservation(url, rid)["charged"]) for rid in rids] == [
        ("capturing", "0.03"), ("settled", "0.03")]
    assert available(url, customer) == Decimal("9.87")
    assert not list(spool_dir.glob("*.rejected"))


async def test_a_second_final_settle_queued_while_the_first_waits_is_sent_and_refused_reservation_closed(
        live, spool_dir):
    """Two background final settles of one reservation, other usage each, without `key=`. Under one
    key (the SDK's own, `{id}:settle:0`) the second took the first's place in the queue, and the first
    was struck off the spool with it, unsent: 2,000 output tokens x $20/M = $0.04, + $0.01 a call =
    $0.05 charged where the first's 1,000 x $20/M + $0.01 = $0.03 was due; then (a guard now) the
    second was refused at the call, idempotency_conflict. An explicit final settle's key is now its
    body's (`{id}:settle:<digest>`): the second is queued under its own key and sent after the first,
    which is charged, and the server refuses it as any second final settle, 409 reservation_closed,
    set aside in `.rejected`: 10.00 - 0.03 = 9.97 available, the hold's 0.07 back."""
    url, book = live
    customer = new_customer(url, book)
    async with AsyncClient(url, ADMIN, background_settle=True) as tt:
        rid = (await tt.post("/v1/reservations", {"customer_id": customer, "request_id": "one-key-twice",
                                                  "model": "model-a", "amount": "0.10"}))["id"]
        assert await tt.settle(rid, background=True, usage={"output_tokens": 1000}) is None
        assert await tt.settle(rid, background=True, usage={"output_tokens": 2000}) is None
        # the same settle queued again is one call under one key
        assert await tt.settle(rid, background=True, usage={"output_tokens": 1000}) is None
    view = reservation(url, rid)
    assert (view["status"], view["charged"], len(view["charges"])) == ("settled", "0.03", 1)
    assert available(url, customer) == Decimal("9.97")
    [rejected] = spool_dir.glob("*.rejected")
    [filed] = [json.loads(line) for line in rejected.read_text().splitlines()]
    assert filed["body"]["usage"] == {"output_tokens": 2000} and "reservation_closed" in filed["rejected"]


def test_a_settle_under_a_key_no_header_can_carry_is_refused_at_the_call_in_every_mode(live, spool_dir):
    """A settle's `key=` is sent as its Idempotency-Key header (sync, or the exit's own send when the
    queue cannot write): a key with a byte outside printable ASCII ("clé", "k\\n1") cannot go in one.
    It was httpx's UnicodeEncodeError, or "Illegal header value" taken for a network fault and
    spooled (SettlementSpooled), the call unbilled. Now a ValueError at the call naming key=..., nothing
    sent, queued or spooled, in either mode. Then under a good key: 1,000 output tokens x $20/M =
    $0.02, + $0.01 = $0.03 charged, the hold's $0.07 back: 10.00 - 0.03 = 9.97 available."""
    url, book = live
    customer = new_customer(url, book)
    used = {"output_tokens": 1000}
    with Client(url, ADMIN, background_settle=True, settle_deadline_s=1) as tt:
        rid = tt.post("/v1/reservations", {"customer_id": customer, "request_id": "bad-header-key",
                                           "model": "model-a", "amount": "0.10"})["id"]
        for key in ("k\n1", "clé"):
            for background in (False, True):
                with pytest.raises(ValueError, match="key="):
                    tt.settle(rid, key=key, background=background, usage=used)
        assert not tt.spool.path.exists()
        assert reservation(url, rid)["charged"] == "0.00"
        assert tt.settle(rid, key="good-key", usage=used)["charged"] == "0.03"
    assert available(url, customer) == Decimal("9.97")


def test_a_settle_key_with_white_space_around_it_is_sent_as_the_server_keeps_it(live, spool_dir):
    """A settle's `key=` " k1 " (white space around it, which the server strips) went as the header
    " k1 ", which no header carries ('Illegal header value', taken for a network fault, spooled);
    a background final's key of 10 spaces and 250 characters (250 kept, within 255) went as the
    item's 260 characters, past its 255: 422, set aside, never billed. Each is now sent stripped:
    two reservations each charged 1,000 output tokens x $20/M + $0.01 = $0.03, each hold's $0.07
    back: 10.00 - 0.06 = 9.94 available, nothing spooled or set aside."""
    url, book = live
    customer = new_customer(url, book)
    used = {"output_tokens": 1000}
    with Client(url, ADMIN, background_settle=True, settle_deadline_s=1) as tt:
        rids = [tt.post("/v1/reservations", {"customer_id": customer, "request_id": f"padded-key-{n}",
                                             "model": "model-a", "amount": "0.10"})["id"] for n in range(2)]
        assert tt.settle(rids[0], key=" k1 ", usage=used)["charged"] == "0.03"
        assert tt.settle(rids[1], key=" " * 10 + "f" * 250, background=True, usage=used) is None
    assert [(reservation(url, rid)["status"], reservation(url, rid)["charged"]) for rid in rids] == [
        ("settled", "0.03"), ("settled", "0.03")]
    assert available(url, customer) == Decimal("9.94")
    assert not list(spool_dir.glob("*.rejected")) and not list(spool_dir.glob("*.jsonl"))


BAD_QUEUED_USAGE = [{"usage": {"prompt_tokens": 100, "completion_tokens": 20}},  # OpenAI's names as canonical
                    {"usage": {}},  # no count: a provider's usage lost on the way
                    {"openai_usage": {"prompt_tokens": 100, "completion_tokens": -20}}]


async def test_a_queued_settle_of_usage_the_server_refuses_is_refused_at_the_call_and_never_set_aside(
        live, spool_dir):
    """`tt.settle(..., background=True)` with usage the server refuses (OpenAI's names given as
    canonical counts, no count at all, a negative count) answered None, queued, and its bulk item
    came back 422, set aside in `.rejected`: the call never billed, its caller told it was queued
    (`record()` refuses such usage at the call for this reason; a foreground settle gets the
    server's 422 itself). Now each is a ValueError at the call, nothing spooled, the hold whole.
    Then the right usage: 1,000 output tokens x $20/M = $0.02, + $0.01 a call = $0.03, the hold's
    $0.07 back: 10.00 - 0.03 = 9.97 available; the sync client the same, 9.94."""
    url, book = live
    customer = new_customer(url, book)
    used = {"output_tokens": 1000}
    async with AsyncClient(url, ADMIN, background_settle=True) as tt:
        rid = (await tt.post("/v1/reservations", {"customer_id": customer, "request_id": "bad-usage-async",
                                                  "model": "model-a", "amount": "0.10"}))["id"]
        for usage in BAD_QUEUED_USAGE:
            with pytest.raises(ValueError, match="the server would refuse it"):
                await tt.settle(rid, background=True, **usage)
        assert not tt.spool.path.exists()
        assert reservation(url, rid)["charged"] == "0.00"
        assert await tt.settle(rid, background=True, usage=used) is None
    assert (reservation(url, rid)["status"], reservation(url, rid)["charged"]) == ("settled", "0.03")
    assert available(url, customer) == Decimal("9.97")
    with Client(url, ADMIN, background_settle=True, settle_deadline_s=1) as tt:
        rid = tt.post("/v1/reservations", {"customer_id": customer, "request_id": "bad-usage-sync",
                                           "model": "model-a", "amount": "0.10"})["id"]
        for usage in BAD_QUEUED_USAGE:
            with pytest.raises(ValueError, match="the server would refuse it"):
                tt.settle(rid, background=True, **usage)
        assert not tt.spool.path.exists()
        assert tt.settle(rid, background=True, usage=used) is None
    assert (reservation(url, rid)["status"], reservation(url, rid)["charged"]) == ("settled", "0.03")
    assert available(url, customer) == Decimal("9.94")
    assert not list(spool_dir.glob("*.rejected")) and not list(spool_dir.glob("*.jsonl"))


# OpenAI's usage with a count the server ignores (not one it reads) that is not a number JSON
# carries: the server refuses the whole body as malformed JSON, whatever the field
NAN_USAGE = {"prompt_tokens": 0, "completion_tokens": 1000, "total_tokens": 1000, "x_cost": float("nan")}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
async def test_a_usage_with_a_nan_in_a_field_the_server_ignores_is_refused_at_the_call(live, spool_dir, bad):
    """An OpenAI usage whose ignored field x_cost was NaN (or an infinity) passed the SDK's check
    (checked_usage read it back through json.dumps, which writes NaN), so `tt.settle(...,
    background=True)` answered None, queued, and its send raised in the SDK's own encoder
    (allow_nan=False), and `record()` took it for the exit's settle; the server refuses such a
    body as malformed JSON. Now each is a ValueError at the call, as other usage the server
    refuses, naming the field (a foreground settle too, which its encoder refused with another
    error); nothing spooled, the hold whole. Then the same usage without
    the field: 1,000 output tokens x $20/M = $0.02, + $0.01 a call = $0.03, the hold's $0.07
    back: 10.00 - 0.03 = 9.97 available."""
    url, book = live
    customer = new_customer(url, book)
    usage = {**NAN_USAGE, "x_cost": bad}
    async with AsyncClient(url, ADMIN, background_settle=True) as tt:
        rid = (await tt.post("/v1/reservations", {"customer_id": customer, "request_id": "nan-usage",
                                                  "model": "model-a", "amount": "0.10"}))["id"]
        with pytest.raises(ValueError, match=r"the server would refuse it: .*x_cost"):
            await tt.settle(rid, background=True, openai_usage=usage)
        with pytest.raises(ValueError, match=r"the server would refuse it: .*x_cost"):
            await tt.settle(rid, background=True, openai_usage={**NAN_USAGE, "x_cost": None,
                                                                "prompt_tokens_details": {"x_cost": bad}})
        with pytest.raises(ValueError, match=r"settle\(openai_usage=...\): the server would refuse it: x_cost"):
            await tt.settle(rid, openai_usage=usage)  # a foreground settle alike
        assert not tt.spool.path.exists()
        assert reservation(url, rid)["charged"] == "0.00"
        async with tt.reserve(customer, "model-a", input_tokens=0, max_output_tokens=1000) as r:
            with pytest.raises(ValueError, match=r"record\(openai_usage=...\): the server would refuse it: .*x_cost"):
                r.record(openai_usage=usage)
            r.record(output_tokens=1000)
        good = {name: value for name, value in usage.items() if name != "x_cost"}
        assert await tt.settle(rid, background=True, openai_usage=good) is None
    assert (reservation(url, rid)["status"], reservation(url, rid)["charged"]) == ("settled", "0.03")
    assert available(url, customer) == Decimal("9.94")  # the block's call charged $0.03 too
    assert not list(spool_dir.glob("*.rejected")) and not list(spool_dir.glob("*.jsonl"))

"""SDK durability against real servers: a settle outlives a killed server, retries only what it
should, goes to the spool when its deadline passes, and is charged exactly once when re-sent,
even after its hold expired."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import anyio
import httpx
import pytest

from api.bench.common import free_port
from api.client import AsyncClient, Client, flush_spool_dir
from api.client_errors import ReservationClosed, SettlementSpooled, TokentillError, ValidationFailed
from api.demo import PRICE_BOOK
from api.spool import Spool
from ledger.db import connect
from tests.api.apps import wait_ready
from wallets.expiry import expire_reservations

ADMIN = "durability-admin"
# model-a: $10/M input, $20/M output, $0.01 a request. 1,000 in + 400 out = $0.010 + $0.008 + $0.01
CHARGED = Decimal("0.028")
# Ceilings, not expectations: on a loaded machine (CI shares its cores) a start-up or an answer
# takes many times its usual time; each wait ends at its event, and the ceiling only bounds a hang.
ANSWER_CEILING_S = 60.0
RELEASE_CEILING_S = 300.0


def new_customer(url: str, book: str) -> str:
    customer = f"c-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=ANSWER_CEILING_S) as http:
        assert http.post("/v1/customers", json={"id": customer, "name": "Durable", "currency": "USD",
                                                "price_book": book}).status_code == 201
        assert http.post(f"/v1/customers/{customer}/topups", json={"amount": "10.00"}).status_code in (200, 201)
    return customer


def reservation(url: str, reservation_id: str) -> dict:
    return httpx.get(f"{url}/v1/reservations/{reservation_id}", headers={"Authorization": f"Bearer {ADMIN}"},
                     timeout=ANSWER_CEILING_S).json()


def available(url: str, customer: str) -> Decimal:
    wallet = httpx.get(f"{url}/v1/customers/{customer}/wallet", headers={"Authorization": f"Bearer {ADMIN}"},
                       timeout=ANSWER_CEILING_S)
    return Decimal(wallet.json()["available"])


def assert_charged_once(url: str, reservation_id: str, customer: str) -> None:
    view = reservation(url, reservation_id)
    assert view["status"] == "settled" and Decimal(view["charged"]) == CHARGED
    assert len(view["charges"]) == 1, "one charge, however often the settle was sent"
    assert available(url, customer) == Decimal("10") - CHARGED


class Faulty(httpx.BaseTransport):
    """Forwards to the real server, except: scripted answers for the next settles, and while
    `down`, every settle and release refused as if the server were gone. Logs each request."""

    def __init__(self, *script: Callable[[httpx.Request], httpx.Response]) -> None:
        self.inner, self.script, self.down = httpx.HTTPTransport(), list(script), False
        self.sent: list[tuple[float, str, str | None]] = []
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        closing = request.url.path.endswith(("/settle", "/release"))
        with self.lock:
            self.sent.append((time.monotonic(), request.url.path, request.headers.get("idempotency-key")))
            answer = self.script.pop(0) if closing and self.script else None
        if answer is not None:
            return answer(request)
        if closing and self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return self.inner.handle_request(request)

    def settles(self) -> list[tuple[float, str, str | None]]:
        return [s for s in self.sent if s[1].endswith("/settle")]


def problem(status: int, code: str, retry_after: str | None = None) -> Callable[[httpx.Request], httpx.Response]:
    headers = {"Retry-After": retry_after} if retry_after else {}
    return lambda request: httpx.Response(status, headers=headers,
                                          json={"status": status, "code": code, "detail": "injected"})


class ServeProcess:
    """A real `tokentill serve` on the test database, to kill -9 and start again on its port."""

    def __init__(self, database_url: str, log: Path) -> None:
        self.port, self.log, self.proc = free_port(), log, None
        self.env = {**os.environ, "TOKENTILL_DATABASE_URL": database_url, "TOKENTILL_ADMIN_KEY": ADMIN,
                    "TOKENTILL_SCHEDULER": "off", "TOKENTILL_LOG_LEVEL": "WARNING"}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(self.port)],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


def test_a_settle_outlives_a_server_killed_with_sigkill_and_started_again(database_url, spool_dir, tmp_path):
    server = ServeProcess(database_url, tmp_path / "serve.log")
    server.start()
    try:
        wait_ready(server.url, server.proc)
        customer = new_customer(server.url, live_book(server.url))
        with Client(server.url, ADMIN) as tt:
            with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
                r.record(input_tokens=1000, output_tokens=400)
                server.kill()
                killed_at = time.monotonic()
                restart = threading.Timer(1.0, server.start)  # down for 1 s plus the start-up
                restart.start()
            landed_at = time.monotonic()
            restart.join()
        outage = landed_at - killed_at
        print(f"settle delivered {outage:.2f} s after the kill")
        assert outage > 1.0, "longer than the old client's 0.75 s of retries"
        assert Decimal(r.settlement["charged"]) == CHARGED
        assert_charged_once(server.url, r.id, customer)
        assert not list(spool_dir.glob("*.jsonl")), "delivered: nothing left in the spool"
    finally:
        server.stop()


def live_book(url: str) -> str:
    book = f"killed-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        assert http.post("/v1/price-books", json={**PRICE_BOOK, "id": book}).status_code in (200, 201)
    return book


def test_503_with_retry_after_and_429_are_retried_with_the_same_key(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    transport = Faulty(problem(503, "service_unavailable", "1"), problem(429, "rate_limited"))
    with Client(url, ADMIN, transport=transport, backoff_s=0.01) as tt:
        with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
            r.record(input_tokens=1000, output_tokens=400)
    settles = transport.settles()
    assert len(settles) == 3 and {key for _, _, key in settles} == {f"{r.id}:settle:0"}
    assert settles[1][0] - settles[0][0] >= 1.0, "waited what Retry-After asked"
    assert_charged_once(url, r.id, customer)
    assert not list(spool_dir.glob("*.jsonl"))


def test_a_500_is_not_retried_but_spooled_and_a_refusal_neither(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    transport = Faulty(problem(500, "internal_error"))
    with Client(url, ADMIN, transport=transport) as tt:
        with pytest.raises(SettlementSpooled) as spooled:
            with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
                r.record(input_tokens=1000, output_tokens=400)
        assert isinstance(spooled.value.__cause__, TokentillError) and spooled.value.__cause__.status == 500
        assert len(transport.settles()) == 1, "a 500 is not retried on the spot"
        assert reservation(url, r.id)["status"] == "held"
        report = tt.flush_spool()
        assert (report.delivered, report.kept) == (1, 0)
        assert_charged_once(url, r.id, customer)
        sent = len(transport.settles())
        with pytest.raises(ReservationClosed):
            tt.settle(r.id, usage={"input_tokens": 5}, key="another-settle")
        with pytest.raises(ValidationFailed):
            tt.settle(r.id, usage={"input_tokens": -5}, key="a-bad-settle")
        assert len(transport.settles()) == sent + 2, "refusals are answers: one attempt each"
    assert not list(spool_dir.glob("*.jsonl"))


def test_a_settle_past_its_deadline_is_spooled_then_flushed_by_the_cli_after_the_hold_expired(
        live, spool_dir, database_url):
    url, book = live
    customer = new_customer(url, book)
    transport = Faulty()
    with Client(url, ADMIN, transport=transport, settle_deadline_s=0.5, backoff_s=0.01) as tt:
        with pytest.raises(SettlementSpooled) as spooled:
            with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500, ttl_seconds=1) as r:
                r.record(input_tokens=1000, output_tokens=400)
                transport.down = True
    assert r.spooled is spooled.value and len(transport.settles()) > 3
    [record] = Spool(spooled.value.path).records()
    assert (record.method, record.path, record.reservation_id) == ("POST", f"/v1/reservations/{r.id}/settle", r.id)
    assert record.idempotency_key == f"{r.id}:settle:0" and record.base_url == url
    assert record.body == {"usage": {"input_tokens": 1000, "output_tokens": 400}, "final": True}
    assert ADMIN not in spooled.value.path.read_text(), "the key is never spooled"

    time.sleep(1.1)
    assert asyncio.run(expire_due(database_url)) >= 1
    assert reservation(url, r.id)["status"] == "expired" and available(url, customer) == Decimal("10")

    cli = [sys.executable, "-m", "api.cli", "spool", "flush", "--dir", str(spool_dir)]
    flushed = subprocess.run(cli, env={**os.environ, "TOKENTILL_API_KEY": ADMIN}, capture_output=True, text=True)
    assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    assert "delivered 1, refused 0, left 0" in flushed.stdout
    assert_charged_once(url, r.id, customer)
    assert not spooled.value.path.exists()
    again = subprocess.run(cli, env={**os.environ, "TOKENTILL_API_KEY": ADMIN}, capture_output=True, text=True)
    assert again.returncode == 0 and "delivered" not in again.stdout


async def expire_due(database_url: str) -> int:
    db = connect(database_url, pool_size=1)
    try:
        return await expire_reservations(db)
    finally:
        await db.dispose()


class AsyncDown(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner, self.down = httpx.AsyncHTTPTransport(), False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down and request.url.path.endswith(("/settle", "/release")):
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


async def test_the_async_client_spools_and_the_next_one_re_sends_on_start(live, spool_dir, db):
    url, book = live
    customer = new_customer(url, book)
    transport = AsyncDown()
    async with AsyncClient(url, ADMIN, transport=transport, settle_deadline_s=0.3, backoff_s=0.01) as tt:
        with pytest.raises(SettlementSpooled):
            async with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500, ttl_seconds=1) as r:
                r.record(input_tokens=1000, output_tokens=400)
                transport.down = True
    await asyncio.sleep(1.1)
    assert await expire_reservations(db) >= 1
    assert reservation(url, r.id)["status"] == "expired"
    async with AsyncClient(url, ADMIN) as again:  # a new client on the same spool re-sends it as it starts
        report = await again.wait_replay()
    assert report is not None and report.delivered == 1
    assert_charged_once(url, r.id, customer)
    assert not list(spool_dir.glob("*.jsonl"))


def test_the_blocks_own_error_wins_over_a_spooled_release_and_silence_can_be_asked(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    transport = Faulty()
    with Client(url, ADMIN, transport=transport, settle_deadline_s=0.2, backoff_s=0.01) as tt:
        with pytest.raises(RuntimeError, match="provider down") as raised:
            with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as failed:
                transport.down = True
                raise RuntimeError("provider down")
        assert failed.spooled is not None and failed.spooled.record.path.endswith("/release")
        assert any("spooled" in note for note in raised.value.__notes__)
    with Client(url, ADMIN, transport=transport, settle_deadline_s=0.2, backoff_s=0.01, spool_silently=True,
                flush_spool=False) as tt:
        transport.down = False
        with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as quiet:
            quiet.record(input_tokens=1000, output_tokens=400)
            transport.down = True
        assert quiet.settlement is None and quiet.spooled is not None
        transport.down = False
        report = tt.flush_spool()
    assert (report.delivered, report.kept) == (2, 0)
    assert reservation(url, failed.id)["status"] == "released"
    assert_charged_once(url, quiet.id, customer)


def test_two_clients_flushing_one_spool_at_once_send_each_settle_once(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    transport = Faulty()
    ids = []
    with Client(url, ADMIN, transport=transport, settle_deadline_s=0.05, backoff_s=0.01, spool_silently=True) as tt:
        for _ in range(6):
            transport.down = False
            with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
                r.record(input_tokens=1000, output_tokens=400)
                transport.down = True
            ids.append(r.id)
    counting = Faulty()
    flushers = [Client(url, ADMIN, transport=counting, flush_spool=False) for _ in range(2)]
    barrier = threading.Barrier(2)
    reports = []

    def flush(client: Client) -> None:
        barrier.wait()
        reports.append(client.flush_spool())

    threads = [threading.Thread(target=flush, args=(c,)) for c in flushers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in flushers:
        c.close()
    assert sorted(path for _, path, _ in counting.settles()) == sorted(f"/v1/reservations/{i}/settle" for i in ids)
    assert sum(rep.delivered for rep in reports) == 6 and all(rep.kept == 0 for rep in reports)
    for reservation_id in ids:
        view = reservation(url, reservation_id)
        assert Decimal(view["charged"]) == CHARGED and len(view["charges"]) == 1
    assert available(url, customer) == Decimal("10") - 6 * CHARGED
    assert not list(spool_dir.glob("*.jsonl"))


class HeldSettle(httpx.AsyncBaseTransport):
    """Forwards to the real server, but holds each settle back (as a slow network would) until
    the caller is cancelled; `started` is set when one is under way."""

    def __init__(self) -> None:
        self.inner, self.started = httpx.AsyncHTTPTransport(), asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/settle"):
            self.started.set()
            await asyncio.sleep(60)
        return await self.inner.handle_async_request(request)


async def test_a_task_cancelled_while_its_settle_is_in_flight_and_closed_before_it_lands_spools_it(
        live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    transport, block = HeldSettle(), {}
    async with AsyncClient(url, ADMIN, transport=transport, drain_timeout_s=0.5) as tt:
        async def inference() -> None:
            async with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
                block["r"] = r
                r.record(input_tokens=1000, output_tokens=400)

        task = asyncio.create_task(inference())
        await transport.started.wait()
        task.cancel()  # a web framework cancels the handler: its caller went away
        with pytest.raises(asyncio.CancelledError):
            await task
    r = block["r"]  # the close waited 0.5 s for the exit, then interrupted it
    assert reservation(url, r.id)["status"] == "held", "the settle never reached the server"
    [record] = [rec for path in spool_dir.glob("*.jsonl") for rec in Spool(path).records()]
    assert (record.path, record.idempotency_key) == (f"/v1/reservations/{r.id}/settle", f"{r.id}:settle:0")
    async with AsyncClient(url, ADMIN) as again:  # the next client on the spool sends it
        await again.wait_replay()
    assert_charged_once(url, r.id, customer)
    assert not list(spool_dir.glob("*.jsonl"))


class InterruptedAfterSending(httpx.BaseTransport):
    """Forwards to the real server; the first settle's answer never comes back: Ctrl-C arrives
    while the caller waits for it."""

    def __init__(self) -> None:
        self.inner, self.interrupted = httpx.HTTPTransport(), False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path.endswith("/settle") and not self.interrupted:
            self.interrupted = True
            response.close()
            raise KeyboardInterrupt
        return response


def test_ctrl_c_while_a_settles_answer_is_awaited_spools_it_and_the_replay_charges_once(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    with Client(url, ADMIN, transport=InterruptedAfterSending()) as tt:
        with pytest.raises(KeyboardInterrupt):
            with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
                r.record(input_tokens=1000, output_tokens=400)
    [record] = [rec for path in spool_dir.glob("*.jsonl") for rec in Spool(path).records()]
    assert record.idempotency_key == f"{r.id}:settle:0", "the caller cannot know it arrived: spooled"
    with Client(url, ADMIN, flush_spool=False) as next_client:
        report = next_client.flush_spool()
    assert (report.delivered, report.kept, report.rejected) == (1, 0, 0)
    assert_charged_once(url, r.id, customer)


async def test_a_block_left_by_a_cancel_scope_still_settles_what_was_generated(live, spool_dir):
    """A streaming handler whose caller went away is cancelled by a cancel scope (anyio, as
    Starlette and Litestar use), which cancels every await until the block is left: the exit's
    settle must still go out, not wait in the spool for some later client."""
    url, book = live
    customer = new_customer(url, book)
    async with AsyncClient(url, ADMIN) as tt:
        # Cancelled once the block runs (a deadline could pass while the reserve is still on its
        # way, on a loaded machine, and the block would never be entered).
        with anyio.CancelScope() as scope:
            async with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
                r.record(input_tokens=1000, output_tokens=400)
                scope.cancel()  # the caller went away
                await anyio.sleep(30)  # the rest of the stream, never to come
        for _ in range(int(ANSWER_CEILING_S / 0.05)):
            if reservation(url, r.id)["status"] != "held":
                break
            await asyncio.sleep(0.05)
        assert_charged_once(url, r.id, customer)
    assert not list(spool_dir.glob("*.jsonl"))


def test_the_blocks_own_error_wins_over_a_refused_release(live, spool_dir, database_url):
    """A call outlives its hold, which expires, and then the provider fails: the block's release is
    refused (the reservation is closed), but the caller must still get the provider's error."""
    url, book = live
    customer = new_customer(url, book)
    with Client(url, ADMIN) as tt:
        with pytest.raises(RuntimeError, match="provider down") as raised:
            with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500, ttl_seconds=1) as r:
                time.sleep(1.1)
                assert asyncio.run(expire_due(database_url)) >= 1
                raise RuntimeError("provider down")
    assert any("reservation_closed" in note for note in raised.value.__notes__)
    assert reservation(url, r.id)["status"] == "expired" and available(url, customer) == Decimal("10")


async def test_the_async_blocks_own_error_wins_over_a_refused_release(live, spool_dir, db):
    url, book = live
    customer = new_customer(url, book)
    async with AsyncClient(url, ADMIN) as tt:
        with pytest.raises(RuntimeError, match="provider down") as raised:
            async with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500,
                                  ttl_seconds=1) as r:
                await asyncio.sleep(1.1)
                assert await expire_reservations(db) >= 1
                raise RuntimeError("provider down")
    assert any("reservation_closed" in note for note in raised.value.__notes__)
    assert reservation(url, r.id)["status"] == "expired"


def test_a_settle_refused_because_its_key_was_revoked_meanwhile_is_spooled_for_another_key(live, spool_dir):
    """Keys are rotated while calls run: a settle answered 401 says nothing about the call, only
    about the key, so it is kept (as a flush keeps it) and another key's flush charges it."""
    url, book = live
    customer = new_customer(url, book)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    created = httpx.post(f"{url}/v1/api-keys", headers=admin,
                         json={"scope": "inference", "customers": [customer], "name": "rotated"}).json()
    with Client(url, created["key"]) as tt:
        with pytest.raises(SettlementSpooled) as spooled:
            with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
                r.record(input_tokens=1000, output_tokens=400)
                assert httpx.delete(f"{url}/v1/api-keys/{created['id']}", headers=admin).status_code == 200
    assert spooled.value.__cause__.code == "unauthorized"
    assert reservation(url, r.id)["status"] == "held"
    [(_, report)] = flush_spool_dir(spool_dir, ADMIN)
    assert (report.delivered, report.kept) == (1, 0)
    assert_charged_once(url, r.id, customer)


class SlowReserveAnswer(httpx.AsyncBaseTransport):
    """Forwards to the real server; a reserve's answer comes back late (`answered` is set when
    the server has made the hold)."""

    def __init__(self) -> None:
        self.inner, self.answered = httpx.AsyncHTTPTransport(), asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path == "/v1/reservations":
            await response.aread()
            self.answered.set()
            await asyncio.sleep(0.5)
        return response


async def test_a_task_cancelled_while_its_reserve_is_answered_leaves_no_hold(live, spool_dir):
    """A handler cancelled while its reserve is on the way back never sees the reservation: the
    client releases it, rather than keep the customer's money held until it expires."""
    url, book = live
    customer = new_customer(url, book)
    transport = SlowReserveAnswer()
    async with AsyncClient(url, ADMIN, transport=transport) as tt:
        async def inference() -> None:
            async with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500, ttl_seconds=3600):
                raise AssertionError("never entered")

        task = asyncio.create_task(inference())
        await transport.answered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    async with AsyncClient(url, ADMIN) as admin:
        wallet = await admin.get(f"/v1/customers/{customer}/wallet")
    assert Decimal(wallet["reserved"]) == 0 and Decimal(wallet["available"]) == Decimal("10")


class CtrlCWhileReserveIsAnswered(httpx.BaseTransport):
    """Forwards to the real server; once the server has made the first reserve's hold, Ctrl-C
    arrives (SIGINT, to the main thread) while its answer is still on the way back."""

    def __init__(self) -> None:
        self.inner, self.interrupted = httpx.HTTPTransport(), False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path == "/v1/reservations" and not self.interrupted:
            self.interrupted = True
            response.read()
            # Sent by the main thread to itself, SIGINT runs its handler before pthread_kill
            # returns: KeyboardInterrupt leaves here, the answer never reaches the client.
            assert threading.current_thread() is threading.main_thread()
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            raise AssertionError(f"SIGINT did not interrupt: its handler is {signal.getsignal(signal.SIGINT)!r}, "
                                 f"blocked here: {signal.pthread_sigmask(signal.SIG_BLOCK, [])}")
        return response


def test_ctrl_c_while_a_reserves_answer_is_on_its_way_leaves_no_hold(live, spool_dir, request):
    """Ctrl-C while the reserve is answered: the caller never sees the reservation, but the server
    made its hold. The client releases it, rather than keep the customer's money held until it
    expires (an hour here)."""
    url, book = live
    customer = new_customer(url, book)
    transport = CtrlCWhileReserveIsAnswered()
    # Ctrl-C as a plain program gets it (KeyboardInterrupt), whatever handler earlier code in this
    # process left installed (a server run in-process installs its own)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    # The release runs in a thread of the client, which close() waits for: the wallet is read once
    # it has ended, however long a loaded machine makes it (the drain bounds a hang, no more).
    with Client(url, ADMIN, transport=transport, timeout=ANSWER_CEILING_S, drain_timeout_s=RELEASE_CEILING_S) as tt:
        with pytest.raises(KeyboardInterrupt):
            with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500, ttl_seconds=3600):
                raise AssertionError("never entered")
    assert transport.interrupted
    assert not tt._abandoned, "close() returned before the release ended"
    wallet = httpx.get(f"{url}/v1/customers/{customer}/wallet", headers={"Authorization": f"Bearer {ADMIN}"},
                       timeout=ANSWER_CEILING_S).json()
    assert Decimal(wallet["reserved"]) == 0 and Decimal(wallet["available"]) == Decimal("10")
    assert not [rec for path in spool_dir.glob("*.jsonl") for rec in Spool(path).records()]


async def test_a_client_left_by_a_cancel_scope_still_closes_after_its_exits(live, spool_dir):
    """A cancel scope (anyio's, as Starlette and Litestar use) cancels every await until the
    `async with AsyncClient` is left, its close's too: the close must still wait for the block's
    exit (its settle) and close the connections, not stop at its first await."""
    url, book = live
    customer = new_customer(url, book)
    with anyio.CancelScope() as scope:  # cancelled once the block runs, as in the test above
        async with AsyncClient(url, ADMIN) as tt:
            async with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
                r.record(input_tokens=1000, output_tokens=400)
                scope.cancel()  # the caller went away
                await anyio.sleep(30)  # the rest of the stream, never to come
    assert tt._http.is_closed and not tt._exits, "closed, after the exit's settle"
    assert_charged_once(url, r.id, customer)
    assert not list(spool_dir.glob("*.jsonl"))


class FullDisk:
    """A disk that fills once `fill` is called: every spool write after it fails with ENOSPC."""

    def __init__(self, monkeypatch) -> None:
        import api.spool

        self.full, real = False, api.spool._write_all

        def write(fd: int, data: bytes) -> None:
            if self.full:
                raise OSError(28, "No space left on device")  # errno.ENOSPC
            real(fd, data)

        monkeypatch.setattr(api.spool, "_write_all", write)

    def fill(self) -> None:
        self.full = True


def spool_another_call(url: str, spool_dir: Path) -> None:
    """A release an earlier run left in the client's spool (of a reservation no server knows: 404,
    kept): striking a record off beside it rewrites the file, where the last one's is an unlink."""
    from api.spool import SpoolRecord, spool_name

    Spool(spool_dir / spool_name(url, ADMIN)).append(SpoolRecord(
        "POST", "/v1/reservations/res_gone/release", {}, "res_gone:release:0", "res_gone", url))


def test_a_settle_answered_after_the_disk_filled_is_its_answer_not_an_oserror(live, spool_dir, monkeypatch):
    """The first settle is answered 503 and spooled; the disk fills; the second is answered and
    charged. Striking the record off rewrites the spool, which the full disk refuses: the exit
    raised that OSError, as if the settle had failed, though the call was billed. It is the
    settle's answer now; the record stays spooled, and a flush is answered by its key."""
    url, book = live
    customer = new_customer(url, book)
    disk = FullDisk(monkeypatch)
    transport = Faulty(problem(503, "service_unavailable"),
                       lambda request: (disk.fill(), transport.inner.handle_request(request))[1])
    spool_another_call(url, spool_dir)
    with Client(url, ADMIN, transport=transport, backoff_s=0.01, flush_spool=False) as tt:
        with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
            r.record(input_tokens=1000, output_tokens=400)
        assert r.settlement is not None and Decimal(r.settlement["charged"]) == CHARGED
        assert_charged_once(url, r.id, customer)  # 1,000 in + 400 out: $0.028, once
        assert [x.idempotency_key for x in tt.spool.records()] == ["res_gone:release:0", f"{r.id}:settle:0"]
        disk.full = False  # space freed: the flush is answered by the key, nothing charged again
        report = tt.flush_spool()
        assert (report.delivered, report.kept) == (1, 1)
    assert_charged_once(url, r.id, customer)


async def test_an_async_settle_answered_after_the_disk_filled_is_its_answer_not_an_oserror(
        live, spool_dir, monkeypatch):
    """As the blocking client's: the async block's exit is its settle's answer, not an OSError."""
    url, book = live
    customer = new_customer(url, book)
    disk = FullDisk(monkeypatch)

    class Once503(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner, self.settles = httpx.AsyncHTTPTransport(), 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/settle"):
                self.settles += 1
                if self.settles == 1:
                    return httpx.Response(503, json={"status": 503, "code": "service_unavailable", "detail": "x"})
                if self.settles == 2:
                    disk.fill()
            return await self.inner.handle_async_request(request)

    spool_another_call(url, spool_dir)
    async with AsyncClient(url, ADMIN, transport=Once503(), backoff_s=0.01, flush_spool=False) as tt:
        async with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
            r.record(input_tokens=1000, output_tokens=400)
        assert r.settlement is not None and Decimal(r.settlement["charged"]) == CHARGED
        assert_charged_once(url, r.id, customer)
        assert [x.idempotency_key for x in tt.spool.records()] == ["res_gone:release:0", f"{r.id}:settle:0"]
        disk.full = False
        report = await tt.flush_spool()
        assert (report.delivered, report.kept) == (1, 1)
    assert_charged_once(url, r.id, customer)

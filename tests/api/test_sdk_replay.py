"""A new client's spool replay against a real server: it runs off the request path (the first
reserve is answered while the replay's first call is held), sends settles in bulk, charges each
exactly once, stops on close leaving the rest spooled, and two processes sharing the spool do not
charge twice."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx

from api.client import AsyncClient, Client
from api.client_reservations import settle_call
from api.spool import Spool, SpoolRecord, spool_name
from tests.api.test_sdk_durability import ADMIN, CHARGED, available, new_customer, reservation

PER_CUSTOMER = 100  # 100 holds of $0.03 and charges of $0.028 fit a $10 top-up


def spooled_settles(url: str, book: str, spool_dir: Path, count: int) -> tuple[list[str], list[str]]:
    """`count` open reservations whose settles an earlier run left in the spool: (customers, ids)."""
    customers = [new_customer(url, book) for _ in range(-(-count // PER_CUSTOMER))]
    with Client(url, ADMIN, spool=False, flush_spool=False) as tt:
        def reserve(n: int) -> str:
            body = tt.reserve_body(customers[n // PER_CUSTOMER], "model-a", input_tokens=1000, max_output_tokens=500)
            return tt.post("/v1/reservations", body)["id"]

        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(reserve, range(count)))
    records = []
    for reservation_id in ids:
        path, body, key, _ = settle_call(reservation_id, True, None,
                                         {"usage": {"input_tokens": 1000, "output_tokens": 400}})
        records.append(SpoolRecord("POST", path, body, key, reservation_id, url, reason="server down"))
    Spool(spool_dir / spool_name(url, ADMIN)).append_many(records)
    return customers, ids


def assert_each_charged_once(url: str, customers: list[str], ids: list[str]) -> None:
    for customer in customers:  # exact: every reservation of the customer charged once
        assert available(url, customer) == Decimal("10") - PER_CUSTOMER * CHARGED
    for reservation_id in ids[::97]:
        view = reservation(url, reservation_id)
        assert view["status"] == "settled" and len(view["charges"]) == 1


class HeldReplay(httpx.BaseTransport):
    """Forwards to the real server, but holds the first settle call (bulk or single) until `open`
    is set, at most 20 s; counts the calls of each kind."""

    def __init__(self) -> None:
        self.inner, self.open, self.lock = httpx.HTTPTransport(), threading.Event(), threading.Lock()
        self.held = threading.Event()
        self.events: list[str] = []
        self.calls = {"bulk": 0, "single": 0}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        kind = "bulk" if path == "/v1/settlements" else "single" if path.endswith("/settle") else None
        if kind is not None:
            with self.lock:
                self.calls[kind] += 1
                first = self.calls["bulk"] + self.calls["single"] == 1
            if first:
                self.events.append("replay call held")
                self.held.set()
                self.events.append("replay call let go" if self.open.wait(20) else "replay call timed out")
        return self.inner.handle_request(request)


def test_a_new_clients_first_reserve_does_not_wait_for_2000_spooled_settles_sent_in_bulk_once(live, spool_dir):
    url, book = live
    customers, ids = spooled_settles(url, book, spool_dir, 2000)
    with Client(url, ADMIN, spool=False, flush_spool=False) as other:  # 20 were delivered, their answers lost
        for reservation_id in ids[:20]:
            path, body, key, _ = settle_call(reservation_id, True, None,
                                             {"usage": {"input_tokens": 1000, "output_tokens": 400}})
            other.post(path, body, key=key)
    transport = HeldReplay()
    with Client(url, ADMIN, transport=transport) as tt:
        assert transport.held.wait(30)  # the replay's first call is on its way, and held
        with tt.reserve(customers[0], "model-a", input_tokens=10, max_output_tokens=10) as r:
            transport.events.append("reserve answered")
            transport.open.set()
            r.record(input_tokens=10, output_tokens=0)
        assert transport.events == ["replay call held", "reserve answered", "replay call let go"]
        report = tt.wait_replay(timeout=120)
    assert report is not None and (report.delivered, report.rejected, report.kept) == (2000, 0, 0)
    assert transport.calls["single"] == 1 and transport.calls["bulk"] == 4  # 500 a call; the block's own settle
    small = reservation(url, r.id)
    assert small["status"] == "settled"
    for customer in customers[1:]:
        assert available(url, customer) == Decimal("10") - PER_CUSTOMER * CHARGED
    assert available(url, customers[0]) == Decimal("10") - PER_CUSTOMER * CHARGED - Decimal(small["charged"])
    for reservation_id in ids[::97]:
        view = reservation(url, reservation_id)
        assert view["status"] == "settled" and len(view["charges"]) == 1
    assert not list(spool_dir.glob("*.jsonl"))


class HeldAsync(httpx.AsyncBaseTransport):
    """Forwards to the real server, but holds every settle call until `open` is set."""

    def __init__(self) -> None:
        self.inner, self.open, self.held = httpx.AsyncHTTPTransport(), asyncio.Event(), asyncio.Event()
        self.events: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/settlements" or request.url.path.endswith("/settle"):
            self.held.set()
            await self.open.wait()
        return await self.inner.handle_async_request(request)


async def test_the_async_replay_goes_on_beside_the_calls_and_close_leaves_the_rest_spooled(live, spool_dir):
    url, book = live
    customers, ids = await asyncio.to_thread(spooled_settles, url, book, spool_dir, 200)
    transport = HeldAsync()
    tt = AsyncClient(url, ADMIN, transport=transport)
    async with asyncio.timeout(20):
        answered = await tt.post("/v1/reservations", tt.reserve_body(customers[0], "model-a", input_tokens=10,
                                                                      max_output_tokens=10))
        await transport.held.wait()  # the replay's first call is on its way, and held
    assert answered["status"] == "held"
    await tt.aclose()  # stops the replay: nothing was answered, everything stays spooled
    assert len(Spool(spool_dir / spool_name(url, ADMIN)).records()) == 200
    async with AsyncClient(url, ADMIN) as again:
        async with asyncio.timeout(60):
            report = await again.wait_replay()
    assert report is not None and report.delivered == 200
    for customer in customers[1:]:
        assert available(url, customer) == Decimal("10") - PER_CUSTOMER * CHARGED
    for reservation_id in ids[::17]:
        view = reservation(url, reservation_id)
        assert view["status"] == "settled" and Decimal(view["charged"]) == CHARGED and len(view["charges"]) == 1
    assert not list(spool_dir.glob("*.jsonl"))


REPLAY = """
import sys
from api.client import Client
with Client(sys.argv[1], sys.argv[2]) as tt:
    print(tt.wait_replay(timeout=120))
"""


def test_two_processes_starting_on_one_spool_charge_each_settle_once(live, spool_dir):
    url, book = live
    customers, ids = spooled_settles(url, book, spool_dir, 600)
    processes = [subprocess.Popen([sys.executable, "-c", REPLAY, url, ADMIN], stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=180)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    left = Spool(spool_dir / spool_name(url, ADMIN)).records()
    with Client(url, ADMIN, flush_spool=False) as tt:  # one of them may have found the other at work
        assert not left or tt.flush_spool().delivered == 0
    assert_each_charged_once(url, customers, ids)
    assert not list(spool_dir.glob("*.jsonl"))


class NoBulkAfterAnOutage(httpx.BaseTransport):
    """Forwards to the real server, but the first bulk call meets a connection error, and later
    ones a 404, as from a server without POST /v1/settlements."""

    def __init__(self) -> None:
        self.inner, self.paths = httpx.HTTPTransport(), []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path == "/v1/settlements":
            if self.paths.count("/v1/settlements") == 1:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(404, json={"status": 404, "code": "not_found", "detail": "no such route"})
        return self.inner.handle_request(request)


def test_the_replay_sends_again_after_a_connection_error_and_one_by_one_without_the_bulk_endpoint(
        live, spool_dir):
    url, book = live
    customers, ids = spooled_settles(url, book, spool_dir, 5)
    transport = NoBulkAfterAnOutage()
    with Client(url, ADMIN, transport=transport, backoff_s=0.01) as tt:
        report = tt.wait_replay(timeout=60)
    assert report is not None and (report.delivered, report.kept, report.rejected) == (5, 0, 0)
    assert transport.paths[:2] == ["/v1/settlements", "/v1/settlements"]
    assert sorted(transport.paths[2:]) == sorted(f"/v1/reservations/{i}/settle" for i in ids)
    for reservation_id in ids:
        view = reservation(url, reservation_id)
        assert view["status"] == "settled" and Decimal(view["charged"]) == CHARGED and len(view["charges"]) == 1
    assert available(url, customers[0]) == Decimal("10") - 5 * CHARGED
    assert not list(spool_dir.glob("*.jsonl"))


def test_a_settle_the_bulk_call_refuses_goes_to_the_rejected_file_and_the_others_are_charged(live, spool_dir):
    url, book = live
    customers, ids = spooled_settles(url, book, spool_dir, 3)
    with Client(url, ADMIN, spool=False, flush_spool=False) as other:
        other.release(ids[0])  # closed meanwhile: its spooled settle is refused (409), for good
    with Client(url, ADMIN) as tt:
        report = tt.wait_replay(timeout=60)
    assert report is not None and (report.delivered, report.rejected, report.kept) == (2, 1, 0)
    [rejected] = [path for path in spool_dir.iterdir() if path.name.endswith(".rejected")]
    assert ids[0] in rejected.read_text() and "reservation_closed" in rejected.read_text()
    assert reservation(url, ids[0])["status"] == "released"
    assert available(url, customers[0]) == Decimal("10") - 2 * CHARGED
    assert not list(spool_dir.glob("*.jsonl"))


def test_a_settle_spooled_twice_under_one_key_is_sent_and_counted_once(live, spool_dir):
    """The caller, told SettlementSpooled while the server is down, settles again by hand (the same
    default key): the spool holds the settle twice. A replay, and a flush, send it once and count
    it once (both sent it twice and reported 2 delivered for the one settle)."""
    url, book = live
    spool = Spool(spool_dir / spool_name(url, ADMIN))
    for replay, flush in ((True, lambda tt: tt.wait_replay(30)), (False, lambda tt: tt.flush_spool())):
        _, [reservation_id] = spooled_settles(url, book, spool_dir, 1)
        spool.append(spool.records()[0])  # the same settle, spooled again under its key
        transport = HeldReplay()
        transport.open.set()
        with Client(url, ADMIN, transport=transport, flush_spool=replay) as tt:
            report = flush(tt)
        assert report is not None and (report.delivered, report.rejected, report.kept) == (1, 0, 0), report
        assert transport.calls["bulk"] + transport.calls["single"] == 1
        assert not spool.path.exists() and not spool.rejected_path.exists()
        view = reservation(url, reservation_id)
        assert view["status"] == "settled" and len(view["charges"]) == 1


def test_a_replay_item_answered_429_or_503_in_a_200_waits_the_longest_retry_after_its_body_asks(
        tmp_path, monkeypatch):
    """Items of a bulk replay call answered 429 or 502-504 inside a 200 went again after the bare
    backoff (`_Again(None)`), whatever `retry_after_seconds` their bodies asked: a busy server got
    them back within 0.1 s where it asked 7 s. Now the round waits the longest such item asks (as
    a whole call's Retry-After: capped, plus the backoff's jitter). No server: the answers are made."""
    from api.client_replay import SpoolReplay
    from api.delivery import RetryPolicy

    old = "2026-01-01T00:00:00+00:00"  # spooled before the replay began: its to send
    records = [SpoolRecord("POST", f"/v1/reservations/r{n}/settle", {"final": True}, f"k{n}", f"r{n}",
                           "http://x", spooled_at=old) for n in range(3)]
    spool = Spool(tmp_path / "s.jsonl")
    spool.append_many(records)
    log: list = []

    async def send_bulk(items: list) -> httpx.Response:
        log.append(("send", [item["idempotency_key"] for item in items]))
        if len(log) > 1:
            return httpx.Response(200, json={"results": [
                {"reservation_id": i["reservation_id"], "idempotency_key": i["idempotency_key"],
                 "status": 201, "replayed": False, "body": {}} for i in items]})
        busy = [{"status": 503, "code": "service_unavailable", "retry_after_seconds": 1},
                {"status": 429, "code": "rate_limited", "retry_after_seconds": 7}]
        return httpx.Response(200, json={"results": [
            {"reservation_id": "r0", "idempotency_key": "k0", "status": 201, "replayed": False, "body": {}},
            *({"reservation_id": f"r{n}", "idempotency_key": f"k{n}", "status": b["status"], "replayed": False,
               "body": b} for n, b in enumerate(busy, 1))]})

    async def send_one(record: SpoolRecord) -> tuple[str, str]:
        raise AssertionError("all in bulk")

    async def recorded(seconds: float) -> None:  # the delay the replay asked for, not waited
        log.append(("sleep", seconds))

    monkeypatch.setattr(SpoolReplay, "_sleep", staticmethod(recorded))
    replay = SpoolReplay([spool], send_bulk, send_one, RetryPolicy(backoff_s=0.05))
    report = asyncio.run(replay.run())
    assert [entry[0] for entry in log] == ["send", "sleep", "send"], log
    assert log[0][1] == ["k0", "k1", "k2"] and log[2][1] == ["k1", "k2"], log
    # attempt 0: the longest asked, max(1, 7) = 7 s (under the 30 s cap), + full jitter under
    # backoff_s 0.05 * 2**0 = 0.05 s: between 7 and 7.05 s (it was the jitter alone, under 0.05 s)
    assert 7 <= log[1][1] <= 7.05, log
    assert (report.delivered, report.kept, report.rejected) == (3, 0, 0)

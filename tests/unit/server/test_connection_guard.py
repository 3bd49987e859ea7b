"""api.server: read timeouts and the connection limit, on a real uvicorn server in this process
(a thread of its own) with a small ASGI app, configured as `tokentill serve` is: from the
environment, here with short timeouts."""
from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from prometheus_client import REGISTRY

from api.bench.common import free_port
from api.server import ACCEPT_BURST, LINGERING, RESERVED_FDS, connection_limit, server
from api.settings import Settings

release = threading.Event()  # lets GET /slow answer
slow_arrived = threading.Semaphore(0)  # one release per GET /slow the app has begun to handle


def wait_for_slow_requests(count: int) -> None:
    """Until `count` more GET /slow are being handled (their heads parsed), not a guessed while."""
    for _ in range(count):
        assert slow_arrived.acquire(timeout=30), "a GET /slow never reached the app"


async def app(scope, receive, send) -> None:
    assert scope["type"] == "http"
    body = b""
    if scope["method"] == "POST":
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
    if scope["path"] == "/slow":
        slow_arrived.release()
        await asyncio.to_thread(release.wait, 10)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"got %d" % len(body)})


@contextmanager
def serving(**env: str) -> Iterator[int]:
    settings = Settings.from_env({f"TOKENTILL_{name.upper()}": value for name, value in env.items()})
    port = free_port()
    running = server(app, settings, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    while slow_arrived.acquire(blocking=False):  # none left over from another server
        pass
    try:
        yield port
    finally:
        release.set()
        running.should_exit = True
        thread.join(10)
        release.clear()


def connect(port: int, send: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(5)
    if send:
        sock.sendall(send)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (raises if it does not within 5 s)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def is_open(sock: socket.socket) -> bool:
    sock.settimeout(0.3)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except TimeoutError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.settimeout(5)


def resident_bytes() -> int:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) * 1024


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_connection_limit_leaves_room_for_the_pool_and_the_reserve_below_the_open_file_limit():
    assert RESERVED_FDS + ACCEPT_BURST + LINGERING == 224
    assert connection_limit(4096, pool_size=10, nofile=1024) == 1024 - 224 - 20
    assert connection_limit(4096, pool_size=10, nofile=None) == 4096
    assert connection_limit(500, pool_size=10, nofile=65536) == 500
    assert connection_limit(4096, pool_size=10, nofile=100) == 1


def test_an_unfinished_request_head_is_closed_after_the_header_timeout():
    before = counter("tokentill_connection_timeouts_total", phase="header")
    with serving(header_timeout_seconds="0.5") as port:
        started = time.monotonic()
        silent = connect(port)
        half = connect(port, b"GET / HTTP/1.1\r\nHost: test\r\n")
        trickle = connect(port, b"GET / HTTP/1.1\r\n")
        for _ in range(4):  # a byte now and then does not keep a head alive
            time.sleep(0.1)
            trickle.sendall(b"X")
        for sock in (silent, half, trickle):
            assert read_all(sock) == b""
        waited = time.monotonic() - started
        # a complete request is answered as ever
        assert read_all(connect(port, b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                        ).startswith(b"HTTP/1.1 200 ")
    # closed by the 0.5 s timeout, not the default (10 s), however late a loaded box let it run
    assert 0.5 <= waited < Settings().header_timeout_s
    assert counter("tokentill_connection_timeouts_total", phase="header") - before == 3


def assert_408(answer: bytes) -> None:
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"content-type: application/problem+json" in status
    assert json.loads(body)["status"] == 408


def test_a_stalled_body_is_answered_408_after_the_body_timeout():
    before = counter("tokentill_connection_timeouts_total", phase="body")
    head = b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n"
    with serving(body_timeout_seconds="0.5", body_deadline_seconds="30") as port:
        started = time.monotonic()
        answer = read_all(connect(port, head + b"0123456789"))  # within 5 s: not the default 10 s
        waited = time.monotonic() - started
        whole = read_all(connect(port, head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + b"y" * 100))
    assert_408(answer)
    assert waited >= 0.5
    assert whole.startswith(b"HTTP/1.1 200 ") and b"\r\ngot 100\r\n" in whole
    assert counter("tokentill_connection_timeouts_total", phase="body") - before == 1


def test_an_endless_body_that_never_stalls_is_answered_408_at_the_body_deadline():
    """A byte every 0.25 s, against a body timeout of 30 s, never stalls: only the deadline
    (1.5 s; the default is 60 s) ends it, whenever a loaded machine lets the bytes go out."""
    before = counter("tokentill_connection_timeouts_total", phase="body")
    with serving(body_timeout_seconds="30", body_deadline_seconds="1.5") as port:
        started = time.monotonic()
        trickle = connect(port, b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(120):  # 30 s of trickling at most, half the default deadline
            if select.select([trickle], [], [], 0.25)[0]:  # answered
                break
            try:
                trickle.sendall(b"x")
            except OSError:
                break
        answer = read_all(trickle)
        waited = time.monotonic() - started
    assert_408(answer)
    assert waited >= 1.5
    assert counter("tokentill_connection_timeouts_total", phase="body") - before == 1


def test_a_pipelined_request_whose_body_is_late_does_not_cut_short_the_request_before_it():
    with serving(body_timeout_seconds="0.3") as port:
        sock = connect(port, b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n"
                             b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\nabc")
        wait_for_slow_requests(1)
        time.sleep(1.0)  # the first request is in progress all along; the second waits behind it
        release.set()
        answers = read_all(sock)
    first, timed_out, second = answers.partition(b"HTTP/1.1 408 ")
    assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"got 0\r\n0\r\n\r\n")  # whole
    assert timed_out and json.loads(second.partition(b"\r\n\r\n")[2])["status"] == 408


def test_an_idle_keep_alive_connection_closes_after_the_keep_alive_timeout():
    with serving(keepalive_seconds="0.5") as port:
        sock = connect(port, b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        started = time.monotonic()
        assert read_all(sock).startswith(b"HTTP/1.1 200 ")
    assert 0.3 <= time.monotonic() - started < Settings().keepalive_s  # not the default keep-alive, 5 s


def test_at_the_limit_the_longest_idle_connection_is_evicted_and_never_one_in_flight():
    before = counter("tokentill_connections_evicted_total")
    with serving(max_connections="3", header_timeout_seconds="30") as port:
        in_flight = connect(port, b"GET /slow HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        wait_for_slow_requests(1)  # its head is in: the request is being handled
        silent = connect(port)
        time.sleep(0.05)
        half = connect(port, b"GET / HTTP/1.1\r\nHost: te")
        time.sleep(0.2)
        newcomer = connect(port)  # the limit: the longest idle goes, not the older one in flight
        assert read_all(silent) == b""
        assert is_open(in_flight) and is_open(half)
        normal = connect(port, b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        assert read_all(half) == b""
        assert read_all(normal).startswith(b"HTTP/1.1 200 ")
        assert is_open(in_flight) and is_open(newcomer)
        release.set()
        assert read_all(in_flight).startswith(b"HTTP/1.1 200 ")
    assert counter("tokentill_connections_evicted_total") - before == 2


def test_when_every_connection_has_a_request_in_flight_a_new_one_is_answered_503():
    before = counter("tokentill_connections_refused_total")
    slow = b"GET /slow HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    with serving(max_connections="2") as port:
        busy = [connect(port, slow), connect(port, slow)]
        wait_for_slow_requests(2)
        refused = read_all(connect(port, b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"))
        assert refused.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1\r\n" in refused
        assert json.loads(refused.partition(b"\r\n\r\n")[2])["code"] == "service_unavailable"
        release.set()
        for sock in busy:
            assert read_all(sock).startswith(b"HTTP/1.1 200 ")
    assert counter("tokentill_connections_refused_total") - before == 1


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\nHost: test\r\nX-Bad\x01Name: 1\r\n\r\n",  # a control byte in a header name
    b"GET / HTTP/1.1\r\nHost: test\r\nX-Bad: a\x00b\r\n\r\n",  # a NUL in a header value
    b"GET /\x7f HTTP/1.1\r\nHost: test\r\n\r\n",  # a DEL in the request target
])
def test_a_request_httptools_cannot_parse_is_answered_400_problem_json(head):
    """uvicorn answered it `text/plain` "Invalid HTTP request received.": the one error of the
    API that was not problem+json."""
    with serving() as port:
        answer = read_all(connect(port, head))
    status, _, problem = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"content-type: application/problem+json" in status and b"connection: close" in status
    assert json.loads(problem)["code"] == "malformed_request" and json.loads(problem)["status"] == 400


def test_a_request_head_past_the_limit_is_answered_431_and_never_buffered():
    """Before any key is checked, a head is buffered whole: without a limit, one connection sent
    200 MiB of a header in 3 s and the server held it all (and answered 200)."""
    with serving(header_timeout_seconds="30") as port:
        sock = connect(port, b"GET / HTTP/1.1\r\nHost: test\r\n")
        filler = b"X-Filler: " + b"a" * 16_384 + b"\r\n"
        before = resident_bytes()
        try:
            for _ in range(4096):  # 64 MiB, were it all taken
                sock.sendall(filler)
        except OSError:  # refused, and its connection closed
            pass
        grown = resident_bytes() - before  # the server runs in this process
        answer = read_all(sock)
        # a head within the limit, a long query string and many headers included, is served as ever
        long_query = b"GET /?q=" + b"a" * 30_000 + b" HTTP/1.1\r\nHost: test\r\n"
        fine = read_all(connect(port, long_query + b"X-B: b\r\n" * 1000 + b"Connection: close\r\n\r\n"))
        # so is a body of any size after a small head, its first bytes in the head's packet
        body = b"y" * 500_000
        posted = read_all(connect(port, b"POST /echo HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                                        b"Content-Length: %d\r\n\r\n" % len(body) + body))
    status, _, problem = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"content-type: application/problem+json" in status
    assert json.loads(problem)["code"] == "headers_too_large"
    assert grown < 16 * 1024 * 1024, grown
    assert fine.startswith(b"HTTP/1.1 200 ")
    assert posted.startswith(b"HTTP/1.1 200 ") and b"got 500000" in posted


@pytest.mark.parametrize("name", ["HEADER_TIMEOUT", "BODY_TIMEOUT", "BODY_DEADLINE", "KEEPALIVE"])
def test_timeouts_must_be_positive_seconds(name):
    assert Settings.from_env({f"TOKENTILL_{name}_SECONDS": "2.5"}) != Settings()
    for bad in ("0", "-1", "soon", "nan"):
        with pytest.raises(SystemExit, match=f"TOKENTILL_{name}_SECONDS"):
            Settings.from_env({f"TOKENTILL_{name}_SECONDS": bad})


def test_a_start_with_room_for_fewer_than_64_connections_beside_the_pool_is_refused():
    """1,024 files less the 224 kept less 2 x 368 (pool and overflow) leave 64 connections, the
    least a start takes; a pool of 369 leaves 62, and the start stops, saying the largest pool
    that fits (368) and the limit. A TOKENTILL_MAX_CONNECTIONS set under 64 is kept as asked."""
    from api.server import check_connection_room

    check_connection_room(Settings(pool_size=368), nofile=1024)
    check_connection_room(Settings(pool_size=10 ** 9), nofile=None)  # no open-file limit: no bound from it
    check_connection_room(Settings(pool_size=395, max_connections=10), nofile=1024)  # 1024 - 224 - 790 = 10
    with pytest.raises(SystemExit) as stopped:
        check_connection_room(Settings(pool_size=369), nofile=1024)
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith("TOKENTILL_POOL_SIZE 369 leaves 62 HTTP connections")
    assert "at most 368" in message and "1,024" in message
    with pytest.raises(SystemExit) as stopped:
        check_connection_room(Settings(pool_size=10), nofile=100)  # no pool fits: raise the limit
    assert "ulimit -n" in stopped.value.code

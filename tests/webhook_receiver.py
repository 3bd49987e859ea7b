"""A real HTTP receiver for webhook tests: a threaded server on a loopback port that keeps every
request it gets (headers, body, arrival time) and answers as the test tells it: a status per
request, or no answer at all (it holds the connection open until released)."""
from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    url: str
    # Given what came in (this request included), the status to answer, or None to hang.
    answer: Callable[[list[Received], Received], int | None] = lambda seen, this: 200
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, predicate: Callable[[Received], bool]) -> list[Received]:
        with self.lock:
            return [r for r in self.received if predicate(r)]

    async def wait_for(self, predicate: Callable[[Received], bool], count: int = 1,
                       within: float = 20) -> list[Received]:
        """The matching requests, once there are `count` (the event loop runs meanwhile)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = self.of(predicate)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"expected {count} matching deliveries within {within} s, got {len(self.of(predicate))}")


def for_customer(customer_id: str) -> Callable[[Received], bool]:
    return lambda r: r.event["data"].get("customer_id") == customer_id


@contextmanager
def receiver(answer: Callable[[list[Received], Received], int | None] | None = None) -> Iterator[Receiver]:
    state = Receiver(url="")
    if answer is not None:
        state.answer = answer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            got = Received({k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
            with state.lock:
                state.received.append(got)
                seen = list(state.received)
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            status = None
            try:
                status = state.answer(seen, got)
                if status is None:  # hang until released, or until the sender gives up and hangs up
                    while not state.released.wait(0.05) and not self._hung_up():
                        pass
            finally:
                with state.lock:  # before the answer leaves: the sender may send the next at once
                    state.in_flight -= 1
            if status is not None:
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        def _hung_up(self) -> bool:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_port}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.released.set()
        server.shutdown()
        server.server_close()

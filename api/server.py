"""uvicorn with connection hygiene, so a slowloris costs nothing.

Plain uvicorn never times out an unfinished request: a connection that sends half a request head,
or a head and then no body, holds a file descriptor for ever, and about a thousand of them (the
usual soft open-file limit) stop the process from accepting anyone. Here, with uvicorn's own
extension points (`Config(http=...)`, a `Server` subclass):

- a request head must be complete within `header_timeout_s` of the connection's start, or of the
  first byte of a later request on it; else the connection is closed;
- a request body must not stall (no bytes) for `body_timeout_s`, nor take longer than
  `body_deadline_s` in all; else the request is answered 408 (or the connection closed, when a
  response has begun);
- a request head (request line and headers) larger than MAX_HEAD_BYTES is answered 431 and no
  more of it is read: the parser buffers a head whole, before any key is checked;
- idle keep-alive connections close after `keepalive_s` (uvicorn's `timeout_keep_alive`);
- at most `limit` connections are open at once, `limit` safely below the open-file limit. At the
  limit a new connection evicts the connection idle longest (no request in progress: a head not
  yet complete, or waiting between requests); a connection whose request is being handled is
  never evicted. Only when every connection has a request in progress is the newcomer answered
  503 and closed.

The hot path stays cheap: each connection keeps one deadline (a float, set on a few parser
callbacks), and one timer per process sweeps the deadlines a few times a second.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import uvicorn
from prometheus_client import Counter, Gauge
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.errors import CODE_BY_STATUS
from api.settings import Settings
from ledger.embedded import stop_signals

log = logging.getLogger("tokentill.server")

EVICTED = Counter("tokentill_connections_evicted",
                  "Idle or unfinished connections closed to admit a new one at the connection limit")
REFUSED = Counter("tokentill_connections_refused",
                  "New connections answered 503 because every open connection had a request in progress")
TIMEOUTS = Counter("tokentill_connection_timeouts", "Connections closed by a read timeout, by phase",
                   ["phase"])  # header, body, keepalive
OPEN = Gauge("tokentill_connections_open", "Open HTTP connections", multiprocess_mode="livesum")
LIMIT = Gauge("tokentill_connections_limit", "The connection limit in force", multiprocess_mode="livesum")

# File descriptors kept for everything but client connections: stdio, the listener, the event
# loop's own, log files, the key listener and the scheduler's connections, imports; plus room for
# a burst of accepts, which the event loop makes before it tells the protocol (and so before a
# connection can be counted and another evicted).
RESERVED_FDS = 64
ACCEPT_BURST = 128
# Refused connections (answered 503) linger up to a second, so that the client reads the answer
# rather than a reset; at most this many at once, the others are closed at once.
LINGERING = 32
LINGER_S = 1.0
# A request line and its headers together: a long query string (a journal cursor, filters) and a
# console cookie fit many times over; nginx's default is 32 KiB, Node's 16 KiB.
MAX_HEAD_BYTES = 65_536

# A connection's phase, for its deadline.
WAITING = 0  # between requests (uvicorn's keep-alive timer runs), or a request being handled
HEAD = 1  # reading a request head: deadline = start + header timeout
BODY = 2  # reading a request body: deadline = min(last bytes + body timeout, start + body deadline)


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int
    header_timeout_s: float
    body_timeout_s: float
    body_deadline_s: float
    keepalive_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(connection_limit(settings.max_connections, settings.pool_size, open_file_limit()),
                   settings.header_timeout_s, settings.body_timeout_s, settings.body_deadline_s,
                   settings.keepalive_s)


def open_file_limit() -> int | None:
    """This process's soft RLIMIT_NOFILE, or None when it is unlimited."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def connection_limit(configured: int, pool_size: int, nofile: int | None) -> int:
    """The connection limit in force: the configured one, or less when the open-file limit leaves
    no room for it beside the database pool (pool_size plus as many overflow) and the reserve."""
    if nofile is None:
        return max(1, configured)
    return max(1, min(configured, nofile - RESERVED_FDS - ACCEPT_BURST - LINGERING - 2 * pool_size))


# The fewest HTTP connections a start takes (or TOKENTILL_MAX_CONNECTIONS, set lower): a pool as
# large as the open-file limit left one connection per process, with a warning only.
LEAST_CONNECTIONS = 64


def check_connection_room(settings: Settings, nofile: int | None) -> None:
    """Stop the start when the open-file limit `nofile` leaves fewer HTTP connections than
    LEAST_CONNECTIONS (or the configured ones, when fewer) beside the database pool and the reserve."""
    least = min(settings.max_connections, LEAST_CONNECTIONS)
    if nofile is None or (room := nofile - RESERVED_FDS - ACCEPT_BURST - LINGERING - 2 * settings.pool_size) >= least:
        return
    kept = RESERVED_FDS + ACCEPT_BURST + LINGERING
    largest = (nofile - kept - least) // 2
    fix = f"lower TOKENTILL_POOL_SIZE (to at most {largest:,}) or raise" if largest >= 1 else "raise"
    raise SystemExit(f"TOKENTILL_POOL_SIZE {settings.pool_size:,} leaves {max(room, 0):,} HTTP connections per "
                     f"process, at least {least} needed, under the open-file limit of {nofile:,} ({kept} kept for "
                     f"the server, 2 x {settings.pool_size:,} for the pool and its overflow): {fix} the open-file "
                     "limit (ulimit -n)")


def _raw_response(status: int, reason: str, code: str, detail: str, extra: bytes = b"") -> bytes:
    body = msgspec.json.encode({"type": f"https://tokentill.dev/problems/{code}", "title": reason,
                                "status": status, "code": code, "detail": detail})
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n%s\r\n" % (status, reason.encode(), len(body), extra)) + body


TIMED_OUT = _raw_response(408, "Request Timeout", CODE_BY_STATUS.get(408, "request_timeout"),
                          "the request body stalled or took too long")
HEAD_TOO_LARGE = _raw_response(431, "Request Header Fields Too Large", CODE_BY_STATUS[431],
                               f"the request line and headers exceed {MAX_HEAD_BYTES} bytes")
MALFORMED_DETAIL = "the request is not HTTP/1.1 the server can read: a malformed request line or header"
BUSY = _raw_response(503, "Service Unavailable", CODE_BY_STATUS[503],
                     "every connection this process may hold has a request in progress",
                     b"retry-after: 1\r\n")


class Guard:
    """The connections of one server process: their count, who is idle (evictable, longest idle
    first), and the sweep that closes those past their deadline."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.open: set[GuardedHttpToolsProtocol] = set()
        self.idle: dict[GuardedHttpToolsProtocol, None] = {}  # insertion order: idle longest first
        self.refused: dict[Refused, None] = {}  # insertion order: oldest first
        self._timer: asyncio.TimerHandle | None = None
        # Sweep at a quarter of the shortest timeout, at least every second, at most every 50 ms.
        shortest = min(limits.header_timeout_s, limits.body_timeout_s, limits.body_deadline_s)
        self.sweep_every_s = min(1.0, max(0.05, shortest / 4))

    def admit(self, conn: GuardedHttpToolsProtocol, transport: asyncio.Transport) -> bool:
        if len(self.open) >= self.limits.max_connections:
            victim = self._longest_idle()
            if victim is None:
                REFUSED.inc()
                self.refuse(transport, BUSY, conn.loop.time())
                return False
            self.forget(victim)
            victim.transport.close()
            EVICTED.inc()
        self.open.add(conn)
        self.idle[conn] = None
        return True

    def refuse(self, transport: asyncio.Transport, answer: bytes, now: float) -> None:
        """Answer `answer` and end the stream; what the client sends after is dropped, and the
        connection lingers LINGER_S at most, so that the client reads the answer, not a reset."""
        transport.write(answer)
        if len(self.refused) < LINGERING:
            transport.write_eof()
            transport.set_protocol(Refused(self, transport, now + LINGER_S))
        else:
            transport.close()

    def _longest_idle(self) -> GuardedHttpToolsProtocol | None:
        # A connection leaves `idle` when its request head completes (the one moment a request
        # starts being handled) and re-enters only when no request is in progress on it.
        return next(iter(self.idle), None)

    def forget(self, conn: GuardedHttpToolsProtocol) -> None:
        self.open.discard(conn)
        self.idle.pop(conn, None)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        LIMIT.set(self.limits.max_connections)
        self._timer = loop.call_later(self.sweep_every_s, self._sweep, loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        OPEN.set(0)
        LIMIT.set(0)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for conn in [c for c in self.open if c.deadline and c.deadline <= now]:
            conn.expire()
        for refused in [r for r in self.refused if r.deadline <= now]:
            refused.transport.close()
        OPEN.set(len(self.open))
        self._timer = loop.call_later(self.sweep_every_s, self._sweep, loop)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline per connection, under a `Guard`."""

    guard: Guard  # set on the subclass `protocol_for` makes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase = HEAD
        self.deadline = 0.0  # loop time; 0: none
        self.body_ends = 0.0
        self.head_bytes = 0  # of the request head being read
        self.head_tail = b""  # its last bytes read, where its blank line may begin

    def in_progress(self) -> bool:
        """A request is being handled (its head is complete and its response is not)."""
        return self.cycle is not None and not self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self.guard.admit(self, transport):
            super().connection_made(transport)
            self.deadline = self.loop.time() + self.guard.limits.header_timeout_s

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.phase == HEAD:  # count the head's bytes, not those of a body read with its end
            seen = self.head_tail + data
            end = seen.find(b"\r\n\r\n")
            self.head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self.head_tail))
            self.head_tail = seen[-3:]
            if self.head_bytes > MAX_HEAD_BYTES:
                self.refuse_head()
                return
        super().data_received(data)

    def refuse_head(self) -> None:
        """A head past MAX_HEAD_BYTES: 431, and none of it goes to the parser. A head pipelined
        behind a request in progress stops the reading; the connection closes after its answer."""
        if self.in_progress():
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self.guard.forget(self)
        self.connections.discard(self)
        self._unset_keepalive_if_required()
        self.guard.refuse(self.transport, HEAD_TOO_LARGE, self.loop.time())

    def send_400_response(self, msg: str) -> None:
        """A request the parser refuses (a control byte in a header, say): 400 problem+json, where
        uvicorn answers it text/plain; the connection closes, as uvicorn's does."""
        extra = b"".join(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers)
        self.transport.write(_raw_response(400, "Bad Request", "malformed_request", MALFORMED_DETAIL, extra))
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.phase != HEAD:  # a later request on this connection; the first one's clock runs since connect
            self.phase = HEAD
            self.deadline = self.loop.time() + self.guard.limits.header_timeout_s

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.head_bytes, self.head_tail = 0, b""
        self.guard.idle.pop(self, None)
        limits = self.guard.limits
        now = self.loop.time()
        self.phase = BODY
        self.body_ends = now + limits.body_deadline_s
        self.deadline = min(self.body_ends, now + limits.body_timeout_s)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self.deadline = min(self.body_ends, self.loop.time() + self.guard.limits.body_timeout_s)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.in_progress():
            self.phase, self.deadline = WAITING, 0.0
        else:
            # The response went out before the body was all in, and the body's bytes cancelled
            # uvicorn's keep-alive timer: the next request head is due as on a new connection.
            self.phase = HEAD
            self.deadline = self.loop.time() + self.guard.limits.header_timeout_s

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.in_progress() and self in self.guard.open:
            self.guard.idle[self] = None  # the end of the line: idle the shortest

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            TIMEOUTS.labels("keepalive").inc()
        super().timeout_keep_alive_handler()

    def expire(self) -> None:
        """The deadline passed: close, answering 408 first if a request's body is late and no
        response has begun. Nothing cuts short a request in progress before it: a late pipelined
        head behind one stops reading and closes after its response, and a pipelined body is
        not late while uvicorn does not read it (it waits for the requests before it)."""
        if self.pipeline:
            self.deadline = self.loop.time() + self.guard.limits.body_timeout_s
            return
        self.deadline = 0.0
        if self.transport.is_closing():
            return
        TIMEOUTS.labels("body" if self.phase == BODY else "header").inc()
        cycle = self.cycle
        if self.phase == HEAD and self.in_progress():
            cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self.guard.forget(self)
        if self.phase == BODY and cycle is not None and not cycle.response_started:
            self.transport.write(TIMED_OUT)
            # As if the client had gone: the application's receive() says http.disconnect, and
            # whatever it sends after is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


class Refused(asyncio.Protocol):
    """A connection refused at the limit, after its 503 and end of stream: what the client sends
    is dropped, and the connection closes when the client closes it or after LINGER_S."""

    def __init__(self, guard: Guard, transport: asyncio.Transport, deadline: float) -> None:
        self.guard, self.transport, self.deadline = guard, transport, deadline
        guard.refused[self] = None

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.refused.pop(self, None)


def protocol_for(guard: Guard) -> type[GuardedHttpToolsProtocol]:
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"guard": guard})


# Requests cut at the end of the shutdown grace have this long to finish what they must (a
# gateway call's settle of what it streamed) before the application shuts down.
CUT_WAIT_S = 10.0


class GuardedServer(uvicorn.Server):
    """uvicorn's server, sweeping its guard's deadlines from start-up to the end of shutdown.

    A shutdown waits `grace_s` for the requests in progress, then cuts those left (a gateway
    stream the upstream keeps open, say): each is cancelled, and a cut gateway call settles what
    it streamed, as when its caller leaves. Plain uvicorn waited for ever, and under `--workers`
    the parent killed the worker, the call neither charged nor released. uvicorn's own
    `timeout_graceful_shutdown` cancels too, but shuts the application (its pool) down at once,
    under the settles of the calls it cut."""

    def __init__(self, config: uvicorn.Config, guard: Guard, grace_s: float) -> None:
        super().__init__(config)
        self.guard = guard
        self.grace_s = grace_s

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's (SIGTERM and SIGINT: a graceful shutdown, then the signal raised again), and
        SIGHUP as SIGTERM: a closed terminal or ssh session sends it, and its default killed the
        process outright, the requests in progress cut and the embedded cluster left running."""
        with super().capture_signals():
            if threading.current_thread() is not threading.main_thread() or signal.SIGHUP not in stop_signals():
                yield  # (SIGHUP ignored: `nohup tokentill serve` keeps serving when its terminal closes)
                return
            previous = signal.signal(signal.SIGHUP, self.handle_exit)
            try:
                yield
            finally:  # restored before uvicorn raises what it caught again (api/workers.py's handler)
                signal.signal(signal.SIGHUP, previous)

    async def startup(self, sockets: Any = None) -> None:
        self.guard.start(asyncio.get_running_loop())
        await super().startup(sockets)

    async def shutdown(self, sockets: Any = None) -> None:
        try:
            await super().shutdown(sockets)
        finally:
            self.guard.stop()

    async def _wait_tasks_to_complete(self) -> None:
        try:
            async with asyncio.timeout(self.grace_s):
                await super()._wait_tasks_to_complete()
        except TimeoutError:
            cut = list(self.server_state.tasks)
            log.warning("%d request(s) still in progress %.0f s after the shutdown began; cutting them",
                        len(cut), self.grace_s)
            for task in cut:
                task.cancel()
            if cut:
                errors = logging.getLogger("uvicorn.error")  # where uvicorn logs a request's exception
                errors.addFilter(_not_cut)
                try:
                    await asyncio.wait(cut, timeout=CUT_WAIT_S)
                finally:
                    errors.removeFilter(_not_cut)


def _not_cut(record: logging.LogRecord) -> bool:
    """Not uvicorn's ERROR with a traceback for a request the shutdown cut (said above, once)."""
    return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


def server(app: Any, settings: Settings, **config: Any) -> GuardedServer:
    """A uvicorn server for `app` under the connection limits of `settings`; `config` goes to
    `uvicorn.Config` (host, port, log_level, access_log, ...)."""
    limits = Limits.from_settings(settings)
    if limits.max_connections < settings.max_connections:
        log.warning("at most %d connections (TOKENTILL_MAX_CONNECTIONS is %d, but the open-file limit is %s)",
                    limits.max_connections, settings.max_connections, open_file_limit())
    guard = Guard(limits)
    # log_config=None: uvicorn's loggers (its start and stop, the access log) write through the root
    # handler, in the format of every other line (api.runtime.LOG_FORMAT), not `INFO:     ` alone.
    uvicorn_config = uvicorn.Config(app, http=protocol_for(guard), ws="none", backlog=ACCEPT_BURST,
                                    timeout_keep_alive=limits.keepalive_s, log_config=None, **config)
    return GuardedServer(uvicorn_config, guard, settings.shutdown_grace_s)


# The young generation is collected every 50,000 net allocations rather than 700, and what was
# built before serving (modules, the app) is left out of every collection: a 1,000-event usage
# call allocates hundreds of thousands of short-lived objects, and the default thresholds ran
# collections that walked the whole heap. In-process, 3 x 1,000 events at load ~8: 250-278 ->
# 212-223 µs of Python CPU an event (two A/B pairs).
GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Called by a server process once its app is built, before it serves."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(app: Any, settings: Settings, **config: Any) -> None:
    """Serve `app` until a signal stops it."""
    tune_gc()
    server(app, settings, **config).run()

"""The gateway's upstream connections: one pooled httpx transport, HTTP/2 where the upstream offers
it (TLS with ALPN), HTTP/1.1 otherwise, verified against the default CAs plus `upstream_ca`.

httpx's `retries=` retries only a connection that failed to open (httpcore catches ConnectError and
ConnectTimeout around the TCP connect and the TLS handshake, nothing else): the request was never
sent. Nothing else is retried, since a sent call may have generated, and been billed, already.

HTTP/2 streams the gateway gives up on. Over HTTP/1.1, a response closed before its end closes its
connection, which the upstream sees. Over HTTP/2, httpcore only forgets the stream
(encode/httpcore#1022, open): it sends no RST_STREAM, so the upstream goes on generating (and
billing) a call whose caller left or timed out, its data keep using the connection's flow-control
window, and h2 keeps counting the stream as open, until the connection refuses every new call
with "Max outbound streams is N, N open" (after N cuts, N being the upstream's
SETTINGS_MAX_CONCURRENT_STREAMS, 100 at most providers). `reset_abandoned_http2_streams` makes
httpcore reset such a stream (CANCEL) when it lets it go, and send the frame at once.

HTTP/2 calls beyond a connection's streams. httpcore (1.0) keeps one HTTP/2 connection per
upstream and reports it available whatever its streams: a call beyond the upstream's
SETTINGS_MAX_CONCURRENT_STREAMS waits on that connection for a stream to free up, with no timeout
(the pool timeout covers only the wait for a connection, the read timeout starts once the request
is sent), holding its reservation meanwhile. `spread_http2_streams` makes a connection whose
streams are all in use (once its SETTINGS were read) unavailable to the pool, and sends a call
that finds it full back to the pool (httpcore's own ConnectionNotAvailable, as for a connection
that closed meanwhile): the pool opens another connection, up to `max_upstream_connections`, or
the call waits for one within the pool timeout, else fails with httpcore's PoolTimeout (a 504
`upstream_timeout`, released, as for an upstream that cannot be reached in time). Chosen over a
gateway-level in-flight bound: a bound per upstream cannot know the upstream's stream limit, and
would queue calls that another connection could carry. Left as httpcore does it: an upstream
that states no limit gets one stream a connection (httpcore's default until told more); one that
raises its limit later is used more only as calls come and go (meanwhile a call may wait, within
the pool timeout); one that lowers it is waited on by httpcore's reader. The patch wraps five
methods of httpcore's AsyncHTTP2Connection and reads its `_max_streams`; `_require` refuses to
start if the methods are gone, and tests/api/test_gateway_connections.py exercises it against a
server allowing 2 streams (any other change there fails those tests, not the calls silently)."""
from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

import anyio
import h2.connection
import h2.errors
import h2.exceptions
import httpcore
import httpcore._async.http2 as httpcore_h2
import httpx

from api.gateway.config import GatewaySettings

log = logging.getLogger("tokentill.gateway")

FLUSH_SECONDS = 1.0  # the longest a reset waits to be written (another stream may be writing)
BACKSTOP_SECONDS = 30.0  # httpcore's read timeout is the gateway's plus this: never the first to fire


def upstream_tls(settings: GatewaySettings) -> ssl.SSLContext:
    """The TLS context upstreams are verified with: httpx's default (certifi, or $SSL_CERT_FILE /
    $SSL_CERT_DIR), plus the CA bundle of `upstream_ca` when set."""
    context = httpx.create_ssl_context()
    if settings.upstream_ca:
        context.load_verify_locations(cafile=settings.upstream_ca)
    return context


def upstream_transport(settings: GatewaySettings) -> httpx.AsyncHTTPTransport:
    """The pooled transport every upstream call goes through."""
    reset_abandoned_http2_streams()
    spread_http2_streams()
    return httpx.AsyncHTTPTransport(
        verify=upstream_tls(settings), http2=True, retries=settings.connect_retries, limits=httpx.Limits(
            max_connections=settings.max_upstream_connections,
            max_keepalive_connections=min(200, settings.max_upstream_connections)))


def upstream_timeouts(settings: GatewaySettings) -> dict[str, float]:
    """httpcore's timeouts of a call: connect (each try) and pool, the write of the request, and a
    read timeout only as a backstop. The read timeout proper (silence after the request was sent,
    and between parts of the answer) is the gateway's own, per call (api.gateway.forwarding):
    httpcore's read timeout, on an HTTP/2 connection, fails every stream the connection carries."""
    s = settings
    return httpx.Timeout(connect=s.connect_timeout_s, read=s.read_timeout_s + BACKSTOP_SECONDS,
                         write=s.read_timeout_s, pool=s.connect_timeout_s).as_dict()


def reset_abandoned_http2_streams() -> None:
    """Make httpcore's HTTP/2 connection reset a stream it closes before the upstream ended it
    (idempotent; see the module's docstring)."""
    cls = httpcore_h2.AsyncHTTP2Connection
    if getattr(cls, "_tokentill_resets", False):
        return
    closed = cls._response_closed

    async def _response_closed(self: Any, stream_id: int) -> None:
        await _reset_if_open(self, stream_id)
        await closed(self, stream_id)

    cls._response_closed = _response_closed  # type: ignore[method-assign]
    cls._tokentill_resets = True  # type: ignore[attr-defined]


async def _reset_if_open(connection: Any, stream_id: int) -> None:
    state: h2.connection.H2Connection = connection._h2_state
    stream = state.streams.get(stream_id)
    if (stream is None or stream.closed or connection._connection_error
            or state.state_machine.state == h2.connection.ConnectionState.CLOSED):
        return
    try:
        state.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
    except h2.exceptions.ProtocolError:
        return
    # Written now, under the connection's write lock (else the next write would carry it): the
    # upstream stops at once. A write that cannot be made in time, or fails, retires the connection.
    with anyio.move_on_after(FLUSH_SECONDS) as scope:
        async with connection._write_lock:
            try:
                await connection._network_stream.write(state.data_to_send(), FLUSH_SECONDS)
            except Exception as exc:
                log.warning("resetting upstream HTTP/2 stream %d failed: %s", stream_id, exc.__class__.__name__)
                connection._write_exception, connection._connection_error = exc, True
    if scope.cancelled_caught:
        log.warning("resetting upstream HTTP/2 stream %d timed out; retiring the connection", stream_id)
        connection._connection_error = True


@dataclass(slots=True)
class _Streams:
    """What `spread_http2_streams` keeps on an HTTP/2 connection: the calls let onto it and not done
    (`open`: sending, or answered and not yet closed), whether the upstream's SETTINGS were read
    (`known`: httpcore's `_max_streams` is then the connection's limit), the answered streams
    counted in `open` (by id), and an event set (then replaced) whenever any of it changes."""
    open: int = 0
    known: bool = False
    answered: set[int] = field(default_factory=set)
    changed: anyio.Event = field(default_factory=anyio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


_HOOKS = ("handle_async_request", "is_available", "is_idle", "_receive_remote_settings_change", "_response_closed")


def _require(cls: type) -> None:
    """Fail loudly (the gateway does not start) if httpcore no longer has what the patch wraps."""
    missing = [name for name in _HOOKS if not callable(getattr(cls, name, None))]
    if missing:
        raise RuntimeError(f"httpcore {httpcore.__version__} changed: AsyncHTTP2Connection lacks {missing}; "
                           "api.gateway.connections.spread_http2_streams must be revised")


def _streams(connection: Any) -> _Streams:
    streams = connection.__dict__.get("_tokentill_streams")
    if streams is None:
        streams = connection._tokentill_streams = _Streams()
    return streams


def _full(connection: Any) -> bool:
    streams = connection.__dict__.get("_tokentill_streams")
    return streams is not None and streams.known and streams.open >= connection._max_streams


def spread_http2_streams() -> None:
    """Make the pool open another HTTP/2 connection (or wait, within the pool timeout) rather than
    queue a call on a connection whose streams are all in use (idempotent; see the module's
    docstring)."""
    cls = httpcore_h2.AsyncHTTP2Connection
    _require(cls)
    if getattr(cls, "_tokentill_spreads", False):
        return
    handle, available, idle, settings, closed = (getattr(cls, name) for name in _HOOKS)

    async def handle_async_request(self: Any, request: httpcore.Request) -> httpcore.Response:
        streams = _streams(self)
        await _admit(self, streams, request, available)
        try:
            response = await handle(self, request)
        except BaseException:
            streams.open -= 1
            streams.notify()
            raise
        streams.answered.add(response.extensions["stream_id"])  # counted until httpcore closes it
        streams.notify()
        return response

    def is_available(self: Any) -> bool:
        return bool(available(self)) and not _full(self)

    def is_idle(self: Any) -> bool:  # not while a call let on has no stream yet: the pool would close it
        streams = self.__dict__.get("_tokentill_streams")
        return bool(idle(self)) and (streams is None or streams.open == 0)

    async def _receive_remote_settings_change(self: Any, event: Any) -> None:
        await settings(self, event)
        streams = _streams(self)
        streams.known = True
        streams.notify()

    async def _response_closed(self: Any, stream_id: int) -> None:
        try:
            await closed(self, stream_id)
        finally:  # after httpcore gave the stream back: a call let on now finds it free
            streams = _streams(self)
            if stream_id in streams.answered:
                streams.answered.discard(stream_id)
                streams.open -= 1
                streams.notify()

    cls.handle_async_request = handle_async_request  # type: ignore[method-assign]
    cls.is_available = is_available  # type: ignore[method-assign]
    cls.is_idle = is_idle  # type: ignore[method-assign]
    cls._receive_remote_settings_change = _receive_remote_settings_change  # type: ignore[method-assign]
    cls._response_closed = _response_closed  # type: ignore[method-assign]
    cls._tokentill_spreads = True  # type: ignore[attr-defined]


async def _admit(connection: Any, streams: _Streams, request: httpcore.Request, available: Any) -> None:
    """Let a call onto `connection` if it has a stream free, else send it back to the pool
    (ConnectionNotAvailable). Until the upstream's SETTINGS are read (by the first call's first
    read), httpcore allows one stream: the first call goes on, the others wait until they are
    read, within the pool timeout."""
    timeout = request.extensions.get("timeout", {}).get("pool")
    try:
        with anyio.fail_after(timeout):
            while True:
                if not available(connection):
                    raise httpcore.ConnectionNotAvailable()
                if streams.known:
                    if streams.open < connection._max_streams:
                        break
                    raise httpcore.ConnectionNotAvailable()
                if streams.open == 0:
                    break
                await streams.changed.wait()
    except TimeoutError:
        raise httpcore.PoolTimeout("no HTTP/2 stream was free within the pool timeout") from None
    streams.open += 1

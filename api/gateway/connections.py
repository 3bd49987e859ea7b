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
httpcore reset such a stream (CANCEL) when it lets it go, and send the frame at once."""
from __future__ import annotations

import logging
import ssl
from typing import Any

import anyio
import h2.connection
import h2.errors
import h2.exceptions
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
    closed = cls._response_closed
    if getattr(closed, "_tokentill_resets", False):
        return

    async def _response_closed(self: Any, stream_id: int) -> None:
        await _reset_if_open(self, stream_id)
        await closed(self, stream_id)

    _response_closed._tokentill_resets = True  # type: ignore[attr-defined]
    cls._response_closed = _response_closed  # type: ignore[method-assign]


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

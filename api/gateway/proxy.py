"""The metering gateway: one provider call, held, forwarded, streamed back and settled.

Per call: read the body, authenticate the caller's tokentill key (Bearer, or x-api-key), resolve
its customer, read the call (api.gateway.calls), reserve the upper bound through the wallet
engine (in-process, the same engine the HTTP routes use), forward it with the upstream's own key,
stream the answer back event by event as it arrives, and settle with the provider's usage, else
the metered output (api.gateway.streams). An upstream error status releases the hold and is
passed through unchanged; a caller who leaves cancels the upstream call and is charged what was
generated. A watcher task reads the caller's side of the connection, so a disconnect is seen
while the upstream is still thinking, not only at the next write.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec
from prometheus_client import Counter

from api.auth import Principal
from api.errors import STATUS_BY_CODE, ApiError
from api.gateway.calls import KINDS, Call, CallError, parse_call
from api.gateway.config import GatewaySettings
from api.gateway.shapes import error_body, stream_error_event
from api.gateway.streams import EventSplitter, StreamTally, answer_settlement, answer_texts
from api.routes.formats import IDENTIFIER
from api.routes.inputs import usage_tokens
from api.routes.schemas import MAX_DIMENSIONS, Dimensions
from api.routes.wire import money, shaped
from ledger.db import RetriesExhaustedError, is_unavailable
from ledger.errors import LedgerError
from ledger.model import request_hash
from pricing.errors import InvalidUsageError, PricingError
from pricing.tokens import TokenCounter
from wallets.commands import Release, Reserve, ReserveResult, Settle
from wallets.core.idempotency import refusal_body
from wallets.errors import WalletValidationError

log = logging.getLogger("tokentill.gateway")
CALLS = Counter("tokentill_gateway_calls", "Gateway calls by provider, kind and outcome "
                "(settled, released, refused, upstream_error, cut, unsettled)", ["provider", "kind", "outcome"])

FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "anthropic-version", "anthropic-beta", "openai-beta",
                             "openai-organization", "openai-project")
DROPPED_RESPONSE_HEADERS = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length",
                                      b"content-encoding", b"date", b"server", b"proxy-connection", b"upgrade",
                                      b"trailer", b"te", b"alt-svc"})
ANTHROPIC_VERSION = "2023-06-01"
_IDENTIFIER = re.compile(IDENTIFIER)


class Refusal(Exception):
    """The gateway's own refusal, answered in the provider's error shape."""

    def __init__(self, status: int, code: str, message: str, retry_after: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after
        self.details = details


class Gateway:
    """The shared parts of every call: settings, the wallet engine, key lookup and the upstream pool."""

    def __init__(self, settings: GatewaySettings, wallets: Any,
                 principal_for: Callable[[str], Awaitable[Principal]]) -> None:
        self.settings, self.wallets, self.principal_for = settings, wallets, principal_for
        self.counter = TokenCounter()
        self.transport: httpx.AsyncHTTPTransport | None = None
        self.timeout = httpx.Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s,
                                     write=settings.read_timeout_s, pool=settings.connect_timeout_s).as_dict()

    async def start(self) -> None:
        s = self.settings
        # Pooled HTTP/1.1, and HTTP/2 where the upstream offers it (TLS with ALPN). The transport
        # retries only a connection that failed: then the request was never sent. A sent call is
        # never retried: it may have generated (and been billed) already. Calls go to the transport
        # itself: httpx.AsyncClient's cookies, auth and redirects cost 1.3 ms of CPU a call here.
        self.transport = httpx.AsyncHTTPTransport(http2=True, retries=s.connect_retries, limits=httpx.Limits(
            max_connections=s.max_upstream_connections, max_keepalive_connections=min(200, s.max_upstream_connections)))

    async def stop(self) -> None:
        if self.transport is not None:
            await self.transport.aclose()

    def upstream(self, provider: str, path: str) -> tuple[str, dict[str, str]]:
        """The upstream URL of a call and the headers that authenticate it."""
        s = self.settings
        if provider == "anthropic":
            return s.anthropic_url + path, ({"x-api-key": s.anthropic_key} if s.anthropic_key else {})
        return s.openai_url + path, ({"authorization": f"Bearer {s.openai_key}"} if s.openai_key else {})

    def asgi(self, provider: str, prefix: str) -> Callable[..., Awaitable[None]]:
        async def handle(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await Exchange(self, provider, prefix, scope, receive, send).run()

        return handle


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


def _caller_key(headers: dict[str, str]) -> str:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if headers.get("x-api-key", "").strip():
        return headers["x-api-key"].strip()
    raise Refusal(401, "unauthorized", "send your tokentill key as Authorization: Bearer <key> or x-api-key")


def customer_of(principal: Principal, named: str | None) -> str:
    """The customer a call bills: the one named by x-tokentill-customer, else the key's only one."""
    if named is not None:
        if not _IDENTIFIER.match(named):
            raise Refusal(422, "validation_error", f"x-tokentill-customer must match {IDENTIFIER}")
        if not principal.may_see(named):
            raise Refusal(403, "forbidden", f"this key may not access customer {named!r}")
        return named
    visible = principal.visible()
    if visible is not None and len(visible) == 1:
        return visible[0]
    raise Refusal(422, "validation_error", "this key may bill several customers: name one with the "
                  "x-tokentill-customer header (or use an inference key limited to one customer)")


def _refusal_of(exc: Exception) -> Refusal:
    if isinstance(exc, LedgerError | PricingError):
        details = refusal_body(exc)  # what the HTTP API tells of it: the budget's figures, say
        retry = details.get("retry_after_seconds")  # a rolling budget window: when enough of it lapses
        return Refusal(STATUS_BY_CODE.get(exc.code, 422), exc.code, details.pop("detail"),
                       str(retry) if isinstance(retry, int) else None, details or None)
    if is_unavailable(exc) or isinstance(exc, RetriesExhaustedError):
        return Refusal(503, "service_unavailable", "the ledger is unavailable right now; retry shortly", "1")
    raise exc


class Exchange:
    """One call through the gateway, from the caller's request to its settlement."""

    def __init__(self, gateway: Gateway, provider: str, prefix: str, scope: dict[str, Any], receive: Any,
                 send: Any) -> None:
        self.gw, self.provider, self.scope, self.receive, self.send = gateway, provider, scope, receive, send
        path = scope["path"].rstrip("/")  # a mount sees the path under it (Litestar adds a slash)
        self.path = path[len(prefix):] if path.startswith(prefix + "/") else path
        self.kind = KINDS.get((provider, self.path), "unknown")
        self.headers = _headers(scope)
        self.request_id = ""
        self.dimensions: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.finishing = False  # settling: a caller leaving now no longer cancels anything
        self.started = False  # the response has begun

    async def run(self) -> None:
        try:
            started = time.perf_counter()
            call, customer, principal = await self._admit()
            self.timings["admit"] = time.perf_counter() - started
            reservation = await self._reserve(call, customer, principal)
        except Refusal as refusal:
            CALLS.labels(self.provider, self.kind, "refused").inc()
            await self._refuse(refusal)
            return
        except _Gone:
            return
        await self._guarded(call, reservation)

    async def _admit(self) -> tuple[Call, str, Principal]:
        if self.kind == "unknown":
            raise Refusal(404, "not_found", f"the gateway does not serve {self.scope['path']}")
        if self.scope["method"] != "POST":
            raise Refusal(405, "method_not_allowed", "use POST")
        body = await self._body()
        try:
            principal = await self.gw.principal_for(_caller_key(self.headers))
        except ApiError as exc:
            raise Refusal(exc.status, exc.code, exc.detail) from None
        except Exception as exc:  # the key store (the database) is unreachable
            raise _refusal_of(exc) from exc
        if not principal.allows("inference"):
            raise Refusal(403, "forbidden", f"a key of scope {principal.scope!r} may not make model calls")
        customer = customer_of(principal, self.headers.get("x-tokentill-customer"))
        self.dimensions = {**self._dimensions(), "api_key": principal.key_id, "gateway": f"{self.provider}.{self.kind}"}
        rid = self.headers.get("x-tokentill-request-id")
        if rid is not None and not (0 < len(rid) <= 200 and rid.isprintable()):
            raise Refusal(422, "validation_error", "x-tokentill-request-id must be 1 to 200 printable characters")
        self.request_id = rid or f"gw_{uuid.uuid4().hex}"
        s = self.gw.settings
        try:
            return parse_call(self.kind, body, default_max_output=s.default_max_output_tokens,
                              counter=self.gw.counter), customer, principal
        except CallError as exc:
            raise Refusal(400, "validation_error", exc.message if exc.field == "body" else str(exc)) from None

    def _dimensions(self) -> dict[str, Any]:
        """The caller's own usage dimensions (x-tokentill-dimensions, a JSON object), if any."""
        given = self.headers.get("x-tokentill-dimensions")
        if given is None:
            return {}
        try:
            dimensions = shaped(msgspec.json.decode(given), Dimensions)
        except (msgspec.DecodeError, WalletValidationError):
            dimensions = None
        if dimensions is None or len(dimensions) > MAX_DIMENSIONS - 2:
            raise Refusal(422, "validation_error", "x-tokentill-dimensions must be a JSON object of at most "
                          f"{MAX_DIMENSIONS - 2} string, integer or boolean values")
        return dimensions

    async def _body(self) -> bytes:
        chunks, size, limit = [], 0, self.gw.settings.max_body_bytes
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise _Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Refusal(413, "payload_too_large", f"the request body exceeds {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _reserve(self, call: Call, customer: str, principal: Principal) -> ReserveResult:
        started = time.perf_counter()
        estimate = {"source": "gateway", "input_tokens": call.prompt_tokens,
                    "max_output_tokens": call.max_output_tokens}
        command = Reserve(
            customer_id=customer, request_id=self.request_id, model=call.model,
            ttl_seconds=self.gw.settings.hold_seconds,
            request_hash=request_hash({"gateway": f"{self.provider}.{self.kind}", "model": call.model, **estimate}),
            prompt_tokens=call.prompt_tokens, max_output_tokens=call.max_output_tokens, estimate=estimate,
            dimensions=self.dimensions)
        try:
            result = await self.gw.wallets.submit(command)
        except Exception as exc:
            raise _refusal_of(exc) from exc
        self.timings["reserve"] = time.perf_counter() - started
        if result.replayed:
            raise Refusal(409, "idempotency_conflict", f"request id {self.request_id} was used already")
        return result

    async def _guarded(self, call: Call, reserved: ReserveResult) -> None:
        """Run the call; when the caller leaves first, cancel it (unless it is settling already)."""
        work = asyncio.create_task(Forwarding(self, call, reserved).run())
        watcher = asyncio.create_task(self._caller_left())
        try:
            done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if work not in done and not self.finishing:
                work.cancel()
            await asyncio.gather(work, return_exceptions=True)
        finally:
            watcher.cancel()

    async def _caller_left(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass

    async def _refuse(self, refusal: Refusal) -> None:
        headers = [(b"content-type", b"application/json")]
        if refusal.retry_after:
            headers.append((b"retry-after", refusal.retry_after.encode()))
        await self.respond(refusal.status, headers, error_body(self.provider, refusal.status, refusal.code,
                                                                refusal.message, refusal.details))

    def our_headers(self, **extra: str) -> list[tuple[bytes, bytes]]:
        timing = ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in self.timings.items())
        values = {"x-tokentill-request-id": self.request_id, **extra, "server-timing": timing}
        return [(k.encode(), v.encode()) for k, v in values.items() if v]

    async def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        await self.start(status, [*headers, (b"content-length", str(len(body)).encode())])
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        await self.send({"type": "http.response.start", "status": status,
                         "headers": [*headers, *self.our_headers()]})


class _Gone(Exception):
    """The caller left before its request was read."""


class Forwarding:
    """The upstream half of a call: forward, relay the answer, settle or release."""

    def __init__(self, exchange: Exchange, call: Call, reserved: ReserveResult) -> None:
        self.x, self.call, self.reservation = exchange, call, reserved.reservation
        self.tally = StreamTally(call.kind, call.usage_chunk_wanted)
        self.outcome = "settled"

    async def run(self) -> None:
        response: httpx.Response | None = None
        try:
            response = await self._open()
            if response is None:
                return
            if not response.is_success:
                await self._pass_error(response)
            elif self.call.stream:
                await self._relay(response)
            else:
                await self._whole(response)
        except asyncio.CancelledError:  # the caller left: what was generated is charged below
            self.outcome = "cut"
            if response is not None:
                await response.aclose()  # closes the upstream connection: the upstream sees it
            await self.finish(self.tally.settlement(self.x.gw.counter, self.call.model, self.call.prompt_raw_tokens))
        finally:
            if response is not None:
                await response.aclose()
            CALLS.labels(self.x.provider, self.x.kind, self.outcome).inc()

    async def _open(self) -> httpx.Response | None:
        url, auth = self.x.gw.upstream(self.x.provider, self.x.path)
        headers = {k: self.x.headers[k] for k in FORWARDED_REQUEST_HEADERS if k in self.x.headers}
        if self.x.provider == "anthropic":
            headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
        headers.update(auth, **{"accept-encoding": "identity"})  # SSE is parsed here: no compression
        transport = self.x.gw.transport
        assert transport is not None, "the gateway was not started"
        started = time.perf_counter()
        try:
            response = await transport.handle_async_request(httpx.Request(
                "POST", url, content=self.call.body, headers=headers, extensions={"timeout": self.x.gw.timeout}))
        except httpx.HTTPError as exc:
            self.outcome = "upstream_error"
            await self.finish(None)
            timeout = isinstance(exc, httpx.TimeoutException)
            status = 504 if timeout else 502
            log.warning("upstream %s failed: %s", url, exc.__class__.__name__)
            await self.x._refuse(Refusal(status, "upstream_timeout" if timeout else "upstream_unavailable",
                                         f"the upstream did not answer ({exc.__class__.__name__})"))
            return None
        self.x.timings["upstream"] = time.perf_counter() - started
        return response

    def _upstream_headers(self, response: httpx.Response) -> list[tuple[bytes, bytes]]:
        return [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in DROPPED_RESPONSE_HEADERS]

    async def _pass_error(self, response: httpx.Response) -> None:
        """An upstream error status: release the hold, answer the upstream's error unchanged."""
        body = await response.aread()
        self.outcome = "upstream_error"
        await self.finish(None)
        await self.x.respond(response.status_code, [*self._upstream_headers(response),
                                                    (b"x-tokentill-charged", b"0")], body)

    async def _whole(self, response: httpx.Response) -> None:
        body = await response.aread()
        self.tally.texts = answer_texts(self.call.kind, body)
        charged = await self.finish(answer_settlement(self.call.kind, body, self.x.gw.counter, self.call.model,
                                                      self.call.prompt_raw_tokens))
        extra = [(b"x-tokentill-charged", money(charged).encode())] if charged is not None else []
        await self.x.respond(response.status_code, [*self._upstream_headers(response), *extra], body)

    async def _relay(self, response: httpx.Response) -> None:
        """Each event goes to the caller as soon as it is complete; the charge follows as an SSE comment."""
        x = self.x
        await x.start(response.status_code, [*self._upstream_headers(response), (
            b"x-tokentill-reserved", (money(self.reservation.amount) or "0").encode())])
        splitter = EventSplitter()
        try:
            async for chunk in response.aiter_raw():
                out = b"".join(event for event in splitter.feed(chunk) if self.tally.observe(event))
                if out:
                    await x.send({"type": "http.response.body", "body": out, "more_body": True})
            tail = splitter.rest()
        except httpx.HTTPError as exc:  # the upstream failed mid-stream: bill what it generated
            self.outcome = "upstream_error"
            log.warning("upstream stream failed: %s", exc.__class__.__name__)
            tail = stream_error_event(x.provider, "upstream_failed", f"the upstream stream failed "
                                      f"({exc.__class__.__name__})")
        charged = await self.finish(self.tally.settlement(x.gw.counter, self.call.model, self.call.prompt_raw_tokens))
        if charged is not None:
            tail += (f": tokentill charged={money(charged)} currency={self.reservation.currency} "
                     f"request_id={x.request_id}\n\n").encode()
        await x.send({"type": "http.response.body", "body": tail, "more_body": False})

    async def finish(self, settlement: tuple[str, dict[str, Any]] | None) -> int | None:
        """Settle with `settlement` (usage form, usage), or release when None; the charge, or None
        when the ledger could not be told (logged; the hold then expires after its TTL)."""
        self.x.finishing = True
        started = time.perf_counter()
        r = self.reservation
        try:
            if settlement is None:
                if self.outcome == "settled":
                    self.outcome = "released"
                await asyncio.shield(self.x.gw.wallets.submit(Release(customer_id=r.customer_id, reservation_id=r.id)))
                return 0
            form, usage = settlement
            try:
                tokens, stored = usage_tokens(**{"usage": None, "openai_usage": None, "anthropic_usage": None,
                                                 form: usage})
            except InvalidUsageError as exc:
                log.warning("upstream usage unreadable (%s); settling with the metered output", exc)
                self.tally.usage = self.tally.started = None
                _, metered = self.tally.settlement(self.x.gw.counter, self.call.model, self.call.prompt_raw_tokens) \
                    or ("usage", {"input_tokens": self.call.prompt_raw_tokens})
                tokens, stored = usage_tokens(metered, None, None)
            result = await asyncio.shield(self.x.gw.wallets.submit(Settle(
                customer_id=r.customer_id, reservation_id=r.id, request_hash=request_hash({form: usage}),
                tokens=tokens, usage=stored, final=True)))
            return result.charged
        except Exception:
            self.outcome = "unsettled"
            log.exception("gateway call %s (reservation %s) could not be settled", self.x.request_id, r.id)
            return None
        finally:
            self.x.timings["settle"] = time.perf_counter() - started

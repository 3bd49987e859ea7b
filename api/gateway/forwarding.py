"""The upstream half of a gateway call: forward it, relay the answer (whole, or event by event),
then settle with what it cost (spooled, posted in the background: api.gateway.settles) or release
the hold (see api.gateway.proxy)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client import Counter

from api.gateway.calls import CHAT, Call
from api.gateway.settles import refused_usage, settle_record, unread_answer
from api.gateway.shapes import Refusal, stream_error_event
from api.gateway.streams import (
    EventSplitter,
    StreamTally,
    answer_settlement,
    cut_answer_settlement,
    whole_answer,
    with_compactions,
)
from api.routes.inputs import usage_tokens
from api.routes.wire import money
from pricing.errors import InvalidUsageError
from pricing.usage_reader import MAX_SERVICE_TIER
from wallets.commands import Release, ReserveResult

if TYPE_CHECKING:
    from api.gateway.proxy import Exchange

log = logging.getLogger("tokentill.gateway")
CALLS = Counter("tokentill_gateway_calls", "Gateway calls by provider, kind and outcome (settled, released, "
                "refused, upstream_error, cut, unsettled; passed: a free call passed through unmetered)",
                ["provider", "kind", "outcome"])

# the caller's headers that go upstream. Not OpenAI-Organization nor OpenAI-Project: the upstream
# is called as the operator's account (its key's own organization and project), never one its
# caller picks among those the key may use.
FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "anthropic-version", "anthropic-beta", "openai-beta")
# the upstream's answer headers that never reach the caller: the hop's own; cookies (set on the
# gateway's origin, the console's: an upstream could plant its session or CSRF cookie); the
# operator's upstream account (its organization, its project) and credentials (its key, echoed
# by a proxy before the upstream). x-tokentill-* are the gateway's own (api.gateway.proxy): an
# upstream's would pose as them.
DROPPED_RESPONSE_HEADERS = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length",
                                      b"content-encoding", b"date", b"server", b"proxy-connection", b"upgrade",
                                      b"trailer", b"te", b"alt-svc", b"proxy-authenticate", b"set-cookie",
                                      b"set-cookie2", b"openai-organization", b"openai-project",
                                      b"anthropic-organization-id", b"authorization", b"proxy-authorization",
                                      b"x-api-key"})
ANTHROPIC_VERSION = "2023-06-01"


def _is_json(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").lower().startswith("application/json")


def _is_event_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").lower().startswith("text/event-stream")


def _silent() -> httpx.ReadTimeout:
    return httpx.ReadTimeout("the upstream was silent for longer than the read timeout")


class Forwarding:
    """The upstream half of a call: forward, relay the answer, settle or release."""

    def __init__(self, exchange: Exchange, call: Call, reserved: ReserveResult) -> None:
        self.x, self.call, self.reservation = exchange, call, reserved.reservation
        self.held_at = reserved.held_at  # the values of the provider's choices its hold was priced at
        self.tally = StreamTally(call.kind, call.usage_chunk_wanted,
                                 chat_searches=dict(call.tool_uses).get("web_search", 0) if call.kind == CHAT else 0,
                                 container_units=call.container_units,
                                 reused_containers=frozenset(call.reused_containers),
                                 audio_format=call.audio_format, hidden=call.hidden_output,
                                 cache_ttl_1h=call.cache_write == "cache_write_1h")
        self.sent = False  # the upstream has the whole call: it may be generating
        self.relaying = False  # a stream is being relayed to the caller
        self.left = False  # the caller left while it was: what comes is read for its usage, not sent
        self.outcome = "settled"
        self.finished = False  # settled or released (or tried to be)
        self.charged: int | None = None  # what finish() knows was charged: 0 once released
        self.refused: dict[str, Any] | None = None  # the provider's usage the ledger could not read (_readable)

    async def run(self) -> None:
        response: httpx.Response | None = None
        try:
            response = await self._open()
            if response is None:
                return
            if not response.is_success:
                await self._pass_error(response)
            elif (self.call.stream and not _is_json(response)) or _is_event_stream(response):
                # a whole answer to a streamed call: as one; a stream to a whole call (an upstream that
                # streams whatever the call says), metered as one (was: read as JSON, released, free)
                await self._relay(response)
            else:
                await self._whole(response)
        except asyncio.CancelledError:  # the caller left: what was generated is charged below
            self.outcome = "cut"
            if response is not None:
                await response.aclose()  # the connection closed (HTTP/1.1), the stream reset (HTTP/2)
            # a stream whose thinking is hidden: its cap (streams.StreamTally.settlement)
            cap = self.call.max_output_tokens if self.relaying else None
            await self.finish(self.tally.settlement(self.x.gw.counter, self.call.model, self.call.prompt_raw_tokens,
                                                    cut_cap=cap))
        except Exception:  # a fault of the gateway's own (logged by the exchange): what was generated is charged
            if not self.finished:
                if response is not None:
                    await response.aclose()
                await self.finish(self.tally.settlement(self.x.gw.counter, self.call.model,
                                                        self.call.prompt_raw_tokens))
            raise
        finally:
            if response is not None:
                await response.aclose()
            CALLS.labels(self.x.provider, self.x.kind, self.outcome).inc()

    async def _open(self) -> httpx.Response | None:
        url, auth = self.x.gw.upstream(self.x.provider, self.x.path)
        started = time.perf_counter()
        try:
            response = await open_upstream(self.x, "POST", url, auth, self.call.body, on_sent=self._sent)
        except httpx.HTTPError as exc:
            await self._unanswered(exc)
            return None
        self.x.timings["upstream"] = time.perf_counter() - started
        return response

    def _sent(self) -> None:
        self.sent = True

    async def _unanswered(self, exc: httpx.HTTPError) -> None:
        """No answer came whole (none at all, or a whole answer cut short): release the hold and
        answer 504 or 502 (see `unanswered`). Never sent again."""
        self.outcome = "upstream_error"
        await self.finish(None)
        await self.x._refuse(unanswered(self.x, exc))

    def _upstream_headers(self, response: httpx.Response) -> list[tuple[bytes, bytes]]:
        return upstream_headers(response)

    async def _pass_error(self, response: httpx.Response) -> None:
        """An upstream error status: release the hold, answer the upstream's error unchanged (but
        a refusal of the operator's key: see `key_refused`; and under the caller's own request id,
        `x-should-retry: false`: see Exchange.no_retry)."""
        body = await self._body(response)
        if body is None:
            return
        self.outcome = "upstream_error"
        await self.finish(None)
        if response.status_code in KEY_REFUSALS:
            await self.x._refuse(key_refused(self.x, response.status_code, body))
            return
        await self.x.respond(response.status_code, [*self.x.no_retry(self._upstream_headers(response)),
                                                    (b"x-tokentill-charged", b"0")], body)

    async def _body(self, response: httpx.Response) -> bytes | None:
        """A whole answer's body, or None when it was cut or went silent mid-way: the caller gets
        no part of it, but a 502 or 504. Before any byte of it (or of an error status's), the hold
        is released (see _unanswered); once bytes of a generated answer came, it is charged as a
        cut stream is (see _cut_short). But a successful answer all of whose JSON came before the
        cut (a whole document of the call's kind: only the body's end, as HTTP frames it, was lost)
        is the answer: it goes on as any whole answer."""
        parts: list[bytes] = []
        try:
            chunks = response.aiter_bytes()
            while (part := await self._next(chunks)) is not None:
                parts.append(part)
        except httpx.HTTPError as exc:
            part = b"".join(parts)
            if response.is_success and whole_answer(self.call.kind, part):
                log.warning("upstream %s %s answer's body ended short of its framing after its whole JSON "
                            "(%d bytes): %s; passed on", self.x.provider, self.x.path, len(part),
                            exc.__class__.__name__)
                return part
            if part and response.is_success:
                await self._cut_short(part, exc)
            else:
                await self._unanswered(exc)
            return None
        return b"".join(parts)

    async def _cut_short(self, part: bytes, exc: httpx.HTTPError) -> None:
        """A whole answer cut (or gone silent) mid-body: the upstream generated it, and bills it.
        Settled with the prompt's count and the output metered from what arrived
        (streams.cut_answer_settlement), answered 502 or 504 with its charge and
        `x-should-retry: false`: the official clients would send it again, charged again."""
        self.outcome = "upstream_error"
        log.warning("upstream %s %s answer cut short after %d bytes: %s", self.x.provider, self.x.path,
                    len(part), exc.__class__.__name__)
        charged = await self.finish(cut_answer_settlement(self.call.kind, part, self.x.gw.counter, self.call.model,
                                                          self.call.prompt_raw_tokens, self.tally),
                                    wait=self._waits())
        timeout = isinstance(exc, httpx.TimeoutException)
        refusal = Refusal(504 if timeout else 502, "upstream_timeout" if timeout else "upstream_unavailable",
                          f"the upstream's answer was cut short ({exc.__class__.__name__}); it was generated, "
                          "and is charged as far as it came")
        await self.x._refuse(refusal, charged=charged, currency=self.reservation.currency)

    async def _whole(self, response: httpx.Response) -> None:
        """The answer goes back once its settle is spooled and, by default, taken by the ledger:
        its headers carry the charge. With `settle="background"` it goes back once spooled, with
        the hold in its headers and the charge in the trace. A settle the ledger cannot take now
        (the database down) is left to the spool's queue: the answer carries the hold only.
        A whole answer was generated once its headers came: a caller who leaves while its body is
        on its way no longer cancels it, and is charged it."""
        self.x.finishing = True
        body = await self._body(response)
        if body is None:
            return
        self.tally.observe_answer(body)
        settlement = answer_settlement(self.call.kind, body, self.x.gw.counter, self.call.model,
                                       self.call.prompt_raw_tokens, self.tally)
        if settlement is None:  # no JSON object (text/html): answered all the same, charged as one of an
            # unexpected shape is, its prompt (was: released, the answer passed through for nothing)
            self.refused = unread_answer(len(body), response.headers.get("content-type", ""))
            settlement = "usage", {"input_tokens": self.call.prompt_raw_tokens}
        charged = await self.finish(settlement, wait=self._waits())
        headers = [*self._upstream_headers(response), self._reserved()]
        if charged is not None:
            headers.append((b"x-tokentill-charged", money(charged, self.reservation.currency).encode()))
        await self.x.respond(response.status_code, headers, body)

    def _reserved(self) -> tuple[bytes, bytes]:
        return b"x-tokentill-reserved", (money(self.reservation.amount, self.reservation.currency) or "0").encode()

    async def _relay(self, response: httpx.Response) -> None:
        """Each event goes to the caller as soon as it is complete; the charge follows as an SSE comment."""
        x = self.x
        await x.start(response.status_code, [*self._upstream_headers(response), self._reserved()])
        self.relaying = True
        splitter = EventSplitter()
        try:
            chunks = response.aiter_raw()
            while (chunk := await self._next(chunks)) is not None:
                out = b"".join(event for event in splitter.feed(chunk) if self.tally.observe(event))
                if out and not self.left:
                    await x.send({"type": "http.response.body", "body": out, "more_body": True})
            tail = splitter.rest()
            # a last event the upstream did not end (its blank line, or its line end, missing): read
            # for the charge (the final usage, say), and relayed unless it is one the caller is not sent
            if tail and not self.tally.observe(tail):
                tail = b""
        except httpx.HTTPError as exc:
            if self.tally.ended:  # after the stream's own end: the caller has it all, and it ends so
                log.warning("upstream %s %s stream lost its connection after its last event: %s",
                            x.provider, x.path, exc.__class__.__name__)
                tail = b""
            else:
                tail = self._failed_mid_stream(splitter, exc)
        failed = self.outcome == "upstream_error"
        charged = await self.finish(self.tally.settlement(x.gw.counter, self.call.model, self.call.prompt_raw_tokens,
                                                          failed), wait=self._waits())
        if charged is not None:
            currency = self.reservation.currency
            if tail and not tail.endswith((b"\n", b"\r")):  # the comment on a line of its own, not in the data
                tail += b"\n"
            tail += (f": tokentill charged={money(charged, currency)} currency={currency} "
                     f"request_id={x.request_id}\n\n").encode()
        if not self.left:
            await x.send({"type": "http.response.body", "body": tail, "more_body": False})

    def _failed_mid_stream(self, splitter: EventSplitter, exc: httpx.HTTPError) -> bytes:
        """The upstream failed mid-stream: what it generated is billed, and the caller gets the
        provider's error event (returned)."""
        self.outcome = "upstream_error"
        # an event cut before its blank line is not relayed, but one whose data came whole (the
        # final usage, say) is read for the charge: its JSON decodes only if all of it came
        self.tally.observe(splitter.rest())
        log.warning("upstream stream failed: %s", exc.__class__.__name__)
        timeout = isinstance(exc, httpx.TimeoutException)
        return stream_error_event(self.x.provider, "upstream_timeout" if timeout else "upstream_failed",
                                  f"the upstream stream failed ({exc.__class__.__name__})")

    def reads_on(self) -> bool:
        """The caller left: whether to read the call on to its end, sending nothing, for the charge
        only the upstream's answer tells (marks the caller gone): a whole answer not come yet (the
        upstream generates, and bills, it all the same: cancelled, it was given away), or a stream
        whose thinking is hidden (begun or not: a reasoning model may think before its first byte)
        or whose provider's tools ran, and whose usage, the only count of them, has not come. The
        read timeout bounds it, as any call. Else the call is given up at once (its upstream
        cancelled; a call not sent whole yet, never begun), charged what it sent."""
        if self.relaying:
            if not ((self.tally.hidden or self.tally.tool_results) and self.tally.usage is None):
                return False
        elif not self.sent or (self.call.stream and not self.tally.hidden):
            return False
        self.left = True
        if self.outcome == "settled":
            self.outcome = "cut"
        return True

    async def _next(self, chunks: AsyncIterator[bytes]) -> bytes | None:
        return await next_part(chunks, self.x.gw.settings.read_timeout_s)

    def _waits(self) -> bool:
        return self.x.gw.settings.settle != "background"

    async def finish(self, settlement: tuple[str, dict[str, Any]] | None, wait: bool = False) -> int | None:
        """Settle with `settlement` (usage form, usage), or release when None. A settle is spooled,
        then, with `wait`, posted at once and its charge returned (None: not taken now, and sent
        again from the spool's queue), else queued for the ledger in the background (None). A
        release is told to the ledger at once: 0, or None when the ledger could not be told
        (logged; the hold then expires after its TTL)."""
        self.x.finishing = self.finished = True
        started = time.perf_counter()
        self.charged = await self._finish(settlement, wait)
        self.x.timings["settle"] = time.perf_counter() - started
        return self.charged

    async def _finish(self, settlement: tuple[str, dict[str, Any]] | None, wait: bool) -> int | None:
        r = self.reservation
        try:
            if settlement is None:
                if self.outcome == "settled":
                    self.outcome = "released"
                await asyncio.shield(self.x.gw.wallets.submit(Release(customer_id=r.customer_id, reservation_id=r.id)))
                return 0
            form, usage = self._readable(*settlement)
            if form == "anthropic_usage":  # its compactions' tokens, which its top-level counts leave out
                usage = with_compactions(usage)
            usage, assumed = self._chosen(usage)
            audio = self.call.prompt_audio_tokens
            if form == "usage" and audio and usage.get("input_tokens", 0) >= audio:  # the gateway's own count
                usage = {**usage, "input_tokens": usage["input_tokens"] - audio, "input_audio_tokens": audio}
            form, usage = self.tally.with_tool_calls(form, usage)  # searches, containers: the usage omits them
            record = settle_record(r.customer_id, self.x.request_id, r.id, form, usage, assumed, self.refused)
            settles = self.x.gw.settles
            try:
                if not wait:
                    await asyncio.shield(settles.put(record))
                    settles.spool_written()
                    return None
                charge = await asyncio.shield(settles.settle_waiting(record))
                settles.spool_written()
                return charge
            except OSError as exc:  # the spool cannot be written: settle on the response path, as without one
                settles.spool_refused(exc)
                return await asyncio.shield(settles.settle_now(record))
        except Exception:
            self.outcome = "unsettled"
            log.exception("gateway call %s (reservation %s) could not be settled", self.x.request_id, r.id)
            return None

    def _chosen(self, usage: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """The usage, and the values assumed, of each price the call left to the provider (its
        service tier, Anthropic's inference geography) that the usage does not tell: an answer cut
        before its tier, a settlement metered without the provider's usage. A tier the stream told
        (OpenAI's chunks, a response's first events) is the provider's: set in the usage, as each
        form names it at its top level (pricing.normalize). Else the value its hold was priced at
        (`held_at`: the dearest the book has), never cheaper than the hold assumed, is assumed:
        kept apart from the provider's usage (api.gateway.settles records it as such). A call that
        asked for a tier is charged at it (a dimension of its reservation)."""
        assumed: dict[str, str] = {}
        for name in self.call.chosen_by_provider:
            if usage.get(name) is not None:
                continue
            told = self.tally.service_tier if name == "service_tier" else None
            if told is not None and 0 < len(told) <= MAX_SERVICE_TIER:
                usage = {**usage, name: told}
                continue
            held = self.held_at.get(name)
            if isinstance(held, str) and 0 < len(held) <= MAX_SERVICE_TIER:
                assumed[name] = held
        return usage, assumed

    def _readable(self, form: str, usage: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The settlement as given when the ledger can read its usage, else the metered output's."""
        try:
            usage_tokens(**{"usage": None, "openai_usage": None, "anthropic_usage": None, form: usage})
            return form, usage
        except InvalidUsageError as exc:
            log.warning("upstream usage unreadable (%s); settling with the metered output", exc)
            self.refused = refused_usage(form, usage, str(exc))
            self.tally.usage = self.tally.started = None
            return self.tally.settlement(self.x.gw.counter, self.call.model, self.call.prompt_raw_tokens) \
                or ("usage", {"input_tokens": self.call.prompt_raw_tokens})


async def open_upstream(x: Exchange, method: str, url: httpx.URL, auth: dict[str, str],
                        content: bytes | None, on_sent: Callable[[], None] | None = None) -> httpx.Response:
    """Send a call upstream with the upstream's own key (never the caller's) and the caller's
    headers that matter to the provider: its response once its headers are in, else
    httpx.HTTPError (httpx.ReadTimeout when the upstream is silent past the read timeout).
    `on_sent` is called once the upstream has the whole request."""
    headers = {k: x.headers[k] for k in FORWARDED_REQUEST_HEADERS if k in x.headers}
    if x.provider == "anthropic":
        headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
    headers.update(auth, **{"accept-encoding": "identity"})  # SSE is parsed here: no compression
    transport = x.gw.transport
    assert transport is not None, "the gateway was not started"
    read, loop = x.gw.settings.read_timeout_s, asyncio.get_running_loop()
    try:
        # The read timeout is kept here, per call: httpcore's, on an HTTP/2 connection, would
        # fail every stream of the connection (and only when all of them are silent at once).
        # It runs from the moment the request is sent; the connection's own phases have theirs.
        async with asyncio.timeout(None) as silence:
            async def sent(event: str, info: dict[str, Any]) -> None:
                if event.endswith(".send_request_body.complete"):
                    silence.reschedule(loop.time() + read)
                    if on_sent is not None:
                        on_sent()

            return await transport.handle_async_request(httpx.Request(
                method, url, content=content, headers=headers,
                extensions={"timeout": x.gw.timeout, "trace": sent}))
    except TimeoutError:
        raise _silent() from None


async def next_part(chunks: AsyncIterator[bytes], seconds: float) -> bytes | None:
    """The next part of an answer, None at its end, or httpx.ReadTimeout when the upstream is
    silent for longer than `seconds` (the read timeout; the stream is given up: over HTTP/2 it is
    reset, over HTTP/1.1 its connection closed; either way the upstream sees it)."""
    try:
        async with asyncio.timeout(seconds):
            return await anext(chunks, None)
    except TimeoutError:
        raise _silent() from None


def unanswered(x: Exchange, exc: httpx.HTTPError) -> Refusal:
    """No answer came whole: 504 upstream_timeout (silent past the read timeout, or no connection
    in time) or 502 upstream_unavailable (no connection, or one lost), in the provider's shape."""
    timeout = isinstance(exc, httpx.TimeoutException)
    log.warning("upstream %s %s failed: %s", x.provider, x.path, exc.__class__.__name__)
    return Refusal(504 if timeout else 502, "upstream_timeout" if timeout else "upstream_unavailable",
                   f"the upstream did not answer ({exc.__class__.__name__})")


KEY_VARIABLES = {"openai": "TOKENTILL_UPSTREAM_OPENAI_KEY", "anthropic": "TOKENTILL_UPSTREAM_ANTHROPIC_KEY"}
# the upstream's refusals of the gateway's own key: wrong (401), or not allowed this (403)
KEY_REFUSALS = frozenset({401, 403})


def key_refused(x: Exchange, status: int, body: bytes) -> Refusal:
    """The upstream refused the operator's key (a 401 or 403: the caller's key never goes
    upstream): a 502 upstream_unavailable, logged with the upstream's words, which the caller never
    gets (they name the operator's key: OpenAI's tells its last characters; or its project), and
    not to be retried: the next try sends the same key (the official clients would send it twice more)."""
    log.error("upstream %s refused the gateway's key (%s) on %s with %d: %s", x.provider, KEY_VARIABLES[x.provider],
              x.path, status, body[:300].decode(errors="replace"))
    return Refusal(502, "upstream_unavailable", f"the upstream refused the gateway's own credentials ({status}); "
                   "the call was not made (the operator has been told)", final=True)


def upstream_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers that go back to the caller (not those of the hop itself)."""
    return [(k.lower(), v) for k, v in response.headers.raw
            if k.lower() not in DROPPED_RESPONSE_HEADERS and not k.lower().startswith(b"x-tokentill-")]

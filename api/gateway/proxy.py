"""The metering gateway: one provider call, held, forwarded, streamed back and settled.

Per call: authenticate the caller's tokentill key (Bearer, or x-api-key) on the request head,
read the body (a caller without a valid key never gets it read), resolve its customer, read the
call (api.gateway.calls), reserve the upper bound through the wallet engine (in-process, the same
engine the HTTP routes use), forward it with the upstream's own key,
stream the answer back event by event as it arrives, and settle with the provider's usage, else
the metered output (api.gateway.streams), through the gateway's spool (api.gateway.settles): a
whole answer goes back once its settle is on disk, and the ledger takes it in the background.
While the call runs its hold is renewed at about half its TTL (`hold_seconds`), so a call that
outlasts the TTL (a long stream) keeps its money held until its settle. An upstream error status
releases the hold and is passed through unchanged; a caller who leaves a stream
cancels the upstream call and is charged what was generated, but a call whose cost only the
upstream's answer tells (a whole answer not come yet, a stream with hidden thinking or provider
tools and no usage yet) is read on to its end and charged its usage. A watcher task reads the caller's
side of the connection, so a disconnect is seen while the upstream is still thinking, not only at
the next write. The providers' free, read-only endpoints (models, count_tokens) are passed through
unmetered (api.gateway.passthrough); every other path is a 404.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
import msgspec

from api.auth import Principal, key_dimensions
from api.errors import STATUS_BY_CODE, ApiError
from api.gateway.calls import KINDS, MESSAGES, PROMPT_FIELDS, RESPONSES, Call, CallError, parse_call
from api.gateway.config import GatewaySettings
from api.gateway.connections import upstream_timeouts, upstream_transport
from api.gateway.forwarding import CALLS, Forwarding
from api.gateway.passthrough import FREE_KINDS, free_kind, pass_through
from api.gateway.settles import GatewaySettles
from api.gateway.shapes import Refusal, error_body
from api.gateway.tools import UnmeteredToolError
from api.json_keys import UNPAIRED, unpaired_surrogate
from api.routes.formats import IDENTIFIER
from api.routes.schemas import MAX_DIMENSION_TEXT, MAX_DIMENSIONS, Dimensions
from api.routes.wire import money, nested_too_deep, shaped
from api.spool import Spool
from ledger.db import RetriesExhaustedError, is_unavailable
from ledger.errors import LedgerError
from ledger.model import request_hash
from pricing.errors import PricingError
from pricing.genai import context_window, long_context_above, lowest_long_context
from pricing.premium import premium_dimensions as premium_dimensions_of
from pricing.text import text_problem
from pricing.tokens import TokenCounter
from wallets.chart import HELD
from wallets.commands import MAX_TTL_SECONDS, Extend, Release, Reserve, ReserveResult
from wallets.core.idempotency import refusal_body
from wallets.errors import NothingKeptError, ReservationClosedError, TextRuleError, WalletValidationError

log = logging.getLogger("tokentill.gateway")

_IDENTIFIER = re.compile(IDENTIFIER)
PARSE_ON_LOOP_MAX = 64 * 1024  # bytes of a call's body read on the event loop; a bigger one, in a thread
# a reserve the ledger did not answer is asked again (Exchange._submit_reserve): tries, and the first wait
RESERVE_TRIES, RESERVE_RETRY_S = 3, 0.05
RECLAIM_FIRST_S, RECLAIM_MOST_S = 0.5, 30.0  # the waits between a reclaim's tries (Gateway.reclaim), doubling


class Gateway:
    """The shared parts of every call: settings, the wallet engine, key lookup and the upstream pool."""

    def __init__(self, settings: GatewaySettings, wallets: Any,
                 principal_for: Callable[[str], Awaitable[Principal]], spool: Spool) -> None:
        self.settings, self.wallets, self.principal_for = settings, wallets, principal_for
        self.settles = GatewaySettles(spool, wallets)
        self.counter = TokenCounter()
        self._urls: dict[tuple[str, str], httpx.URL] = {}  # the paths of KINDS, and each base ("")
        self.transport: httpx.AsyncHTTPTransport | None = None
        self.timeout = upstream_timeouts(settings)
        # by provider, the smallest prompt its models are priced dearer past (None: none is); until known, 0
        self.long_context_floor: dict[str, int | None] = {}
        self.reclaims: set[asyncio.Task[None]] = set()  # holds a reserve left unanswered may have taken
        # (customer, request id) of the calls here going on with a hold under the caller's own id, each
        # counted: another call under that id whose reserve goes unanswered is 409, not 503 (Exchange._submit_reserve)
        self.holding: dict[tuple[str, str], int] = {}

    async def start(self) -> None:
        s = self.settings
        # Pooled HTTP/1.1, and HTTP/2 where the upstream offers it; connection failures retried,
        # sent calls never (api.gateway.connections). Calls go to the transport itself:
        # httpx.AsyncClient's cookies, auth and redirects cost 1.3 ms of CPU a call here.
        self.transport = upstream_transport(s)
        for provider in ("openai", "anthropic"):  # loads genai-prices' snapshot, off the event loop
            self.long_context_floor[provider] = await asyncio.to_thread(lowest_long_context, provider)

        await self.settles.start()

    async def stop(self) -> None:
        for task in self.reclaims:  # the ledger still not answering: those holds are left to their expiry
            task.cancel()
        await asyncio.gather(*self.reclaims, return_exceptions=True)
        left = await self.settles.stop()
        if left:
            log.warning("gateway stopping with %d settles in its spool %s; they are sent at its next start",
                        left, self.settles.spool.path)
        if self.transport is not None:
            await self.transport.aclose()

    def reclaim(self, command: Reserve, before: datetime) -> None:
        """Release the hold a reserve the ledger never answered may have taken (its answer lost after
        its COMMIT), once the ledger answers: nobody else would settle it, and its money would stay
        held until its expiry."""
        task = asyncio.create_task(self._reclaim(command, before))
        self.reclaims.add(task)
        task.add_done_callback(self.reclaims.discard)

    async def _reclaim(self, command: Reserve, before: datetime) -> None:
        """Ask for the answer the ledger kept for that reserve (`kept_only`: a reserve never taken
        takes nothing now; was: asked as a reserve, it took a hold nobody asked for, counted in the
        budgets and alerted, before releasing it) and release the hold it names, retried while the
        ledger is unavailable, up to the hold's TTL (its expiry releases it then). A hold made after
        `before` is another call's (the same id sent again once the ledger was back, and going on):
        left alone."""
        wait, deadline = RECLAIM_FIRST_S, time.monotonic() + self.settings.hold_seconds
        while True:
            await asyncio.sleep(wait)
            try:
                held = await self.wallets.submit(dataclasses.replace(command, kept_only=True))
                r = held.reservation
                if datetime.fromisoformat(r.created_at) > before:
                    return
                if r.status == HELD:
                    await self.wallets.submit(Release(customer_id=r.customer_id, reservation_id=r.id))
                    log.warning("gateway call %s: the hold %s its unanswered reserve took is released",
                                command.request_id, r.id)
                return
            except NothingKeptError:  # the reserve was never taken
                return
            except (LedgerError, PricingError) as exc:  # refused (funds, ...), or closed: nothing is held
                log.info("gateway call %s: reclaiming its hold: %s", command.request_id, exc)
                return
            except Exception as exc:
                if not (is_unavailable(exc) or isinstance(exc, RetriesExhaustedError)):
                    log.error("gateway call %s: its hold could not be reclaimed", command.request_id, exc_info=True)
                    return
                if time.monotonic() > deadline:
                    log.warning("gateway call %s: the ledger still does not answer; its hold, if taken, "
                                "is released by its expiry", command.request_id)
                    return
            wait = min(wait * 2, RECLAIM_MOST_S)

    def upstream(self, provider: str, path: str) -> tuple[httpx.URL, dict[str, str]]:
        """The upstream URL of a call and the headers that authenticate it (each URL parsed once:
        parsing took half of building a request)."""
        s = self.settings
        base, auth = ((s.anthropic_url, {"x-api-key": s.anthropic_key} if s.anthropic_key else {})
                      if provider == "anthropic" else
                      (s.openai_url, {"authorization": f"Bearer {s.openai_key}"} if s.openai_key else {}))
        url = self._urls.get((provider, path))
        if url is None:
            url = self._urls[(provider, path)] = httpx.URL(base + path)
        return url, auth

    def asgi(self, provider: str, prefix: str) -> Callable[..., Awaitable[None]]:
        async def handle(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await Exchange(self, provider, prefix, scope, receive, send).run()

        return handle


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


# The headers that name who pays and what for: sent on two lines, a proxy before the gateway may
# read one and the gateway bill the other (api.auth refuses two Authorization lines likewise).
KEY_HEADERS = (b"authorization", b"x-api-key")
PAYER_HEADERS = (b"x-tokentill-customer", b"x-tokentill-request-id", b"x-tokentill-dimensions")


def _twice(scope: dict[str, Any], names: tuple[bytes, ...]) -> str | None:
    """The first of `names` the request sends on more than one line, if any."""
    seen = [k.lower() for k, _ in scope.get("headers", ()) if k.lower() in names]
    return next((name.decode() for name in names if seen.count(name) > 1), None)


BETA_HEADERS = {"anthropic": ("anthropic-beta", "TOKENTILL_GATEWAY_ANTHROPIC_BETAS"),
                "openai": ("openai-beta", "TOKENTILL_GATEWAY_OPENAI_BETAS")}


def betas_of(scope: dict[str, Any], name: str) -> list[str]:
    """The betas a call names in `name`, on every line of it (comma-separated)."""
    lines = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == name.encode()]
    return [item.strip() for line in lines for item in line.split(",") if item.strip()]


def allowed_betas(scope: dict[str, Any], headers: dict[str, str], provider: str,
                  allowed: frozenset[str]) -> tuple[str, ...]:
    """Refuse (400) a beta not in `allowed`: it may switch on a feature the provider bills at
    prices the gateway does not meter. The provider's own header, joined from all its lines, is
    what goes upstream; the other provider's is never forwarded."""
    name, variable = BETA_HEADERS[provider]
    given = betas_of(scope, name)
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise Refusal(400, "validation_error", f"{name} {', '.join(unknown)} is not allowed through this gateway: "
                      "a beta may change what the provider bills, and the gateway meters only the betas its "
                      f"operator lists ({variable})")
    if given:
        headers[name] = ",".join(given)
    for other, _ in BETA_HEADERS.values():
        if other != name:
            headers.pop(other, None)
    return tuple(given)


def premiums_of(call: Call, betas: tuple[str, ...], long_prompt: bool = False) -> tuple[str, ...]:
    """The premium prices (pricing.premium) a call may be billed: a one-hour cache write it asks
    for, long context its beta switches on (`context-1m-*`) or its prompt may reach (`long_prompt`),
    audio it sends (inline or an earlier answer's by id) or asks its answer in."""
    long_context = long_prompt or any(b.startswith("context-1m-") for b in betas)
    return (*(("cache_write_1h",) if call.cache_write == "cache_write_1h" else ()),
            *(("long_context",) if long_context else ()),
            *(("input_audio",) if call.hold_audio_tokens else ()),
            *(("output_audio",) if call.audio_format is not None else ()))


def _caller_key(headers: dict[str, str]) -> str:
    """The caller's key: Authorization's bearer, or x-api-key; both, they must be one key (a
    proxy before the gateway may check the other)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else ""
    api_key = headers.get("x-api-key", "").strip()
    if bearer and api_key and bearer != api_key:
        raise Refusal(401, "unauthorized", "Authorization and x-api-key name two keys: send one")
    if bearer or api_key:
        return bearer or api_key
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


# the field that bounds a call's per-call tools, by kind, and the words that tell how it holds them
_TOOLS_FIELD = {MESSAGES: ("tools", "its server tools held for their max_uses"),
                RESPONSES: ("max_tool_calls", "its tools held for max_tool_calls {}")}
_CHAT_SEARCH = ("web_search_options", "its web search held once")  # a chat call's (or a search model's)


def _too_big_to_hold(call: Call, refused: Refusal) -> Refusal:
    """A hold no journal entry can carry (wallets.core.rating.unpostable), named by the call's own
    fields: its cap (the caller's, or the gateway's default), its n, its prompt, and the bound; or,
    where its per-call tools (their fees and their results) are its larger part (`estimate.tool_uses`:
    tools_unpostable), its tools' field, their uses, fee per use, fees and results' tokens (was: the
    cap, which did not make it too big, unless the fees alone passed the bound); or, where its prompt
    alone passes the bound (`estimate.input_tokens`: prompt_unpostable), its prompt's field, the tokens
    it counted and the earlier turns it held (was: the cap, and the prompt's counted tokens alone).
    Was: 422 naming `estimate`, a field of the reserve API the caller never sent. Any other refusal
    as it is."""
    cause = refused.__cause__
    field, told = call.output_cap
    fields = cause.context.get("fields") if isinstance(cause, WalletValidationError) else None
    named = fields[0]["field"] if isinstance(fields, list) and len(fields) == 1 else None
    if named == "estimate.input_tokens":  # its prompt alone, whatever its cap
        field = PROMPT_FIELDS[call.kind][0] if call.kind in PROMPT_FIELDS else "input"
        told = f"its prompt, {call.prompt_tokens} tokens counted" + (
            " and its earlier turns held at the model's context window" if call.prior_context else "")
        return Refusal(400, "validation_error", f"{field}: {told}: {fields[0]['message']}", param=field)
    if named == "estimate.tool_uses":
        field, told = _TOOLS_FIELD.get(call.kind, _CHAT_SEARCH)
        told = told.format(max(dict(call.tool_uses).values(), default=0))
        return Refusal(400, "validation_error", f"{field}: {told}: {fields[0]['message']}", param=field)
    if not (field and named == "estimate"):
        return refused
    return Refusal(400, "validation_error", f"{field}: {told} and {call.prompt_tokens} prompt tokens: "
                   f"{fields[0]['message']}", param=field)


class Exchange:
    """One call through the gateway, from the caller's request to its settlement."""

    def __init__(self, gateway: Gateway, provider: str, prefix: str, scope: dict[str, Any], receive: Any,
                 send: Any) -> None:
        self.gw, self.provider, self.scope, self.receive, self.send = gateway, provider, scope, receive, send
        path = scope["path"].rstrip("/")  # a mount sees the path under it (Litestar adds a slash)
        self.path = path[len(prefix):] if path.startswith(prefix + "/") else path
        self.prefix = prefix
        self.kind = KINDS.get((provider, self.path)) or free_kind(provider, self.path)  # else "unknown"
        self.headers = _headers(scope)
        self.request_id = ""
        self.callers_id = False  # the request id is the caller's own (x-tokentill-request-id), not one made here
        # the caller's own request id names this call's reservation now (held, settled or released:
        # kept forever), so the same call sent again meets only 409 idempotency_conflict
        self.id_spent = False
        self.nonce = uuid.uuid4().hex  # in its reserve's request hash (_reserve)
        self.dimensions: dict[str, Any] = {}
        self.caller_dimensions: tuple[str, ...] = ()  # what a customer's key named in x-tokentill-dimensions
        self.betas: tuple[str, ...] = ()  # the provider's betas the call carries (allowed: allowed_betas)
        self.timings: dict[str, float] = {}
        self.finishing = False  # settling: a caller leaving now no longer cancels anything
        self.started = False  # the response has begun

    async def run(self) -> None:
        if self.kind in FREE_KINDS:  # a free, read-only endpoint: passed through unmetered
            with contextlib.suppress(_Gone):
                await pass_through(self)
            return
        try:
            started = time.perf_counter()
            call, customer, principal = await self._admit()
            self.timings["admit"] = time.perf_counter() - started
            try:
                reservation = await self._reserve(call, customer, principal)
            except Refusal as refusal:
                # a stored prompt's tools its book cannot price: sent so that none runs, held for none
                if refusal.code != "unpriced_model" or call.untooled is None:
                    raise
                call = call.untooled
                reservation = await self._reserve(call, customer, principal)
        except Refusal as refusal:
            CALLS.labels(self.provider, self.kind, "refused").inc()
            await self._refuse(refusal)
            return
        except _Gone:
            return
        key = (reservation.reservation.customer_id, self.request_id)
        if self.callers_id:
            self.gw.holding[key] = self.gw.holding.get(key, 0) + 1
        try:
            await self._guarded(call, reservation)
        finally:
            if self.callers_id:
                self.gw.holding[key] -= 1
                if not self.gw.holding[key]:
                    del self.gw.holding[key]

    async def _admit(self) -> tuple[Call, str, Principal]:
        if self.kind == "unknown":
            raise Refusal(404, "not_found", f"the gateway does not serve {self.prefix}{self.path}")
        if self.scope["method"] != "POST":
            raise Refusal(405, "method_not_allowed", "use POST", allow="POST")
        principal = await self.caller()  # on the head alone: a body is read for a valid key only
        if (twice := _twice(self.scope, PAYER_HEADERS)) is not None:
            raise Refusal(422, "validation_error", f"send one {twice} header, not several")
        s = self.gw.settings
        self.betas = allowed_betas(self.scope, self.headers, self.provider,
                                   s.anthropic_betas if self.provider == "anthropic" else s.openai_betas)
        coding = self.headers.get("content-encoding", "").strip()
        if coding.lower() not in ("", "identity"):  # was ignored: gzip read as "not JSON", a plain body taken
            raise Refusal(415, "unsupported_media_type",
                          f"Content-Encoding {coding} is not supported: send the body uncompressed")
        body = await self._body()
        customer = customer_of(principal, self.headers.get("x-tokentill-customer"))
        raw = self._dimensions()
        try:  # the rule of every path (api.auth.key_dimensions): a customer's key names no other key
            given = key_dimensions(principal, raw, "x-tokentill-dimensions")
        except ApiError as exc:
            raise Refusal(exc.status, exc.code, exc.detail) from None
        # a customer's key chooses no price: the book's rules may not match what it names (the reserve checks)
        self.caller_dimensions = tuple(sorted(k for k in raw if k not in ("api_key", "gateway"))) \
            if principal.counted_as_itself() else ()
        self.dimensions = {**given, "api_key": principal.key_id, "gateway": f"{self.provider}.{self.kind}"}
        rid = self._utf_8("x-tokentill-request-id")  # read as Latin-1 it was kept, and echoed, as another id
        if rid is not None and not 0 < len(rid) <= 200:
            raise Refusal(422, "validation_error", "x-tokentill-request-id must be 1 to 200 characters, in UTF-8")
        problem = None if rid is None else text_problem(rid)  # the rule of every free text (pricing.text)
        if problem is not None:
            raise Refusal(422, "validation_error", f"x-tokentill-request-id {problem}")
        self.request_id, self.callers_id = rid or f"gw_{uuid.uuid4().hex}", rid is not None
        parse = functools.partial(parse_call, self.kind, body, default_max_output=s.default_max_output_tokens,
                                  counter=self.gw.counter, server_tool_max_uses=s.server_tool_max_uses,
                                  server_tool_result_tokens=s.server_tool_result_tokens,
                                  standard_tier=s.service_tier == "standard")
        try:
            # a big body (a long prompt to count, an image's header, a PDF's pages) is read off the
            # event loop: read on it, a 32 MB PDF held every other call of this process for 0.5 s
            call = parse() if len(body) <= PARSE_ON_LOOP_MAX else await asyncio.to_thread(parse)
            return call, customer, principal
        except UnmeteredToolError as exc:  # answered, it could not be charged: refused as unpriced usage is
            raise Refusal(422, "unpriced_model", str(exc)) from None
        except CallError as exc:
            body_at_fault = exc.field == "body"
            raise Refusal(400, "validation_error", exc.message if body_at_fault else str(exc),
                          param=None if body_at_fault else re.split(r"[.\[]", exc.field, maxsplit=1)[0]) from None

    async def caller(self) -> Principal:
        """The caller's tokentill key, checked: it must allow model calls (inference, admin)."""
        if (twice := _twice(self.scope, KEY_HEADERS)) is not None:
            raise Refusal(401, "unauthorized", f"send one {twice} header, not several")
        try:
            principal = await self.gw.principal_for(_caller_key(self.headers))
        except ApiError as exc:
            raise Refusal(exc.status, exc.code, exc.detail) from None
        except Exception as exc:  # the key store (the database) is unreachable
            raise _refusal_of(exc) from exc
        if not principal.allows("inference"):
            raise Refusal(403, "forbidden", f"a key of scope {principal.scope!r} may not make model calls")
        return principal

    def _utf_8(self, name: str) -> str | None:
        """A header of the caller's words, its bytes read as UTF-8 (as sent; the headers' dict reads
        them as Latin-1); bytes that are not UTF-8 are refused, 422 naming it."""
        value = self.headers.get(name)
        try:
            return None if value is None else value.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            raise Refusal(422, "validation_error", f"{name} must be UTF-8") from None

    def _dimensions(self) -> dict[str, Any]:
        """The caller's own usage dimensions (x-tokentill-dimensions, a JSON object), if any."""
        given = self._utf_8("x-tokentill-dimensions")  # read as Latin-1, "café" was recorded "cafÃ©"
        if given is None:
            return {}
        try:  # an object of plain values, 1 level: anything nested is refused before the decoder recurses into it
            dimensions = None if nested_too_deep(given.encode(), 1) else shaped(msgspec.json.decode(given), Dimensions)
        except msgspec.DecodeError:
            unpaired = unpaired_surrogate(given.encode())  # named as a body's is (the decoder's words do not)
            if unpaired is not None:
                field = "x-tokentill-dimensions" + ("" if unpaired == "body" else f".{unpaired}")
                raise Refusal(422, "validation_error", f"{field}: {UNPAIRED}") from None
            dimensions = None
        except TextRuleError as exc:  # the rule of every free text, in its words, named as a body's is
            field, message = exc.context["fields"][0]["field"], exc.context["fields"][0]["message"]
            name = "x-tokentill-dimensions" + ("" if field == "body" else f".{field}")
            raise Refusal(422, "validation_error", f"{name}: {message}") from None
        except WalletValidationError:
            dimensions = None
        if dimensions is None or len(dimensions) > MAX_DIMENSIONS - 2:
            raise Refusal(422, "validation_error", "x-tokentill-dimensions must be a JSON object of at most "
                          f"{MAX_DIMENSIONS - 2} string, integer or boolean values, its names and strings of at "
                          f"most {MAX_DIMENSION_TEXT} characters")
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
        prior = None
        premium_dimensions = premium_dimensions_of(dict(call.dimensions))  # the call's own: it chooses the price
        if call.prior_context:  # the earlier turns: the model's context window, unless its book names one
            prior = await asyncio.to_thread(context_window, self.provider, call.model) \
                or self.gw.settings.context_hold_tokens
        premiums = premiums_of(call, self.betas, await self._long_prompt(call, max(call.prompt_tokens, prior or 0)))
        estimate = {"source": "gateway", "input_tokens": call.prompt_tokens,
                    "max_output_tokens": call.max_output_tokens,
                    **({"input_audio_tokens": call.hold_audio_tokens} if call.hold_audio_tokens else {}),
                    **({"prior_context_tokens": prior} if prior is not None else {}),
                    **({"tool_uses": dict(call.tool_uses)} if call.tool_uses else {}),
                    **({"prompt_cache_write": call.cache_write} if call.cache_write else {}),
                    **({"chosen_by_provider": list(call.chosen_by_provider)} if call.chosen_by_provider else {}),
                    **({"premiums": list(premiums)} if premiums else {})}
        command = Reserve(
            customer_id=customer, request_id=self.request_id, model=call.model,
            ttl_seconds=self.gw.settings.hold_seconds,
            # this exchange's own nonce: a replay is then only of its own reserve (one whose answer
            # was lost, asked again), never of another call sent at once under the same request id
            # with the same body, which took that reservation for its own and went upstream too
            request_hash=request_hash({"gateway": f"{self.provider}.{self.kind}", "model": call.model, **estimate,
                                       "exchange": self.nonce,
                                       # the prices it names (service_tier: flex), which the hold and free check read
                                       **({"dimensions": dict(call.dimensions)} if call.dimensions else {})}),
            prompt_tokens=call.prompt_tokens, max_output_tokens=call.max_output_tokens, estimate=estimate,
            prompt_audio_tokens=call.hold_audio_tokens, prior_context_tokens=prior, tool_uses=dict(call.tool_uses),
            tool_result_tokens=call.result_tokens,
            prompt_cache_write=call.cache_write, chosen_by_provider=call.chosen_by_provider,
            served_tiers=call.served_tiers,
            premiums=premiums, premium_dimensions=premium_dimensions,
            dimensions={**self.dimensions, **dict(call.dimensions)},  # the prices it asks for (speed: fast)
            caller_dimensions=self.caller_dimensions)
        try:
            result = await self._submit_reserve(command)
        except Refusal as refused:
            raise _too_big_to_hold(call, refused) from refused.__cause__
        self.timings["reserve"] = time.perf_counter() - started
        self.id_spent = self.callers_id
        return result

    async def _submit_reserve(self, command: Reserve) -> ReserveResult:
        """The call's hold. A reserve the ledger did not answer (the database unreachable, or the
        connection lost, maybe after its COMMIT: the hold may be taken) is asked again, the same
        request id and body: the idempotent reserve answers the hold it kept (`replayed`), this
        call's own, and the call goes on with it (was: answered 503, and the client's retry met
        409 idempotency_conflict, the hold left to its expiry by nobody). Still unanswered after
        RESERVE_TRIES: 503, and the gateway releases the hold, if one was taken, once the ledger
        answers (`Gateway.reclaim`); under the caller's own id it says x-should-retry: false (the
        id may name that hold now: a retry would meet 409). A replay of a reserve not asked here
        (the id used before) is 409 idempotency_conflict; so is one still unanswered while another
        call of this gateway goes on with a hold under the caller's id (`Gateway.holding`: the id
        is that call's, and this reserve took nothing; was: 503 "the ledger did not answer", and a
        reclaim that met the other call's hold). Under an id another process's call holds, the
        gateway cannot tell: 503."""
        unanswered = False
        for attempt in range(RESERVE_TRIES):
            try:
                result = await self.gw.wallets.submit(command)
            except Exception as exc:
                refusal = _refusal_of(exc)  # raises what is neither the ledger's refusal nor its absence
                if refusal.code == "idempotency_conflict":  # another call's reserve (the hash has its nonce)
                    raise Refusal(409, "idempotency_conflict", f"request id {self.request_id} was used already") \
                        from exc
                if refusal.code != "service_unavailable":
                    raise refusal from exc
                unanswered = True
                if attempt + 1 < RESERVE_TRIES:
                    await asyncio.sleep(RESERVE_RETRY_S * 2**attempt)
                    continue
                if (command.customer_id, self.request_id) in self.gw.holding:
                    # another call here holds under this id, answered first: this reserve took nothing
                    # (it met that hold, or never ran), so nothing is reclaimed and no new id is needed
                    raise Refusal(409, "idempotency_conflict", f"request id {self.request_id} was used already: "
                                  "another call under it holds and goes on") from exc
                log.warning("gateway call %s: the ledger did not answer its reserve (%s); its hold, if taken, "
                            "is released once it answers", self.request_id, exc)
                self.gw.reclaim(command, self.gw.wallets.clock())
                self.id_spent = self.callers_id
                raise Refusal(503, "service_unavailable", "the ledger did not answer this call's hold; it is "
                              "released if it was taken" + ("" if not self.callers_id else
                              f"; send the call again under a new request id ({self.request_id} may name it)"),
                              None if self.callers_id else "1") from exc
            if result.replayed and not (unanswered and result.reservation.status == HELD):
                raise Refusal(409, "idempotency_conflict", f"request id {self.request_id} was used already")
            if result.replayed:
                log.warning("gateway call %s: its reserve's answer was lost; asked again, the hold %s it took goes on",
                            self.request_id, result.reservation.id)
            return result
        raise AssertionError("unreachable")

    async def _long_prompt(self, call: Call, prompt: int) -> bool:
        """Whether a prompt of `prompt` tokens (the hold's) passes the size past which the provider
        prices the call's model dearer (genai-prices' prompt tiers: OpenAI's 272,000 tokens for
        gpt-5.4 and later), so its book must price it by prompt size. Looked up (off the event
        loop: the first look-up loads the snapshot) only for a prompt past the provider's lowest."""
        lowest = self.gw.long_context_floor.get(self.provider, 0)
        if lowest is None or prompt <= lowest:
            return False
        above = await asyncio.to_thread(long_context_above, self.provider, call.model)
        return above is not None and prompt > above

    async def _guarded(self, call: Call, reserved: ReserveResult) -> None:
        """Run the call; when the caller leaves first, cancel it (unless it is settling already, or
        is read on to its end for its charge: Forwarding.reads_on). Meanwhile keep its hold
        (`_keep_held`) until it is settled or released."""
        forwarding = Forwarding(self, call, reserved)
        work = asyncio.create_task(forwarding.run())
        watcher = asyncio.create_task(self._caller_left())
        keeper = asyncio.create_task(self._keep_held(reserved, forwarding))
        try:
            try:
                done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if work not in done and not self.finishing and forwarding.reads_on():  # to its end, for its charge
                    done, _ = await asyncio.wait({work})
            except asyncio.CancelledError:  # the server cuts the call (its shutdown grace is over):
                if not self.finishing:  # as when the caller leaves, what was generated is charged
                    work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                raise
            if work not in done and not self.finishing:
                work.cancel()
            failure = (await asyncio.gather(work, return_exceptions=True))[0]
            if isinstance(failure, Exception):  # a fault of the gateway's own: logged, answered 500 if not begun
                log.error("gateway call %s failed", self.request_id, exc_info=failure)
                if not self.started:  # what was generated may have been charged: only a release is told as 0
                    await self._refuse(Refusal(500, "internal_error", "an internal error occurred; it has been logged"),
                                       charged=forwarding.charged, currency=forwarding.reservation.currency)
        finally:
            watcher.cancel()
            keeper.cancel()

    async def _keep_held(self, reserved: ReserveResult, forwarding: Forwarding) -> None:
        """Extend the reservation to `hold_seconds` from now every half of it, while the call runs:
        the read timeout bounds only the silences of a stream, not its length, and a hold that
        expired under a running call would give its money back to be spent by others before the
        settle arrives. A failed extension is logged and the call goes on (the next one may pass)."""
        ttl = min(self.gw.settings.hold_seconds, MAX_TTL_SECONDS)
        r = reserved.reservation
        while True:
            await asyncio.sleep(ttl / 2)
            if forwarding.finished:  # its settle or release is on its way: nothing left to hold for
                return
            try:
                await self.gw.wallets.submit(Extend(customer_id=r.customer_id, reservation_id=r.id, ttl_seconds=ttl))
            except ReservationClosedError as exc:
                log.warning("gateway call %s: its hold %s can no longer be extended: %s", self.request_id, r.id, exc)
                return
            except Exception:
                log.warning("gateway call %s: its hold %s could not be extended; the call goes on",
                            self.request_id, r.id, exc_info=True)

    async def _caller_left(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass

    async def _refuse(self, refusal: Refusal, charged: int | None = 0, currency: str = "") -> None:
        """Answer the gateway's own refusal; `charged` (None: not known now) as on any answer: a
        refusal before the hold, a release, a free call all charged nothing. The official clients
        retry a 409, a 429 and a 5xx by themselves unless told `x-should-retry: false`: told so when
        the same call would meet the same refusal however long it waited (a request id used, a
        budget no wait frees, the upstream refusing the gateway's own key), and when it may have been
        charged (a retry would be charged again), and once the caller's own request id names its
        reservation (`id_spent`: a retry would meet only 409 idempotency_conflict, see `no_retry`)."""
        headers = [(b"content-type", b"application/json")]
        if charged is not None:
            headers.append((b"x-tokentill-charged", (money(charged, currency) if charged else "0").encode()))
        final = refusal.final or refusal.status == 409 or (refusal.status == 429 and not refusal.retry_after) \
            or self.id_spent
        if final or charged != 0:
            headers.append((b"x-should-retry", b"false"))
        if refusal.retry_after:
            headers.append((b"retry-after", refusal.retry_after.encode()))
        if refusal.allow:
            headers.append((b"allow", refusal.allow.encode()))
        await self.respond(refusal.status, headers, error_body(self.provider, refusal.status, refusal.code,
                                                                refusal.message, refusal.details, refusal.param))

    def no_retry(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """An upstream's error answer's headers, told `x-should-retry: false` (whatever the upstream
        said: Anthropic says true of its 529) once the caller's own request id names the call's
        reservation: the official clients' retry of it, released and charged 0, met only 409
        idempotency_conflict, and the caller was told that, not the upstream's error. The id is
        kept forever (DESIGN.md, Idempotency), so it is not taken again: a call sent again goes
        under a new id. A request id made here is new on each try: the retry is left to the client."""
        if not self.id_spent:
            return headers
        return [*(h for h in headers if h[0] != b"x-should-retry"), (b"x-should-retry", b"false")]

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

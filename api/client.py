"""The tokentill client SDK, sync and async, on httpx.

    with client.reserve("acme", "model-a", messages=msgs, max_output_tokens=500) as r:
        meter = r.stream_meter()
        for delta in stream:
            meter.add(delta)              # counts output tokens with tiktoken as they arrive
        r.record(openai_usage=usage)      # optional: the provider's usage wins when present

On a normal exit the reservation is settled with the usage recorded on it (or, failing that, the
prompt's tokens plus the tokens the meter counted). On an exception it is settled with what was
generated if any output arrived (the tokens were produced, so they are billed), otherwise
released; the exception is re-raised either way.

Delivery: settles and releases (the block's exit, `capture`, `settle`, `release`) are retried with
the same Idempotency-Key, with capped exponential backoff and full jitter, on connection errors,
timeouts, 408, 429, 502, 503 and 504, until an answer or a deadline (by default the time left on the
hold plus `settle_margin_s`, never under 60 s). One the SDK cannot deliver goes to a local spool
file (api/spool.py), written as soon as a first attempt fails or is interrupted (a cancelled task,
Ctrl-C: it goes on after the write), and `SettlementSpooled` is raised;
the spool is re-sent in the background when a client next starts on it (settles in bulk,
api/client_replay.py), or by `tokentill spool flush`. The server
charges a late settle once, even after its hold expired. Other calls retry briefly.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn, TypedDict, TypeVar, Unpack
from urllib.parse import urlsplit

import anyio
import httpx

from api import delivery
from api.background import PATH as SETTLEMENTS_PATH
from api.background import BackgroundSettler, ThreadedSettler, is_settle
from api.bearer import idempotency_key_problem, key_problem
from api.client_errors import (
    ERRORS,
    BudgetExceeded,
    Conflict,
    CurrencyMismatch,
    CustomerExists,
    EncodingIntegrity,
    EndpointDisabled,
    ExceedsRefundable,
    ExceedsRemaining,
    ExtensionTooShort,
    Forbidden,
    GrantClosed,
    GrantNotReversible,
    HeadersTooLarge,
    IdempotencyConflict,
    ImmutableField,
    ImplausibleUsage,
    InsufficientFunds,
    InternalError,
    InvalidAmount,
    InvalidCursor,
    InvalidRange,
    MalformedRequest,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    NotReady,
    Overpayment,
    PayloadTooLarge,
    PriceVersionConflict,
    RateLimited,
    RequestTimeout,
    ReservationClosed,
    ServiceUnavailable,
    SettlementSpooled,
    TokentillError,
    TooManyBudgets,
    TooManyEvents,
    Unauthorized,
    UnknownPriceBook,
    UnknownPriceVersion,
    UnpricedModel,
    UnsupportedMediaType,
    ValidationFailed,
    VersionNotInForce,
    describe,
    error_of,
    raise_for,
)
from api.client_journal import AsyncJournalReads, JournalReads
from api.client_replay import ReplayThread, SpoolReplay, replay_logged
from api.client_reservations import (
    REPLAYED_RESERVE,
    AsyncReservation,
    Reservation,
    StreamMeter,
    Unanswered,
    extend_call,
    given_key,
    gone_hold,
    queued_settle,
    release_call,
    report_orphaned_exit,
    reserve_request,
    settle_call,
)
from api.delivery import Failure, GaveUp, RetryPolicy, Schedule, aware, seconds_until
from api.spool import SUFFIX, FlushReport, Spool, SpoolRecord, spool_name
from api.spool import spool_dir as resolve_spool_dir
from ledger.forksafe import ForkSafeLock
from pricing.tokens import TokenCounter

__all__ = [  # the typed errors live in api.client_errors and are imported from here
    "ERRORS", "AsyncClient", "AsyncReservation", "BudgetExceeded", "Client", "Conflict", "CurrencyMismatch",
    "CustomerExists",
    "EncodingIntegrity", "EndpointDisabled", "ExceedsRefundable", "ExceedsRemaining", "ExtensionTooShort",
    "FlushReport", "Forbidden",
    "GrantClosed",
    "GrantNotReversible",
    "HeadersTooLarge", "IdempotencyConflict", "ImmutableField", "ImplausibleUsage", "InsufficientFunds",
    "InternalError",
    "InvalidAmount", "InvalidCursor", "InvalidRange", "MalformedRequest", "MethodNotAllowed", "NotAcceptable",
    "NotFound", "NotReady",
    "Overpayment", "PayloadTooLarge", "PriceVersionConflict",
    "RateLimited", "RequestTimeout", "Reservation", "ReservationClosed",
    "ServiceUnavailable", "SettlementSpooled", "SpoolServersError", "StreamMeter", "TokentillError",
    "TooManyBudgets", "TooManyEvents", "Unauthorized",
    "UnknownPriceBook", "UnknownPriceVersion", "UnpricedModel", "UnsupportedMediaType", "ValidationFailed",
    "VersionNotInForce", "flush_spool_dir",
]
log = logging.getLogger("tokentill.client")
T = TypeVar("T")
MIN_SETTLE_DEADLINE_S = 60.0
# POSTs the server does not keep by their Idempotency-Key: one sent twice is done twice (a second
# API key, whose secret nobody sees; every event re-driven again), so they are sent again only
# when no attempt can have reached the server.
UNKEYED = re.compile(r"/v1/api-keys|/v1/webhook-endpoints/[^/?]+/redrive")


def unkeyed(method: str, path: str) -> bool:
    return method == "POST" and UNKEYED.fullmatch(path.split("?", 1)[0]) is not None


# The lock a forked child's threads take to give a Client the child's own connections and settler.
_OWNING = ForkSafeLock()


class ClientOptions(TypedDict, total=False):
    """The keyword options both clients take beside `transport`, `timeout` and `flush_spool`
    (`_Base.__init__`'s), typed so that `mypy --strict` checks them (they were `**kwargs: Any`)."""

    retries: int
    backoff_s: float
    max_backoff_s: float
    max_retry_after_s: float
    retry_budget_s: float
    settle_deadline_s: float | None
    settle_margin_s: float
    key_id: str | None
    spool: str | bool | None
    spool_dir: str | os.PathLike[str] | None
    spool_silently: bool
    background_settle: bool
    drain_timeout_s: float


class ReserveOptions(TypedDict, total=False):
    """`reserve`'s keyword options (`_Base.reserve_body`'s), typed as `ClientOptions` is."""

    request_id: str | None
    messages: Any
    prompt: str | None
    input_tokens: int | None
    max_output_tokens: int
    ttl_seconds: int
    dimensions: Mapping[str, str] | None
    cache_ttl: str | None


def base_url_problem(base_url: str, name: str = "base_url") -> str | None:
    """Why no call's path can follow `base_url`, or None: each path is added to it, so after a "?"
    or "#" it became the query or a fragment ("http://h:8000?" + "/v1/…" was GET /, 404 at every
    call); a URL without http(s) and a host, or with a space or control character, reaches nothing."""
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or "?" in base_url \
            or "#" in base_url or any(c.isspace() or not c.isprintable() for c in base_url):
        return (f"{name} must be an http(s) URL with a host and no query or fragment, such as "
                f"http://127.0.0.1:8000, not {base_url!r}")
    return None


def seconds_problem(name: str, value: object, *, zero: bool = False) -> str | None:
    """Why `value` is no option of seconds `name`, or None: a finite number, more than 0 (or 0 too,
    with `zero`)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and (value > 0 or (zero and value == 0)):
        return None
    return f"{name} must be a finite number of seconds, {'0 or more' if zero else 'more than 0'}, not {value!r}"


def checked_timeout(timeout: float | httpx.Timeout | None) -> None:
    """A client's `timeout`, else a ValueError naming it: one of 0 failed every call at once
    (`ConnectError`, so every settle was spooled), a negative one or a NaN at its first call
    (`ValueError: Timeout value out of range`), an infinity there too (`OverflowError`). None (no
    timeout, as httpx has it) and an `httpx.Timeout` go to httpx as they are."""
    if timeout is not None and not isinstance(timeout, httpx.Timeout) \
            and (problem := seconds_problem("timeout", timeout)):
        raise ValueError(problem)


def options_problem(options: Mapping[str, object]) -> str | None:
    """Why a client's numeric options cannot work, or None: `retries` is a whole number, 0 or more;
    `backoff_s` and `max_backoff_s` more than 0 (a 0 is a retry loop that never waits), a settle
    deadline more than 0; the other waits 0 or more (none a NaN or an infinity)."""
    retries = options["retries"]
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        return f"retries must be a whole number, 0 or more, not {retries!r}"
    for name in ("backoff_s", "max_backoff_s"):
        if problem := seconds_problem(name, options[name]):
            return problem
    if options["settle_deadline_s"] is not None and (problem := seconds_problem(
            "settle_deadline_s", options["settle_deadline_s"])):
        return problem
    for name in ("max_retry_after_s", "retry_budget_s", "settle_margin_s", "drain_timeout_s"):
        if problem := seconds_problem(name, options[name], zero=True):
            return problem
    return None


class _Base:
    """What both clients share: requests, retry schedules, the spool."""

    def __init__(self, base_url: str, api_key: str, *, retries: int = 4, backoff_s: float = 0.05,
                 max_backoff_s: float = 5.0, max_retry_after_s: float = 30.0, retry_budget_s: float = 2.0,
                 settle_deadline_s: float | None = None, settle_margin_s: float = 30.0,
                 key_id: str | None = None, spool: str | bool | None = None,
                 spool_dir: str | os.PathLike[str] | None = None, spool_silently: bool = False,
                 background_settle: bool = False, drain_timeout_s: float = 30.0) -> None:
        if problem := key_problem("api_key", api_key):  # else every call failed in httpx or h11, settles spooled
            raise ValueError(problem)
        if problem := base_url_problem(base_url):  # else every call went elsewhere (404), settles spooled
            raise ValueError(problem)
        if problem := options_problem({  # else retried at once, or never, or waited forever
                "retries": retries, "backoff_s": backoff_s, "max_backoff_s": max_backoff_s,
                "max_retry_after_s": max_retry_after_s, "retry_budget_s": retry_budget_s,
                "settle_deadline_s": settle_deadline_s, "settle_margin_s": settle_margin_s,
                "drain_timeout_s": drain_timeout_s}):
            raise ValueError(problem)
        self._base_url, self._retries, self._retry_budget_s = base_url.rstrip("/"), retries, retry_budget_s
        self._policy = RetryPolicy(backoff_s, max_backoff_s, max_retry_after_s)
        self._settle_deadline_s, self._settle_margin_s = settle_deadline_s, settle_margin_s
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self.key_id, self.spool_silently = key_id, spool_silently
        self.spool: Spool | None = None
        if spool is not False:  # the spool's place is decided here, once ($TOKENTILL_SPOOL_DIR included)
            name = spool if isinstance(spool, str) else spool_name(self._base_url, api_key, key_id)
            self.spool = Spool(resolve_spool_dir(spool_dir) / (name if name.endswith(SUFFIX) else name + SUFFIX))
        self.counter = TokenCounter()
        if background_settle and self.spool is None:
            raise ValueError("background_settle needs the spool (spool=False turns it off)")
        self._background_settle, self._drain_timeout_s = background_settle, drain_timeout_s

    def _background_record(self, path: str, body: Any, key: str, reservation_id: str) -> SpoolRecord | None:
        """The spool record of a settle to queue in the background; None when not in that mode."""
        if not self._background_settle or not is_settle(path):
            return None
        return SpoolRecord("POST", path, body, key, reservation_id, self._base_url, self.key_id,
                           reason="queued for a background settle")

    def _request(self, method: str, path: str, body: Any, key: str | None) -> dict[str, Any]:
        headers = dict(self._headers)
        if key is None and method in ("POST", "DELETE"):
            key = f"sdk_{uuid.uuid4().hex}"  # one key for all the retries of this call
        if key is not None:  # one a header cannot carry was httpx's or h11's error, a settle spooled with it
            if problem := idempotency_key_problem(key):
                raise ValueError(problem)
            headers["Idempotency-Key"] = key
        if body is None or method == "GET":
            return {"method": method, "url": self._base_url + path, "headers": headers}
        headers["Content-Type"] = "application/json"
        return {"method": method, "url": self._base_url + path, "headers": headers, "content": json_body(body)}

    def _short(self) -> Schedule:
        return Schedule(self._policy, retries=self._retries, budget_s=self._retry_budget_s)

    def _durable(self, hold_left_s: float | None) -> Schedule:
        """A settle's schedule: `settle_deadline_s`, else the hold's time left plus the margin, >= 60 s."""
        deadline = self._settle_deadline_s
        if deadline is None:
            deadline = max(MIN_SETTLE_DEADLINE_S, (hold_left_s or 0.0) + self._settle_margin_s)
        return Schedule(self._policy, deadline_s=deadline)

    def _spooled(self, spooled: SettlementSpooled, in_flight: BaseException | None) -> None:
        """A call went to the spool: raise, unless the block's own error is in flight or silence was asked."""
        log.warning("%s", spooled)
        if in_flight is not None:
            in_flight.add_note(f"tokentill: {spooled}")
        elif not self.spool_silently:
            raise spooled

    def _abandon_deadline(self, body: dict[str, Any]) -> float:
        """Until when (monotonic) the client works at releasing a hold an unanswered reserve may
        have made: until the hold would expire, at most `drain_timeout_s` (what a close waits)."""
        ttl = body.get("ttl_seconds")
        return time.monotonic() + min(float(ttl) if ttl else self._drain_timeout_s, self._drain_timeout_s)

    def _replay_of(self, send_bulk: Any, send_one: Any) -> SpoolReplay | None:
        """The replay of what an earlier run left in this client's spool; None when there is none."""
        if self.spool is None:
            return None
        return SpoolReplay([self.spool], send_bulk, send_one, self._policy)

    def _resend_request(self, record: SpoolRecord) -> dict[str, Any]:
        return self._request(record.method, record.path, record.body, record.idempotency_key)

    def reserve_body(self, customer: str, model: str, *, request_id: str | None = None, messages: Any = None,
                     prompt: str | None = None, input_tokens: int | None = None, max_output_tokens: int = 0,
                     ttl_seconds: int = 300, dimensions: Mapping[str, str] | None = None,
                     cache_ttl: str | None = None) -> dict[str, Any]:
        return reserve_request(customer, model, request_id=request_id, messages=messages, prompt=prompt,
                               input_tokens=input_tokens, max_output_tokens=max_output_tokens,
                               ttl_seconds=ttl_seconds, dimensions=dimensions, cache_ttl=cache_ttl)


class _Pending:
    """One settle or release on its way, and its spool record (written at its first failure)."""

    def __init__(self, client: _Base, path: str, body: Any, key: str, reservation_id: str | None) -> None:
        self.spool = client.spool
        self.record = SpoolRecord("POST", path, body, key, reservation_id, client._base_url, client.key_id)

    def write(self, failure: Failure) -> bool:
        if self.spool is None:
            return False
        self.record = replace(self.record, reason=describe(failure))
        try:
            self.spool.append(self.record)
            return True
        except OSError:
            log.exception("could not write to the spool %s", self.spool.path)
            return False

    def strike(self) -> None:
        """Strike the answered call off the spool. A disk that refuses it (full, read-only: the
        rewrite needs room for the records kept) leaves the record, which a flush has answered by
        its key, charging nothing again: the call's answer stands, never an OSError."""
        if self.spool is None:
            return
        try:
            self.spool.remove({self.record.idempotency_key})
        except OSError:
            log.warning("%s %s was answered but is left in the spool %s, which could not be rewritten; a flush "
                        "is answered by its key", self.record.method, self.record.path, self.spool.path,
                        exc_info=True)

    async def awrite(self, failure: Failure) -> bool:
        return await asyncio.to_thread(self.write, failure)

    async def astrike(self) -> None:
        await asyncio.to_thread(self.strike)

    def gave_up(self, gave_up: GaveUp) -> NoReturn:
        """Raise SettlementSpooled, or the last failure itself when nothing could be spooled."""
        failure = gave_up.failure
        error = error_of(failure) if isinstance(failure, httpx.Response) else failure
        if not gave_up.spooled or self.spool is None:
            raise error from None
        raise SettlementSpooled(replace(self.record, reason=describe(failure)), self.spool.path) from error


class Client(_Base, JournalReads):
    """Synchronous client. With `flush_spool` (the default) the constructor starts a thread that
    re-sends its spool (api/client_replay.py) while the client's calls go ahead; `wait_replay`
    waits for it, `close` stops it.
    With `background_settle`, a block's exit queues its settle durably and a thread of the client
    sends the queue (api/background.py); `close` drains it for at most `drain_timeout_s`."""

    def __init__(self, base_url: str, api_key: str, *, transport: httpx.BaseTransport | None = None,
                 timeout: float | httpx.Timeout | None = 10.0, flush_spool: bool = True,
                 **kwargs: Unpack[ClientOptions]) -> None:
        checked_timeout(timeout)  # else every call failed (0), or failed at the first call (< 0, NaN, inf)
        super().__init__(base_url, api_key, **kwargs)
        self._transport, self._timeout, self._pid = transport, timeout, os.getpid()
        self._http = httpx.Client(transport=transport, timeout=timeout)
        self._background = ThreadedSettler(self.spool, self._send_settlements, self._policy) \
            if self.spool and self._background_settle else None
        replay = self._replay_of(self._send_settlements, self._resend_in_thread) if flush_spool else None
        self._replay = ReplayThread(replay) if replay is not None else None
        self._abandoned: set[threading.Thread] = set()  # releases of reserves interrupted before their answer

    def _own(self) -> None:
        """In a process forked after this client was made (gunicorn --preload, a multiprocessing
        pool), the first call gives the child what it cannot share: connections of its own (the
        pooled ones are the parent's sockets; the parent's pool is left alone, never closed here)
        and, with `background_settle`, a settler thread of its own (the parent's is not in the
        child: its exits waited on it forever). The parent's spool replay and its releases of
        unanswered reserves stay the parent's. A `transport=` given is the caller's, kept."""
        if self._pid == os.getpid():
            return
        with _OWNING:  # the child's threads may all call at once: one makes, the others wait
            if self._pid == os.getpid():
                return
            self._http = httpx.Client(transport=self._transport, timeout=self._timeout)
            self._replay, self._abandoned = None, set()
            if self._background is not None:
                self._background = ThreadedSettler(self.spool, self._send_settlements, self._policy)
            self._pid = os.getpid()  # last: a thread that finds it finds the child's own in place

    async def _send_settlements(self, items: list[dict[str, Any]]) -> httpx.Response:
        return await asyncio.to_thread(self._http.post, self._base_url + SETTLEMENTS_PATH, json=items,
                                       headers=self._headers)

    async def _resend_in_thread(self, record: SpoolRecord) -> tuple[str, str]:
        return await asyncio.to_thread(self.resend, record)

    def wait_replay(self, timeout: float | None = None) -> FlushReport | None:
        """Wait, at most `timeout`, for the replay of the spool the client started with; its report
        (an empty one without a replay), None while it goes on."""
        self._own()
        return self._replay.wait(timeout) if self._replay is not None else FlushReport()

    def _queue(self, path: str, body: Any, key: str, reservation_id: str) -> bool:
        """Queue a settle in the background, durably; False when not in that mode (or the spool
        write failed: then the caller delivers it now)."""
        self._own()
        record = self._background_record(path, body, key, reservation_id)
        if record is None or self._background is None:
            return False
        try:
            self._background.put(record)
        except OSError:
            log.exception("could not queue a settle in the spool; sending it now")
            return False
        return True

    def _call(self, method: str, path: str, body: Any = None, *, key: str | None = None,
              watch: Unanswered | None = None) -> dict[str, Any]:
        return raise_for(self._send(method, path, body, key=key, watch=watch))

    def _send(self, method: str, path: str, body: Any = None, *, key: str | None = None,
              watch: Unanswered | None = None) -> httpx.Response:
        self._own()
        request = self._request(method, path, body, key)
        send = lambda: self._http.request(**request)  # noqa: E731
        return delivery.call(watch.watch(send) if watch is not None else send, self._short(),
                             unkeyed=unkeyed(method, path))

    def _reserve_entry(self, body: dict[str, Any], callers_request_id: bool = False) -> dict[str, Any]:
        """A block's reserve, its retries under one Idempotency-Key. Ended without an answer (every
        attempt's answer lost, say timed out, or interrupted by Ctrl-C), the server may have made
        the hold all the same: a thread of the client asks again under that key (the first hold
        is answered, or made now) and releases it, while the failure goes on at once; `close`, and
        the interpreter's exit, wait for that thread (at most `drain_timeout_s`). A timed-out
        reserve under the caller's own request id is theirs to retry (see `claim_note`)."""
        key, unanswered = f"sdk_{uuid.uuid4().hex}", Unanswered()  # the key, kept: the release finds this hold
        try:
            answer = self._send("POST", "/v1/reservations", body, key=key, watch=unanswered)
            data = raise_for(answer)
        except Exception as error:
            if not unanswered.left_a_hold(error):  # answered (a refusal), or never sent: no hold
                raise
            if callers_request_id:
                error.add_note(claim_note(body))
            else:
                self._abandon(body, key, error)
            raise
        except BaseException as interrupted:
            self._abandon(body, key, interrupted)
            raise
        if answer.status_code == REPLAYED_RESERVE:  # an earlier call's hold: refused if it is gone
            gone = gone_hold(self._call("GET", f"/v1/reservations/{data['id']}"))
            if gone is not None:
                raise gone
        return data

    def _abandon(self, body: dict[str, Any], key: str, error: BaseException) -> None:
        error.add_note(abandoned_note(body))
        thread = threading.Thread(target=self._release_abandoned, args=(body, key, self._abandon_deadline(body)),
                                  daemon=False, name="tokentill-release-unanswered-reserve")
        self._abandoned.add(thread)
        thread.start()

    def _release_abandoned(self, body: dict[str, Any], key: str, deadline: float) -> None:
        request_id = body.get("request_id")
        try:
            request = self._request("POST", "/v1/reservations", body, key)
            data = raise_for(delivery.call(lambda: self._http.request(**request), until(self._policy, deadline)))
            path, release, key, reservation_id = release_call(data["id"], None)
            self._deliver(path, release, key, reservation_id, None, until(self._policy, deadline))
        except SettlementSpooled as spooled:
            log.warning("the release of unanswered reserve %s: %s", request_id, spooled)
        except Exception as exc:  # refused: no hold was made; unreachable: it lasts until it expires
            log.warning("unanswered reserve %s not released (%s); any hold it made lasts until it expires",
                        request_id, describe(exc))
        finally:
            self._abandoned.discard(threading.current_thread())

    def _deliver(self, path: str, body: Any, key: str, reservation_id: str | None,
                 hold_left_s: float | None, schedule: Schedule | None = None) -> dict[str, Any]:
        """A settle or release: retried until an answer or the deadline; else spooled and raised."""
        self._own()
        request, pending = self._request("POST", path, body, key), _Pending(self, path, body, key, reservation_id)
        try:
            response = delivery.deliver(lambda: self._http.request(**request), schedule or self._durable(hold_left_s),
                                        spool=pending.write, unspool=pending.strike)
        except GaveUp as gave_up:
            pending.gave_up(gave_up)
        return raise_for(response)

    def _settle_or_release(self, path: str, body: Any, key: str, reservation_id: str,
                           hold_left_s: float | None) -> dict[str, Any] | None:
        try:
            return self._deliver(path, body, key, reservation_id, hold_left_s)
        except SettlementSpooled as spooled:
            self._spooled(spooled, None)
            return None

    def settle(self, reservation_id: str, *, final: bool = True, key: str | None = None,
               expires_at: str | datetime | None = None, background: bool = False,
               **usage: Any) -> dict[str, Any] | None:
        """Settle a reservation by id, durably (as the block's exit does); `usage=`, `openai_usage=`,
        `anthropic_usage=` or `gemini_usage=`. None if silently spooled, or queued (`background`, on a
        `background_settle` client)."""
        aware("expires_at", expires_at)
        path, body, key, reservation_id = settle_call(reservation_id, final, key, usage)
        if background and self._queue(path, queued_settle(body), key, reservation_id):
            return None
        return self._settle_or_release(path, body, key, reservation_id, seconds_until(expires_at))

    def release(self, reservation_id: str, *, key: str | None = None,
                expires_at: str | datetime | None = None) -> dict[str, Any] | None:
        """Release a reservation's hold by id, durably. None if silently spooled."""
        hold_left_s = seconds_until(aware("expires_at", expires_at))
        return self._settle_or_release(*release_call(reservation_id, key), hold_left_s)

    def extend(self, reservation_id: str, ttl_seconds: int, *, key: str | None = None) -> dict[str, Any]:
        """Keep an open reservation's hold until `ttl_seconds` from now (later than its expiry).
        Not spooled: an extension that cannot be sent now is of no use later."""
        path, body, key = extend_call(reservation_id, ttl_seconds, key)
        return self._call("POST", path, body, key=key)

    def flush_spool(self, *, wait: bool = True) -> FlushReport:
        """Re-send this client's spooled calls with their own Idempotency-Keys and this client's key."""
        if self.spool is None or not self.spool.path.exists():
            return FlushReport()
        return self.spool.flush(self.resend, wait=wait)

    def resend(self, record: SpoolRecord) -> tuple[str, str]:
        """Send one spooled call once: (outcome, note), as `delivery.flush_outcome` says."""
        self._own()
        try:
            request = self._resend_request(record)
        except ValueError as exc:  # a key no header carries (an earlier SDK spooled it): no send delivers it
            return "rejected", str(exc)
        try:
            response = self._http.request(**request)
        except httpx.TransportError as exc:
            return "unreachable", describe(exc)
        return delivery.flush_outcome(response), f"{response.status_code} {response.text[:300]}"

    def reserve(self, customer: str, model: str, **kwargs: Unpack[ReserveOptions]) -> Reservation:
        return Reservation(self, self.reserve_body(customer, model, **kwargs), self.counter,
                           callers_request_id=kwargs.get("request_id") is not None)

    def get(self, path: str) -> dict[str, Any]:
        return self._call("GET", path)

    def post(self, path: str, body: Any, *, key: str | None = None) -> dict[str, Any]:
        return self._call("POST", path, body, key=given_key(key))

    def close(self) -> None:
        self._own()  # a child closes its own connections and settler, never the parent's
        deadline = time.monotonic() + self._drain_timeout_s  # one for the releases and the queue together
        if self._replay is not None:
            self._replay.stop(max(0.0, deadline - time.monotonic()))
        for thread in list(self._abandoned):  # releases of interrupted reserves: let them finish
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._background is not None:
            self._background.close(max(0.0, deadline - time.monotonic()))
            self._background = None
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base, AsyncJournalReads):
    """Asynchronous client. With `flush_spool` (the default) it starts a task re-sending its spool
    (api/client_replay.py) on `__aenter__` or its first call, whichever comes first, and goes on
    with the call at once; `wait_replay` waits for the task, `aclose` stops it. With
    `background_settle`, a block's exit queues its settle durably (api/background.py) instead of
    waiting for it; `aclose` drains the queue for at most `drain_timeout_s`, and what is left stays
    in the spool."""

    def __init__(self, base_url: str, api_key: str, *, transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float | httpx.Timeout | None = 10.0, flush_spool: bool = True,
                 **kwargs: Unpack[ClientOptions]) -> None:
        checked_timeout(timeout)  # else every call failed (0), or failed at the first call (< 0, NaN, inf)
        super().__init__(base_url, api_key, **kwargs)
        self._transport, self._timeout, self._flush_spool = transport, timeout, flush_spool
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it serves, from its first call
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout)
        self._flush_pending = flush_spool
        self._replay: asyncio.Task[FlushReport | None] | None = None
        self._background = BackgroundSettler(self.spool, self._send_settlements, self._policy) \
            if self.spool and self._background_settle else None
        self._exits: set[asyncio.Task[Any]] = set()  # block exits (and releases) sending on their own

    def _own(self) -> None:
        """Serve the running event loop. A client kept from one loop to the next (each job under
        its own `asyncio.run`) starts afresh on the new one: its pooled connections, tasks and
        background settler belonged to the old loop (the next call reused a connection and failed,
        "Event loop is closed"); what the old loop left unsent is in the spool, and the spool
        replay runs again (with `flush_spool`). Two loops running at once cannot share it."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None:
            if self._loop.is_running():
                raise RuntimeError("an AsyncClient serves one event loop at a time: this one is in use by a loop "
                                   "still running (another thread's); make a client for each loop")
            self._http = httpx.AsyncClient(transport=self._transport, timeout=self._timeout)  # the old one's
            self._replay, self._exits, self._flush_pending = None, set(), self._flush_spool  # sockets: left
            if self._background is not None:
                self._background = BackgroundSettler(self.spool, self._send_settlements, self._policy)
        self._loop = loop

    async def _send_settlements(self, items: list[dict[str, Any]]) -> httpx.Response:
        """One bulk settle call; each item carries its own key, so the call needs none."""
        return await self._http.post(self._base_url + SETTLEMENTS_PATH, json=items, headers=self._headers)

    async def _queue(self, path: str, body: Any, key: str, reservation_id: str) -> bool:
        """Queue a settle in the background, durably; False when not in that mode (or the spool
        write failed: then the caller delivers it now)."""
        self._own()
        record = self._background_record(path, body, key, reservation_id)
        if record is None or self._background is None:
            return False
        try:
            await self._background.put(record)
        except OSError:
            log.exception("could not queue a settle in the spool; sending it now")
            return False
        return True

    async def _call(self, method: str, path: str, body: Any = None, *, key: str | None = None,
                    watch: Unanswered | None = None) -> dict[str, Any]:
        return raise_for(await self._send(method, path, body, key=key, watch=watch))

    async def _send(self, method: str, path: str, body: Any = None, *, key: str | None = None,
                    watch: Unanswered | None = None) -> httpx.Response:
        await self._flush_at_start()
        request = self._request(method, path, body, key)
        send = lambda: self._http.request(**request)  # noqa: E731
        return await delivery.acall(watch.awatch(send) if watch is not None else send, self._short(),
                                    unkeyed=unkeyed(method, path))

    async def _deliver(self, path: str, body: Any, key: str, reservation_id: str | None,
                       hold_left_s: float | None, schedule: Schedule | None = None) -> dict[str, Any]:
        """A settle or release: retried until an answer or the deadline; else spooled and raised."""
        await self._flush_at_start()
        request, pending = self._request("POST", path, body, key), _Pending(self, path, body, key, reservation_id)
        try:
            response = await delivery.adeliver(lambda: self._http.request(**request),
                                               schedule or self._durable(hold_left_s),
                                               spool=pending.awrite, unspool=pending.astrike)
        except GaveUp as gave_up:
            pending.gave_up(gave_up)
        return raise_for(response)

    async def _deliver_exit(self, path: str, body: Any, key: str, reservation_id: str,
                            hold_left_s: float | None) -> dict[str, Any]:
        """A block's exit: `_deliver` in a task of its own. A cancelled caller (a cancel scope
        cancels every await until the block is left) goes on cancelled at once, and the task
        still sends the settle or release, or spools it; `aclose` waits for it."""
        task = self._on_its_own(self._deliver(path, body, key, reservation_id, hold_left_s))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(report_orphaned_exit)  # nobody awaits its outcome now
            raise

    async def _reserve_entry(self, body: dict[str, Any], callers_request_id: bool = False) -> dict[str, Any]:
        """A block's reserve, in a task of its own, its retries under one Idempotency-Key. Should
        the caller be cancelled before the answer, or the reserve end without one (every attempt's
        answer lost, say timed out), the hold the server may have made is released by a task of
        the client (asking again under that key), not left until it expires; a timed-out one
        under the caller's own request id is theirs to retry (see `claim_note`)."""
        key, unanswered, replayed = f"sdk_{uuid.uuid4().hex}", Unanswered(), [False]

        async def reserving() -> dict[str, Any]:
            answer = await self._send("POST", "/v1/reservations", body, key=key, watch=unanswered)
            replayed[0] = answer.status_code == REPLAYED_RESERVE
            return raise_for(answer)

        task = self._on_its_own(reserving())
        try:
            data = await asyncio.shield(task)
        except asyncio.CancelledError as cancelled:
            self._abandon(task, body, key, unanswered, cancelled)
            raise
        except Exception as error:
            if not unanswered.left_a_hold(error):  # answered (a refusal), or never sent: no hold
                raise
            if callers_request_id:
                error.add_note(claim_note(body))
            else:
                self._abandon(task, body, key, unanswered, error)
            raise
        if replayed[0]:  # an earlier call's hold: refused if it is gone
            gone = gone_hold(await self._call("GET", f"/v1/reservations/{data['id']}"))
            if gone is not None:
                raise gone
        return data

    def _abandon(self, reserving: asyncio.Task[dict[str, Any]], body: dict[str, Any], key: str,
                 unanswered: Unanswered, error: BaseException) -> None:
        error.add_note(abandoned_note(body))
        releasing = self._release_abandoned(reserving, body, key, unanswered, self._abandon_deadline(body))
        self._on_its_own(releasing).add_done_callback(report_orphaned_exit)

    async def _release_abandoned(self, reserving: asyncio.Task[dict[str, Any]], body: dict[str, Any], key: str,
                                 unanswered: Unanswered, deadline: float) -> dict[str, Any] | None:
        try:
            data = await reserving
        except Exception as error:
            if not unanswered.left_a_hold(error):  # refused, or never sent: no hold
                return None
            try:
                request = self._request("POST", "/v1/reservations", body, key)
                data = raise_for(await delivery.acall(lambda: self._http.request(**request),
                                                      until(self._policy, deadline)))
            except Exception as exc:  # refused: no hold was made; unreachable: it lasts until it expires
                log.warning("unanswered reserve %s not released (%s); any hold it made lasts until it expires",
                            body.get("request_id"), describe(exc))
                return None
        path, release, release_key, reservation_id = release_call(data["id"], None)
        return await self._deliver(path, release, release_key, reservation_id, None, until(self._policy, deadline))

    def _on_its_own(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coroutine)
        self._exits.add(task)
        task.add_done_callback(self._exits.discard)
        return task

    async def _settle_or_release(self, path: str, body: Any, key: str, reservation_id: str,
                                 hold_left_s: float | None) -> dict[str, Any] | None:
        try:
            return await self._deliver(path, body, key, reservation_id, hold_left_s)
        except SettlementSpooled as spooled:
            self._spooled(spooled, None)
            return None

    async def settle(self, reservation_id: str, *, final: bool = True, key: str | None = None,
                     expires_at: str | datetime | None = None, background: bool = False,
                     **usage: Any) -> dict[str, Any] | None:
        """With `background` (a `background_settle` client), queue it durably and answer None."""
        aware("expires_at", expires_at)
        path, body, key, reservation_id = settle_call(reservation_id, final, key, usage)
        if background and await self._queue(path, queued_settle(body), key, reservation_id):
            return None
        return await self._settle_or_release(path, body, key, reservation_id, seconds_until(expires_at))

    async def release(self, reservation_id: str, *, key: str | None = None,
                      expires_at: str | datetime | None = None) -> dict[str, Any] | None:
        return await self._settle_or_release(*release_call(reservation_id, key),
                                             seconds_until(aware("expires_at", expires_at)))

    async def extend(self, reservation_id: str, ttl_seconds: int, *, key: str | None = None) -> dict[str, Any]:
        path, body, key = extend_call(reservation_id, ttl_seconds, key)
        return await self._call("POST", path, body, key=key)

    async def flush_spool(self, *, wait: bool = True) -> FlushReport:
        if self.spool is None or not self.spool.path.exists():
            return FlushReport()
        return await self.spool.aflush(self.resend, wait=wait)

    async def resend(self, record: SpoolRecord) -> tuple[str, str]:
        self._own()
        try:
            request = self._resend_request(record)
        except ValueError as exc:  # as the sync client's
            return "rejected", str(exc)
        try:
            response = await self._http.request(**request)
        except httpx.TransportError as exc:
            return "unreachable", describe(exc)
        return delivery.flush_outcome(response), f"{response.status_code} {response.text[:300]}"

    async def _flush_at_start(self) -> None:
        self._own()
        if not self._flush_pending:
            return
        self._flush_pending = False  # once
        replay = self._replay_of(self._send_settlements, self.resend)
        if replay is not None:
            self._replay = asyncio.create_task(replay_logged(replay))

    async def wait_replay(self) -> FlushReport | None:
        """Wait for the replay of the spool the client started with (bound it with
        `asyncio.timeout`); its report (an empty one without a replay), None if it was stopped."""
        self._own()
        if self._replay is None:
            return FlushReport()
        await asyncio.wait([self._replay])
        return None if self._replay.cancelled() else self._replay.result()

    def reserve(self, customer: str, model: str, **kwargs: Unpack[ReserveOptions]) -> AsyncReservation:
        return AsyncReservation(self, self.reserve_body(customer, model, **kwargs), self.counter,
                                callers_request_id=kwargs.get("request_id") is not None)

    async def get(self, path: str) -> dict[str, Any]:
        return await self._call("GET", path)

    async def post(self, path: str, body: Any, *, key: str | None = None) -> dict[str, Any]:
        return await self._call("POST", path, body, key=given_key(key))

    async def aclose(self) -> None:
        """Stop the replay, wait for the exits (and the queue) at most `drain_timeout_s`, close the
        connections. Shielded from a cancel scope (anyio's, as Starlette and Litestar use), which
        cancels every await until it is left: a close inside one still does all of this."""
        self._own()
        deadline = time.monotonic() + self._drain_timeout_s  # one for the exits and the queue together
        with anyio.CancelScope(shield=True):
            if self._replay is not None:  # stopped: what it has not sent stays in the spool
                self._replay.cancel()
                await asyncio.gather(self._replay, return_exceptions=True)
            if self._exits:  # exits whose callers were cancelled: let them finish, then interrupt (spool)
                _, late = await asyncio.wait(set(self._exits), timeout=max(0.0, deadline - time.monotonic()))
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            if self._background is not None:
                await self._background.drain(max(0.0, deadline - time.monotonic()))
                self._background = None
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        await self._flush_at_start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def json_body(body: Any) -> bytes:
    """A request body as JSON, a Decimal (money, as callers hold it) as its exact decimal string."""
    return json.dumps(body, default=_decimal_string, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode()  # as httpx's json= encodes, but for the Decimal


def _decimal_string(value: object) -> str:
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable"
                    + (": a Decimal must be finite" if isinstance(value, Decimal) else ""))


def until(policy: RetryPolicy, deadline: float) -> Schedule:
    """A schedule that retries until `deadline` (monotonic); one attempt at least."""
    return Schedule(policy, deadline_s=max(0.0, deadline - time.monotonic()))


def abandoned_note(body: dict[str, Any]) -> str:
    return (f"tokentill: reserve {body.get('request_id')} had no answer; the client asks again under its "
            "Idempotency-Key and releases any hold it made")


def claim_note(body: dict[str, Any]) -> str:
    """A reserve under the caller's own request id had no answer: the hold it may have made is
    the caller's to claim, as the server answers that request id with its first answer. Released
    by the client meanwhile, the retry would be told of a hold already gone (its settle refused)."""
    request_id = body.get("request_id")
    return (f"tokentill: reserve {request_id} had no answer and may have made its hold: retry with request_id "
            f"{request_id} to get that hold (else it is held until it expires)")


class SpoolServersError(ValueError):
    """A spool directory holds the records of several servers and no server was named for its key."""

    def __init__(self, servers: list[str]) -> None:
        super().__init__(f"the spool holds records for {len(servers)} servers ({', '.join(servers)}): name the one "
                         "the key is for (--server URL); the others' records stay in the spool")
        self.servers = servers


def flush_spool_dir(directory: str | os.PathLike[str] | None, api_key: str, *, url: str | None = None,
                    server: str | None = None, timeout: float = 10.0) -> list[tuple[Path, FlushReport]]:
    """Re-send every spool file in `directory` (default: the SDK's) with `api_key`, which is sent
    to one server only, the one it was given for: `url` (every record goes there), else `server`
    (its records go there; another server's stay spooled, reported as kept), else the one server
    the records name (several: SpoolServersError, nothing sent). A record the key may not send
    stays spooled; a file that cannot be read or updated is reported with its `error`, and the
    next one goes on."""
    clients: dict[str, Client] = {}
    files = sorted(resolve_spool_dir(directory).glob("*" + SUFFIX))
    target = (url or server or "").rstrip("/") or None
    if target is None:
        servers = sorted({record.base_url.rstrip("/") for path in files for record in _readable(path)})
        if len(servers) > 1:
            raise SpoolServersError(servers)

    def send(record: SpoolRecord) -> tuple[str, str]:
        base = url or record.base_url
        if target is not None and url is None and record.base_url.rstrip("/") != target:
            return "kept", f"for {record.base_url}, not {target}, the server the key was given for"
        if (problem := base_url_problem(base)) is not None:  # a record of an SDK before the client refused it
            return "kept", problem
        if base not in clients:
            clients[base] = Client(base, api_key, timeout=timeout, spool=False, flush_spool=False)
        return clients[base].resend(record)

    def flush(path: Path) -> FlushReport:
        try:
            return Spool(path).flush(send)
        except OSError as exc:  # this file only: the others are flushed all the same
            return FlushReport(error=f"{type(exc).__name__}: {exc}")

    try:
        return [(path, flush(path)) for path in files]
    finally:
        for client in clients.values():
            client.close()


def _readable(path: Path) -> list[SpoolRecord]:
    """A spool file's records, or none when it cannot be read (its flush then says why)."""
    try:
        return Spool(path).records()
    except OSError:
        return []

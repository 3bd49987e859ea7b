"""When the SDK tries again: capped exponential backoff with full jitter, Retry-After, deadlines.

Two schedules. A settle or release (`durable`) retries until its deadline on connection errors,
timeouts, 408, 429, 502, 503 and 504; other calls (`short`) retry a few times within a small
budget, on connection errors, timeouts, 408, 502, 503 and 504, and a 429 other than a budget's
refusal (`budget_exceeded` is the call's answer: its key replays it). Both wait what a Retry-After asks,
capped. A 408 (the server's connection guard timed out a stalled body, before any handler saw
it) is a timeout like any other: nothing was done, so the call may go again.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

DURABLE_RETRY = frozenset({408, 429, 502, 503, 504})
SHORT_RETRY = frozenset({408, 502, 503, 504})
# Answers that say nothing about the call itself (wrong key, wrong server, a server fault): a
# spooled call answered so stays spooled, to be sent again with the right key or later.
KEEP_SPOOLED = frozenset({401, 403, 404, 408})
# A settle or release answered so is not retried now but spooled, as a 5xx other than 502-504
# is: a 401 is about the key (revoked while the call ran), and another key's flush delivers it.
SPOOL_NOW = frozenset({401})
# Failures of an attempt that never reached the server: it cannot have been carried out.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Answers of a proxy that may have passed the call on before it gave up on it (a 503 too, unless
# it is tokentill's own: see `proxy_gave_up`).
PROXY_GAVE_UP = frozenset({502, 504})
SERVERS_OWN_503 = frozenset({"service_unavailable", "not_ready"})
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    backoff_s: float = 0.05         # the ceiling of the first wait; doubled per attempt
    max_backoff_s: float = 5.0      # the ceiling's cap
    max_retry_after_s: float = 30.0  # a Retry-After is honoured up to this

    def wait(self, attempt: int, retry_after: float | None) -> float:
        """The wait before retry number `attempt` (0-based): full jitter under the capped
        exponential ceiling, after the Retry-After if one was given (capped): the server tells
        every contended caller the same Retry-After, and callers that all came back at that very
        instant would be the same spike again."""
        # the exponent stops growing long before the cap is reached (2**1024 is past a float)
        jitter = random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2.0 ** min(attempt, 64)))
        return jitter if retry_after is None else min(retry_after, self.max_retry_after_s) + jitter


class Schedule:
    """One call's retries: `next_wait` gives the wait before the next attempt, or None to stop."""

    def __init__(self, policy: RetryPolicy, *, deadline_s: float | None = None, retries: int | None = None,
                 budget_s: float = 0.0) -> None:
        self.policy, self.retries, self.budget_s = policy, retries, budget_s
        self.deadline = None if deadline_s is None else time.monotonic() + deadline_s
        self.attempt, self.waited = 0, 0.0

    def next_wait(self, retry_after: float | None) -> float | None:
        wait = self.policy.wait(self.attempt, retry_after)
        if self.deadline is not None:  # durable: keep going until the deadline, never sleep past it
            left = self.deadline - time.monotonic()
            if left <= 0:
                return None
            wait = min(wait, left)
        elif self.retries is not None and self.attempt >= self.retries:
            return None
        elif retry_after is not None and retry_after > self.budget_s - self.waited:
            return None  # the server asks for more than this call may wait: answer now
        self.attempt += 1
        self.waited += wait
        return wait


Failure = BaseException | httpx.Response


class GaveUp(Exception):
    """A settle or release stopped without an answer: its last failure, and whether it is spooled."""

    def __init__(self, failure: Failure, spooled: bool) -> None:
        super().__init__(str(failure))
        self.failure, self.spooled = failure, spooled


def definite(response: httpx.Response) -> bool:
    """An answer to stop at: a success or a 4xx refusal other than 401, 408 and 429."""
    return response.status_code not in DURABLE_RETRY | SPOOL_NOW and response.status_code < 500


def call(send: Callable[[], httpx.Response], schedule: Schedule, *, unkeyed: bool = False) -> httpx.Response:
    """A call on the short schedule: its last answer, or its last connection error raised. An
    `unkeyed` call (one the server does not keep by its Idempotency-Key) is not sent again once
    an attempt may have reached the server: its read timeout or lost connection is raised, a
    proxy's 502 or 504 answered."""
    return _blocking(acall(_awaitable(send), schedule, sleep=_awaitable(_sleep), unkeyed=unkeyed))


async def acall(send: Callable[[], Awaitable[httpx.Response]], schedule: Schedule, *,
                sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, unkeyed: bool = False) -> httpx.Response:
    """`call` for asyncio."""
    while True:
        try:
            response = await send()
        except NOT_SENT:
            if (wait := schedule.next_wait(None)) is None:
                raise
        except httpx.TransportError:
            if unkeyed or (wait := schedule.next_wait(None)) is None:
                raise
        else:
            if not _short_retry(response) or (unkeyed and proxy_gave_up(response)) \
                    or (wait := schedule.next_wait(retry_after(response))) is None:
                return response
        await sleep(wait)


def proxy_gave_up(response: httpx.Response) -> bool:
    """An answer that may have come after the call reached the server and was carried out: a
    proxy's 502 or 504, or a 503 that is not tokentill's own problem+json (Envoy answers an
    upstream reset with a bare 503; tokentill's 503 `service_unavailable` is a transaction undone)."""
    if response.status_code in PROXY_GAVE_UP:
        return True
    if response.status_code != 503:
        return False
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return True
    try:
        body = response.json()
    except ValueError:
        return True
    return not isinstance(body, dict) or body.get("code") not in SERVERS_OWN_503


def _short_retry(response: httpx.Response) -> bool:
    """Worth another try on the short schedule: a 408, 502, 503 or 504, and a 429 that is not a
    budget's refusal (a rate limit in front of the server; a budget's 429 is the call's answer)."""
    if response.status_code == 429:
        try:
            body = response.json()
        except ValueError:
            return True
        return not isinstance(body, dict) or body.get("code") != "budget_exceeded"
    return response.status_code in SHORT_RETRY


def _failed(response: httpx.Response | None, exc: BaseException | None) -> tuple[Failure, float | None, bool]:
    """(failure, Retry-After, retry now?) of an attempt without a definite answer. A 5xx other
    than 502-504, or a 401, is not retried now: it goes to the spool, for a later flush."""
    if response is None:
        assert exc is not None
        return exc, None, True
    return response, retry_after(response), response.status_code in DURABLE_RETRY


def deliver(send: Callable[[], httpx.Response], schedule: Schedule, *, spool: Callable[[Failure], bool],
            unspool: Callable[[], None]) -> httpx.Response:
    """A settle or release, sent until a definite answer, which is returned. Its first failure
    calls `spool` (written ahead, so a client that dies while retrying loses nothing), and so does
    an attempt interrupted (a task cancelled, Ctrl-C) before it is re-raised; an answer after that
    calls `unspool`. Raises GaveUp at the deadline, or at once on a 5xx not retried or a 401."""
    return _blocking(adeliver(_awaitable(send), schedule, spool=_awaitable(spool), unspool=_awaitable(unspool),
                              sleep=_awaitable(_sleep)))


async def adeliver(send: Callable[[], Awaitable[httpx.Response]], schedule: Schedule, *,
                   spool: Callable[[Failure], Awaitable[bool]], unspool: Callable[[], Awaitable[None]],
                   sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> httpx.Response:
    """`deliver` for asyncio."""
    spooled = False
    while True:
        try:
            response, exc = await send(), None
        except httpx.TransportError as error:
            response, exc = None, error
        except BaseException as interrupted:  # cancelled, Ctrl-C: it may have arrived, or not
            if not spooled:
                await spool(interrupted)
            raise
        if response is not None and definite(response):
            if spooled:
                await unspool()
            return response
        failure, wait_hint, retry = _failed(response, exc)
        spooled = spooled or await spool(failure)
        if (wait := schedule.next_wait(wait_hint) if retry else None) is None:
            raise GaveUp(failure, spooled)
        await sleep(wait)


# The retry loops are written once, as coroutines. The blocking client runs them with blocking
# `send`, `spool` and `sleep` behind `async def` wrappers that never suspend, so the coroutine
# runs to its end in a single step, with no event loop.

def _awaitable(blocking: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    async def run(*args: Any) -> T:
        return blocking(*args)

    return run


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # looked up when called: tests replace `time`


def _blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a blocking delivery awaited something that suspends")


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def flush_outcome(response: httpx.Response) -> str:
    """What a re-sent spooled call's answer means: delivered, rejected, kept, or unreachable."""
    return status_outcome(response.status_code)


def status_outcome(status: int) -> str:
    """`flush_outcome` of a status (a bulk settle's item has one of its own)."""
    if 200 <= status < 300:
        return "delivered"
    if status in KEEP_SPOOLED:  # before DURABLE_RETRY: a 408 says nothing about the server's state
        return "kept"
    if status in DURABLE_RETRY:
        return "unreachable"
    if status >= 500:
        return "kept"
    return "rejected"  # a definite refusal (409 reservation_closed, 422, ...): sending it again cannot help


def aware(name: str, value: Any) -> Any:
    """`value`, refused when it is a naive datetime: a time in no time zone, which the SDK will not
    guess (UTC would bill or wait on the wrong window for a caller elsewhere)."""
    if isinstance(value, datetime) and value.utcoffset() is None:
        raise ValueError(f"{name}: give an aware datetime (with tzinfo, e.g. datetime(2026, 1, 1, tzinfo=UTC)), "
                         f"not the naive {value.isoformat()}")
    return value


def seconds_until(expires_at: str | datetime | None) -> float | None:
    """Seconds from now until an ISO 8601 time (the server's `expires_at`), or None."""
    if expires_at is None:
        return None
    when = expires_at if isinstance(expires_at, datetime) else datetime.fromisoformat(expires_at)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()

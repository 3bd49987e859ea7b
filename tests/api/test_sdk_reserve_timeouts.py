"""A reserve the client gave up on (its answer timed out) against a real server slowed by a held
lane lock: the server may have made the hold all the same, and the client must not leave the
customer's money locked until it expires."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal

import httpx
import psycopg
import pytest

from api.client import AsyncClient, Client, RateLimited
from ledger.lanes import lane_of
from tests.api.test_sdk_durability import ADMIN, ANSWER_CEILING_S, available, new_customer
from wallets.engine import lane_lock


@contextmanager
def lane_held(database_url: str, customer: str) -> Iterator[Callable[[], None]]:
    """The customer's lane locked (as a long batch would hold it) from the block's start until the
    test calls the `let_go` it gives (or the block ends): its reserves wait in the server, answered
    only once the lock is let go. Held until an event, not for a time: under load a client's
    retries can outlast any hold of fixed length, and a retry answered after it is no timeout."""
    conn = psycopg.connect(database_url, autocommit=True)
    lanes = conn.execute("SELECT lanes FROM ledger_settings").fetchone()[0]
    conn.execute("SELECT pg_advisory_lock(%s)", (lane_lock(lane_of(customer, lanes)),))  # returns once held
    try:
        yield conn.close  # its session's locks go with it
    finally:
        conn.close()


def charge(url: str, request_id: str) -> dict | None:
    answer = httpx.get(f"{url}/v1/audit/charges/{request_id}", headers={"Authorization": f"Bearer {ADMIN}"})
    return answer.json() if answer.status_code == 200 else None


def first_hold_made(url: str, request_id: str) -> None:
    """Until the server has made the hold of `request_id` (asked every 50 ms; the ceiling bounds a hang)."""
    deadline = time.monotonic() + ANSWER_CEILING_S
    while charge(url, request_id) is None:
        assert time.monotonic() < deadline, f"no hold made for {request_id} in {ANSWER_CEILING_S} s"
        time.sleep(0.05)


def settled_state(url: str, customer: str, request_id: str) -> tuple[str | None, Decimal]:
    """The reservation's status once the server has done with it, and the wallet's reserved."""
    wallet = {}
    for _ in range(100):
        found = charge(url, request_id)
        wallet = httpx.get(f"{url}/v1/customers/{customer}/wallet", headers={"Authorization": f"Bearer {ADMIN}"}).json()
        if found is not None and found["reservation"]["status"] != "held":
            break
        time.sleep(0.05)
    status = found["reservation"]["status"] if found is not None else None
    return status, Decimal(wallet["reserved"])


def test_a_reserve_whose_answer_timed_out_is_released_by_its_key(live, spool_dir, database_url):
    """Every attempt of the reserve times out on the client (0.3 s, the lane held until the caller
    has the timeout); the server makes the hold once the lane is free. Before, it stayed
    held for its TTL (an hour here: $0.03 of the customer's locked); now the client asks again
    with the same Idempotency-Key, gets that very hold, and releases it."""
    url, book = live
    customer = new_customer(url, book)
    with lane_held(database_url, customer) as let_go, \
            Client(url, ADMIN, timeout=0.3, backoff_s=0.01, flush_spool=False) as tt:
        block = tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500, ttl_seconds=3600)
        with pytest.raises(httpx.TimeoutException), block:
            raise AssertionError("never entered")
        let_go()  # the close waits for the client's release, made once the lane is free
    assert settled_state(url, customer, block.request_id) == ("released", Decimal("0"))
    assert available(url, customer) == Decimal("10")


async def test_an_async_reserve_whose_answer_timed_out_is_released_by_its_key(live, spool_dir, database_url):
    url, book = live
    customer = new_customer(url, book)
    with lane_held(database_url, customer) as let_go:
        async with AsyncClient(url, ADMIN, timeout=0.3, backoff_s=0.01, flush_spool=False) as tt:
            block = tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500, ttl_seconds=3600)
            with pytest.raises(httpx.TimeoutException):
                async with block:
                    raise AssertionError("never entered")
            let_go()
    assert settled_state(url, customer, block.request_id) == ("released", Decimal("0"))
    assert available(url, customer) == Decimal("10")


def test_a_timed_out_reserve_under_the_callers_request_id_is_the_callers_to_retry(live, spool_dir, database_url):
    """With a request id of their own, the caller retries under it after the timeout and gets the
    hold the first reserve made (the server answers a request id with its first answer). Releasing
    that hold behind the caller's back (as a reserve under the SDK's own request id is) would hand
    the retry a hold already gone: its settle refused, reservation_closed, the call never billed."""
    url, book = live
    customer = new_customer(url, book)
    request_id = f"mine-{customer}"
    with lane_held(database_url, customer) as let_go, \
            Client(url, ADMIN, timeout=0.3, backoff_s=0.01, flush_spool=False) as tt:
        with pytest.raises(httpx.TimeoutException) as timed_out:
            with tt.reserve(customer, "model-a", request_id=request_id, input_tokens=1000, max_output_tokens=500):
                raise AssertionError("never entered")
        assert any(f"retry with request_id {request_id}" in note for note in timed_out.value.__notes__)
        let_go()
        first_hold_made(url, request_id)  # by the first reserve, once the lane is free
        with tt.reserve(customer, "model-a", request_id=request_id, input_tokens=1000, max_output_tokens=500) as r:
            r.record(input_tokens=1000, output_tokens=400)
    assert r.settlement["status"] == "settled" and Decimal(r.settlement["charged"]) == Decimal("0.028")
    assert available(url, customer) == Decimal("10") - Decimal("0.028")


class LostThenRateLimited(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """The first reserve reaches the server (which makes the hold) and its answer is lost (a read
    timeout); the second is answered by a rate limiter in front of the server, 429 with a
    Retry-After past the reserve's retry budget; later calls (the client's own) go through."""

    def __init__(self) -> None:
        self.inner, self.ainner, self.reserves = httpx.HTTPTransport(), httpx.AsyncHTTPTransport(), 0

    def _script(self, request: httpx.Request) -> httpx.Response | None:
        if request.url.path != "/v1/reservations":
            return None
        self.reserves += 1
        if self.reserves == 2:
            return httpx.Response(429, headers={"Retry-After": "60"}, text="slow down", request=request)
        return None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self._script(request) or self.inner.handle_request(request)
        if self.reserves == 1 and request.url.path == "/v1/reservations":
            answer.read()
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return answer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        answer = self._script(request) or await self.ainner.handle_async_request(request)
        if self.reserves == 1 and request.url.path == "/v1/reservations":
            await answer.aread()
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return answer


def test_a_reserve_whose_answer_was_lost_then_rate_limited_is_released_by_its_key(live, spool_dir):
    """A 429 that is not a budget's refusal (a rate limiter's in front of the server) is not the
    key's answer: the first attempt's hold may stand. Before, the client took it for a refusal
    and left the hold for its TTL (an hour here, $0.03 of the customer's locked)."""
    url, book = live
    customer = new_customer(url, book)
    transport = LostThenRateLimited()
    with Client(url, ADMIN, transport=transport, backoff_s=0.01, flush_spool=False) as tt:
        block = tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500, ttl_seconds=3600)
        with pytest.raises(RateLimited), block:
            raise AssertionError("never entered")
    assert transport.reserves == 3  # the lost one, the rate-limited one, the client's own to find the hold
    assert settled_state(url, customer, block.request_id) == ("released", Decimal("0"))
    assert available(url, customer) == Decimal("10")


async def test_an_async_reserve_whose_answer_was_lost_then_rate_limited_is_released_by_its_key(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    transport = LostThenRateLimited()
    async with AsyncClient(url, ADMIN, transport=transport, backoff_s=0.01, flush_spool=False) as tt:
        block = tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500, ttl_seconds=3600)
        with pytest.raises(RateLimited):
            async with block:
                raise AssertionError("never entered")
    assert transport.reserves == 3
    assert settled_state(url, customer, block.request_id) == ("released", Decimal("0"))
    assert available(url, customer) == Decimal("10")

"""A bare 503 from a proxy in front of the server (Envoy's answer to an upstream reset: text, not
tokentill's problem+json) may come after the call reached the server and was carried out, as a
proxy's 502 or 504 may: a reserve so answered may have made a hold, a key creation a key."""
from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
import pytest

from api.client import AsyncClient, Client, ServiceUnavailable
from tests.api.test_sdk_durability import ADMIN, available, new_customer
from tests.api.test_sdk_reserve_timeouts import settled_state
from tests.api.test_sdk_unkeyed_calls import keys_named

RESET = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"


class ProxyResets(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Forwards every call to the real server; the first `lost` answers to `path` are replaced by
    the proxy's bare 503 (the server did the work, its answer never came back)."""

    def __init__(self, path: str, lost: int) -> None:
        self.inner, self.ainner, self.path, self.lost, self.sent = \
            httpx.HTTPTransport(), httpx.AsyncHTTPTransport(), path, lost, 0

    def _replaced(self, request: httpx.Request, answer: httpx.Response) -> httpx.Response:
        if request.url.path != self.path or request.method != "POST":
            return answer
        self.sent += 1
        if self.sent > self.lost:
            return answer
        return httpx.Response(503, headers={"content-type": "text/plain", "server": "envoy"}, text=RESET,
                              request=request)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.inner.handle_request(request)
        answer.read()
        return self._replaced(request, answer)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        answer = await self.ainner.handle_async_request(request)
        await answer.aread()
        return self._replaced(request, answer)


def test_a_reserve_answered_by_a_proxys_bare_503_is_released_by_its_key(live, spool_dir):
    """Both attempts (retries=1) make or find the hold and are answered 503 by the proxy. Before,
    the client took the 503 for "nothing done" and left the hold for its TTL (an hour here: $0.03
    of the customer's $10 locked); now it asks again under the key and releases that very hold."""
    url, book = live
    customer = new_customer(url, book)
    transport = ProxyResets("/v1/reservations", lost=2)
    with Client(url, ADMIN, transport=transport, retries=1, backoff_s=0.01, flush_spool=False) as tt:
        block = tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500, ttl_seconds=3600)
        with pytest.raises(ServiceUnavailable), block:
            raise AssertionError("never entered")
    assert transport.sent == 3  # the two answered 503, the client's own to find the hold
    assert settled_state(url, customer, block.request_id) == ("released", Decimal("0"))
    assert available(url, customer) == Decimal("10")


async def test_an_async_reserve_answered_by_a_proxys_bare_503_is_released_by_its_key(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    transport = ProxyResets("/v1/reservations", lost=2)
    async with AsyncClient(url, ADMIN, transport=transport, retries=1, backoff_s=0.01, flush_spool=False) as tt:
        block = tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500, ttl_seconds=3600)
        with pytest.raises(ServiceUnavailable):
            async with block:
                raise AssertionError("never entered")
    assert transport.sent == 3
    assert settled_state(url, customer, block.request_id) == ("released", Decimal("0"))
    assert available(url, customer) == Decimal("10")


def test_a_key_creation_answered_by_a_proxys_bare_503_is_not_sent_again(live, spool_dir):
    """Before, the 503 was retried and a second admin key made, its secret never seen."""
    url, _ = live
    name = f"reset-{uuid.uuid4().hex[:8]}"
    transport = ProxyResets("/v1/api-keys", lost=1)
    with Client(url, ADMIN, transport=transport, backoff_s=0.01, flush_spool=False) as tt:
        with pytest.raises(ServiceUnavailable):
            tt.post("/v1/api-keys", {"scope": "admin", "name": name})
    assert transport.sent == 1 and len(keys_named(url, name)) == 1

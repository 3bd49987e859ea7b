"""Calls the server does not make idempotent (it ignores their Idempotency-Key) are not sent
again once they may have reached it: against a real server behind a proxy that drops answers."""
from __future__ import annotations

import uuid

import httpx
import pytest

from api.client import AsyncClient, Client
from tests.api.test_sdk_durability import ADMIN


class DropsFirstAnswer(httpx.BaseTransport):
    """Forwards to the real server; the first answer to `path` is lost on its way back."""

    def __init__(self, path: str) -> None:
        self.inner, self.path, self.sent = httpx.HTTPTransport(), path, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path == self.path and request.method == "POST":
            self.sent += 1
            if self.sent == 1:
                response.read()
                raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


class AsyncDropsFirstAnswer(httpx.AsyncBaseTransport):
    def __init__(self, path: str) -> None:
        self.inner, self.path, self.sent = httpx.AsyncHTTPTransport(), path, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path == self.path and request.method == "POST":
            self.sent += 1
            if self.sent == 1:
                await response.aread()
                raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


def keys_named(url: str, name: str) -> list[dict]:
    every = httpx.get(f"{url}/v1/api-keys", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    return [k for k in every if k["name"] == name]


def test_a_key_creation_whose_answer_was_lost_is_not_sent_again(live, spool_dir):
    """Before, the retry created a second key: two admin keys live, one whose secret nobody ever
    saw. Now the lost answer is raised, and one key was made (the caller finds it by name)."""
    url, _ = live
    name = f"lost-{uuid.uuid4().hex[:8]}"
    transport = DropsFirstAnswer("/v1/api-keys")
    with Client(url, ADMIN, transport=transport, backoff_s=0.01, flush_spool=False) as tt:
        with pytest.raises(httpx.ReadTimeout):
            tt.post("/v1/api-keys", {"scope": "admin", "name": name})
    assert transport.sent == 1 and len(keys_named(url, name)) == 1


async def test_the_async_client_does_not_send_a_key_creation_again_either(live, spool_dir):
    url, _ = live
    name = f"lost-{uuid.uuid4().hex[:8]}"
    transport = AsyncDropsFirstAnswer("/v1/api-keys")
    async with AsyncClient(url, ADMIN, transport=transport, backoff_s=0.01, flush_spool=False) as tt:
        with pytest.raises(httpx.ReadTimeout):
            await tt.post("/v1/api-keys", {"scope": "admin", "name": name})
    assert transport.sent == 1 and len(keys_named(url, name)) == 1


def test_a_keyed_call_whose_answer_was_lost_is_sent_again_and_made_once(live, spool_dir):
    """A call the server keeps by its Idempotency-Key (a customer's creation) is retried as before."""
    url, book = live
    customer = f"c-{uuid.uuid4().hex[:10]}"
    transport = DropsFirstAnswer("/v1/customers")
    with Client(url, ADMIN, transport=transport, backoff_s=0.01, flush_spool=False) as tt:
        made = tt.post("/v1/customers", {"id": customer, "name": "Lost", "currency": "USD", "price_book": book})
    assert transport.sent == 2 and made["id"] == customer

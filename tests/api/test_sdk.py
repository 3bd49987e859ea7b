"""The client SDK against a live server: release on error, metered streams, retries charge once."""
from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import httpx2
import pytest
from anthropic.types import CacheCreation
from anthropic.types import Usage as AnthropicUsage
from openai.types import CompletionUsage
from openai.types.completion_usage import CompletionTokensDetails, PromptTokensDetails

from api.client import (
    AsyncClient,
    Client,
    ExtensionTooShort,
    InsufficientFunds,
    ReservationClosed,
    UnpricedModel,
    ValidationFailed,
)
from api.demo import PRICE_BOOK, streamed_text
from pricing.tokens import TokenCounter
from tests.api.apps import live_server

ADMIN = "sdk-admin"


@pytest.fixture(scope="module")
def live(database_url):
    with live_server(database_url, admin=ADMIN) as url:
        book = {**PRICE_BOOK, "id": f"sdk-{uuid.uuid4().hex[:8]}"}
        with Client(url, ADMIN) as tt:
            tt.post("/v1/price-books", book)
        yield url, book["id"]


@pytest.fixture
def customer(live):
    url, book = live
    customer_id = f"c-{uuid.uuid4().hex[:10]}"
    with Client(url, ADMIN) as tt:
        tt.post("/v1/customers", {"id": customer_id, "name": "SDK", "currency": "USD", "price_book": book})
        tt.post(f"/v1/customers/{customer_id}/topups", {"amount": "10.00"})
    return customer_id


def available(tt: Client, customer_id: str) -> Decimal:
    return Decimal(tt.get(f"/v1/customers/{customer_id}/wallet")["available"])


def test_an_exception_inside_the_block_releases_the_hold(live, customer):
    with Client(live[0], ADMIN) as tt:
        with pytest.raises(RuntimeError, match="provider down"):
            with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
                assert Decimal(tt.get(f"/v1/customers/{customer}/wallet")["reserved"]) == Decimal("0.03")
                raise RuntimeError("provider down")
        assert r.settlement["status"] == "released"
        wallet = tt.get(f"/v1/customers/{customer}/wallet")
        assert Decimal(wallet["available"]) == Decimal("10") and Decimal(wallet["reserved"]) == 0


def test_a_stream_cancelled_after_200_tokens_bills_exactly_200_output_tokens(live, customer):
    text = streamed_text(200)
    with Client(live[0], ADMIN) as tt:
        with pytest.raises(KeyboardInterrupt):
            with tt.reserve(customer, "model-a", input_tokens=500, max_output_tokens=1000) as r:
                meter = r.stream_meter()
                for word in text.split(" ")[1:]:
                    meter.add(" " + word)
                raise KeyboardInterrupt
        assert TokenCounter().count_text(meter.text, "model-a").raw_tokens == 200
        lines = {line["token_type"]: line for line in r.settlement["lines"]}
        assert lines["output"]["quantity"] == 200 and Decimal(lines["output"]["amount"]) == Decimal("0.004")
        assert lines["input"]["quantity"] == 500
        # $0.005 input + $0.004 output + $0.01 per request
        assert Decimal(r.settlement["charged"]) == Decimal("0.019")
        assert available(tt, customer) == Decimal("9.981")


def test_an_openai_streams_empty_deltas_are_metered_as_nothing_and_the_block_still_settles(live, customer):
    """An OpenAI stream's first chunk (the role) and last (finish_reason) carry `delta.content`
    None; fed to the meter as they come, they once broke the block's exit (TypeError joining the
    text), so the settle was never sent and the $0.03 hold stayed for its TTL."""
    text = streamed_text(200)
    deltas = [None, *(" " + word for word in text.split(" ")[1:]), None]
    with Client(live[0], ADMIN) as tt:
        with tt.reserve(customer, "model-a", input_tokens=500, max_output_tokens=1000) as r:
            meter = r.stream_meter()
            for delta in deltas:
                meter.add(delta)
        assert meter.output_tokens == 200
        lines = {line["token_type"]: line for line in r.settlement["lines"]}
        assert lines["output"]["quantity"] == 200 and Decimal(r.settlement["charged"]) == Decimal("0.019")
        assert Decimal(tt.get(f"/v1/customers/{customer}/wallet")["reserved"]) == 0
        with pytest.raises(TypeError, match="str"):
            meter.add(b"bytes")  # refused where it is given, not at the block's exit


def test_provider_usage_wins_over_the_meter(live, customer):
    usage = {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
             "prompt_tokens_details": {"cached_tokens": 200}, "completion_tokens_details": {"reasoning_tokens": 0}}
    with Client(live[0], ADMIN) as tt:
        with tt.reserve(customer, "model-a", input_tokens=1200, max_output_tokens=500) as r:
            meter = r.stream_meter()
            meter.add(streamed_text(50))
            r.record(openai_usage=usage)
        lines = {line["token_type"]: line["quantity"] for line in r.settlement["lines"]}
        assert lines["output"] == 300 and lines["input"] == 1000 and lines["cached_input"] == 200


def test_the_provider_sdks_own_usage_objects_are_taken_as_they_come(live, customer, spool_dir):
    """`response.usage` of the openai and anthropic SDKs is a pydantic model with nested models
    (token details, cache creation), not a dict: the block's exit and an explicit settle send it."""
    openai_usage = CompletionUsage(
        prompt_tokens=1000, completion_tokens=400, total_tokens=1400,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=0),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=0))
    anthropic_usage = AnthropicUsage(input_tokens=1000, output_tokens=400, cache_creation_input_tokens=0,
                                     cache_read_input_tokens=0,
                                     cache_creation=CacheCreation(ephemeral_5m_input_tokens=0,
                                                                  ephemeral_1h_input_tokens=0))
    with Client(live[0], ADMIN) as tt:
        with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
            r.record(openai_usage=openai_usage)
        held = tt.post("/v1/reservations", tt.reserve_body(customer, "model-a", input_tokens=1000,
                                                            max_output_tokens=500))
        settled = tt.settle(held["id"], anthropic_usage=anthropic_usage)
        # model-a: 1,000 input x $10/M + 400 output x $20/M + $0.01 a request = $0.028, each
        assert Decimal(r.settlement["charged"]) == Decimal(settled["charged"]) == Decimal("0.028")
        assert available(tt, customer) == Decimal("10") - 2 * Decimal("0.028")


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


# An Anthropic stream whose cache writes grew after message_start (a server tool's sampling wrote
# more): message_start splits its 50 writes by TTL, message_delta gives 80 in all and no split
GROWN_WRITES_STREAM = b"".join([
    _sse("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "model-a", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 1500, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 50,
                  "cache_creation": {"ephemeral_5m_input_tokens": 50, "ephemeral_1h_input_tokens": 0},
                  "output_tokens": 1}}}),
    _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text",
                                                                                              "text": ""}}),
    _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "hi"}}),
    _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"input_tokens": 1500, "cache_read_input_tokens": 100,
                                     "cache_creation_input_tokens": 80, "output_tokens": 40}}),
    _sse("message_stop", {"type": "message_stop"})])


def cache_book() -> dict[str, Any]:
    """A format 2 book: $0.01 a call; per 1M, $10 input, $1 cache reads, $12.50 5-minute and $20
    one-hour cache writes, $20 output."""
    return {"id": f"sdk-cache-{uuid.uuid4().hex[:8]}", "format": 2, "currency": "USD",
            "effective_from": "2026-01-01T00:00:00Z",
            "rules": [{"id": "call", "token_type": "request", "price": "0.01"},
                      {"id": "in", "token_type": "input", "price": "10.00"},
                      {"id": "read", "token_type": "cached_input", "price": "1.00"},
                      {"id": "write", "token_type": "cache_write", "price": "12.50"},
                      {"id": "write-1h", "token_type": "cache_write_1h", "price": "20.00"},
                      {"id": "out", "token_type": "output", "price": "20.00"}]}


def test_the_anthropic_packages_accumulated_stream_usage_with_cache_writes_grown_is_charged_them(live):
    """The anthropic package's MessageStream takes message_delta's cumulative
    cache_creation_input_tokens (80) over message_start's (50) but keeps message_start's split
    (50 five-minute, 0 one-hour): its final message's usage says 80 writes split 50 + 0. Was
    refused by the SDK's record() (ValueError: the server would refuse it) and by the server's
    settle (422: ephemeral_5m + ephemeral_1h must equal cache_creation_input_tokens), so the call
    went unbilled. Now the 30 added are taken at 5 minutes (the call's TTL is not known here).
    By hand, at this book: 1,500 in at $10/M = 0.015, 100 read at $1/M = 0.0001, 80 written at
    $12.50/M = 0.001 (30 of them at the one-hour $20/M would be 0.001225), 40 out at $20/M =
    0.0008, $0.01 a call: 0.0269, each; the $10.00 top-up less two is 9.9462."""
    url, _ = live
    book = cache_book()
    cid = f"c-{uuid.uuid4().hex[:10]}"
    # the anthropic package's own stream over that answer (its HTTP package is httpx2, httpx's successor)
    claude = anthropic.Anthropic(api_key="sk-test", base_url="http://anthropic.test", http_client=httpx2.Client(
        transport=httpx2.MockTransport(lambda request: httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=GROWN_WRITES_STREAM))))
    with claude.messages.stream(model="model-a", max_tokens=500, messages=[{"role": "user", "content": "hi"}]) as s:
        usage = s.get_final_message().usage
    assert (usage.cache_creation_input_tokens, usage.cache_creation.ephemeral_5m_input_tokens) == (80, 50)
    with Client(url, ADMIN) as tt:
        tt.post("/v1/price-books", book)
        tt.post("/v1/customers", {"id": cid, "name": "SDK", "currency": "USD", "price_book": book["id"]})
        tt.post(f"/v1/customers/{cid}/topups", {"amount": "10.00"})
        with tt.reserve(cid, "model-a", input_tokens=2000, max_output_tokens=500) as r:
            r.record(anthropic_usage=usage)
        held = tt.post("/v1/reservations", tt.reserve_body(cid, "model-a", input_tokens=2000, max_output_tokens=500))
        settled = tt.settle(held["id"], anthropic_usage=usage)
        for charge in (r.settlement, settled):
            assert Decimal(charge["charged"]) == Decimal("0.0269")
            lines = {line["token_type"]: line["quantity"] for line in charge["lines"]}
            assert lines == {"input": 1500, "cached_input": 100, "cache_write": 80, "output": 40, "request": 1}
        assert available(tt, cid) == Decimal("10") - 2 * Decimal("0.0269") == Decimal("9.9462")


def test_cache_writes_past_their_split_are_charged_at_the_ttl_the_reserve_names(live):
    """The same grown usage (80 writes, split 50 five-minute + 0 one-hour by message_start) of a
    call that caches for an hour, its reserve saying so (`cache_ttl: "1h"`, the SDK's
    reserve(cache_ttl="1h") and the HTTP body alike). Was: the 30 writes past the split charged at
    the 5-minute $12.50/M, below Anthropic's one-hour price (no way to tell the TTL: the field was
    refused, 422). Now at the one-hour $20/M. By hand: 1,500 in at $10/M = 0.015, 100 read at $1/M
    = 0.0001, 50 written at $12.50/M = 0.000625, 30 at $20/M = 0.0006, 40 out at $20/M = 0.0008,
    $0.01 a call: 0.027125 each; $10.00 - 2 x 0.027125 = 9.94575. The hold prices the prompt at
    the one-hour write price (dearer than input): (2,000 + 500) x $20/M + 0.01 = 0.06."""
    url, _ = live
    book = cache_book()
    cid = f"c-{uuid.uuid4().hex[:10]}"
    usage = {"input_tokens": 1500, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 80,
             "cache_creation": {"ephemeral_5m_input_tokens": 50, "ephemeral_1h_input_tokens": 0},
             "output_tokens": 40}
    with Client(url, ADMIN) as tt:
        tt.post("/v1/price-books", book)
        tt.post("/v1/customers", {"id": cid, "name": "SDK", "currency": "USD", "price_book": book["id"]})
        tt.post(f"/v1/customers/{cid}/topups", {"amount": "10.00"})
        with tt.reserve(cid, "model-a", input_tokens=2000, max_output_tokens=500, cache_ttl="1h") as r:
            assert Decimal(r.data["amount"]) == Decimal("0.06")
            r.record(anthropic_usage=usage)
        body = tt.reserve_body(cid, "model-a", input_tokens=2000, max_output_tokens=500)
        held = tt.post("/v1/reservations", {**body, "cache_ttl": "1h"})
        assert Decimal(held["amount"]) == Decimal("0.06")
        settled = tt.settle(held["id"], anthropic_usage=usage)
        for charge in (r.settlement, settled):
            assert Decimal(charge["charged"]) == Decimal("0.027125")
            lines = {line["token_type"]: line["quantity"] for line in charge["lines"]}
            assert lines == {"input": 1500, "cached_input": 100, "cache_write": 50, "cache_write_1h": 30,
                             "output": 40, "request": 1}
        assert available(tt, cid) == Decimal("10") - 2 * Decimal("0.027125") == Decimal("9.94575")
        with pytest.raises(ValidationFailed) as refused:
            tt.post("/v1/reservations", {**body, "request_id": f"req-{uuid.uuid4().hex}", "cache_ttl": "2h"})
        assert refused.value.status == 422


def test_a_dropped_connection_during_settle_is_retried_and_charges_once(live, customer):
    class DropFirstSettleResponse(httpx.BaseTransport):
        """Forwards every request; loses the first settle's response after the server handled it."""

        def __init__(self) -> None:
            self.inner, self.dropped, self.lock = httpx.HTTPTransport(), 0, threading.Lock()

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = self.inner.handle_request(request)
            with self.lock:
                if request.url.path.endswith("/settle") and not self.dropped:
                    self.dropped += 1
                    response.read()
                    raise httpx.ReadError("connection dropped", request=request)
            return response

    transport = DropFirstSettleResponse()
    request_id = f"req-{uuid.uuid4().hex}"
    with Client(live[0], ADMIN, transport=transport, backoff_s=0.01) as tt:
        with tt.reserve(customer, "model-a", request_id=request_id, input_tokens=1000, max_output_tokens=500) as r:
            r.record(input_tokens=1000, output_tokens=400)
        assert transport.dropped == 1
        assert Decimal(r.settlement["charged"]) == Decimal("0.028")
        assert available(tt, customer) == Decimal("9.972")
        trace = tt.get(f"/v1/audit/charges/{request_id}")
    assert len(trace["charges"]) == 1, "the retried settle was replayed, not charged again"


def test_typed_errors_for_refusals(live, customer):
    with Client(live[0], ADMIN) as tt:
        with pytest.raises(InsufficientFunds):
            with tt.reserve(customer, "model-a", input_tokens=1, max_output_tokens=2_000_000):
                pass
        with pytest.raises(UnpricedModel):
            with tt.reserve(customer, "no-such-model", input_tokens=10, max_output_tokens=10):
                pass
        assert available(tt, customer) == Decimal("10")


async def test_the_async_client_releases_on_error_too(live, customer):
    async with AsyncClient(live[0], ADMIN) as tt:
        with pytest.raises(ValueError):
            async with tt.reserve(customer, "model-b", input_tokens=100, max_output_tokens=100) as r:
                raise ValueError
        assert r.settlement["status"] == "released"
        async with tt.reserve(customer, "model-b", input_tokens=100, max_output_tokens=100) as r:
            r.record(input_tokens=100, output_tokens=10)
        assert Decimal(r.settlement["charged"]) == Decimal("0.0106")


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_block_extends_its_hold_and_the_client_extends_one_by_id(live, customer):
    with Client(live[0], ADMIN) as tt:
        with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500, ttl_seconds=60) as r:
            first_expiry = r.data["expires_at"]
            extended = r.extend(3600)
            assert extended["status"] == "held" and r.data["expires_at"] == extended["expires_at"]
            assert _instant(extended["expires_at"]) > _instant(first_expiry)
            assert tt.get(f"/v1/reservations/{r.id}")["expires_at"] == extended["expires_at"]
            assert r._hold_left_s() > 3500  # the exit's settle may retry for the extended hold
            with pytest.raises(ExtensionTooShort):
                tt.extend(r.id, 60)
            r.record(input_tokens=1000, output_tokens=100)
        assert r.settlement["status"] == "settled"
        with pytest.raises(ReservationClosed):
            tt.extend(r.id, 3600)


async def test_the_async_client_extends_too(live, customer):
    async with AsyncClient(live[0], ADMIN) as tt:
        async with tt.reserve(customer, "model-a", input_tokens=100, max_output_tokens=100, ttl_seconds=60) as r:
            extended = await r.extend(600)
            assert r.data["expires_at"] == extended["expires_at"]
            again = await tt.extend(r.id, 900)
            assert _instant(again["expires_at"]) > _instant(extended["expires_at"])
            r.record(input_tokens=100, output_tokens=10)
        assert r.settlement["status"] == "settled"

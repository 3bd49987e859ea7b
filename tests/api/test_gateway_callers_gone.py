"""A caller who leaves a gateway call whose charge only the upstream's answer tells: a whole
answer not come yet, a stream whose thinking is hidden or whose provider's tools ran. The
upstream generates (and bills) such a call all the same, so the gateway reads it on to its end,
sending nothing, and charges its usage; only an upstream that fails releases a whole answer.
Against the scripted upstream of tests.api.test_gateway_edges; charges worked by hand from the
price book of tests.api.test_gateway."""
from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal
from typing import Any

import anthropic
import openai

from tests.api import test_gateway_edges as edges
from tests.api.test_gateway import (
    CACHED,
    CALL,
    CHAT_CHARGE,
    HI,
    IN,
    OUT,
    SEARCH,
    WEB_SEARCH,
    M,
    charged,
    customer,
    tool_book,
    wallet,
)
from tests.api.test_gateway_edges import (
    MESSAGE_START,
    WHOLE,
    body,
    content,
    event,
    model,
    post_and_leave,
    sse,
    start,
    usage_chunk,
)

upstream, live = edges.upstream, edges.live  # the scripted upstream and the server before it: fixtures

# past the 2 s the gateway read on for a stream's usage before (USAGE_GRACE_SECONDS)
LATE = 3.0


def test_a_whole_answer_the_caller_left_before_is_read_to_its_end_and_charged_its_usage(live, upstream):
    """A non-streamed call's caller hangs up while the upstream is still generating: the gateway
    cancelled the upstream call and released the hold (charged 0), though the upstream went on and
    billed it (was: 0.00 for a 1,000-in, 40-out answer). Now it reads the answer on, and charges
    its usage: 800 input, 200 cached, 40 output tokens and the call, 0.0100."""
    url, _ = live
    cid, key = customer(live)
    asked = threading.Event()

    async def thinks(send: Any, receive: Any) -> None:
        asked.set()
        await asyncio.sleep(1.0)  # generating, whether or not its caller is still there
        await start(send, b"application/json", len(WHOLE))
        await body(send, WHOLE, more=False)

    request_id = post_and_leave(url, key, {"model": model(upstream, thinks), "messages": HI}, asked.is_set)
    assert charged(url, request_id) == CHAT_CHARGE == (800 * IN + 200 * CACHED + 40 * OUT) / M + CALL
    assert wallet(url, cid) == (Decimal("10") - Decimal("0.0100"), 0)


def test_a_whole_answer_whose_upstream_fails_after_the_caller_left_is_released(live, upstream):
    url, _ = live
    cid, key = customer(live)
    asked = threading.Event()

    async def fails(send: Any, receive: Any) -> None:
        asked.set()
        await asyncio.sleep(0.5)
        data = b'{"error": {"message": "The server had an error", "type": "server_error"}}'
        await start(send, b"application/json", len(data), status=500)
        await body(send, data, more=False)

    request_id = post_and_leave(url, key, {"model": model(upstream, fails), "messages": HI}, asked.is_set)
    assert charged(url, request_id) == 0
    assert wallet(url, cid) == (Decimal("10"), 0)


def test_a_reasoning_stream_whose_usage_comes_late_after_the_caller_left_is_charged_the_usage(live, upstream):
    """A reasoning call (reasoning_effort: its thinking billed as output, never sent) read to its
    last word and left; its usage came 3 s after the answer: past the 2 s the gateway read on, it
    was charged its cap as reasoning (8 prompt tokens counted, 2 output and 998 reasoning, 0.02108
    with the call). Now it is read to its end and charged the usage: 800 input, 200 cached,
    40 output, 0.0100."""
    url, _ = live
    cid, key = customer(live)

    async def thinks_then_tells(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        await body(send, content(" one") + content(" two") + sse({
            "id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        await asyncio.sleep(LATE)
        await body(send, usage_chunk(40) + b"data: [DONE]\n\n", more=False)

    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0)
    with client.chat.completions.with_streaming_response.create(
            model=model(upstream, thinks_then_tells), messages=HI, stream=True, reasoning_effort="high",
            max_completion_tokens=1000) as response:
        request_id = response.headers["x-tokentill-request-id"]
        for chunk in response.parse():
            if chunk.choices and chunk.choices[0].finish_reason:
                break
    assert charged(url, request_id, timeout=15) == CHAT_CHARGE
    assert wallet(url, cid) == (Decimal("10") - CHAT_CHARGE, 0)


def test_an_anthropic_stream_whose_search_results_usage_comes_late_is_charged_them(live, upstream):
    """A web search's results (5,000 tokens here) are input only the final message_delta counts. A
    caller who read the answer and left, its usage 3 s late, was charged message_start's 900 input
    and 100 cached tokens, the 2 output tokens sent and the search (0.02014): the results given
    away. Now: 5,900 input, 100 cached, 40 output, the search and the call, 0.0709."""
    url, _ = live
    cid, key = customer((url, tool_book(url, {"id": "search", "token_type": "web_search", "price": str(SEARCH)})))

    async def searched(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        for part in [MESSAGE_START,
                     event("content_block_start", {"index": 0, "content_block": {
                         "type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}}),
                     event("content_block_stop", {"index": 0}),
                     event("content_block_start", {"index": 1, "content_block": {"type": "text", "text": ""}}),
                     event("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": " one two"}}),
                     event("content_block_stop", {"index": 1})]:
            await body(send, part)
        await asyncio.sleep(LATE)
        await body(send, event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {
            "input_tokens": 5900, "cache_read_input_tokens": 100, "output_tokens": 40,
            "server_tool_use": {"web_search_requests": 1}}}))
        await body(send, event("message_stop", {}), more=False)

    client = anthropic.Anthropic(base_url=f"{url}/anthropic", api_key=key, max_retries=0)
    with client.messages.with_streaming_response.create(model=model(upstream, searched), max_tokens=1000,
                                                        messages=HI, tools=[WEB_SEARCH], stream=True) as response:
        request_id = response.headers["x-tokentill-request-id"]
        for received in response.parse():
            if received.type == "content_block_stop" and received.index == 1:
                break
    expected = (5900 * IN + 100 * CACHED + 40 * OUT) / M + CALL + SEARCH
    assert expected == Decimal("0.0709")
    assert charged(url, request_id, timeout=15) == expected
    assert wallet(url, cid) == (Decimal("10") - expected, 0)


def test_a_plain_stream_the_caller_leaves_is_cancelled_at_once(live, upstream):
    """A stream that shows all it bills (no hidden thinking, no provider tool) is given up when
    its caller leaves: its upstream cancelled, charged the prompt count and what was sent."""
    url, _ = live
    _, key = customer(live)
    gone = threading.Event()

    async def talks_on(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        await body(send, content(" one") + content(" two"))
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0)
    with client.chat.completions.with_streaming_response.create(
            model=model(upstream, talks_on), messages=HI, stream=True) as response:
        request_id = response.headers["x-tokentill-request-id"]
        for chunk in response.parse():
            if chunk.choices and chunk.choices[0].delta.content == " two":
                break
    assert gone.wait(10), "the upstream was not cancelled"
    started = time.monotonic()
    assert charged(url, request_id) == (8 * IN + 2 * OUT) / M + CALL
    assert time.monotonic() - started < 5


def test_a_reasoning_stream_the_caller_left_before_its_first_byte_is_read_on_and_charged_its_usage(live, upstream):
    """A reasoning model may think before its stream's first byte (its headers): a caller who
    left then had the call cancelled and released (0.00), though the upstream had the whole call
    and was thinking, billed. Now it is read on as a whole answer is, and charged its usage: 800
    input, 200 cached, 40 output and the call, 0.0100."""
    url, _ = live
    cid, key = customer(live)
    asked = threading.Event()

    async def thinks_first(send: Any, receive: Any) -> None:
        asked.set()
        await asyncio.sleep(1.0)
        await start(send, b"text/event-stream")
        await body(send, content(" one") + content(" two") + sse({
            "id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + usage_chunk(40)
            + b"data: [DONE]\n\n", more=False)

    request_id = post_and_leave(url, key, {"model": model(upstream, thinks_first), "messages": HI, "stream": True,
                                           "reasoning_effort": "high"}, asked.is_set)
    assert charged(url, request_id) == CHAT_CHARGE
    assert wallet(url, cid) == (Decimal("10") - CHAT_CHARGE, 0)

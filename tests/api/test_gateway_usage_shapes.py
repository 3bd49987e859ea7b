"""A Chat Completions answer (/v1/chat/completions through the gateway) whose usage is in the
Responses API's shape, as some OpenAI-compatible upstreams send it: `input_tokens`/`output_tokens`
where OpenAI's chat answer says `prompt_tokens`/`completion_tokens`, its cached and reasoning
details under either shape's name. The call is charged what the usage says, every part of it:
a detail the ledger did not read would bill cached input as input and reasoning as output."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest

from tests.api.test_gateway import CACHED, CALL, HI, IN, OUT, M, charge_usage, charged, customer, tool_book, wallet
from tests.api.test_gateway_edges import body, live, model, sse, start, upstream  # noqa: F401 (live, upstream: fixtures)

THINK = Decimal("60")  # $60 per 1M reasoning tokens: dearer than output's $20
# By hand: 1,000 input of which 200 cached, 100 output of which 60 reasoning:
# 800 x $10 + 200 x $1 + 40 x $20 + 60 x $60 = 8,000 + 200 + 800 + 3,600 = 12,600 per 1M = $0.0126,
# plus the $0.001 call: $0.0136. Details dropped: 1,000 x $10 + 100 x $20 = $0.012 + $0.001 = $0.013.
DUE = (800 * IN + 200 * CACHED + 40 * OUT + 60 * THINK) / M + CALL
assert DUE == Decimal("0.0136")
TOTALS = {"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100}
SHAPES = {
    "responses-details": {
        **TOTALS,
        "input_tokens_details": {"cached_tokens": 200},
        "output_tokens_details": {"reasoning_tokens": 60},
    },
    "chat-details": {
        **TOTALS,
        "prompt_tokens_details": {"cached_tokens": 200},
        "completion_tokens_details": {"reasoning_tokens": 60},
    },
}


def _whole(usage: dict[str, Any]) -> bytes:
    return msgspec.json.encode(
        {
            "id": "chatcmpl-shape",
            "object": "chat.completion",
            "created": 1764680000,
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": " one two three"}, "finish_reason": "stop"}
            ],
            "usage": usage,
        }
    )


def _streamed(usage: dict[str, Any]) -> list[bytes]:
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m"}
    return [
        sse({**chunk, "choices": [{"index": 0, "delta": {"content": " one two"}, "finish_reason": None}]}),
        sse({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        sse({**chunk, "choices": [], "usage": usage}),
        b"data: [DONE]\n\n",
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_chat_answer_with_responses_shaped_usage_is_charged_its_cached_and_reasoning_tokens(
    live,  # noqa: F811 (a fixture)
    upstream,  # noqa: F811 (a fixture)
    shape,
    stream,
):
    url, _ = live
    cid, key = customer((url, tool_book(url, {"id": "think", "token_type": "reasoning", "price": str(THINK)})))
    usage = SHAPES[shape]

    async def answer(send: Any, receive: Any) -> None:
        if stream:
            await start(send, b"text/event-stream")
            for event in _streamed(usage):
                await body(send, event)
            await body(send, b"", more=False)
        else:
            data = _whole(usage)
            await start(send, b"application/json", len(data))
            await body(send, data, more=False)

    payload = {"model": model(upstream, answer), "messages": HI, **({"stream": True} if stream else {})}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        with http.stream("POST", "/openai/v1/chat/completions", json=payload) as sent:
            assert sent.status_code == 200
            sent.read()
            request_id = sent.headers["x-tokentill-request-id"]
    recorded = charge_usage(url, request_id)
    assert charged(url, request_id) == DUE, recorded
    assert wallet(url, cid) == (Decimal("10") - DUE, 0)

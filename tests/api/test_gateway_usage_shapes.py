"""A Chat Completions answer (/v1/chat/completions through the gateway) whose usage is in the
Responses API's shape, as some OpenAI-compatible upstreams send it: `input_tokens`/`output_tokens`
where OpenAI's chat answer says `prompt_tokens`/`completion_tokens`, its cached and reasoning
details under either shape's name. The call is charged what the usage says, every part of it:
a detail the ledger did not read would bill cached input as input and reasoning as output."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest
from openai._models import construct_type
from openai.types.chat import ChatCompletion

from api.client import Client
from tests.api.test_gateway import (
    ADMIN,
    CACHED,
    CALL,
    HI,
    IN,
    OUT,
    M,
    admin,
    charge_usage,
    charged,
    customer,
    tool_book,
    wallet,
)
from tests.api.test_gateway_edges import body, event, live, model, sse, start, upstream  # noqa: F401 (live, upstream: fixtures)

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


def _completed(usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "resp_shape",
        "object": "response",
        "created_at": 1764680000,
        "model": "m",
        "status": "completed",
        "output": [
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": " one two", "annotations": []}],
            }
        ],
        "usage": usage,
    }


def _responses_streamed(usage: dict[str, Any]) -> list[bytes]:
    delta = {"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": " one two", "sequence_number": 1}
    return [
        event("response.output_text.delta", delta),
        event("response.completed", {"response": _completed(usage), "sequence_number": 2}),
    ]


# each API through the gateway: its path, its body but the model, its whole answer and its stream
APIS = {
    "chat": ("/openai/v1/chat/completions", {"messages": HI}, _whole, _streamed),
    "responses": (
        "/openai/v1/responses",
        {"input": "hi"},
        lambda usage: msgspec.json.encode(_completed(usage)),
        _responses_streamed,
    ),
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("api", list(APIS))
def test_an_openai_answer_with_details_under_either_apis_name_is_charged_its_cached_and_reasoning_tokens(
    live,  # noqa: F811 (a fixture)
    upstream,  # noqa: F811 (a fixture)
    api,
    shape,
    stream,
):
    """A chat answer (26108d9) and a response (/v1/responses, guard of the review of 26108d9: its
    whole answer, or its stream's response.completed) whose usage has Responses totals and the
    details under either API's name: charged 0.0136 (by hand above)."""
    url, _ = live
    cid, key = customer((url, tool_book(url, {"id": "think", "token_type": "reasoning", "price": str(THINK)})))
    path, fields, whole, streamed = APIS[api]
    usage = SHAPES[shape]

    async def answer(send: Any, receive: Any) -> None:
        if stream:
            await start(send, b"text/event-stream")
            for part in streamed(usage):
                await body(send, part)
            await body(send, b"", more=False)
        else:
            data = whole(usage)
            await start(send, b"application/json", len(data))
            await body(send, data, more=False)

    payload = {"model": model(upstream, answer), **fields, **({"stream": True} if stream else {})}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        with http.stream("POST", path, json=payload) as sent:
            assert sent.status_code == 200
            sent.read()
            request_id = sent.headers["x-tokentill-request-id"]
    recorded = charge_usage(url, request_id)
    assert charged(url, request_id) == DUE, recorded
    assert wallet(url, cid) == (Decimal("10") - DUE, 0)


# Chat totals with Responses-named details, the reverse of SHAPES' chat-details
CHAT_TOTALS = {
    "prompt_tokens": 1000,
    "completion_tokens": 100,
    "total_tokens": 1100,
    "input_tokens_details": {"cached_tokens": 200},
    "output_tokens_details": {"reasoning_tokens": 60},
}


@pytest.mark.parametrize("usage", [SHAPES["chat-details"], CHAT_TOTALS], ids=["responses-totals", "chat-totals"])
def test_mixed_openai_usage_is_charged_its_details_by_a_usage_event_a_settle_and_the_sdk(
    live,  # noqa: F811 (a fixture)
    usage,
):
    """Guard (review of 26108d9; passes at it): the same mixed usage sent as `openai_usage` by a
    usage event, an HTTP reserve's settle, and the SDK's block given the openai package's own
    CompletionUsage as it builds one from an OpenAI-compatible upstream's chat answer (the other
    API's names kept as extra fields): each charged 0.0136; the wallet 10.00 - 3 x 0.0136 = 9.9592."""
    url, _ = live
    cid, _ = customer((url, tool_book(url, {"id": "think", "token_type": "reasoning", "price": str(THINK)})))
    tag = uuid.uuid4().hex[:8]
    now = datetime.now(UTC).isoformat()
    with admin(url) as http:
        sent = http.post(
            "/v1/usage-events",
            json=[{"event_id": f"ev-{tag}", "customer_id": cid, "model": "m", "openai_usage": usage, "timestamp": now}],
        )
        assert sent.json() == {"accepted": 1, "duplicates": 0, "rejected": []}, sent.text
        held = http.post(
            "/v1/reservations", json={"customer_id": cid, "request_id": f"rq-{tag}", "model": "m", "amount": "0.50"}
        )
        assert held.status_code == 201, held.text
        settled = http.post(f"/v1/reservations/{held.json()['id']}/settle", json={"openai_usage": usage})
        assert settled.status_code == 200, settled.text
    completion = construct_type(
        type_=ChatCompletion,
        value={
            "id": "c",
            "object": "chat.completion",
            "created": 1764680000,
            "model": "m",
            "choices": [],
            "usage": usage,
        },
    )
    with Client(url, ADMIN) as tt:
        with tt.reserve(cid, "m", request_id=f"sdk-{tag}", input_tokens=1000, max_output_tokens=100) as r:
            r.record(openai_usage=completion.usage)
    for name in (f"ev-{tag}", f"rq-{tag}", f"sdk-{tag}"):
        with admin(url) as http:
            charges = http.get(f"/v1/audit/charges/{name}", params={"customer_id": cid}).json()["charges"]
        assert sum((Decimal(c["charged"]) for c in charges), Decimal(0)) == DUE, (name, charges)
    assert wallet(url, cid) == (Decimal("9.9592"), 0)

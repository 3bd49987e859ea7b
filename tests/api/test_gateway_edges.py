"""The gateway's money paths at their edges, against a scripted upstream: each test gives the
upstream's answer to one model name byte by byte (its status, the parts of its body, the pauses
between them), so that an answer cut, malformed or slow at a given point is exact. Every charge is
worked by hand from the price book of tests.api.test_gateway."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import threading
import time
import uuid
import wave
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import msgspec
import openai
import pytest
import uvicorn

from api.bench import fake_upstream as fk
from api.bench.common import free_port
from api.client_reservations import StreamMeter
from api.gateway.streams import StreamTally
from pricing.tokens import TokenCounter
from tests.api.test_gateway import (
    ADMIN,
    CACHED,
    CALL,
    CHAT_CHARGE,
    HI,
    IN,
    MESSAGES_CHARGE,
    OUT,
    PRIORITY,
    RESPONSES_CHARGE,
    SEARCH,
    WEB_SEARCH,
    WRITE,
    M,
    charge_usage,
    charged,
    customer,
    serving,
    tool_book,
    wallet,
)
from wallets.commands import Reserve
from wallets.service import WalletService

Script = Callable[[Any, Any], Awaitable[None]]  # (send, receive) of the upstream's ASGI call


class Scripted:
    """An upstream that answers each model with its script; `calls` logs each body it was sent."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await fk.lifespan(receive, send)
            return
        raw = await fk.request_body(receive)
        body = json.loads(raw) if raw else {"model": scope["path"].rsplit("/", 1)[-1]}  # GET /v1/models/{model}
        self.calls.append(body)
        await self.scripts[body["model"]](send, receive)


class Upstream(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.fake, self.port = Scripted(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.fake, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))

    def run(self) -> None:
        self.server.run()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    server.start()
    deadline = time.monotonic() + 10
    while not server.server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield server
    server.server.should_exit = True
    server.join(timeout=10)


@pytest.fixture(scope="module")
def live(database_url, upstream) -> Iterator[tuple[str, str]]:
    yield from serving(database_url, upstream)  # type: ignore[arg-type]


def model(upstream: Upstream, script: Script) -> str:
    name = f"gpt-edge-{uuid.uuid4().hex[:8]}"
    upstream.fake.scripts[name] = script
    return name


async def start(send: Any, content_type: bytes, length: int | None = None, status: int = 200) -> None:
    headers = [(b"content-type", content_type)]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def body(send: Any, data: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


def streamed(events: list[bytes]) -> Script:
    """An upstream script that streams `events`, each as a part of its own, and ends."""
    async def script(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        for event in events:
            await body(send, event)
        await body(send, b"", more=False)
    return script


def sse(data: Any) -> bytes:
    return b"data: " + msgspec.json.encode(data) + b"\n\n"


def content(text: str) -> bytes:
    return sse({"id": "c", "object": "chat.completion.chunk", "model": "m",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


def usage_chunk(output: int) -> bytes:
    return sse({"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [],
                "usage": {"prompt_tokens": 1000, "completion_tokens": output, "total_tokens": 1000 + output,
                          "prompt_tokens_details": {"cached_tokens": 200}}})


WHOLE = msgspec.json.encode({
    "id": "chatcmpl-edge", "object": "chat.completion", "created": 1764680000, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": " one two three"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 40, "total_tokens": 1040,
              "prompt_tokens_details": {"cached_tokens": 200}}})  # CHAT_CHARGE, as the fake's


def post_and_leave(url: str, key: str, payload: dict[str, Any], until: Callable[[], bool],
                   path: str = "/openai/v1/chat/completions") -> str:
    """Send a call on a raw connection with a request id of ours, hang up once `until()` holds, and
    return the request id."""
    request_id = f"edge-{uuid.uuid4().hex[:12]}"
    data = json.dumps(payload).encode()
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as caller:
        caller.sendall(f"POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
                       f"x-tokentill-request-id: {request_id}\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        deadline = time.monotonic() + 30
        while not until() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert until(), "the upstream never got that far"
    return request_id


def _billed(url: str, cid: str, request_id: str, cost: Decimal) -> None:
    """The request was charged `cost` and the customer's $10.00 wallet is down by it, nothing held."""
    assert charged(url, request_id) == cost
    assert wallet(url, cid) == (Decimal("10") - cost, 0)


def _failed_whole_call(url: str, key: str, sdk: str, name: str) -> httpx.Response:
    """A whole (not streamed) call of model `name` through the gateway with `sdk`'s official client
    ("openai": chat completions, "anthropic": messages), which raises its InternalServerError: the answer."""
    with pytest.raises(openai.InternalServerError if sdk == "openai" else anthropic.InternalServerError) as raised:
        if sdk == "openai":
            openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key).chat.completions.create(model=name, messages=HI)
        else:
            anthropic.Anthropic(base_url=f"{url}/anthropic", api_key=key).messages.create(
                model=name, max_tokens=100, messages=HI)
    return raised.value.response


def test_a_caller_who_leaves_while_a_whole_answer_is_coming_in_is_charged_the_answer(live, upstream):
    """The upstream has generated the whole answer when its headers come (a non-streamed answer):
    a caller who leaves while its body is still on its way is charged it, not released."""
    url, _ = live
    cid, key = customer(live)
    halfway, left = threading.Event(), threading.Event()

    async def slow_body(send: Any, receive: Any) -> None:
        await start(send, b"application/json", len(WHOLE))
        await body(send, WHOLE[:len(WHOLE) // 2])
        halfway.set()
        await asyncio.to_thread(left.wait, 30)
        await body(send, WHOLE[len(WHOLE) // 2:], more=False)

    name = model(upstream, slow_body)
    request_id = post_and_leave(url, key, {"model": name, "messages": HI}, halfway.is_set)
    time.sleep(0.3)  # the gateway sees the caller gone while the body is still coming in
    left.set()
    _billed(url, cid, request_id, CHAT_CHARGE)


def stream_call(url: str, key: str, payload: dict[str, Any], path: str = "/openai/v1/chat/completions"
                ) -> tuple[int, str, str]:
    """(status, the body as received, the request id) of a streamed call (chat by default)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        with http.stream("POST", path, json={**payload, "stream": True}) as response:
            try:
                received = b"".join(response.iter_raw()).decode()
            except httpx.HTTPError:  # the gateway broke the stream off
                received = "<broken>"
            return response.status_code, received, response.headers["x-tokentill-request-id"]


ODD_CHUNKS = [sse({"id": "c", "choices": 7}), sse({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": 3}}]}),
              sse({"id": "c", "choices": [{"index": 0, "delta": 5}]})]


def test_a_stream_with_chunks_of_an_unexpected_shape_is_relayed_whole_and_charged_its_usage(live, upstream):
    url, _ = live
    cid, key = customer(live)
    events = [content(" one"), *ODD_CHUNKS, content(" two"), usage_chunk(40), b"data: [DONE]\n\n"]

    async def odd(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        for event in events:
            await body(send, event)
        await body(send, b"", more=False)

    status, received, request_id = stream_call(url, key, {"model": model(upstream, odd), "messages": HI})
    assert status == 200
    # every event but the usage chunk the caller did not ask for, then the charge
    assert received == b"".join(e for e in events if e != usage_chunk(40)).decode() + (
        f": tokentill charged=0.01 currency=USD request_id={request_id}\n\n")
    _billed(url, cid, request_id, CHAT_CHARGE)


@pytest.mark.parametrize("answer", [{"choices": 7}, {"choices": [{"message": {"tool_calls": 3}}]}])
def test_a_whole_answer_of_an_unexpected_shape_without_usage_is_charged_its_prompt(live, upstream, answer):
    url, _ = live
    cid, key = customer(live)
    data = msgspec.json.encode({"id": "chatcmpl-odd", "object": "chat.completion", **answer})

    async def odd(send: Any, receive: Any) -> None:
        await start(send, b"application/json", len(data))
        await body(send, data, more=False)

    raw = httpx.post(f"{url}/openai/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                     json={"model": model(upstream, odd), "messages": HI}, timeout=30)
    assert raw.status_code == 200 and raw.content == data
    prompt = (8 * IN) / M + CALL  # "user" and "hi", 3 a message, 3 for the reply; no output metered
    assert Decimal(raw.headers["x-tokentill-charged"]) == prompt
    _billed(url, cid, raw.headers["x-tokentill-request-id"], prompt)


@pytest.mark.parametrize(("content_type", "data"), [
    (b"text/html; charset=utf-8", b"<html><body>Bad gateway, maybe, but 200</body></html>"),
    (b"application/json", b"<html>not JSON</html>"),  # labelled JSON, which it is not
    (b"application/json", b"[1, 2]")])  # JSON, not an object
def test_a_whole_answer_that_is_no_json_object_is_charged_its_prompt_saying_why(live, upstream, content_type, data):
    """A whole call answered 200 with a body that is neither a JSON object nor an event stream
    (an HTML page, say): the upstream answered, and bills at least the prompt it read. Was:
    released, x-tokentill-charged 0, the answer passed through for nothing. Now charged the
    prompt as counted, as a JSON answer of an unexpected shape is
    (test_a_whole_answer_of_an_unexpected_shape_without_usage_is_charged_its_prompt: 8 tokens at
    $10 per 1M plus the $0.001 a call), its usage record saying why (`refused_usage`, form
    "answer", the body's size and the reason)."""
    url, _ = live
    cid, key = customer(live)

    async def odd(send: Any, receive: Any) -> None:
        await start(send, content_type, len(data))
        await body(send, data, more=False)

    raw = httpx.post(f"{url}/openai/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                     json={"model": model(upstream, odd), "messages": HI}, timeout=30)
    assert raw.status_code == 200 and raw.content == data
    prompt = (8 * IN) / M + CALL  # "user" and "hi", 3 a message, 3 for the reply; no output metered
    assert prompt == Decimal("0.00108")
    rid = raw.headers["x-tokentill-request-id"]
    assert Decimal(raw.headers["x-tokentill-charged"]) == prompt
    _billed(url, cid, rid, prompt)
    record = charge_usage(url, rid)
    assert record["canonical"]["input_tokens"] == 8 and record["canonical"]["output_tokens"] == 0
    assert record["refused_usage"] == {
        "form": "answer", "reported_bytes": len(data),
        "reason": f"the answer is not a JSON object (Content-Type {content_type.decode()}): "
                  "charged the prompt as counted"}


def test_a_fault_of_the_gateways_own_mid_stream_charges_what_was_generated_and_closes_the_hold(
        live, upstream, monkeypatch):
    url, _ = live
    cid, key = customer(live)
    observe = StreamTally.observe

    def failing(self: StreamTally, raw: bytes) -> bool:
        if b" three" in raw:
            raise RuntimeError("a fault of the gateway's own")
        return observe(self, raw)

    monkeypatch.setattr(StreamTally, "observe", failing)

    async def words(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        for word in (" one", " two", " three", " four"):
            await body(send, content(word))
        await body(send, usage_chunk(4) + b"data: [DONE]\n\n", more=False)

    status, received, request_id = stream_call(url, key, {"model": model(upstream, words), "messages": HI})
    assert status == 200 and " three" not in received
    cost = (8 * IN + 2 * OUT) / M + CALL  # the prompt as counted, " one two" metered
    _billed(url, cid, request_id, cost)


@pytest.mark.parametrize("after_release", [False, True])
def test_a_fault_of_the_gateways_own_before_the_answer_tells_its_charge_only_when_nothing_was_charged(
        live, upstream, monkeypatch, after_release):
    """A 500 of the gateway's own: x-tokentill-charged is 0 only when the hold was released; a
    call whose generated answer was charged (a settle spooled, its amount not known yet) does not
    claim 0."""
    url, _ = live
    cid, key = customer(live)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a fault of the gateway's own")

    async def whole(send: Any, receive: Any) -> None:
        await start(send, b"application/json", len(WHOLE), status=500 if after_release else 200)
        await body(send, WHOLE, more=False)

    if after_release:  # the release went through, then answering the upstream's error failed
        monkeypatch.setattr("api.gateway.forwarding.upstream_headers", broken)
    else:
        monkeypatch.setattr("api.gateway.forwarding.answer_settlement", broken)
    raw = httpx.post(f"{url}/openai/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                     json={"model": model(upstream, whole), "messages": HI}, timeout=30)
    assert raw.status_code == 500 and raw.json()["error"]["code"] == "internal_error"
    cost = 0 if after_release else (8 * IN + 3 * OUT) / M + CALL  # the prompt as counted, " one two three"
    assert raw.headers.get("x-tokentill-charged") == ("0" if after_release else None)
    _billed(url, cid, raw.headers["x-tokentill-request-id"], cost)


def test_a_fault_of_the_gateways_own_after_a_charged_answer_is_not_retried_by_the_client(live, upstream, monkeypatch):
    """The openai client retries a 500 twice by itself: a fault of the gateway's own after the
    upstream answered (the answer charged: 8 prompt and 3 output tokens and the call, 0.00114) was
    sent upstream three times and charged three times (0.00342) for one call that got no answer.
    Such a 500 says x-should-retry: false; one whose hold was released does not."""
    url, _ = live
    cid, key = customer(live)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a fault of the gateway's own")

    async def whole(send: Any, receive: Any) -> None:
        await start(send, b"application/json", len(WHOLE))
        await body(send, WHOLE, more=False)

    monkeypatch.setattr("api.gateway.forwarding.answer_settlement", broken)
    name = model(upstream, whole)
    with pytest.raises(openai.InternalServerError) as raised:
        openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key).chat.completions.create(model=name, messages=HI)
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert sum(call["model"] == name for call in upstream.fake.calls) == 1
    cost = (8 * IN + 3 * OUT) / M + CALL
    assert cost == Decimal("0.00114")
    assert wallet(url, cid) == (Decimal("10") - cost, 0)


RESPONSE_USAGE = {"input_tokens": 800, "input_tokens_details": {"cached_tokens": 100}, "output_tokens": 56,
                  "output_tokens_details": {"reasoning_tokens": 16}, "total_tokens": 856}
CUT_MESSAGE = msgspec.json.encode({
    "id": "msg_cut", "type": "message", "role": "assistant", "model": "m",
    "content": [{"type": "text", "text": " one two three"}], "stop_reason": "end_turn",
    "usage": {"input_tokens": 900, "output_tokens": 40}})


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
@pytest.mark.parametrize("came", ["up_to_three", "nothing"])
def test_a_whole_answer_cut_mid_body_is_charged_what_came_and_not_retried(live, upstream, sdk, came):
    """A whole answer whose connection is lost mid-body was generated (its headers and first bytes
    came), and the upstream bills it: it was released and answered a 502 that the official clients
    send again twice (three upstream calls, each billed, 0 charged). Now it is charged as a stream
    cut there is, the prompt as counted and the text that came metered, and its 502 says so and
    x-should-retry: false. Cut before any byte of the body, it is released and may be retried."""
    url, _ = live
    cid, key = customer(live)
    data = WHOLE if sdk == "openai" else CUT_MESSAGE
    arrived = data[:data.index(b" three")] if came == "up_to_three" else b""

    async def cut(send: Any, receive: Any) -> None:
        await start(send, b"application/json", len(data))
        if arrived:
            await body(send, arrived)
        raise ConnectionAbortedError("the upstream drops the answer mid-body")

    name = model(upstream, cut)
    response = _failed_whole_call(url, key, sdk, name)
    assert response.status_code == 502
    # the prompt as counted ("user" and "hi", 3 a message, 3 for the reply: 8) and " one two" metered (2)
    cost = (8 * IN + 2 * OUT) / M + CALL if arrived else Decimal(0)
    assert cost == (Decimal("0.00112") if arrived else 0)
    assert Decimal(response.headers["x-tokentill-charged"]) == cost
    _billed(url, cid, response.headers["x-tokentill-request-id"], cost)
    if arrived:  # sent once: a retry would be billed again
        assert response.headers["x-should-retry"] == "false"
        assert sum(call["model"] == name for call in upstream.fake.calls) == 1
    else:  # released: the client may try again (max_retries 2 by default)
        assert "x-should-retry" not in response.headers
        assert sum(call["model"] == name for call in upstream.fake.calls) == 3


@pytest.mark.parametrize("framing", ["chunked", "content_length"])
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_a_whole_answer_cut_after_its_last_byte_is_passed_on_and_charged_its_usage(live, upstream, sdk, framing):
    """The whole JSON answer came, then the connection was lost before the body's end as HTTP
    frames it (chunked: its last chunk; or a content-length one byte longer than the JSON, its
    trailing newline never sent): the caller got a 502 (x-should-retry: false) for an answer it
    had all of, and paid for. Now it is passed on, 200, and charged its own usage: OpenAI's 800
    input, 200 cached and 40 output tokens (CHAT_CHARGE, 0.0100); Anthropic's 900 input and 40
    output, (9,000 + 800) / 1M + 0.001 = 0.0108."""
    url, _ = live
    cid, key = customer(live)
    data = WHOLE if sdk == "openai" else CUT_MESSAGE

    async def cut(send: Any, receive: Any) -> None:
        await start(send, b"application/json", len(data) + 1 if framing == "content_length" else None)
        await body(send, data)
        raise ConnectionAbortedError("the upstream drops the connection before the body's end")

    name = model(upstream, cut)
    if sdk == "openai":
        raw: Any = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key).chat.completions.with_raw_response.create(
            model=name, messages=HI)
        assert raw.parse().choices[0].message.content == " one two three"
    else:
        raw = anthropic.Anthropic(base_url=f"{url}/anthropic", api_key=key).messages.with_raw_response.create(
            model=name, max_tokens=100, messages=HI)
        assert raw.parse().content[0].text == " one two three"
    cost = CHAT_CHARGE if sdk == "openai" else (900 * IN + 40 * OUT) / M + CALL
    assert cost == (Decimal("0.0100") if sdk == "openai" else Decimal("0.0108"))
    assert raw.status_code == 200
    assert Decimal(raw.headers["x-tokentill-charged"]) == cost
    _billed(url, cid, raw.headers["x-tokentill-request-id"], cost)
    assert sum(call["model"] == name for call in upstream.fake.calls) == 1


def test_a_whole_json_not_of_the_calls_kind_cut_before_the_body_s_end_is_still_a_502(live, upstream):
    """Only an answer of the call's kind goes on: a chat call whose 200 carries a whole JSON
    object that is no chat completion (an embeddings list), cut before the body's end, is a 502
    (x-should-retry: false), charged as a whole answer without usage: the prompt as counted (8)
    and no text, 8 * 10 / 1M + 0.001 = 0.00108."""
    url, _ = live
    cid, key = customer(live)
    data = msgspec.json.encode({"object": "list", "data": [], "model": "m"})

    async def cut(send: Any, receive: Any) -> None:
        await start(send, b"application/json")
        await body(send, data)
        raise ConnectionAbortedError("the upstream drops the connection before the body's end")

    name = model(upstream, cut)
    response = _failed_whole_call(url, key, "openai", name)
    cost = 8 * IN / M + CALL
    assert cost == Decimal("0.00108")
    assert response.status_code == 502 and response.headers["x-should-retry"] == "false"
    assert Decimal(response.headers["x-tokentill-charged"]) == cost
    _billed(url, cid, response.headers["x-tokentill-request-id"], cost)
    assert sum(call["model"] == name for call in upstream.fake.calls) == 1


ONE_TWO_THREE = {"type": "message", "id": "msg_edge", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": " one two three", "annotations": []}]}
# Each kind's whole answer with its usage before other members, as the providers send them (chat:
# service_tier and system_fingerprint after it; responses: user and metadata), and what arrived of it:
# up to a point after its usage's closing brace (chat: inside its service tier's string; the others:
# all but the answer's own closing brace), or, for chat, cut inside the usage after its nested
# prompt_tokens_details closed.
CUT_AFTER_USAGE = {
    "chat": (msgspec.json.encode({
        "id": "chatcmpl-edge", "object": "chat.completion", "created": 1764680000, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": " one two three"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 40, "total_tokens": 1040,
                  "prompt_tokens_details": {"cached_tokens": 200}},
        "service_tier": "default", "system_fingerprint": "fp_edge"}), b'"service_tier":"def'),
    "responses": (msgspec.json.encode({
        "id": "resp_edge", "object": "response", "created_at": 1764680000, "status": "completed", "model": "m",
        "output": [ONE_TWO_THREE], "service_tier": "default", "usage": RESPONSE_USAGE, "user": None,
        "metadata": {}}), b'"user":nu'),
    "embeddings": (msgspec.json.encode({
        "object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.0125, -0.5, 0.25]}],
        "model": "m", "usage": {"prompt_tokens": 500, "total_tokens": 500}}), None),
    "messages": (msgspec.json.encode({
        "id": "msg_edge", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "text", "text": " one two three"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 900, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 50,
                  "output_tokens": 40}}), None),
}


@pytest.mark.parametrize("kind", [*CUT_AFTER_USAGE, "chat_inside_usage"])
def test_a_whole_answer_cut_after_its_usage_closed_is_charged_that_usage(live, upstream, kind):
    """An answer cut mid-body after its usage object closed was charged from its metered text (the
    prompt as counted and " one two three"), though the provider's usage, what it bills, had all
    come. Now a whole top-level usage in what arrived settles it, each in its provider's shape:
    chat (its tier cut mid-string, "def": not read; the default prices it), 800 input, 200 cached,
    40 output: (8,000 + 200 + 800) / 1M + 0.001 = 0.0100; responses, 700 input, 100 cached, 56
    output (16 reasoning): (7,000 + 100 + 1,120) / 1M + 0.001 = 0.00922; embeddings, 500 input:
    5,000 / 1M + 0.001 = 0.006; Anthropic, 900 input, 100 read, 50 written, 40 output:
    (9,000 + 100 + 625 + 800) / 1M + 0.001 = 0.011525. A usage cut before its own closing brace
    (its prompt_tokens_details closed) is not read: the prompt as counted ("user" and "hi", 3 a
    message, 3 for the reply: 8) and " one two three" metered (3): (80 + 60) / 1M + 0.001 =
    0.00114. Each a 502 that says x-should-retry: false, sent upstream once."""
    url, _ = live
    cid, key = customer(live)
    data, after = CUT_AFTER_USAGE["chat" if kind == "chat_inside_usage" else kind]
    if kind == "chat_inside_usage":
        arrived = data[:data.index(b'"cached_tokens":200}') + len(b'"cached_tokens":200}')]
    elif after is not None:
        arrived = data[:data.index(after) + len(after)]
    else:
        arrived = data[:-1]
    assert arrived != data and b'"usage"' in arrived

    async def cut(send: Any, receive: Any) -> None:
        await start(send, b"application/json")
        await body(send, arrived)
        raise ConnectionAbortedError("the upstream drops the answer after its usage")

    name = model(upstream, cut)
    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key)
    with pytest.raises(anthropic.InternalServerError if kind == "messages" else openai.InternalServerError) as raised:
        if kind in ("chat", "chat_inside_usage"):
            client.chat.completions.create(model=name, messages=HI)
        elif kind == "responses":
            client.responses.create(model=name, input="hi")
        elif kind == "embeddings":
            client.embeddings.create(model=name, input="hi")
        else:
            anthropic.Anthropic(base_url=f"{url}/anthropic", api_key=key).messages.create(
                model=name, max_tokens=100, messages=HI)
    response = raised.value.response
    cost = {"chat": (800 * IN + 200 * CACHED + 40 * OUT) / M + CALL,
            "responses": (700 * IN + 100 * CACHED + (40 + 16) * OUT) / M + CALL,
            "embeddings": 500 * IN / M + CALL,
            "messages": (900 * IN + 100 * CACHED + 50 * WRITE + 40 * OUT) / M + CALL,
            "chat_inside_usage": (8 * IN + 3 * OUT) / M + CALL}[kind]
    assert cost == {"chat": Decimal("0.0100"), "responses": Decimal("0.00922"), "embeddings": Decimal("0.006"),
                    "messages": Decimal("0.011525"), "chat_inside_usage": Decimal("0.00114")}[kind]
    assert response.status_code == 502 and response.headers["x-should-retry"] == "false"
    assert Decimal(response.headers["x-tokentill-charged"]) == cost
    _billed(url, cid, response.headers["x-tokentill-request-id"], cost)
    assert sum(call["model"] == name for call in upstream.fake.calls) == 1


PRIORITY_RULE = {"id": "out-priority", "token_type": "output", "price": str(PRIORITY),
                 "match": {"service_tier": "priority"}}


@pytest.mark.parametrize("asked", [None, "auto", "default"])
def test_a_chat_answer_cut_before_its_tier_is_charged_at_the_tier_the_hold_priced(live, upstream, asked):
    """A chat answer cut after its usage closed but before its `"service_tier":"priority"` came
    was charged that usage at the standard prices, while a call that leaves its tier to the
    provider (none asked, or "auto") is held at the dearest tier its book prices (priority, 40
    per million output tokens): a call served at priority, charged as standard. Now a tier the
    answer did not tell is the one the hold priced: 800 input, 200 cached and 40 output at
    priority, (8,000 + 200 + 1,600) / 1M + 0.001 = 0.0108. A call that asked for a tier is
    charged at it: "default", (8,000 + 200 + 800) / 1M + 0.001 = 0.0100 (CHAT_CHARGE). The usage
    record tells the held tier as assumed, not as the provider's (it was in `reported`, as if the
    answer had said it)."""
    url, _ = live
    cid, key = customer((url, tool_book(url, PRIORITY_RULE)))
    data = msgspec.json.encode({
        "id": "chatcmpl-edge", "object": "chat.completion", "created": 1764680000, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": " one two three"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 40, "total_tokens": 1040,
                  "prompt_tokens_details": {"cached_tokens": 200}},
        "service_tier": "priority" if asked != "default" else "default"})
    arrived = data[:data.index(b'"service_tier":"') + len(b'"service_tier":"pri')]

    async def cut(send: Any, receive: Any) -> None:
        await start(send, b"application/json")
        await body(send, arrived)
        raise ConnectionAbortedError("the upstream drops the answer inside its tier")

    name = model(upstream, cut)
    with pytest.raises(openai.InternalServerError) as raised:
        openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key).chat.completions.create(
            model=name, messages=HI, max_tokens=100, **({"service_tier": asked} if asked else {}))
    response = raised.value.response
    cost = (800 * IN + 200 * CACHED + 40 * (OUT if asked == "default" else PRIORITY)) / M + CALL
    assert cost == (Decimal("0.0100") if asked == "default" else Decimal("0.0108"))
    assert response.status_code == 502
    assert Decimal(response.headers["x-tokentill-charged"]) == cost
    _billed(url, cid, response.headers["x-tokentill-request-id"], cost)
    usage = charge_usage(url, response.headers["x-tokentill-request-id"])
    assert "service_tier" not in usage["reported"] and "service_tier" not in usage["canonical"]
    if asked == "default":  # the reservation's own dimension: nothing assumed
        assert "assumed" not in usage and "dimensions" not in usage
    else:
        assert usage["assumed"] == usage["dimensions"] == {"service_tier": "priority"}


def test_an_anthropic_answer_cut_before_its_usage_is_charged_at_the_tier_the_hold_priced(live, upstream):
    """Anthropic tells its tier inside its usage: a message cut before it (none asked: its "auto"
    may use Priority Tier capacity, held at the book's priority price) is metered, and was charged
    at the standard prices. Now at the held tier: the prompt as counted ("user" and "hi", 3 a
    message, 3 for the reply: 8) and " one two" (2) at 40 per million, (80 + 80) / 1M + 0.001 =
    0.00116 (was 0.00112), the tier recorded as assumed."""
    url, _ = live
    cid, key = customer((url, tool_book(url, PRIORITY_RULE)))
    arrived = CUT_MESSAGE[:CUT_MESSAGE.index(b" three")]

    async def cut(send: Any, receive: Any) -> None:
        await start(send, b"application/json")
        await body(send, arrived)
        raise ConnectionAbortedError("the upstream drops the answer before its usage")

    response = _failed_whole_call(url, key, "anthropic", model(upstream, cut))
    cost = (8 * IN + 2 * PRIORITY) / M + CALL
    assert cost == Decimal("0.00116")
    assert response.status_code == 502 and Decimal(response.headers["x-tokentill-charged"]) == cost
    _billed(url, cid, response.headers["x-tokentill-request-id"], cost)
    usage = charge_usage(url, response.headers["x-tokentill-request-id"])
    assert usage["assumed"] == usage["dimensions"] == {"service_tier": "priority"}
    assert "service_tier" not in usage["reported"]


def tiered(text: str) -> bytes:
    return sse({"id": "c", "object": "chat.completion.chunk", "model": "m", "service_tier": "priority",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


@pytest.mark.parametrize("told", [True, False])
def test_a_chat_stream_cut_before_its_usage_is_charged_at_the_tier_it_told_else_the_held_one(
        live, upstream, told):
    """A chat stream cut before its usage chunk is charged the prompt as counted and the text
    metered, at the standard prices, though its chunks said it was served at priority, or (none
    told) its hold was priced at priority, the dearest tier of its book for a call that leaves the
    tier to the provider. Now at the tier its chunks told, else the held one: 8 prompt tokens
    ("user" and "hi", 3 a message, 3 for the reply) and " one two three" (3) at priority's 40 per
    million output tokens, (80 + 120) / 1M + 0.001 = 0.0012 (was 0.00114). A tier its chunks told
    is the provider's (in the usage); the held one is recorded as assumed."""
    url, _ = live
    cid, key = customer((url, tool_book(url, PRIORITY_RULE)))
    events = [(tiered if told else content)(" one two three")]

    async def cut(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        for part in events:
            await body(send, part)
        raise ConnectionAbortedError("the upstream drops the stream before its usage")

    status, received, request_id = stream_call(url, key, {"model": model(upstream, cut), "messages": HI,
                                                          "max_tokens": 100})
    assert status == 200 and b"upstream_failed" in received.encode()
    cost = (8 * IN + 3 * PRIORITY) / M + CALL
    assert cost == Decimal("0.0012")
    _billed(url, cid, request_id, cost)
    usage = charge_usage(url, request_id)
    assert usage["dimensions"] == {"service_tier": "priority"}
    if told:
        assert usage["reported"]["service_tier"] == "priority" and "assumed" not in usage
    else:
        assert usage["assumed"] == {"service_tier": "priority"} and "service_tier" not in usage["reported"]


def _response_event(kind: str, response: dict[str, Any]) -> bytes:
    return f"event: {kind}\n".encode() + sse({"type": kind, "sequence_number": 0, "response": response})


FLEX_RULE = {"id": "out-flex", "token_type": "output", "price": "5", "match": {"service_tier": "flex"}}


@pytest.mark.parametrize("told, tier", [("response.created", "flex"), ("response.in_progress", "flex"),
                                        ("response.created", "auto")])
def test_a_responses_stream_cut_before_its_end_is_charged_at_the_tier_an_earlier_event_told(
        live, upstream, told, tier):
    """A response's service_tier comes in its response.created and response.in_progress events
    too; the tally read it only from response.completed, so a stream cut before that was charged
    at the held tier (priority, the dearest of its book) though flex served it: the input "hi" as a
    user message (7) and " one two" metered (2) at flex's 5 per million output tokens,
    (70 + 10) / 1M + 0.001 = 0.00108 (was at priority's 40: (70 + 80) / 1M + 0.001 = 0.00115). An
    event that tells "auto" (the call's own choice echoed, not a tier that served) tells nothing:
    held priority, 0.00115, recorded as assumed."""
    url, _ = live
    cid, key = customer((url, tool_book(url, PRIORITY_RULE, FLEX_RULE)))
    started = {"id": "resp_edge", "object": "response", "status": "in_progress", "model": "m", "output": [],
               "usage": None, "service_tier": tier}
    earlier = [_response_event("response.created", {**started, "service_tier": "auto"})] \
        if told == "response.in_progress" else []  # the call's "auto" echoed first, then the tier
    events = [*earlier, _response_event(told, started), _responses_event("response.output_text.delta", " one two")]

    async def cut(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        for part in events:
            await body(send, part)
        raise ConnectionAbortedError("the upstream drops the stream before response.completed")

    status, received, request_id = stream_call(url, key, {"model": model(upstream, cut), "input": "hi",
                                                          "max_output_tokens": 100}, "/openai/v1/responses")
    assert status == 200 and b"upstream_failed" in received.encode()
    cost = (7 * IN + 2 * (Decimal(5) if tier == "flex" else PRIORITY)) / M + CALL
    assert cost == (Decimal("0.00108") if tier == "flex" else Decimal("0.00115"))
    _billed(url, cid, request_id, cost)
    usage = charge_usage(url, request_id)
    if tier == "flex":
        assert usage["reported"]["service_tier"] == "flex" and "assumed" not in usage
    else:
        assert usage["assumed"] == {"service_tier": "priority"} and "service_tier" not in usage["reported"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_stream_cut_inside_its_last_event_after_the_usage_in_it_came_is_charged_that_usage(
        live, upstream, provider):
    """The final usage event's data line came whole (its JSON complete), then the connection was
    lost before the blank line that ends the event: the event was never read, and the stream was
    charged as one cut before its usage. OpenAI: the prompt as counted (8) and " one two three"
    (3), 0.00114, where its usage says 800 input, 200 cached, 40 output: CHAT_CHARGE, 0.0100.
    Anthropic: message_start's 900 input, 100 cached, 50 written and " one two" metered (2),
    (9,000 + 100 + 625 + 40) / 1M + 0.001 = 0.010765, where message_delta says 40 output:
    (9,000 + 100 + 625 + 800) / 1M + 0.001 = MESSAGES_CHARGE, 0.011525. The unended event is not
    relayed (the caller gets the error event)."""
    url, _ = live
    cid, key = customer(live)
    if provider == "openai":
        events = [content(" one two three"), usage_chunk(40)[:-1]]  # "data: {...}\n", its blank line lost
        path, payload, headers = "/openai/v1/chat/completions", {}, {"Authorization": f"Bearer {key}"}
    else:
        started = {"input_tokens": 900, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 50,
                   "output_tokens": 1}
        events = [event("message_start", {"message": {"id": "msg_edge", "type": "message", "role": "assistant",
                                                      "content": [], "usage": started}}),
                  event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": " one two"}}),
                  event("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 40}})[:-1]]
        path, payload, headers = "/anthropic/v1/messages", {"max_tokens": 100}, {"x-api-key": key}

    async def cut(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        for part in events:
            await body(send, part)
        raise ConnectionAbortedError("the upstream drops the stream inside its last event")

    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        with http.stream("POST", path, json={"model": model(upstream, cut), "messages": HI, "stream": True,
                                             **payload}) as r:
            received = b"".join(r.iter_raw())
            request_id = r.headers["x-tokentill-request-id"]
    assert received.startswith(b"".join(events[:-1])) and events[-1] not in received
    assert b"upstream_failed" in received
    cost = CHAT_CHARGE if provider == "openai" else MESSAGES_CHARGE
    assert cost == (Decimal("0.0100") if provider == "openai" else Decimal("0.011525"))
    _billed(url, cid, request_id, cost)


@pytest.mark.parametrize("lost", [1, 2], ids=["its blank line", "its line end"])
def test_a_stream_that_ends_inside_its_last_event_is_charged_the_usage_in_it(live, upstream, lost):
    """The upstream ended its stream (cleanly: HTTP's end of the body came) without the blank line
    that ends its last event, the usage chunk, or without even the data line's end. That usage,
    800 input, 200 cached, 40 output, is CHAT_CHARGE, 0.0100; it was never read, and the stream was
    charged as one without usage: the prompt as counted (8) and " one two three" (3),
    (8 x $10 + 3 x $20) / 1M + $0.001 = $0.00114. And the charge's SSE comment was written right
    after the unended data line, into its JSON (`..."cached_tokens":200}}}: tokentill charged=...`),
    which the caller's SDK could not decode. Now the event is read for the charge, and what the
    caller gets ends the line first: each data line it gets is whole JSON."""
    url, _ = live
    cid, key = customer(live)
    last = usage_chunk(40)[:-lost]

    async def unended(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        await body(send, content(" one two three"))
        await body(send, last, more=False)

    status, received, request_id = stream_call(url, key, {"model": model(upstream, unended), "messages": HI,
                                                          "stream_options": {"include_usage": True}})
    assert status == 200 and last.decode() in received
    for line in received.splitlines():
        if line.startswith("data: "):
            json.loads(line.removeprefix("data: "))
    assert (8 * IN + 3 * OUT) / M + CALL == Decimal("0.00114")
    _billed(url, cid, request_id, CHAT_CHARGE)


MIXED_ENDS = {  # the usage chunk, then [DONE], each part a chunk of the body
    "LF then an empty CRLF": [usage_chunk(40)[:-1] + b"\r\n", b"data: [DONE]\r\n\n"],
    "CR | LF, CR | LF": [usage_chunk(40)[:-2] + b"\r", b"\n\r", b"\ndata: [DONE]\r\r"]}


@pytest.mark.parametrize("ends", list(MIXED_ENDS))
def test_a_usage_event_ended_by_mixed_line_ends_is_read_for_the_charge(live, upstream, ends):
    """The SSE spec: a line ends in CRLF, LF or CR, and an empty line ends an event. The usage
    chunk (800 input, 200 cached, 40 output: CHAT_CHARGE, (8,000 + 200 + 800) / 1M + $0.001 =
    $0.0100) ends its data line in LF and its event in an empty line ended by CRLF, and [DONE]
    follows ended CRLF, LF. The gateway cut events at CRLF CRLF, LF LF or CR CR only, so the usage
    and [DONE] were one event whose data, "{...}" LF "[DONE]", is no JSON: charged as cut before its
    usage, the prompt as counted (8) and " one two three" (3), (8 x $10 + 3 x $20) / 1M + $0.001 =
    $0.00114. Now 0.0100, as the openai package reads it: its chunks carry that usage, and the
    SDK's StreamMeter fed them meters the 3 tokens of " one two three". The second case cuts a
    CRLF across two chunks (a CR last, an LF first), which must stay one line end."""
    url, _ = live
    events = [content(" one two three"), *MIXED_ENDS[ends]]

    async def mixed(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        for part in events:
            await body(send, part)
        await body(send, b"", more=False)

    payload = {"messages": HI, "stream_options": {"include_usage": True}}
    cid, key = customer(live)
    status, received, request_id = stream_call(url, key, {"model": model(upstream, mixed), **payload})
    assert status == 200 and received.startswith(b"".join(events).decode()), received
    assert (8 * IN + 3 * OUT) / M + CALL == Decimal("0.00114") and CHAT_CHARGE == Decimal("0.0100")
    _billed(url, cid, request_id, CHAT_CHARGE)
    cid, key = customer(live)
    sdk = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0)
    meter = StreamMeter(TokenCounter(), "gpt-4o")
    with sdk.chat.completions.with_streaming_response.create(model=model(upstream, mixed), stream=True,
                                                             **payload) as response:
        request_id = response.headers["x-tokentill-request-id"]
        chunks = list(response.parse())
    for chunk in chunks:
        meter.add(chunk)
    assert [c.usage.completion_tokens for c in chunks if c.usage] == [40] and meter.output_tokens == 3
    _billed(url, cid, request_id, CHAT_CHARGE)


def test_a_stream_of_several_choices_cut_before_its_usage_meters_each_choice_apart(live, upstream):
    """A chat call with `n: 2` streams its choices' chunks interleaved; cut before its usage, its
    output is metered from the text. Each choice wrote "Hello world!", three tokens in cl100k_base
    ("Hello", " world", "!"): 6 output tokens, and the prompt as counted (8: "user" and "hi", 3 a
    message and 3 for the reply), (8 x $10 + 6 x $20) / 1M + $0.001 = $0.0012. Was: the chunks'
    texts joined in the order they came, "HelloHello world world!!", whose "!!" is one token: 5,
    $0.00118."""
    url, _ = live
    cid, key = customer(live)

    def piece(index: int, text: str) -> bytes:
        return sse({"id": "c", "object": "chat.completion.chunk", "model": "m",
                    "choices": [{"index": index, "delta": {"content": text}, "finish_reason": None}]})

    async def interleaved(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        for text in ("Hello", " world", "!"):
            await body(send, piece(0, text) + piece(1, text))
        raise ConnectionAbortedError("the upstream drops the stream before its usage")

    status, received, request_id = stream_call(url, key, {"model": model(upstream, interleaved), "messages": HI,
                                                          "n": 2})
    assert status == 200 and "upstream_failed" in received
    _billed(url, cid, request_id, (8 * IN + 6 * OUT) / M + CALL)
    assert (8 * IN + 6 * OUT) / M + CALL == Decimal("0.0012")


def test_a_responses_stream_whose_text_holds_a_unicode_line_separator_is_charged_its_usage(live, upstream):
    """Only CR and LF end a server-sent event's lines: a U+2028 or U+0085 inside the JSON of
    response.completed (its output text, unescaped as JSON allows) leaves the event, and its
    usage, whole."""
    url, _ = live
    cid, key = customer(live)
    text = " one\u2028two\x85three"
    usage = {"input_tokens": 800, "input_tokens_details": {"cached_tokens": 100}, "output_tokens": 56,
             "output_tokens_details": {"reasoning_tokens": 16}, "total_tokens": 856}
    response = {"id": "resp_edge", "object": "response", "status": "completed", "usage": usage,
                "output": [{"id": "msg", "type": "message", "role": "assistant",
                            "content": [{"type": "output_text", "text": text, "annotations": []}]}]}
    events = [b"event: response.output_text.delta\n" + sse({"type": "response.output_text.delta", "delta": text}),
              b"event: response.completed\n" + sse({"type": "response.completed", "response": response})]

    async def separated(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        for event in events:
            await body(send, event)
        await body(send, b"", more=False)

    status, received, request_id = stream_call(url, key, {"model": model(upstream, separated), "input": "hi"},
                                                "/openai/v1/responses")
    assert status == 200 and received.startswith(b"".join(events).decode())
    _billed(url, cid, request_id, RESPONSES_CHARGE)


@pytest.mark.parametrize("stream", [False, True])
def test_a_caller_who_leaves_while_its_hold_is_being_taken_is_released_and_not_forwarded(
        live, upstream, monkeypatch, stream):
    url, _ = live
    cid, key = customer(live)
    reserving, left = threading.Event(), threading.Event()
    submit = WalletService.submit

    async def slow_reserve(self: WalletService, command: Any) -> Any:
        if isinstance(command, Reserve) and command.customer_id == cid:
            reserving.set()
            await asyncio.to_thread(left.wait, 30)
        return await submit(self, command)

    monkeypatch.setattr(WalletService, "submit", slow_reserve)

    async def whole(send: Any, receive: Any) -> None:
        await start(send, b"application/json", len(WHOLE))
        await body(send, WHOLE, more=False)

    name = model(upstream, whole)
    request_id = post_and_leave(url, key, {"model": name, "messages": HI, "stream": stream}, reserving.is_set)
    time.sleep(0.2)
    left.set()
    assert charged(url, request_id) == 0
    assert wallet(url, cid) == (Decimal("10"), 0)
    assert all(call["model"] != name for call in upstream.fake.calls)


def test_a_stream_cut_before_its_first_token_is_released_and_cancelled_upstream(live, upstream):
    url, _ = live
    cid, key = customer(live)
    started, gone = threading.Event(), threading.Event()

    async def thinking(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        await body(send, sse({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}))
        started.set()
        message = await asyncio.wait_for(receive(), timeout=30)
        if message["type"] == "http.disconnect":
            gone.set()

    name = model(upstream, thinking)
    request_id = post_and_leave(url, key, {"model": name, "messages": HI, "stream": True}, started.is_set)
    assert gone.wait(10), "the upstream never saw the cut"
    assert charged(url, request_id) == 0
    assert wallet(url, cid) == (Decimal("10"), 0)


def test_a_chat_stream_whose_caller_refused_usage_does_not_get_it_and_is_charged_the_last_usage(live, upstream):
    """`include_usage: false` set by the caller: the upstream is asked for usage all the same (its
    other stream options kept), and the usage chunks (here two, the second the final one) are
    dropped on the way back."""
    url, _ = live
    cid, key = customer(live)
    events = [content(" one"), usage_chunk(3), usage_chunk(40), b"data: [DONE]\n\n"]

    async def twice(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        for event in events:
            await body(send, event)
        await body(send, b"", more=False)

    name = model(upstream, twice)
    _, received, request_id = stream_call(url, key, {
        "model": name, "messages": HI, "stream_options": {"include_usage": False, "include_obfuscation": False}})
    assert received == (content(" one") + b"data: [DONE]\n\n").decode() + (
        f": tokentill charged=0.01 currency=USD request_id={request_id}\n\n")
    sent = next(call for call in upstream.fake.calls if call["model"] == name)
    assert sent["stream_options"] == {"include_usage": True, "include_obfuscation": False}
    _billed(url, cid, request_id, CHAT_CHARGE)


def test_an_anthropic_stream_whose_message_delta_repeats_the_input_usage_is_charged_it_once(live, upstream):
    """Anthropic's message_delta may carry the cumulative usage, input fields included, beside
    message_start's: the settle takes each count once, the later word winning."""
    url, _ = live
    cid, key = customer(live)
    start_usage = {"input_tokens": 900, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 50,
                   "output_tokens": 1}
    events = [
        b"event: message_start\n" + sse({"type": "message_start", "message": {
            "id": "msg_edge", "type": "message", "role": "assistant", "content": [], "usage": start_usage}}),
        b"event: content_block_delta\n" + sse({"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": " one two"}}),
        b"event: message_delta\n" + sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                         "usage": {**start_usage, "output_tokens": 40, "server_tool_use": None}}),
        b"event: message_stop\n" + sse({"type": "message_stop"})]

    with httpx.Client(base_url=url, headers={"x-api-key": key}, timeout=30) as http:
        with http.stream("POST", "/anthropic/v1/messages", json={
                "model": model(upstream, streamed(events)), "max_tokens": 100, "messages": HI, "stream": True}) as r:
            received = b"".join(r.iter_raw())
            request_id = r.headers["x-tokentill-request-id"]
    assert received.startswith(b"".join(events))
    _billed(url, cid, request_id, MESSAGES_CHARGE)


def test_an_anthropic_stream_whose_message_delta_adds_cache_writes_is_charged_them(live, upstream):
    """message_start splits its cache writes by TTL (`cache_creation`); message_delta's usage
    (anthropic's MessageDeltaUsage) has the cumulative `cache_creation_input_tokens` and no split.
    Where the call wrote more after message_start (a server tool's sampling, say: 50 then 80), the
    merged usage said 80 writes split 50 + 0: unreadable, so the settle fell back to the prompt's
    count and the metered output (12 tokens in, " one two" 2 out): $0.00116 for its usage's $0.0179.
    The added writes are taken at the TTL the call cached for (5 minutes here, the `cache_control`
    it sent): 1,500 in at $10/M, 100 read at $1/M, 80 written at $12.50/M, 40 out at
    $20/M, $0.001 a call: (15,000 + 100 + 1,000 + 800) / 10^6 + 0.001 = $0.0179."""
    url, _ = live
    cid, key = customer(live)
    start_usage = {"input_tokens": 900, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 50,
                   "cache_creation": {"ephemeral_5m_input_tokens": 50, "ephemeral_1h_input_tokens": 0},
                   "output_tokens": 1}
    events = [
        b"event: message_start\n" + sse({"type": "message_start", "message": {
            "id": "msg_edge", "type": "message", "role": "assistant", "model": "m", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage}}),
        b"event: content_block_start\n" + sse({"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}),
        b"event: content_block_delta\n" + sse({"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": " one two"}}),
        b"event: content_block_stop\n" + sse({"type": "content_block_stop", "index": 0}),
        b"event: message_delta\n" + sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                         "usage": {"input_tokens": 1500, "cache_read_input_tokens": 100,
                                                   "cache_creation_input_tokens": 80, "output_tokens": 40}}),
        b"event: message_stop\n" + sse({"type": "message_stop"})]

    client = anthropic.Anthropic(base_url=f"{url}/anthropic", api_key=key, max_retries=0)
    cached = [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]
    with client.messages.with_streaming_response.create(
            model=model(upstream, streamed(events)), max_tokens=100, stream=True, messages=cached) as response:
        texts = [e.delta.text for e in response.parse() if e.type == "content_block_delta"]
        request_id = response.headers["x-tokentill-request-id"]
    assert texts == [" one two"]
    cost = (1500 * IN + 100 * CACHED + 80 * WRITE + 40 * OUT) / M + CALL
    assert cost == Decimal("0.0179")
    _billed(url, cid, request_id, cost)


MESSAGE_START = b"event: message_start\n" + sse({"type": "message_start", "message": {
    "id": "msg_edge", "type": "message", "role": "assistant", "content": [],
    "usage": {"input_tokens": 900, "cache_read_input_tokens": 100, "output_tokens": 1}}})
OVERLOADED = b"event: error\n" + sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


@pytest.mark.parametrize("failure", ["error_event", "dropped"])
def test_an_anthropic_stream_that_fails_before_any_token_is_released(live, upstream, failure):
    """message_start reports the input usage at once; an upstream that then fails (an error event,
    or the connection lost) before any output token generated nothing: released, as a chat stream
    failing before its first token is."""
    url, _ = live
    cid, key = customer(live)

    async def failing(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        await body(send, MESSAGE_START + b"event: ping\n" + sse({"type": "ping"}))
        if failure == "dropped":
            raise ConnectionAbortedError("the upstream drops the stream")
        await body(send, OVERLOADED, more=False)

    with httpx.Client(base_url=url, headers={"x-api-key": key}, timeout=30) as http:
        with http.stream("POST", "/anthropic/v1/messages", json={
                "model": model(upstream, failing), "max_tokens": 100, "messages": HI, "stream": True}) as r:
            received = b"".join(r.iter_raw())
            request_id = r.headers["x-tokentill-request-id"]
    assert received.startswith(MESSAGE_START) and b"event: error" in received
    assert charged(url, request_id) == 0
    assert wallet(url, cid) == (Decimal("10"), 0)


def test_a_streamed_call_answered_with_a_whole_json_answer_is_charged_its_usage(live, upstream):
    """An upstream may answer `stream: true` with a whole answer (JSON, not events): it is relayed
    as it came, and charged the usage it carries, not released for want of events."""
    url, _ = live
    cid, key = customer(live)

    async def whole(send: Any, receive: Any) -> None:
        await start(send, b"application/json", len(WHOLE))
        await body(send, WHOLE, more=False)

    status, received, request_id = stream_call(url, key, {"model": model(upstream, whole), "messages": HI})
    assert status == 200 and received.startswith(WHOLE.decode())
    _billed(url, cid, request_id, CHAT_CHARGE)


@pytest.mark.parametrize("stream", [False, True])
def test_a_background_response_is_refused_before_any_hold_or_upstream_call(live, upstream, stream):
    """A background response is generated upstream after the call returns (queued, its usage
    null), and on after a caller who streams it leaves: the gateway could charge its prompt at
    most, so it is refused, in OpenAI's shape, before anything is held or sent."""
    url, _ = live
    cid, key = customer(live)

    async def queued(send: Any, receive: Any) -> None:
        data = msgspec.json.encode({"id": "resp_bg", "object": "response", "status": "queued", "output": [],
                                    "usage": None})
        await start(send, b"application/json", len(data))
        await body(send, data, more=False)

    name = model(upstream, queued)
    raw = httpx.post(f"{url}/openai/v1/responses", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                     json={"model": name, "input": "hi", "background": True, "store": True, "stream": stream})
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "validation_error"
    assert "background" in raw.json()["error"]["message"]
    assert all(call["model"] != name for call in upstream.fake.calls)
    assert wallet(url, cid) == (Decimal("10"), 0)


@pytest.mark.parametrize(("api", "field", "value"), [("chat", "stream", "true"), ("chat", "stream", 1),
                                                    ("responses", "background", "true"),
                                                    ("messages", "stream", "yes")])
def test_a_stream_or_background_flag_that_is_not_a_json_boolean_is_refused_before_any_hold(
        live, upstream, api, field, value):
    """The gateway streams and meters a call whose `stream` is true, and refuses one whose
    `background` is; an upstream that reads "true" or 1 as true (lax validation) streamed a call
    the gateway read as whole, and the events, not JSON, were released (was: charged 0), or ran
    a background response charged its prompt at most. Refused, 400, before any hold."""
    url, _ = live
    cid, key = customer(live)

    async def streams(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        await body(send, content(" one") + usage_chunk(40) + b"data: [DONE]\n\n", more=False)

    name = model(upstream, streams)
    args: dict[str, Any] = {"model": name, "extra_body": {field: value}}
    if api == "messages":
        client: Any = anthropic.Anthropic(base_url=f"{url}/anthropic", api_key=key, max_retries=0)
        with pytest.raises(anthropic.BadRequestError) as raised:
            client.messages.with_raw_response.create(max_tokens=100, messages=HI, **args)
        error = raised.value.body["error"]
    else:
        client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.BadRequestError) as raised:
            if api == "chat":
                client.chat.completions.with_raw_response.create(messages=HI, **args)
            else:
                client.responses.with_raw_response.create(input="hi", **args)
        error = raised.value.body
    assert error["code"] == "validation_error" and field in error["message"], error
    assert all(call["model"] != name for call in upstream.fake.calls)
    assert wallet(url, cid) == (Decimal("10"), 0)


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\n".encode() + sse({"type": name, **data})


_COMPLETED = {"id": "resp_edge", "object": "response", "created_at": 1764680000, "model": "m", "status": "completed",
              "output": [{"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                          "content": [{"type": "output_text", "text": " one two", "annotations": []}]}],
              "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
              "usage": {"input_tokens": 800, "input_tokens_details": {"cached_tokens": 100}, "output_tokens": 56,
                        "output_tokens_details": {"reasoning_tokens": 16}, "total_tokens": 856}}
WHOLE_STREAMS = {
    "chat": ("/openai/v1/chat/completions", {"messages": HI, "stream_options": {"include_usage": True}}, CHAT_CHARGE,
             [content(" one two three"), usage_chunk(40), b"data: [DONE]\n\n"]),
    "responses": ("/openai/v1/responses", {"input": "hi"}, RESPONSES_CHARGE, [
        event("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "content_index": 0,
                                             "delta": " one two", "sequence_number": 1}),
        event("response.completed", {"response": _COMPLETED, "sequence_number": 2})]),
    "messages": ("/anthropic/v1/messages", {"messages": HI, "max_tokens": 100}, MESSAGES_CHARGE, [
        event("message_start", {"message": {
            "id": "msg_edge", "type": "message", "role": "assistant", "model": "m", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {
                "input_tokens": 900, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 50,
                "output_tokens": 1}}}),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": " one two"}}),
        event("content_block_stop", {"index": 0}),
        event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": 40}}),
        event("message_stop", {})])}


@pytest.mark.parametrize("kind", list(WHOLE_STREAMS))
def test_a_stream_whose_connection_is_lost_after_its_own_end_ends_as_it_came(live, upstream, kind):
    """The stream's own last event came whole (chat's `data: [DONE]`, a response's
    response.completed, Anthropic's message_stop), then the connection was lost before HTTP's end
    of the body (its last chunk): the caller has the whole answer and is charged its usage, chat
    (800 input, 200 cached, 40 output) 0.0100, a response (700 input, 100 cached, 40 + 16 output)
    0.00922, a message (900 input, 100 cached, 50 written, 40 output) 0.011525. Was: an error
    event (`upstream_failed`) was sent after that end, on which the anthropic and openai packages
    raise for a message and a response the caller had all of and paid for (anthropic.APIStatusError,
    openai.APIError), and which a chat client reading past [DONE] met as a failure."""
    url, _ = live
    path, payload, cost, events = WHOLE_STREAMS[kind]

    async def lost(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        for part in events:
            await body(send, part)
        raise ConnectionAbortedError("the upstream's connection is lost after the stream's end")

    cid, key = customer(live)
    status, received, request_id = stream_call(url, key, {"model": model(upstream, lost), **payload},
                                                path)
    assert status == 200 and received.startswith(b"".join(events).decode()), received
    assert "error" not in received.removeprefix(b"".join(events).decode()), received
    _billed(url, cid, request_id, cost)
    if kind == "chat":
        return
    cid, key = customer(live)
    name = model(upstream, lost)
    if kind == "messages":
        sdk = anthropic.Anthropic(base_url=f"{url}/anthropic", api_key=key, max_retries=0)
        opened = sdk.messages.with_streaming_response.create(model=name, stream=True, **payload)
    else:
        sdk = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0)
        opened = sdk.responses.with_streaming_response.create(model=name, stream=True, **payload)
    with opened as response:
        request_id = response.headers["x-tokentill-request-id"]
        last = "message_stop" if kind == "messages" else "response.completed"
        assert [e.type for e in response.parse()][-1] == last
    _billed(url, cid, request_id, cost)


def test_an_anthropic_stream_the_caller_leaves_after_a_web_search_is_charged_its_results(live, upstream):
    """A web search's results are billed as input, which message_start does not count (its usage
    comes before them) and the final message_delta does. A caller who read the whole answer and
    left before that usage was charged message_start's input and the search fee alone (was: 900
    input tokens, the 5,000 of results given away). The gateway reads on to the usage
    (here it comes 0.5 s after the answer) and charges it."""
    url, _ = live
    cid, key = customer((url, tool_book(url, {"id": "search", "token_type": "web_search", "price": str(SEARCH)})))

    async def searched(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        for part in [MESSAGE_START,
                     event("content_block_start", {"index": 0, "content_block": {
                         "type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}}),
                     event("content_block_stop", {"index": 0}),
                     event("content_block_start", {"index": 1, "content_block": {
                         "type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}}),
                     event("content_block_stop", {"index": 1}),
                     event("content_block_start", {"index": 2, "content_block": {"type": "text", "text": ""}}),
                     event("content_block_delta", {"index": 2, "delta": {"type": "text_delta", "text": " one two"}}),
                     event("content_block_stop", {"index": 2})]:
            await body(send, part)
        await asyncio.sleep(0.5)
        await body(send, event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {
            "input_tokens": 5900, "cache_read_input_tokens": 100, "output_tokens": 40,
            "server_tool_use": {"web_search_requests": 1}}}))
        await body(send, event("message_stop", {}), more=False)

    client = anthropic.Anthropic(base_url=f"{url}/anthropic", api_key=key, max_retries=0)
    with client.messages.with_streaming_response.create(model=model(upstream, searched), max_tokens=1000,
                                                        messages=HI, tools=[WEB_SEARCH], stream=True) as response:
        request_id = response.headers["x-tokentill-request-id"]
        for received in response.parse():
            if received.type == "content_block_stop" and received.index == 2:
                break
    expected = (5900 * IN + 100 * Decimal(1) + 40 * OUT) / M + CALL + SEARCH
    _billed(url, cid, request_id, expected)


TEMPLATE_TOOLS = ({"id": "search", "token_type": "web_search", "price": "0.01"},
                  {"id": "files", "token_type": "file_search", "price": "0.0025"},
                  {"id": "exec", "token_type": "code_execution", "price": "0.03"})


@pytest.mark.parametrize(("item", "fee"), [
    ({"id": "ws_1", "type": "web_search_call", "status": "completed"}, Decimal("0.01")),
    ({"id": "ci_1", "type": "code_interpreter_call", "status": "completed", "code": "", "container_id": "cntr_1"},
     Decimal("0.03"))])
def test_a_stored_prompt_is_held_and_charged_for_the_tools_it_may_bring(live, upstream, item, fee):
    """A stored prompt (`prompt: {id}`) may bring tools the body does not show, a web or file
    search, a code interpreter, billed per call. A search it ran was settled against a book that
    prices none, which refused the whole settle: the call charged nothing; a container it ran was
    charged nothing. Such a call is held as a call with those tools (for max_tool_calls, sent with
    the gateway's), refused by a book that cannot price them, and charged the ones its answer shows
    (a container at one unit, a 1 GB one)."""
    url, _ = live
    cid, key = customer((url, tool_book(url)))

    async def answered(send: Any, receive: Any) -> None:
        data = msgspec.json.encode({"id": "resp_p", "object": "response", "status": "completed", "output": [
            item, {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": " one", "annotations": []}]}],
            "usage": RESPONSE_USAGE})
        await start(send, b"application/json", len(data))
        await body(send, data, more=False)

    name = model(upstream, answered)
    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:  # the caller allows built-in tools its book cannot price
        client.responses.create(model=name, max_output_tokens=100, prompt={"id": "pmpt_1"}, max_tool_calls=2)
    assert raised.value.status_code == 422 and raised.value.body["code"] == "unpriced_model"
    assert any(unit in raised.value.body["message"] for unit in ("web_search", "file_search", "code_execution"))
    assert all(call["model"] != name for call in upstream.fake.calls)
    assert wallet(url, cid) == (Decimal("10"), 0)
    cid, key = customer((url, tool_book(url, *TEMPLATE_TOOLS)))
    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0)
    raw = client.responses.with_raw_response.create(model=name, max_output_tokens=100, prompt={"id": "pmpt_1"})
    assert upstream.fake.calls[-1]["max_tool_calls"] == 5  # the gateway's: the searches are bounded
    assert charged(url, raw.headers["x-tokentill-request-id"]) == RESPONSES_CHARGE + fee
    assert wallet(url, cid) == (Decimal("10") - RESPONSES_CHARGE - fee, 0)


def test_a_stored_prompt_runs_without_built_in_tools_when_its_book_prices_none(live, upstream):
    """A book that prices only tokens refused every stored-prompt call (422 unpriced_model), even a
    plain-text template's, since the call was held as one with searches and a container (93f2351).
    Such a call is now sent with `max_tool_calls: 0` (OpenAI runs no built-in tool: no search, no
    container) and held and charged for its tokens alone; one whose body shows a built-in tool is
    still refused, as is one that itself allows tool calls (the test above)."""
    url, _ = live
    cid, key = customer((url, tool_book(url)))

    async def answered(send: Any, receive: Any) -> None:  # a template with a search, as OpenAI runs it
        searched = upstream.fake.calls[-1].get("max_tool_calls") != 0
        output = [{"id": "ws_1", "type": "web_search_call", "status": "completed"}] if searched else []
        data = msgspec.json.encode({"id": "resp_t", "object": "response", "status": "completed", "output": [
            *output, {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                      "content": [{"type": "output_text", "text": " one", "annotations": []}]}],
            "usage": RESPONSE_USAGE})
        await start(send, b"application/json", len(data))
        await body(send, data, more=False)

    name = model(upstream, answered)
    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0)
    raw = client.responses.with_raw_response.create(model=name, max_output_tokens=100, prompt={"id": "pmpt_1"})
    assert raw.http_response.status_code == 200 and upstream.fake.calls[-1]["max_tool_calls"] == 0
    _billed(url, cid, raw.headers["x-tokentill-request-id"], RESPONSES_CHARGE)
    sent = len(upstream.fake.calls)
    with pytest.raises(openai.APIStatusError) as raised:  # the body's own search: refused as any call's
        client.responses.create(model=name, max_output_tokens=100, prompt={"id": "pmpt_1"},
                                tools=[{"type": "web_search"}])
    assert raised.value.status_code == 422 and raised.value.body["code"] == "unpriced_model"
    assert len(upstream.fake.calls) == sent and wallet(url, cid) == (Decimal("10") - RESPONSES_CHARGE, 0)


def test_a_big_call_is_read_off_the_event_loop_while_small_calls_go_on(live, upstream, monkeypatch):
    """Reading a big body (a long prompt counted, a PDF's pages) must not hold the process's other
    calls: the big call's reading is held here until a small call sent after it has been answered.
    Read on the event loop, the small call could not be answered meanwhile (only after it)."""
    import api.gateway.proxy as proxy

    url, _ = live
    cid, key = customer(live)
    small_answered, big_reading = threading.Event(), threading.Event()
    parse_call, held = proxy.parse_call, []

    def held_when_big(kind: str, raw: bytes, **kwargs: Any) -> Any:
        if len(raw) > proxy.PARSE_ON_LOOP_MAX:
            big_reading.set()
            held.append(small_answered.wait(10))  # False: the small call waited for this one
        return parse_call(kind, raw, **kwargs)

    monkeypatch.setattr(proxy, "parse_call", held_when_big)

    async def whole(send: Any, receive: Any) -> None:
        await start(send, b"application/json", len(WHOLE))
        await body(send, WHOLE, more=False)

    name, answers = model(upstream, whole), {}

    def call(which: str, text: str) -> None:
        answers[which] = httpx.post(f"{url}/openai/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                    json={"model": name, "messages": [{"role": "user", "content": text}]},
                                    timeout=60)
        if which == "small":
            small_answered.set()

    big = threading.Thread(target=call, args=("big", "word " * 40_000))
    big.start()
    assert big_reading.wait(20)
    call("small", "hi")
    big.join(60)
    assert held == [True] and not big.is_alive()
    assert answers["small"].status_code == 200 and answers["big"].status_code == 200
    assert answers["big"].headers["x-tokentill-charged"] == answers["small"].headers["x-tokentill-charged"]
    assert wallet(url, cid) == (Decimal("10") - 2 * CHAT_CHARGE, 0)  # each charged its usage, nothing held


@pytest.mark.parametrize("provider, path", [("openai", "/openai/v1/chat/completions"),
                                            ("anthropic", "/anthropic/v1/messages")])
def test_a_body_that_gives_a_key_twice_is_refused_in_the_providers_shape_before_any_hold(
        live, upstream, provider, path):
    """Two `max_tokens`: tokentill's decoder reads the last (10), an upstream may read the first
    (100,000) and generate past the hold. Refused, 400 in the provider's shape, before anything
    is held or sent (was: held for 10 output tokens and forwarded byte for byte)."""
    url, _ = live
    cid, key = customer(live)

    async def never(send: Any, receive: Any) -> None:
        raise AssertionError("sent upstream")

    name = model(upstream, never)
    raw = (f'{{"model": "{name}", "max_tokens": 100000, "max_tokens": 10, '
           '"messages": [{"role": "user", "content": "hi"}]}').encode()
    answer = httpx.post(f"{url}{path}", content=raw, timeout=30, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.headers["x-tokentill-charged"] == "0"
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "validation_error"
    assert "max_tokens" in error["message"] and "more than once" in error["message"]
    if provider == "anthropic":
        assert answer.json()["type"] == "error"
    assert all(call["model"] != name for call in upstream.fake.calls)
    assert wallet(url, cid) == (Decimal("10"), 0)


def test_a_call_whose_hold_passes_the_customers_maximum_charge_is_refused_before_the_upstream(live, upstream):
    """A call that may cost more than the customer's `max_charge_per_request` is refused before it
    goes upstream (422 implausible_usage, in the provider's shape, nothing held). It used to be held
    and forwarded: the answer's usage then passed the maximum, its settle was refused as implausible
    and set aside, and the hold was released at its expiry: the answer was never charged."""
    url, book = live
    cid = f"gw-max-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as http:
        assert http.post("/v1/customers", json={"id": cid, "currency": "USD", "price_book": book,
                                                "max_charge_per_request": "0.01"}).status_code == 201
        assert http.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"}).status_code == 201
        key = http.post("/v1/api-keys", json={"scope": "inference", "customers": [cid]}).json()["key"]

    async def whole(send: Any, receive: Any) -> None:  # 1,000 prompt and 40 output tokens: CHAT_CHARGE, 0.0100
        await start(send, b"application/json", len(WHOLE))
        await body(send, WHOLE, more=False)

    name = model(upstream, whole)
    # "hi" is 8 tokens, 9 with the 10 % margin of a model without its own encoding, held at the
    # cache write price (12.50/M: OpenAI may write the prompt to its cache), plus the output cap at
    # 20.00/M and the 0.001 call fee
    refused = httpx.post(f"{url}/openai/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                         json={"model": name, "messages": HI, "max_tokens": 1000}, timeout=30)
    assert refused.status_code == 422, refused.text
    assert refused.headers["x-tokentill-charged"] == "0"
    error = refused.json()["error"]
    assert error["code"] == "implausible_usage"
    hold = (9 * Decimal("12.5") + 1000 * OUT) / M + CALL  # 0.0211125
    assert (error["tokentill"]["limit"], error["tokentill"]["maximum"], Decimal(error["tokentill"]["value"])) == (
        "max_charge_per_request", "0.01", hold)
    assert all(call["model"] != name for call in upstream.fake.calls)
    assert wallet(url, cid) == (Decimal("10"), 0)

    # a cap whose hold fits (0.0021125) goes through, and its answer is charged
    fits = httpx.post(f"{url}/openai/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": name, "messages": HI, "max_tokens": 50}, timeout=30)
    assert fits.status_code == 200, fits.text
    assert Decimal(fits.headers["x-tokentill-charged"]) == CHAT_CHARGE
    _billed(url, cid, fits.headers["x-tokentill-request-id"], CHAT_CHARGE)


def test_a_call_whose_hold_no_journal_entry_can_carry_is_refused_naming_the_calls_own_fields(live, upstream):
    """1,000 choices of max_tokens 10**12: 10**15 output tokens, all a hold counts, at 20.00/M
    is 20,000,000,000 USD, past the 9,223,372,036.854775807 USD (2**63 - 1 nano-dollars) one
    journal entry carries. Was: 422 naming `estimate`, a field of the reserve API the caller never
    sent ("estimate: a hold of ... USD is more than ..."), param null. Now 400 naming the call's
    cap, its n and what the hold passed, nothing held or sent."""
    url, _ = live
    cid, key = customer(live)

    async def never(send: Any, receive: Any) -> None:
        raise AssertionError("sent upstream")

    name = model(upstream, never)
    refused = httpx.post(f"{url}/openai/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                         json={"model": name, "messages": HI, "max_tokens": 10**12, "n": 1000}, timeout=30)
    assert refused.status_code == 400, refused.text
    assert refused.headers["x-tokentill-charged"] == "0"
    error = refused.json()["error"]
    assert (error["code"], error["type"], error["param"]) == ("validation_error", "invalid_request_error", "max_tokens")
    assert "estimate" not in refused.text
    assert "1000 choices of max_tokens 1000000000000" in error["message"]
    assert "more than one journal entry can carry (9223372036.854775807 USD)" in error["message"]
    assert all(call["model"] != name for call in upstream.fake.calls)
    assert wallet(url, cid) == (Decimal("10"), 0)


def _searching(live: tuple[str, str], upstream: Upstream) -> tuple[str, str, str, str]:
    """(url, customer, key, model) of a customer funded 10.00 whose book prices a web search at
    10.00 USD, and a model the upstream must never be sent."""
    url, _ = live
    cid, key = customer((url, tool_book(url, {"id": "search", "token_type": "web_search", "price": "10.00"})))

    async def never(send: Any, receive: Any) -> None:
        raise AssertionError("sent upstream")

    return url, cid, key, model(upstream, never)


@pytest.mark.parametrize(("path", "call", "field", "held"), [
    ("/anthropic/v1/messages", {"max_tokens": 10, "messages": HI, "tools": [{**WEB_SEARCH, "max_uses": 10**9}]},
     "tools", "its server tools held for their max_uses"),
    ("/openai/v1/responses", {"max_output_tokens": 10, "input": "hi", "tools": [{"type": "web_search"}],
                              "max_tool_calls": 10**9},
     "max_tool_calls", "its tools held for max_tool_calls 1000000000")])
def test_a_call_whose_tool_fees_alone_no_journal_entry_can_carry_is_refused_naming_its_tools(
        live, upstream, path, call, field, held):
    """10**9 web searches at 10.00 USD each (the book's per-call price) are 10,000,000,000 USD of
    fees, past the 9,223,372,036.854775807 USD one journal entry carries, whatever the cap: 10
    output tokens at 20.00/M are 0.0002 USD; the searches' results, 10**9 x 10,000 = 10**13 input
    tokens, 100,000,000 USD at 10.00/M. Was: 400 naming the call's cap ("max_tokens: max_tokens 10
    and ... prompt tokens: a hold of ... is more than one journal entry can carry"), a field that
    does not make the hold too big. Now 400 naming the tools' field, the uses, the fee per use and
    the fees' total; nothing held or sent."""
    url, cid, key, name = _searching(live, upstream)
    refused = httpx.post(f"{url}{path}", headers={"Authorization": f"Bearer {key}"},
                         json={"model": name, **call}, timeout=30)
    assert refused.status_code == 400, refused.text
    assert refused.headers["x-tokentill-charged"] == "0"
    error = refused.json()["error"]
    assert (error["code"], error.get("param", field)) == ("validation_error", field), error  # Anthropic's: no param
    assert error["message"].startswith(f"{field}: {held}: 1000000000 web_search at 10.00 USD each: "), error
    assert "estimate" not in error["message"] and "max_tokens" not in error["message"]
    assert "max_output_tokens" not in error["message"]
    assert "tool fees of 10000000000.00 USD" in error["message"]
    assert "more than one journal entry can carry (9223372036.854775807 USD)" in error["message"]
    assert all(sent["model"] != name for sent in upstream.fake.calls)
    assert wallet(url, cid) == (Decimal("10"), 0)


@pytest.mark.parametrize(("path", "call", "field", "fits", "told"), [
    ("/anthropic/v1/messages", lambda uses: {"max_tokens": 10, "messages": HI,
                                             "tools": [{**WEB_SEARCH, "max_uses": uses}]},
     "tools", 913_205_152, "tools: its server tools held for their max_uses: 913205153 web_search at 10.00 USD "
     "each: tool fees of 9132051530.00 USD and 9132051530000 input tokens of their results (91320515.30 USD), "
     "more than one journal entry can carry (9223372036.854775807 USD), whatever the prompt and output"),
    ("/openai/v1/responses", lambda uses: {"max_output_tokens": 10, "input": "hi", "tools": [{"type": "web_search"}],
                                           "max_tool_calls": uses},
     "max_tool_calls", 910_950_324, "max_tool_calls: its tools held for max_tool_calls 910950325: 910950325 "
     "web_search at 10.00 USD each: tool fees of 9109503250.00 USD and 9109503250000 input tokens of their "
     "results (113868790.625 USD), more than one journal entry can carry (9223372036.854775807 USD), whatever "
     "the prompt and output")])
def test_a_call_whose_tools_fees_fit_but_not_with_their_results_is_refused_naming_both_not_its_cap(
        live, upstream, path, call, field, fits, told):
    """A web search at 10.00 USD holds 10,000 input tokens of results besides its fee: at 10.00/M
    (Anthropic's prompt, no cache_control) 0.10 USD, 10.10 a use; at 12.50/M (OpenAI's prompt may be
    written to its cache) 0.125, 10.125 a use. The rest is under 2 USD (10 output tokens at 20.00/M,
    0.0002; the 0.001 call fee; the prompt's few hundred tokens). One posting carries
    9,223,372,036.854775807 USD: 913,205,152 x 10.10 = 9,223,372,035.20 fits (1.65 left for the rest),
    913,205,153 x 10.10 = 9,223,372,045.30 does not, though its fees alone, 9,132,051,530.00, fit;
    910,950,324 x 10.125 = 9,223,372,030.50 fits (6.35 left), 910,950,325 x 10.125 = 9,223,372,040.625
    does not (fees 9,109,503,250.00, results 9,109,503,250,000 tokens, 113,868,790.625 USD). Was:
    400 naming the cap ("max_tokens: max_tokens 10 and ... prompt tokens: a hold of ..."), which adds
    0.0002 USD. Now the largest that fits is refused only for funds (402 insufficient_funds: the
    customer has 10.00) and one use more 400 naming the tools' field, their fees and their results;
    nothing held or sent."""
    url, cid, key, name = _searching(live, upstream)
    held = httpx.post(f"{url}{path}", headers={"Authorization": f"Bearer {key}"},
                      json={"model": name, **call(fits)}, timeout=30)
    assert held.status_code == 402 and held.json()["error"]["code"] == "insufficient_funds", held.text
    refused = httpx.post(f"{url}{path}", headers={"Authorization": f"Bearer {key}"},
                         json={"model": name, **call(fits + 1)}, timeout=30)
    assert refused.status_code == 400, refused.text
    assert refused.headers["x-tokentill-charged"] == "0"
    error = refused.json()["error"]
    assert (error["code"], error.get("param", field)) == ("validation_error", field), error  # Anthropic's: no param
    assert error["message"].startswith(told), error["message"]
    assert "max_tokens" not in error["message"] and "max_output_tokens" not in error["message"]
    assert all(sent["model"] != name for sent in upstream.fake.calls)
    assert wallet(url, cid) == (Decimal("10"), 0)


@pytest.mark.parametrize(("window", "cap", "told"), [
    (10_000_000, 10, "input: its prompt, 8 tokens counted and its earlier turns held at the model's context "
     "window: a prompt held at 10000000 tokens, 10000000000.00 USD, more than one journal entry can carry "
     "(9223372036.854775807 USD), whatever the output cap (a hold of 10000000000.0012 USD)"),
    (9_210_000, 10**12, "max_output_tokens: max_output_tokens 1000000000000 and 8 prompt tokens: a hold of "
     "9230000000.001 USD, its prompt held at 9210000 tokens (its earlier turns at the model's context window) "
     "is more than one journal entry can carry (9223372036.854775807 USD)")])
def test_a_call_whose_prompt_alone_no_journal_entry_can_carry_is_refused_naming_its_prompt_not_its_cap(
        live, upstream, window, cap, told):
    """A responses call continuing a conversation (previous_response_id) holds its prompt at the
    model's context window, here its book rule's: input at 1,000,000,000 USD per 1M tokens (1,000 USD
    a token) with a window of 10,000,000 tokens is 10,000,000,000.00 USD of prompt, past the
    9,223,372,036.854775807 USD one journal entry carries, whatever the cap; the cap's 10 output
    tokens at 20.00/M add 0.0002 and the call 0.001: a hold of 10,000,000,000.0012. Was: 400
    naming the cap ("max_output_tokens: max_output_tokens 10 and 8 prompt tokens: a hold of
    10000000000.0012 USD ..."), param max_output_tokens, which adds 0.0002 USD. Now 400 naming the
    prompt's field (input), its held tokens and their price. A window of 9,210,000 is a prompt of
    9,210,000,000.00 USD, which fits; the largest cap, 10**12 output tokens at 20.00/M, adds
    20,000,000.00 (and the call 0.001): 9,230,000,000.001, and the cap makes it too big, and is
    named as before, with the 9,210,000 tokens its prompt was held at beside the 8 it counted (was:
    the 8 alone, review of 24c13fb0). Nothing held or sent either way."""
    url, _ = live
    name = f"gpt-edge-{uuid.uuid4().hex[:8]}"
    cid, key = customer((url, tool_book(url, {"id": "dear-in", "token_type": "input", "price": "1000000000",
                                              "model": name, "context_window": window})))
    refused = httpx.post(f"{url}/openai/v1/responses", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                         json={"model": name, "input": "hi", "max_output_tokens": cap, "previous_response_id": "r"})
    assert refused.status_code == 400, refused.text
    assert refused.headers["x-tokentill-charged"] == "0"
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("validation_error", told.split(":")[0]), error
    assert error["message"].startswith(told), error["message"]
    assert all(sent["model"] != name for sent in upstream.fake.calls)
    assert wallet(url, cid) == (Decimal("10"), 0)


CONFLICTED = {"prompt_tokens": 1000, "completion_tokens": 40, "total_tokens": 1040,
              "prompt_tokens_details": {"cached_tokens": 200}, "input_tokens_details": {"cached_tokens": 100}}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_usage_that_gives_one_detail_under_both_names_with_two_counts_is_charged_the_metered_output_on_record(
        live, upstream, stream):
    """OpenAI's usage names its prompt details `prompt_tokens_details` (chat) or
    `input_tokens_details` (responses); one giving both with two cached counts (200, 100) is
    refused as the ledger refuses it on POST /v1/usage: no count can be chosen. The call is then
    charged what the gateway metered, as one without usage: "hi" (8 tokens, the count without
    the hold's margin) at 10.00/M and " one two three" (3 tokens) at 20.00/M, plus 0.001: 0.00114.
    Was: charged so with a usage record of those counts alone (source "usage"), nothing telling
    the provider's reading or why it was set aside. Now the record keeps it: `refused_usage`,
    its form, the usage as the provider reported it, and the reason."""
    url, _ = live
    cid, key = customer(live)
    whole = msgspec.json.encode({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": " one two three"}, "finish_reason": "stop"}],
        "usage": CONFLICTED})

    async def answer(send: Any, receive: Any) -> None:
        if not stream:
            await start(send, b"application/json", len(whole))
            await body(send, whole, more=False)
            return
        await start(send, b"text/event-stream")
        await body(send, content(" one two three"))
        await body(send, b"data: " + msgspec.json.encode({"id": "c", "object": "chat.completion.chunk", "created": 1,
                                                          "model": "m", "choices": [], "usage": CONFLICTED}) + b"\n\n")
        await body(send, b"data: [DONE]\n\n", more=False)

    name = model(upstream, answer)
    asked = {"model": name, "messages": HI, "max_tokens": 50, **({"stream": True} if stream else {})}
    answered = httpx.post(f"{url}/openai/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                          json=asked)
    assert answered.status_code == 200, answered.text
    rid = answered.headers["x-tokentill-request-id"]
    cost = (8 * IN + 3 * OUT) / M + CALL
    assert cost == Decimal("0.00114")
    _billed(url, cid, rid, cost)
    record = charge_usage(url, rid)
    assert record["canonical"]["input_tokens"] == 8 and record["canonical"]["output_tokens"] == 3
    refused = record["refused_usage"]
    assert refused["form"] == "openai_usage" and refused["reported"] == CONFLICTED
    assert "prompt_tokens_details: differs from input_tokens_details" in refused["reason"]


def test_a_whole_call_answered_with_an_event_stream_is_relayed_and_charged_its_usage(live, upstream):
    """A call that did not ask to stream, answered 200 text/event-stream (an OpenAI-compatible
    upstream that streams whatever the call says): its events carry the answer and the provider's
    usage (1,000 prompt tokens of which 200 cached, 40 out: CHAT_CHARGE, $0.0100). Was: read as a
    whole JSON answer, which it is not, so released and passed through, x-tokentill-charged 0:
    the answer given for nothing. Now it is relayed and metered as a stream is, its charge in the
    closing comment."""
    url, _ = live
    cid, key = customer(live)
    events = [content(" one two three"), usage_chunk(40), b"data: [DONE]\n\n"]

    async def streams(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        for event in events:
            await body(send, event)
        await body(send, b"", more=False)

    answered = httpx.post(f"{url}/openai/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json={"model": model(upstream, streams), "messages": HI, "max_tokens": 50}, timeout=30)
    assert answered.status_code == 200, answered.text
    rid = answered.headers["x-tokentill-request-id"]
    assert answered.text.startswith(b"".join(events).decode())
    assert answered.text.endswith(f": tokentill charged=0.01 currency=USD request_id={rid}\n\n")
    _billed(url, cid, rid, CHAT_CHARGE)


def test_a_gateway_calls_hold_is_not_its_callers_to_settle_or_release(live, upstream):
    """The caller's inference key may settle and release its customer's reservations over HTTP,
    and a gateway call's reservation is one (its id is in the customer's journal). Settled with
    no usage while the answer was still coming, it charged the 0.001 call fee; the gateway's own
    settle was then refused as closed and set aside, and the whole answer went uncharged. Now
    only the gateway (or an admin key) closes it: 403 forbidden, singly and in bulk, and the
    answer is charged its usage."""
    url, _ = live
    cid, key = customer(live)
    go = threading.Event()

    async def waits(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        await body(send, content(" one"))
        await asyncio.to_thread(go.wait, 30)
        await body(send, usage_chunk(40))
        await body(send, b"data: [DONE]\n\n", more=False)

    request_id = f"edge-{uuid.uuid4().hex[:12]}"
    answered: dict[str, Any] = {}

    def call() -> None:
        with httpx.stream("POST", f"{url}/openai/v1/chat/completions", json={
                "model": model(upstream, waits), "messages": HI, "stream": True},
                headers={"Authorization": f"Bearer {key}", "x-tokentill-request-id": request_id}, timeout=30) as r:
            answered["status"], answered["body"] = r.status_code, r.read().decode()

    caller = threading.Thread(target=call)
    caller.start()
    try:
        deadline, reservation = time.monotonic() + 20, None
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as http:
            while reservation is None and time.monotonic() < deadline:
                trace = http.get(f"/v1/audit/charges/{request_id}")
                reservation = trace.json()["reservation"]["id"] if trace.status_code == 200 else None
                time.sleep(0.05)
        assert reservation is not None, "the call was never held"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
            nothing = {"usage": {"input_tokens": 0, "output_tokens": 0}, "final": True}
            settled = http.post(f"/v1/reservations/{reservation}/settle", json=nothing)
            assert settled.status_code == 403 and settled.json()["code"] == "forbidden", settled.text
            bulk = http.post("/v1/settlements", json=[{"reservation_id": reservation, **nothing}])
            assert [r["status"] for r in bulk.json()["results"]] == [403], bulk.text
            released = http.post(f"/v1/reservations/{reservation}/release")
            assert released.status_code == 403 and released.json()["code"] == "forbidden", released.text
    finally:
        go.set()
        caller.join(30)
    assert answered["status"] == 200 and answered["body"].endswith(
        f": tokentill charged=0.01 currency=USD request_id={request_id}\n\n")
    _billed(url, cid, request_id, CHAT_CHARGE)


def test_a_chat_stream_of_audio_cut_before_its_usage_is_charged_the_audio_it_sent(live, upstream):
    """A chat call that answers in audio streams it as `delta.audio.data` (base64 pcm16, 24 kHz
    mono: 48,000 bytes a second), which the metering did not read: a caller who left once the
    audio was in, before the usage chunk, had nothing metered and its hold released, the audio
    free. Now the audio sent is charged as output audio, at OpenAI's 1 token per 50 ms of the
    assistant's audio, with the transcript as text (the book prices audio output, as the gateway
    requires of a call that asks for it: pricing.premium; at the output price here)."""
    url, _ = live
    cid, key = customer((url, tool_book(url, AUDIO_OUT)))
    second = base64.b64encode(bytes(48_000)).decode()
    sent, left = threading.Event(), threading.Event()

    def spoken(transcript: str) -> bytes:
        return sse({"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{
            "index": 0, "delta": {"audio": {"id": "audio_1", "data": second, "transcript": transcript}},
            "finish_reason": None}]})

    async def speaks(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        for transcript in (" one", " two", ""):
            await body(send, spoken(transcript))
        sent.set()
        await asyncio.to_thread(left.wait, 30)
        await body(send, usage_chunk(80) + b"data: [DONE]\n\n", more=False)

    name = model(upstream, speaks)
    request_id = post_and_leave(url, key, {
        "model": name, "messages": HI, "stream": True, "modalities": ["text", "audio"],
        "audio": {"voice": "alloy", "format": "pcm16"}}, lambda: sent.is_set() and not time.sleep(0.3))
    time.sleep(0.3)  # the gateway sees the caller gone before the usage comes
    left.set()
    # the prompt as counted (8), " one two" (2) and 3 s of audio (60 tokens), the book's output price for both
    cost = (8 * IN + (2 + 60) * OUT) / M + CALL
    _billed(url, cid, request_id, cost)


# audio output priced as the book's text output: a call that asks for audio needs a rule for it
AUDIO_OUT = {"id": "audio-out", "token_type": "output_audio", "price": "20.00"}


def _responses_event(kind: str, delta: str) -> bytes:
    return f"event: {kind}\n".encode() + sse({"type": kind, "item_id": "it_1", "output_index": 0,
                                               "sequence_number": 1, "delta": delta})


@pytest.mark.parametrize("path, event", [
    ("/openai/v1/chat/completions", sse({"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [
        {"index": 0, "delta": {"function_call": {"arguments": " one two"}}, "finish_reason": None}]})),
    *[("/openai/v1/responses", _responses_event(kind, " one two")) for kind in (
        "response.custom_tool_call_input.delta", "response.code_interpreter_call_code.delta",
        "response.mcp_call_arguments.delta", "response.shell_call_command.delta",
        "response.audio.transcript.delta")]])
def test_a_stream_cut_after_output_of_another_kind_is_charged_it(live, upstream, path, event):
    """What the model writes into a legacy function call (chat `functions`), a custom tool's
    input, code for the code interpreter, an MCP call's arguments, a shell command or an audio
    transcript (responses) is output it is billed for; the metering read none of them, so a caller
    who left once it was in, before the usage, had nothing metered and its hold released."""
    url, _ = live
    cid, key = customer(live)
    sent, left = threading.Event(), threading.Event()

    async def writes(send: Any, receive: Any) -> None:
        await start(send, b"text/event-stream")
        await body(send, event)
        sent.set()
        await asyncio.to_thread(left.wait, 30)
        await body(send, b"data: [DONE]\n\n", more=False)

    name = model(upstream, writes)
    chat = path.endswith("/chat/completions")
    payload = {"model": name, "stream": True, **({"messages": HI} if chat else {"input": "hi"})}
    request_id = post_and_leave(url, key, payload, lambda: sent.is_set() and not time.sleep(0.3), path)
    time.sleep(0.3)
    left.set()
    # the prompt as counted ("user" and "hi" with 3 a message and 3 for the reply: 8 in chat; the
    # responses input "hi" as a user message: 7) and " one two" metered (2)
    cost = ((8 if chat else 7) * IN + 2 * OUT) / M + CALL
    _billed(url, cid, request_id, cost)


def _wav(seconds: int) -> str:
    """A PCM WAV of `seconds` of silence at 24 kHz, 16 bits, mono, base64."""
    out = io.BytesIO()
    with wave.open(out, "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(24_000)
        clip.writeframes(bytes(48_000 * seconds))
    return base64.b64encode(out.getvalue()).decode()


def _whole(path: str, answer: dict[str, Any]) -> bytes:
    if path.endswith("/chat/completions"):
        return msgspec.json.encode({"id": "chatcmpl-bare", "object": "chat.completion", "model": "m", **answer})
    if path.endswith("/responses"):
        return msgspec.json.encode({"id": "resp_bare", "object": "response", "status": "completed", **answer})
    return msgspec.json.encode({"id": "msg_bare", "type": "message", "role": "assistant", **answer})


def _item(**item: Any) -> dict[str, Any]:
    return {"output": [{"id": "it_1", "status": "completed", **item}]}


CHAT_PATH, RESPONSES_PATH, MESSAGES_PATH = ("/openai/v1/chat/completions", "/openai/v1/responses",
                                            "/anthropic/v1/messages")


@pytest.mark.parametrize("path, audio_format, answer, output", [
    # 2 s of the assistant's audio at 1 token per 50 ms (40), in the format the call asked, and its transcript (2)
    (CHAT_PATH, "wav", {"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": None,
        "audio": {"id": "audio_1", "expires_at": 1, "data": _wav(2), "transcript": " one two"}}}]}, 42),
    (CHAT_PATH, "pcm16", {"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": None, "audio": {
            "id": "audio_1", "expires_at": 1, "data": base64.b64encode(bytes(96_000)).decode(),
            "transcript": " one two"}}}]}, 42),
    # what a responses stream sends as deltas, whole: reasoning summaries, refusals, a custom tool's
    # input, code for the code interpreter, a shell command (2 each)
    (RESPONSES_PATH, None, _item(type="reasoning", summary=[{"type": "summary_text", "text": " one two"}]), 2),
    (RESPONSES_PATH, None, _item(type="message", role="assistant",
                                 content=[{"type": "refusal", "refusal": " one two"}]), 2),
    (RESPONSES_PATH, None, _item(type="custom_tool_call", call_id="c1", name="f", input=" one two"), 2),
    (RESPONSES_PATH, None, _item(type="code_interpreter_call", code=" one two", container_id="cntr_1",
                                 outputs=None), 2),
    (RESPONSES_PATH, None, _item(type="shell_call", call_id="c1", action={"commands": [" one", " two"]}), 2),
    # Anthropic's server and MCP tool calls' input, as its stream's input_json_delta: {"query":"one two"} (6)
    (MESSAGES_PATH, None, {"content": [{"type": "mcp_tool_use", "id": "t1", "name": "q", "server_name": "s",
                                        "input": {"query": "one two"}}]}, 6),
])
def test_a_whole_answer_without_usage_is_charged_every_kind_of_output_it_carries(
        live, upstream, path, audio_format, answer, output):
    """A whole (non-streamed) answer without the provider's usage is metered as a stream would be;
    its metering read the text only, not the assistant's audio, nor the outputs of other kinds a
    stream cut before its usage is charged (reasoning summaries, refusals, custom tool input, code,
    shell commands, Anthropic's server and MCP tools' input): those went free."""
    url, _ = live
    cid, key = customer((url, tool_book(url, AUDIO_OUT)) if audio_format else live)
    data = _whole(path, answer)

    async def bare(send: Any, receive: Any) -> None:
        await start(send, b"application/json", len(data))
        await body(send, data, more=False)

    name = model(upstream, bare)
    if path == CHAT_PATH:
        payload: dict[str, Any] = {"model": name, "messages": HI}
        if audio_format:
            payload |= {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": audio_format}}
    elif path == RESPONSES_PATH:
        payload = {"model": name, "input": "hi"}
    else:
        payload = {"model": name, "max_tokens": 100, "messages": HI}
    raw = httpx.post(f"{url}{path}", headers={"Authorization": f"Bearer {key}", "x-api-key": key},
                     json=payload, timeout=30)
    assert raw.status_code == 200 and raw.content == data
    # the prompt as counted ("user" and "hi" with 3 a message and 3 for the reply: 8; the responses
    # input "hi" as a user message: 7), the output at the book's output price (audio at its audio rule's, the same)
    cost = ((7 if path == RESPONSES_PATH else 8) * IN + output * OUT) / M + CALL
    _billed(url, cid, raw.headers["x-tokentill-request-id"], cost)


def test_an_anthropic_whole_answer_without_usage_is_charged_its_web_searches(live, upstream):
    """Anthropic bills each web search its answer shows (a server_tool_use block), as a stream cut
    before its usage is charged them; a whole answer without usage had its searches free."""
    url, _ = live
    cid, key = customer((url, tool_book(url, {"id": "search", "token_type": "web_search", "price": str(SEARCH)})))
    data = _whole(MESSAGES_PATH, {"content": [
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "one two"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        {"type": "text", "text": " one two"}]})

    async def bare(send: Any, receive: Any) -> None:
        await start(send, b"application/json", len(data))
        await body(send, data, more=False)

    raw = httpx.post(f"{url}{MESSAGES_PATH}", headers={"x-api-key": key}, timeout=30,
                     json={"model": model(upstream, bare), "max_tokens": 100, "messages": HI})
    assert raw.status_code == 200
    # the prompt (8), the search's input {"query":"one two"} (6) and " one two" (2), one search
    cost = (8 * IN + 8 * OUT) / M + SEARCH + CALL
    _billed(url, cid, raw.headers["x-tokentill-request-id"], cost)


# what an upstream (or a proxy before it) may answer that is not the caller's to have: cookies set
# on the gateway's origin (the console's too: its session and CSRF cookies are set there), headers
# that pose as the gateway's own, the operator's upstream account, and its key echoed back
FOREIGN = [(b"set-cookie", b"tokentill_console=planted; Path=/console"), (b"set-cookie", b"__cf_bm=x; Path=/"),
           (b"x-tokentill-charged", b"0"), (b"x-tokentill-request-id", b"posed"),
           (b"openai-organization", b"org-operator"), (b"openai-project", b"proj_operator"),
           (b"anthropic-organization-id", b"operator-org"), (b"x-api-key", b"sk-upstream-echoed"),
           (b"authorization", b"Bearer sk-upstream-echoed"), (b"proxy-authenticate", b"Basic realm=upstream")]


@pytest.mark.parametrize("answer", ["whole", "stream", "error", "free"])
def test_an_upstreams_cookies_credentials_and_headers_posing_as_the_gateways_do_not_reach_the_caller(
        live, upstream, answer):
    url, _ = live
    _, key = customer(live)
    data = {"whole": WHOLE, "stream": content(" one") + usage_chunk(40) + b"data: [DONE]\n\n",
            "error": b'{"error": {"message": "overloaded", "type": "server_error"}}',
            "free": b'{"id": "gpt-free", "object": "model"}'}[answer]

    async def cookies(send: Any, receive: Any) -> None:
        kind = b"text/event-stream" if answer == "stream" else b"application/json"
        await send({"type": "http.response.start", "status": 503 if answer == "error" else 200,
                    "headers": [(b"content-type", kind), (b"x-request-id", b"req_upstream"), *FOREIGN]})
        await body(send, data, more=False)

    name = model(upstream, cookies)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        response = http.get(f"/openai/v1/models/{name}") if answer == "free" else http.post(
            "/openai/v1/chat/completions", json={"model": name, "messages": HI, "stream": answer == "stream"})
    names = [name.lower() for name, _ in response.headers.multi_items()]
    assert response.status_code == (503 if answer == "error" else 200)
    assert "set-cookie" not in names and not response.cookies
    assert names.count("x-tokentill-request-id") == (0 if answer == "free" else 1)  # a free call has none
    assert response.headers.get("x-tokentill-request-id") != "posed"
    assert names.count("x-tokentill-charged") == (0 if answer == "stream" else 1)
    if answer != "stream":  # a stream tells its charge at its end
        assert Decimal(response.headers["x-tokentill-charged"]) == (CHAT_CHARGE if answer == "whole" else 0)
    assert not {"openai-organization", "openai-project", "anthropic-organization-id"} & set(names)
    assert not {"x-api-key", "authorization", "proxy-authenticate"} & set(names)
    assert "sk-upstream" not in str(response.headers.raw)
    assert response.headers["x-request-id"] == "req_upstream"  # the upstream's own answer headers still come


REFUSED_KEY = (b'{"error": {"message": "Incorrect API key provided: sk-proj-****************Ab1C. You can find '
               b'your API key at https://platform.openai.com/account/api-keys.", "type": "invalid_request_error", '
               b'"param": null, "code": "invalid_api_key"}}')


@pytest.mark.parametrize("free", [False, True])
def test_an_upstream_that_refuses_the_operators_key_is_a_502_that_does_not_show_the_key(live, upstream, free):
    """The caller's key never goes upstream: an upstream's 401 refuses the operator's, and its
    answer names that key (OpenAI's tells its last characters). The caller gets 502
    upstream_unavailable, nothing charged; the upstream's words go to the gateway's log only."""
    url, _ = live
    cid, key = customer(live)

    async def refused(send: Any, receive: Any) -> None:
        await start(send, b"application/json", len(REFUSED_KEY), status=401)
        await body(send, REFUSED_KEY, more=False)

    name = model(upstream, refused)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        response = http.get(f"/openai/v1/models/{name}") if free else http.post(
            "/openai/v1/chat/completions", json={"model": name, "messages": HI})
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert "sk-proj" not in response.text and "Ab1C" not in response.text
    assert response.headers["x-tokentill-charged"] == "0"
    assert wallet(url, cid) == (Decimal("10"), 0)


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("sdk", ["openai", "anthropic", "openai free"])
def test_an_upstream_that_refuses_the_operators_key_is_called_once_and_told_not_to_retry(live, upstream, sdk, status):
    """An upstream's 401 (the operator's key is wrong) or 403 (it may not do this: Anthropic's
    permission_error, OpenAI's project without the model) refuses the gateway's own credentials,
    which the next try sends again: the same call meets it however long it waits (the README's
    rule for `x-should-retry: false`). Was: the 401 became a 502 without that header, which the
    official clients retry twice by default: the upstream saw 3 calls, where it should see 1; a
    403 was passed through with the upstream's words (which may name the operator's project).
    Now both are 502 upstream_unavailable with `x-should-retry: false`: each client (max_retries
    left at its default, 2) sends the call once and raises its 502; nothing charged, the wallet's
    $10.00 whole."""
    url, _ = live
    cid, key = customer(live)

    async def refused(send: Any, receive: Any) -> None:
        await start(send, b"application/json", len(REFUSED_KEY), status=status)
        await body(send, REFUSED_KEY, more=False)

    name = model(upstream, refused)
    before = len(upstream.fake.calls)
    if sdk == "anthropic":
        client: Any = anthropic.Anthropic(base_url=f"{url}/anthropic", api_key=key)
        call: Callable[[], Any] = lambda: client.messages.create(model=name, messages=HI, max_tokens=10)  # noqa: E731
        error: type[Exception] = anthropic.APIStatusError
    else:
        client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key)
        call = (lambda: client.models.retrieve(name)) if sdk == "openai free" else (
            lambda: client.chat.completions.create(model=name, messages=HI))
        error = openai.APIStatusError
    with pytest.raises(error) as raised:
        call()
    response = raised.value.response
    assert (response.status_code, response.headers.get("x-should-retry")) == (502, "false"), response.text
    assert "upstream_unavailable" in response.text and "sk-proj" not in response.text
    assert len(upstream.fake.calls) - before == 1
    assert wallet(url, cid) == (Decimal("10"), 0)

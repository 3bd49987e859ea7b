"""A local fake of the OpenAI and Anthropic APIs, for the gateway's tests and `tokentill bench
gateway`: a real HTTP server (uvicorn, on a thread) that answers the four endpoints with
realistic bodies and server-sent events, usage included, at zero latency, and the free ones the
gateway passes through (each provider's models list and model, Anthropic's count_tokens).

The model name picks the behaviour: `...-fail` answers 500 before any token; `...-pause` sends
PAUSE_AFTER tokens, then waits for the caller to leave (so "emitted before the cut" is exact);
`...-stall` sends PAUSE_AFTER tokens, is silent STALL_SECONDS, then sends the rest and its usage;
`...-hold` sends one token, then waits until `release()` is called; `...-drop` breaks the
connection after DROP_AFTER tokens (a whole chat or messages answer: after that many words of its text);
`...-overloaded` answers 503 (Anthropic: 529 overloaded_error; its 5xx and 529 say
`x-should-retry: true`, as Anthropic's do); `...-trickle` streams a token every TRICKLE_SECONDS; `...-slow` (a
whole chat answer) never answers, and waits for the caller to leave; `...-nousage` streams without
any usage; `...-lateusage` streams its answer, then waits LATE_USAGE_SECONDS before the event that
carries its usage (a chat's usage chunk, a response's completed event, a message's message_delta).
Anything else answers OUTPUT_TOKENS tokens. A model id ending `-missing` is the provider's 404, one
ending `-slow` never answers. Each output token is one word of `api.demo.STREAM_WORDS`, one
cl100k_base token each. Every call is logged in `calls`: the headers it came with, its body, the
HTTP version and peer it came over, the tokens emitted and whether the caller left. An OpenAI
answer tells the `service_tier` that served it, as OpenAI's do (a call that leaves it to the
provider: `auto_tier`, "default"; set it to None for an answer that does not say).
"""
from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
import uvicorn

from api.demo import STREAM_WORDS

OUTPUT_TOKENS = 40
PAUSE_AFTER = 200
STALL_SECONDS = 3.0  # past the 2 s the gateway once read on for a stream's usage after its caller left
LATE_USAGE_SECONDS = 0.5
LATE = object()  # in a stream's events: wait LATE_USAGE_SECONDS (`...-lateusage`), then go on
DROP_AFTER = 10
TRICKLE_SECONDS = 0.1
# What the fake reports as the prompt's usage, per API (a real provider counts it itself).
CHAT_USAGE = {"prompt_tokens": 1000, "cached_tokens": 200}
RESPONSES_USAGE = {"input_tokens": 800, "cached_tokens": 100, "reasoning_tokens": 16}
ANTHROPIC_USAGE = {"input_tokens": 900, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 50}
EMBEDDING_TOKENS = 12
SEARCHES = 2  # the web searches a messages or responses call offered a web_search tool runs
EXECUTIONS = 2  # the code runs (in one container) of a call offered a code execution tool
CONTAINER = "cntr_fake"
# a compaction's own sampling (context_management's compact edit), reported apart from the top-level usage
COMPACTION = {"type": "compaction", "input_tokens": 3000, "output_tokens": 200, "cache_read_input_tokens": 0,
              "cache_creation_input_tokens": 0}  # the container OpenAI's code interpreter creates for a call (auto)
WORDS = STREAM_WORDS.split(" ")[1:]
AUTO_TIER = "default"  # OpenAI's answer to a call that leaves its tier to a project at the standard tier


def _served(fake: FakeUpstream, log: Logged) -> dict[str, Any]:
    """The tier that served an OpenAI call, as its answer tells it (`service_tier`, beside the usage):
    the one it asked for; "auto", or none, the project's (`auto_tier`; None: not told)."""
    tier = log.body.get("service_tier")
    tier = fake.served_tier or (fake.auto_tier if tier in (None, "auto") else tier)
    return {"service_tier": tier} if tier is not None else {}


@dataclass
class Logged:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    query: str = ""
    peer: tuple[str, int] | None = None  # the caller's address: one per connection
    http_version: str = "1.1"  # as the server saw it: "1.1", or "2"
    emitted: int = 0  # output tokens sent
    cancelled: bool = False  # the caller left before the end
    done: bool = False


@dataclass
class FakeUpstream:
    calls: list[Logged] = field(default_factory=list)
    loop: asyncio.AbstractEventLoop | None = None
    # the tier an OpenAI call (chat, responses) without one, or "auto", is served at, which its answer
    # tells as OpenAI's does (the project's: AUTO_TIER, its standard tier); None: the answer does not say
    auto_tier: str | None = AUTO_TIER
    served_tier: str | None = None  # the tier every OpenAI call is served at, whatever it asked for (None: as asked)
    default_geo: str | None = None  # where a messages call that names no inference_geo runs (None: not reported)
    _gate: asyncio.Event | None = None

    def release(self) -> None:
        """Let every `...-hold` stream finish (thread-safe)."""
        if self.loop is not None:  # else no call came yet, and none waits
            self.loop.call_soon_threadsafe(self._open_gate)

    def _open_gate(self) -> None:
        self._gates().set()

    def _gates(self) -> asyncio.Event:
        if self._gate is None:
            self._gate = asyncio.Event()
        return self._gate

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        self.loop = asyncio.get_running_loop()
        body = msgspec.json.decode(await request_body(receive) or b"{}")
        log = Logged(scope["path"], {k.decode(): v.decode() for k, v in scope["headers"]}, body,
                     scope.get("query_string", b"").decode(),
                     tuple(scope["client"]) if scope.get("client") else None, scope.get("http_version", "1.1"))
        self.calls.append(log)
        answer = ANSWERS.get(scope["path"]) or (_model if scope["path"].startswith("/v1/models/") else None)
        if answer is None:
            await _json(send, 404, {"error": {"message": "no such path", "type": "invalid_request_error"}})
            return
        await answer(self, log, receive, send)

    async def stream(self, log: Logged, receive: Any, send: Any, events: Any) -> None:
        """Send `events` (bytes, or None for "one output token was sent" after the previous one)."""
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"x-request-id", b"fake")]})
        model = log.body.get("model", "")
        for event in events:
            if event is None:
                log.emitted += 1
                if model.endswith("-pause") and log.emitted == PAUSE_AFTER:
                    await self._wait_for_cut(log, receive)
                    return
                if model.endswith("-stall") and log.emitted == PAUSE_AFTER:
                    await asyncio.sleep(STALL_SECONDS)
                if model.endswith("-hold") and log.emitted == 1:
                    await self._gates().wait()
                if model.endswith("-trickle"):
                    await asyncio.sleep(TRICKLE_SECONDS)
                if model.endswith("-drop") and log.emitted == DROP_AFTER:
                    raise ConnectionAbortedError("the fake drops the stream")  # uvicorn aborts the connection
                continue
            if event is LATE:
                if model.endswith("-lateusage"):
                    await asyncio.sleep(LATE_USAGE_SECONDS)
                continue
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        log.done = True

    async def _wait_for_cut(self, log: Logged, receive: Any) -> None:
        try:
            message = await asyncio.wait_for(receive(), timeout=30)
            log.cancelled = message["type"] == "http.disconnect"
        except TimeoutError:
            pass


async def request_body(receive: Any) -> bytes:
    """An ASGI request's whole body."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def lifespan(receive: Any, send: Any) -> None:
    """Answer an ASGI server's lifespan messages until it shuts down."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _json(send: Any, status: int, body: Any, *headers: tuple[bytes, bytes]) -> None:
    data = msgspec.json.encode(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"x-request-id", b"fake"), *headers]})
    await send({"type": "http.response.body", "body": data})


async def _dropped(send: Any, data: bytes, words: list[str]) -> None:
    """Start a whole answer, send its body up to the DROP_AFTER-th word of its text (`words`), and
    break the connection."""
    text = msgspec.json.encode("".join(words[:DROP_AFTER]))[:-1]  # the string so far, unclosed
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data[:data.index(text) + len(text)], "more_body": True})
    raise ConnectionAbortedError("the fake drops the answer")  # the server aborts the connection (or stream)


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + msgspec.json.encode(data) + b"\n\n"


def _words(count: int) -> list[str]:
    return [f" {WORDS[i % len(WORDS)]}" for i in range(count)]


def _tokens(log: Logged) -> int:
    return PAUSE_AFTER * 2 if log.body.get("model", "").endswith(("-pause", "-stall")) else OUTPUT_TOKENS


def _failed(log: Logged) -> bool:
    return log.body.get("model", "").endswith("-fail")


def _chat_usage(output: int) -> dict[str, Any]:
    prompt = CHAT_USAGE["prompt_tokens"]
    return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
            "prompt_tokens_details": {"cached_tokens": CHAT_USAGE["cached_tokens"], "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}


async def _chat(fake: FakeUpstream, log: Logged, receive: Any, send: Any) -> None:
    if _failed(log):
        await _json(send, 500, {"error": {"message": "The server had an error", "type": "server_error",
                                          "param": None, "code": None}})
        return
    if log.body["model"].endswith("-overloaded"):
        await _json(send, 503, {"error": {"message": "The engine is currently overloaded", "type": "server_error",
                                          "param": None, "code": None}})
        return
    if log.body["model"].endswith("-slow") and not log.body.get("stream"):
        await fake._wait_for_cut(log, receive)  # thinks until the caller gives up
        return
    cid, model, words = f"chatcmpl-{uuid.uuid4().hex[:12]}", log.body["model"], _words(_tokens(log))
    served = _served(fake, log)
    head = {"id": cid, "object": "chat.completion.chunk", "created": 1764680000, "model": model,
            "system_fingerprint": "fp_fake", **served}
    if not log.body.get("stream"):
        answer = {"id": cid, "object": "chat.completion", "created": 1764680000, "model": model,
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words), "refusal": None},
                               "logprobs": None, "finish_reason": "stop"}], "usage": _chat_usage(len(words)),
                  "system_fingerprint": "fp_fake", **served}
        if model.endswith("-drop"):
            await _dropped(send, msgspec.json.encode(answer), words)
        log.emitted, log.done = len(words), True
        await _json(send, 200, answer)
        return
    usage_wanted = (log.body.get("stream_options") or {}).get("include_usage") and not model.endswith("-nousage")

    def events():
        yield _sse({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "finish_reason": None}]})
        for word in words:
            yield _sse({**head, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]})
            yield None
        yield _sse({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        yield LATE
        if usage_wanted:
            yield _sse({**head, "choices": [], "usage": _chat_usage(len(words))})
        yield b"data: [DONE]\n\n"

    await fake.stream(log, receive, send, events())


def _responses_usage(output: int) -> dict[str, Any]:
    u = RESPONSES_USAGE
    total_out = output + u["reasoning_tokens"]
    return {"input_tokens": u["input_tokens"], "input_tokens_details": {"cached_tokens": u["cached_tokens"]},
            "output_tokens": total_out, "output_tokens_details": {"reasoning_tokens": u["reasoning_tokens"]},
            "total_tokens": u["input_tokens"] + total_out}


async def _responses(fake: FakeUpstream, log: Logged, receive: Any, send: Any) -> None:
    if _failed(log):
        await _json(send, 500, {"error": {"message": "The server had an error", "type": "server_error",
                                          "param": None, "code": None}})
        return
    rid, words = f"resp_{uuid.uuid4().hex[:12]}", _words(_tokens(log))
    item = {"id": "msg_fake", "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "".join(words), "annotations": []}]}
    tools = [str(t.get("type", "")) for t in log.body.get("tools") or [] if isinstance(t, dict)]
    # OpenAI's web and file searches are output items; its usage does not count them
    searches = [{"id": f"{kind[:2]}_{n}", "type": f"{kind}_call", "status": "completed"}
                for kind in ("web_search", "file_search") if any(t.startswith(kind) for t in tools)
                for n in range(SEARCHES)]
    # the code interpreter's runs: output items in the container it created (or the one it was given)
    given = [t.get("container") for t in log.body.get("tools") or [] if isinstance(t, dict)
             and t.get("type") == "code_interpreter"]
    searches += [{"id": f"ci_{n}", "type": "code_interpreter_call", "status": "completed", "code": "print(6 * 7)",
                  "container_id": given[0] if isinstance(given[0], str) else CONTAINER,
                  "outputs": [{"type": "logs", "logs": "42\n"}]} for n in range(EXECUTIONS) if given]
    # a hosted MCP server: its tool listing and a call (both billed as input tokens, in the usage)
    for server in (t.get("server_label") for t in log.body.get("tools") or []
                   if isinstance(t, dict) and t.get("type") == "mcp"):
        searches += [{"id": f"mcpl_{server}", "type": "mcp_list_tools", "server_label": server, "tools": [
                         {"name": "lookup", "description": "Look a word up", "annotations": None,
                          "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}}}]},
                     {"id": f"mcp_{server}", "type": "mcp_call", "server_label": server, "name": "lookup",
                      "arguments": '{"word": "cat"}', "output": "a small feline", "error": None,
                      "approval_request_id": None, "status": "completed"}]
    response = {"id": rid, "object": "response", "created_at": 1764680000, "status": "completed",
                "model": log.body["model"], "output": [*searches, item], "usage": _responses_usage(len(words)),
                "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "error": None,
                "incomplete_details": None, "instructions": None, "metadata": {}, "temperature": 1.0,
                "top_p": 1.0, "text": {"format": {"type": "text"}}, "truncation": "disabled", **_served(fake, log)}
    if not log.body.get("stream"):
        log.emitted, log.done = len(words), True
        await _json(send, 200, response)
        return

    def events():
        seq = iter(range(10**6))
        started = {**response, "status": "in_progress", "output": [], "usage": None}
        for kind in ("response.created", "response.in_progress"):  # the tier that serves it, from the start
            yield _sse({"type": kind, "sequence_number": next(seq), "response": started}, kind)
        for index, search in enumerate(searches):
            for kind in ("response.output_item.added", "response.output_item.done"):
                yield _sse({"type": kind, "sequence_number": next(seq), "output_index": index, "item": search}, kind)
        for word in words:
            yield _sse({"type": "response.output_text.delta", "sequence_number": next(seq), "item_id": "msg_fake",
                        "output_index": len(searches), "content_index": 0, "delta": word, "logprobs": []},
                       "response.output_text.delta")
            yield None
        yield LATE
        yield _sse({"type": "response.completed", "sequence_number": next(seq), "response": response},
                   "response.completed")

    await fake.stream(log, receive, send, events())


async def _embeddings(fake: FakeUpstream, log: Logged, receive: Any, send: Any) -> None:
    inputs = log.body.get("input")
    count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
    log.done = True
    await _json(send, 200, {"object": "list", "model": log.body["model"],
                            "data": [{"object": "embedding", "index": i, "embedding": [0.0125, -0.5, 0.25]}
                                     for i in range(count)],
                            "usage": {"prompt_tokens": EMBEDDING_TOKENS, "total_tokens": EMBEDDING_TOKENS}})


# Anthropic's answer to an error it expects a retry to get past (its 5xx, its 529 overloaded_error),
# which the anthropic package obeys (_base_client.py `_should_retry`). OpenAI's fake says none: no
# source found shows where OpenAI sends it (the openai package then retries by the status alone).
ANTHROPIC_RETRY = (b"x-should-retry", b"true")


async def _messages(fake: FakeUpstream, log: Logged, receive: Any, send: Any) -> None:
    if _failed(log):
        await _json(send, 500, {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}},
                    ANTHROPIC_RETRY)
        return
    if log.body["model"].endswith("-overloaded"):
        await _json(send, 529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                    ANTHROPIC_RETRY)
        return
    mid, words = f"msg_{uuid.uuid4().hex[:12]}", _words(_tokens(log))
    tools = log.body.get("tools") or []
    searched = any(str(t.get("type", "")).startswith("web_search_") for t in tools if isinstance(t, dict))
    server = {"server_tool_use": {"web_search_requests": SEARCHES, "web_fetch_requests": 0}} if searched else {}
    executed = any(str(t.get("type", "")).startswith("code_execution_") for t in tools if isinstance(t, dict))
    # the container the code ran in: Anthropic's usage does not count code execution, the answer names it
    container = {"container": {"id": "container_fake", "expires_at": "2026-12-31T00:00:00Z"}} if executed else {}
    usage = dict(ANTHROPIC_USAGE)
    if _asks_one_hour_cache(log.body):  # its cache writes split by duration, as Anthropic reports them
        usage["cache_creation"] = {"ephemeral_5m_input_tokens": 0,
                                   "ephemeral_1h_input_tokens": usage["cache_creation_input_tokens"]}
    start_usage = {**usage, "output_tokens": 1}
    geo = log.body.get("inference_geo") or fake.default_geo
    if geo is not None:  # where it ran, in its usage (the workspace's default when the call names none)
        usage["inference_geo"] = geo
        start_usage["inference_geo"] = geo
    if log.body.get("speed") is not None:  # the speed it ran at, in its usage
        server = {**server, "speed": log.body["speed"]}
    edits = (log.body.get("context_management") or {}).get("edits") or []
    if any(str(edit.get("type", "")).startswith("compact_") for edit in edits if isinstance(edit, dict)):
        iteration = {"type": "message", **usage, "output_tokens": len(words)}
        server = {**server, "iterations": [COMPACTION, iteration]}
    message = {"id": mid, "type": "message", "role": "assistant", "model": log.body["model"], "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    if not log.body.get("stream"):
        runs = [block for n in range(EXECUTIONS if executed else 0) for block in _execution(n)]
        answer = {**message, "content": [*runs, {"type": "text", "text": "".join(words)}], "stop_reason": "end_turn",
                  "usage": {**usage, "output_tokens": len(words), **server}, **container}
        if log.body["model"].endswith("-drop"):
            await _dropped(send, msgspec.json.encode(answer), words)
        log.emitted, log.done = len(words), True
        await _json(send, 200, answer)
        return

    def events():
        yield _sse({"type": "message_start", "message": message}, "message_start")
        searches = 2 * SEARCHES if searched else 0
        text = searches + (2 * EXECUTIONS if executed else 0)  # the text block's index: after the tools' blocks
        for n in range(0, searches, 2):
            yield from _search_blocks(n)
        for n in range(searches, text, 2):
            for block in _execution(n):
                yield _sse({"type": "content_block_start", "index": n, "content_block": block}, "content_block_start")
                yield _sse({"type": "content_block_stop", "index": n}, "content_block_stop")
                n += 1
        yield _sse({"type": "content_block_start", "index": text, "content_block": {"type": "text", "text": ""}},
                   "content_block_start")
        yield _sse({"type": "ping"}, "ping")
        for word in words:
            yield _sse({"type": "content_block_delta", "index": text, "delta": {"type": "text_delta", "text": word}},
                       "content_block_delta")
            yield None
        yield _sse({"type": "content_block_stop", "index": text}, "content_block_stop")
        yield LATE
        yield _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None, **container},
                    "usage": {"output_tokens": len(words), **server}}, "message_delta")
        yield _sse({"type": "message_stop"}, "message_stop")

    await fake.stream(log, receive, send, events())


def _asks_one_hour_cache(value: Any) -> bool:
    """Whether a messages body marks a block (or itself) for caching an hour (`"ttl": "1h"`)."""
    if isinstance(value, dict):
        control = value.get("cache_control")
        return (isinstance(control, dict) and control.get("ttl") == "1h") or any(
            _asks_one_hour_cache(v) for v in value.values())
    return isinstance(value, list) and any(_asks_one_hour_cache(v) for v in value)


def _search_blocks(index: int) -> Any:
    """A web search Anthropic ran inside the call, as its stream shows it: the server_tool_use
    block (its query left out) and the search's result block."""
    tool_id = f"srvtoolu_{index}"
    yield _sse({"type": "content_block_start", "index": index, "content_block": {
        "type": "server_tool_use", "id": tool_id, "name": "web_search", "input": {}}}, "content_block_start")
    yield _sse({"type": "content_block_stop", "index": index}, "content_block_stop")
    yield _sse({"type": "content_block_start", "index": index + 1, "content_block": {
        "type": "web_search_tool_result", "tool_use_id": tool_id, "content": []}}, "content_block_start")
    yield _sse({"type": "content_block_stop", "index": index + 1}, "content_block_stop")


def _execution(index: int) -> list[dict[str, Any]]:
    """A bash command Anthropic's code execution ran inside the call: its server_tool_use block and
    its result block."""
    tool_id = f"srvtoolu_code_{index}"
    return [{"type": "server_tool_use", "id": tool_id, "name": "bash_code_execution", "input": {"command": "echo 42"}},
            {"type": "bash_code_execution_tool_result", "tool_use_id": tool_id, "content": {
                "type": "bash_code_execution_result", "stdout": "42\n", "stderr": "", "return_code": 0,
                "content": []}}]


MODELS = ("gpt-test", "claude-test")
COUNTED_TOKENS = 14  # what count_tokens answers, whatever the prompt


def _model_object(model: str, anthropic: bool) -> dict[str, Any]:
    if anthropic:
        return {"type": "model", "id": model, "display_name": model, "created_at": "2026-01-01T00:00:00Z"}
    return {"id": model, "object": "model", "created": 1764680000, "owned_by": "fake"}


async def _models(fake: FakeUpstream, log: Logged, receive: Any, send: Any) -> None:
    """Both providers list models at /v1/models: Anthropic's clients send anthropic-version."""
    anthropic = "anthropic-version" in log.headers
    data = [_model_object(model, anthropic) for model in MODELS]
    await _json(send, 200, {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}
                if anthropic else {"object": "list", "data": data})


async def _model(fake: FakeUpstream, log: Logged, receive: Any, send: Any) -> None:
    model, anthropic = log.path.removeprefix("/v1/models/"), "anthropic-version" in log.headers
    if model.endswith("-slow"):
        await fake._wait_for_cut(log, receive)
    elif model.endswith("-missing"):
        message = f"model: {model}" if anthropic else f"The model '{model}' does not exist"
        await _json(send, 404, {"type": "error", "error": {"type": "not_found_error", "message": message}}
                    if anthropic else {"error": {"message": message, "type": "invalid_request_error",
                                                 "param": "model", "code": "model_not_found"}})
    else:
        await _json(send, 200, _model_object(model, anthropic))


async def _count_tokens(fake: FakeUpstream, log: Logged, receive: Any, send: Any) -> None:
    await _json(send, 200, {"input_tokens": COUNTED_TOKENS})


ANSWERS = {"/v1/chat/completions": _chat, "/v1/responses": _responses, "/v1/embeddings": _embeddings,
           "/v1/messages": _messages, "/v1/models": _models, "/v1/messages/count_tokens": _count_tokens}


class FakeServer(threading.Thread):
    """The fake on 127.0.0.1:`port`, on a thread of its own (its own event loop)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.fake = FakeUpstream()
        self.port = port
        self.server = uvicorn.Server(uvicorn.Config(self.fake, host="127.0.0.1", port=port, log_level="warning",
                                                    lifespan="on"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self) -> None:
        self.server.run()

    def stop(self) -> None:
        self.server.should_exit = True
        self.join(timeout=10)


def main(argv: list[str] | None = None) -> None:
    """`python -m api.bench.fake_upstream PORT`: the fake in a process of its own (the benchmark's)."""
    import sys

    port = int((argv if argv is not None else sys.argv[1:])[0])
    uvicorn.run(FakeUpstream(), host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                loop="uvloop", http="httptools", access_log=False)


if __name__ == "__main__":
    main()

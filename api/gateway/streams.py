"""What a provider's answer says it cost (pure: no I/O): the usage of a whole JSON answer, and, as
a stream's server-sent events go by, the text generated so far and any usage it reports.

The settlement a finished, failed or cut call gets (`settlement`): the provider's final usage
when it came; else, for Anthropic, the input usage its `message_start` reported with the output
tokens metered here (and the web searches its server_tool_use blocks showed, which Anthropic bills
whether or not the answer ends); else the prompt's raw tiktoken count and the metered output. OpenAI
bills a responses call's web and file searches per call, and its usage does not count them: the
web_search_call and file_search_call items its answer (or stream, cut or not) showed are charged
besides (`with_tool_calls`, as canonical `web_search_calls`, `file_search_calls`). Code execution
is billed per container, which neither provider's usage reports: each container the answer
showed (OpenAI's code_interpreter_call and shell_call items name theirs; Anthropic's answer, its
`container`, or a stream cut before it, its code execution blocks) is charged the call's
`container_units` as `code_execution_calls`. Metered
output is the tiktoken count (the model's encoding, else cl100k_base, no margin) of every
generated text delta in the order received: message text, refusals, reasoning text, tool-call
arguments; a chat answer's audio counts as output audio tokens. A whole answer without usage is
metered as its stream would be (`observe_answer`): the same texts, read from its items, its audio
(in the call's format: pricing.attachments.answer_audio_tokens), Anthropic's web searches.
Anthropic's compactions, billed but left out of its top-level usage, are added to it
(`with_compactions`). No usage and no output at all means nothing was generated: the hold is released; so
does an upstream that failed before any output token (Anthropic's message_start notwithstanding)
and any web search. A stream whose thinking is hidden (`hidden`: billed as output, counted only in
the usage), or whose provider's tools ran (`tool_results`: their results are input only the usage
counts), is read on to its end for its usage when its caller leaves (api.gateway.forwarding); one
cut all the same before its usage (the server shutting down) is charged the call's output cap
(`cut_cap`) if its thinking is hidden, else as any.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from api.gateway.calls import CHAT, EMBEDDINGS, MESSAGES, PROVIDER_TIERS, RESPONSES
from api.gateway.partial import partial_json, whole_members
from api.gateway.tools import ANTHROPIC_CODE_EXECUTION_NAMES, OPENAI_CONTAINER_CALLS, OPENAI_TOOL_CALLS
from api.stream_texts import (
    ANTHROPIC_DELTAS,
    RESPONSES_DELTAS,
    choice_texts_of_chat_delta,
    list_of,
    tool_call_names,
)
from pricing.attachments import answer_audio_tokens, decoded_size, output_audio_tokens
from pricing.normalize import normalize_anthropic, normalize_openai
from pricing.tokens import TokenCounter

_LINE_END = re.compile(r"\r\n|\r|\n")
_LINE_END_BYTES = re.compile(rb"\r\n|\r|\n")


class EventSplitter:
    """Cuts a byte stream into whole server-sent events (each with the empty line that ends it).
    A line ends in CRLF, LF or CR, mixed as they come (the SSE spec); a CR that ends one chunk and
    an LF that starts the next are one line end."""

    def __init__(self) -> None:
        self._pending = b""
        self._line = 0  # where the pending event's unended line starts
        self._lf_owed = False  # the last event's empty line was a CR, the last byte fed: an LF next is its

    def feed(self, chunk: bytes) -> list[bytes]:
        data, line = self._pending + chunk, self._line
        if self._lf_owed and data:
            line, self._lf_owed = (1 if data.startswith(b"\n") else 0), False
        events: list[bytes] = []
        start = 0
        for end in _LINE_END_BYTES.finditer(data, line):
            empty = end.start() == line
            if end.group() == b"\r" and end.end() == len(data) and not empty:
                break  # maybe half a CRLF: the line ends with the next chunk
            line = end.end()
            if empty:  # an empty line ends the event
                events.append(data[start:line])
                start = line
                self._lf_owed = end.group() == b"\r" and line == len(data)
        self._pending, self._line = data[start:], line - start
        return events

    def rest(self) -> bytes:
        """What came after the last complete event (a stream cut mid-event)."""
        rest, self._pending, self._line, self._lf_owed = self._pending, b"", 0, False
        return rest


def event_fields(raw: bytes) -> tuple[str | None, str]:
    """(the event's name, its data lines joined) of one server-sent event."""
    name, data = None, []
    # Lines end at CR, LF or CRLF only (the SSE spec): str.splitlines would also cut at U+2028,
    # U+0085 and the like, which JSON carries unescaped inside a string.
    for line in _LINE_END.split(raw.decode("utf-8", "replace")):
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    return name, "\n".join(data)


def _audio_of_chat_delta(chunk: Mapping[str, Any]) -> int:
    """The bytes of the audio a chat chunk carries (base64 `delta.audio.data`), decoded."""
    size = 0
    for choice in list_of(chunk.get("choices")):
        delta = choice.get("delta") if isinstance(choice, Mapping) else None
        audio = delta.get("audio") if isinstance(delta, Mapping) else None
        if isinstance(audio, Mapping) and isinstance(audio.get("data"), str):
            size += decoded_size(audio["data"])
    return size


_RESPONSES_DONE = frozenset({"response.completed", "response.incomplete", "response.failed"})
# the events that carry the response before its end: its service_tier, where it tells the tier that
# serves it (not "auto", the call's own choice echoed), prices a stream cut before its usage
_RESPONSES_STARTED = frozenset({"response.created", "response.in_progress"})
# the tiers an OpenAI call leaves to the provider: an answer that echoes one tells no tier that served
_NOT_SERVED = frozenset({*PROVIDER_TIERS[CHAT], *PROVIDER_TIERS[RESPONSES]})


@dataclass(slots=True)
class StreamTally:
    """Follows one stream's events: what to forward, the text generated, the usage reported."""

    kind: str
    usage_chunk_wanted: bool = True
    texts: list[str] = field(default_factory=list)
    # chat: the texts of each choice (a call with `n` above 1 streams its choices interleaved), metered apart
    choices: dict[int, list[str]] = field(default_factory=dict)
    usage: dict[str, Any] | None = None  # the provider's final usage
    started: dict[str, Any] | None = None  # Anthropic: message_start's usage (input known)
    service_tier: str | None = None  # OpenAI: the tier that served the call (its chunks', a response's events')
    error: bool = False  # the upstream reported an error inside the stream
    searches: int = 0  # Anthropic: the web searches it ran (server_tool_use blocks), billed even when cut
    # OpenAI (responses): the per-call tools' items the answer showed (web_search_call, file_search_call):
    # their unit by id; its usage does not count them
    search_calls: dict[str, str] = field(default_factory=dict)
    chat_searches: int = 0  # OpenAI (chat): the searches a search model runs per call (web_search_options)
    container_units: int = 0  # the code_execution units of a container the call runs code in
    containers: set[str] = field(default_factory=set)  # those the answer showed (Anthropic's: one, "")
    reused_containers: frozenset[str] = frozenset()  # OpenAI's given by id: billed when made, not again
    audio_bytes: int = 0  # OpenAI (chat): the pcm16 audio the answer sent (delta.audio.data), decoded
    audio_format: str | None = None  # OpenAI (chat): the format a whole answer's audio is in (the call's)
    audio_tokens: int = 0  # OpenAI (chat): the output audio tokens of a whole answer's audio
    # the call may think in tokens billed as output that the stream does not show (its Call's
    # hidden_output; or a reasoning item, a thinking block, came): only its usage counts them
    hidden: bool = False
    # a tool of the provider's ran (a search, a fetch, code, an MCP call): its results are billed as
    # input, which only the final usage counts
    tool_results: bool = False
    # Anthropic: the call caches for an hour (a `cache_control` ttl of 1h): the TTL of cache writes
    # its message_delta adds to message_start's split (_split_writes)
    cache_ttl_1h: bool = False
    # the stream's own last event came (chat's [DONE], a response's completed, incomplete or failed
    # event, Anthropic's message_stop): a connection lost after it lost only HTTP's end of the body
    ended: bool = False

    def observe(self, raw: bytes) -> bool:
        """Take one event into account; whether to forward it to the caller."""
        name, data = event_fields(raw)
        if data == "[DONE]":
            self.ended = self.kind == CHAT
        if not data or data == "[DONE]":
            return True
        try:
            payload = msgspec.json.decode(data)
        except msgspec.DecodeError:
            return True
        if not isinstance(payload, dict):
            return True
        if name == "error" or payload.get("type") == "error" or isinstance(payload.get("error"), Mapping):
            self.error = True
        if self.kind == CHAT:
            return self._chat(payload)
        kind = payload.get("type") if isinstance(payload.get("type"), str) else None
        self.texts += tool_call_names(kind or name, payload)  # as the SDK's meter (api.stream_texts)
        if self.kind == RESPONSES:
            self._responses(kind or name, payload)
        elif self.kind == MESSAGES:
            self._messages(kind or name, payload)
        return True

    def _chat(self, chunk: dict[str, Any]) -> bool:
        self._add_choice_texts(choice_texts_of_chat_delta(chunk))
        self.audio_bytes += _audio_of_chat_delta(chunk)
        self.service_tier = _tier_of(chunk) or self.service_tier
        if isinstance(chunk.get("usage"), Mapping):
            self.usage = dict(chunk["usage"])
            return self.usage_chunk_wanted or bool(chunk.get("choices"))
        return True

    def _add_choice_texts(self, texts: list[tuple[int, str]]) -> None:
        for index, text in texts:
            self.texts.append(text)
            self.choices.setdefault(index, []).append(text)

    def _responses(self, kind: Any, event: dict[str, Any]) -> None:
        if kind in RESPONSES_DELTAS and isinstance(event.get("delta"), str):
            self.texts.append(event["delta"])
        elif kind in ("response.output_item.added", "response.output_item.done"):
            item = event.get("item")
            self.hidden = self.hidden or (isinstance(item, Mapping) and item.get("type") == "reasoning")
            self.count_items([item])
        elif kind in _RESPONSES_STARTED:  # the response so far: its tier, before its usage
            response = event.get("response")
            told = _tier_of(response) if isinstance(response, Mapping) else None
            self.service_tier = told or self.service_tier
        elif kind in _RESPONSES_DONE:
            self.ended = True
            response = event.get("response")
            if isinstance(response, Mapping):
                self.count_items(list_of(response.get("output")))
            if isinstance(response, Mapping) and isinstance(response.get("usage"), Mapping):
                self.usage = dict(response["usage"])
                self.service_tier = _tier_of(response) or self.service_tier

    def count_items(self, items: list[Any]) -> None:
        """Take OpenAI's per-call tool items (web_search_call, file_search_call) into account (each
        once, by its id, or its place when it has none), and the containers its code_interpreter_call
        and shell_call items ran in (each once, by its id; an item that names none, as one)."""
        for item in items:
            kind = item.get("type") if isinstance(item, Mapping) else None
            unit = OPENAI_TOOL_CALLS.get(kind) if isinstance(kind, str) else None
            if unit is not None or kind in OPENAI_CONTAINER_CALLS or kind in ("mcp_call", "mcp_list_tools"):
                self.tool_results = True
            if unit is not None:
                ident = item.get("id")
                self.search_calls[ident if isinstance(ident, str) else f"#{len(self.search_calls)}"] = unit
            elif kind in OPENAI_CONTAINER_CALLS:
                place = item.get("environment") if kind == "shell_call" else item
                if kind == "shell_call" and not (isinstance(place, Mapping)
                                                 and place.get("type") == "container_reference"):
                    continue  # a shell on the caller's machine
                container = place.get("container_id") if isinstance(place, Mapping) else None
                if container not in self.reused_containers:
                    self.containers.add(container if isinstance(container, str) else "")

    def tool_calls(self) -> dict[str, int]:
        """The per-call tool uses the answer showed that its usage does not count, as canonical
        fields (web_search_calls, ..., code_execution_calls)."""
        if self.kind == CHAT:
            return {"web_search_calls": self.chat_searches} if self.chat_searches else {}
        calls: dict[str, int] = {}
        for unit in self.search_calls.values():
            calls[f"{unit}_calls"] = calls.get(f"{unit}_calls", 0) + 1
        if self.containers and self.container_units:
            calls["code_execution_calls"] = len(self.containers) * self.container_units
        return calls

    def _messages(self, kind: Any, event: dict[str, Any]) -> None:
        if kind == "content_block_start":
            block = event.get("content_block")
            if isinstance(block, Mapping) and block.get("type") in ("thinking", "redacted_thinking"):
                self.hidden = True  # Claude 4 sends a summary of its thinking, and bills all of it
            if isinstance(block, Mapping) and block.get("type") in ("server_tool_use", "mcp_tool_use"):
                self.tool_results = True
            if isinstance(block, Mapping) and block.get("type") == "server_tool_use":
                if block.get("name") == "web_search":
                    self.searches += 1
                if block.get("name") in ANTHROPIC_CODE_EXECUTION_NAMES:  # its container is billed, cut or not
                    self.containers.add("")
        elif kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, Mapping):
                self.texts += [delta[k] for k in ANTHROPIC_DELTAS if isinstance(delta.get(k), str)]
        elif kind == "message_stop":
            self.ended = True
        elif kind == "message_start":
            message = event.get("message")
            if isinstance(message, Mapping) and isinstance(message.get("usage"), Mapping):
                self.started = dict(message["usage"])
        elif kind == "message_delta" and isinstance(event.get("usage"), Mapping):
            reported = {k: v for k, v in event["usage"].items() if v is not None}
            self.usage = _split_writes({**(self.started or {}), **reported}, reported, self.cache_ttl_1h)
            delta = event.get("delta")
            if isinstance(delta, Mapping) and isinstance(delta.get("container"), Mapping):
                self.containers.add("")

    def settlement(self, counter: TokenCounter, model: str, prompt_raw_tokens: int,
                   failed: bool = False, cut_cap: int | None = None) -> tuple[str, dict] | None:
        """(usage form, usage) to settle with, or None: nothing was generated, release. An upstream
        that failed (`failed`: its stream broke; or an error event inside it) before any output
        token generated nothing, though Anthropic's message_start reported the input. A stream the
        caller cut with `cut_cap` (the call's output cap), whose thinking is hidden (`hidden`), is
        charged that cap of output without its usage: what it thought is billed, and not known."""
        if self.usage is None and cut_cap is not None and self.hidden:
            return self._capped(counter, model, prompt_raw_tokens, cut_cap)
        if self.usage is not None:
            if self.kind == MESSAGES:  # Anthropic reports its tier inside the usage
                return "anthropic_usage", self.usage
            return "openai_usage", _with_tier(self.usage, self.service_tier)
        # each choice's text apart: joined, the end of one and the start of the next may make one token
        metered = sum(counter.count_text(text, model).raw_tokens
                      for text in ("".join(part) for part in (self.choices.values() if self.choices else [self.texts]))
                      if text)
        calls = self.tool_calls() if self.kind != CHAT else {}  # a search model's search: not shown, assumed
        if self.searches and self.started is None:  # Anthropic's, without its usage (a whole answer)
            calls = {**calls, "web_search_calls": self.searches}
        if self.audio_bytes or self.audio_tokens:  # the assistant's audio, as output audio tokens
            audio = self.audio_tokens + (output_audio_tokens(self.audio_bytes) if self.audio_bytes else 0)
            calls = {**calls, "output_audio_tokens": audio}
        if metered == 0 and not self.searches and not calls and (failed or self.error):
            return None
        if self.started is not None:
            searched = {"server_tool_use": {"web_search_requests": self.searches}} if self.searches else {}
            return "anthropic_usage", {**self.started, "output_tokens": metered, **searched}
        if metered == 0 and not calls:
            return None
        return "usage", {"input_tokens": prompt_raw_tokens, "output_tokens": metered, **calls}

    def _capped(self, counter: TokenCounter, model: str, prompt_raw_tokens: int, cap: int) -> tuple[str, dict]:
        """The settlement of a cut stream whose thinking is hidden: as without the cap, its output
        made up to the cap (Anthropic: output tokens; OpenAI: reasoning tokens besides the metered
        output), the most it may have generated."""
        uncapped = self.settlement(counter, model, prompt_raw_tokens)
        form, usage = uncapped or ("usage", {"input_tokens": prompt_raw_tokens})
        output = usage.get("output_tokens", 0)
        if form == "anthropic_usage":
            return form, {**usage, "output_tokens": max(output, cap)}
        return form, {**usage, "reasoning_tokens": max(cap - output, 0)}

    def observe_answer(self, raw: bytes | Mapping[str, Any]) -> None:
        """Take a whole (non-streamed) answer into account as its stream's events would be: its
        generated text (answer_texts), a chat answer's audio, Anthropic's web searches, the
        per-call tool items and containers."""
        body = _json(raw) if isinstance(raw, bytes) else raw
        if body is None:
            return
        self.texts, self.choices = ([], {}) if self.kind == CHAT else (answer_texts(self.kind, body), {})
        if self.kind == CHAT:
            self._add_choice_texts(_answer_choice_texts(body))
            for choice in list_of(body.get("choices")):
                message = choice.get("message") if isinstance(choice, Mapping) else None
                audio = message.get("audio") if isinstance(message, Mapping) else None
                if isinstance(audio, Mapping) and isinstance(audio.get("data"), str):
                    self.audio_tokens += answer_audio_tokens(audio["data"], self.audio_format)
        elif self.kind == RESPONSES:
            self.count_items(list_of(body.get("output")))
        elif self.kind == MESSAGES:
            for block in list_of(body.get("content")):
                self._messages("content_block_start", {"content_block": block})
            if isinstance(body.get("container"), Mapping):
                self.containers.add("")

    def with_tool_calls(self, form: str, usage: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A settlement with the tool uses the provider bills which its usage does not count
        (OpenAI's web and file searches, either's containers): its usage (readable:
        api.gateway.forwarding checks it first) as canonical counts, with `web_search_calls`,
        `file_search_calls`, `code_execution_calls`. Any other settlement as given."""
        calls = self.tool_calls()
        if not calls:
            return form, usage
        if form == "usage":
            return form, {**usage, **calls}
        normalize = normalize_anthropic if form == "anthropic_usage" else normalize_openai
        return "usage", {**normalize(usage).as_usage_fields(), **calls}


def _split_writes(usage: dict[str, Any], reported: Mapping[str, Any], ttl_1h: bool) -> dict[str, Any]:
    """Anthropic's merged stream usage with message_start's split of its cache writes by TTL
    (`cache_creation`) made to add up to message_delta's cumulative `cache_creation_input_tokens`,
    which comes without a split: the writes added since message_start (a server tool's sampling)
    at the TTL the call caches for (`ttl_1h`, never cheaper than its hold priced them); fewer
    writes than the split (never seen) keep its one-hour ones first. Else the usage as given."""
    split, total = usage.get("cache_creation"), reported.get("cache_creation_input_tokens")
    if "cache_creation" in reported or not isinstance(split, Mapping) or _tokens(total) != total:
        return usage
    five, hour = _tokens(split.get("ephemeral_5m_input_tokens")), _tokens(split.get("ephemeral_1h_input_tokens"))
    added = total - five - hour
    if added == 0:
        return usage
    if added > 0:
        five, hour = (five, hour + added) if ttl_1h else (five + added, hour)
    else:
        hour = min(hour, total)
        five = total - hour
    return {**usage, "cache_creation": {**split, "ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour}}


_ANTHROPIC_COUNTS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def _tokens(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def with_compactions(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic's usage with the tokens of its compactions added to the top-level counts: a
    compaction (context_management's compact edit) is a sampling of its own, billed, that its
    usage reports as a `compaction` entry of `iterations` and leaves out of the top-level counts
    (its cache writes by TTL too, where the usage splits them; else as 5-minute writes)."""
    compactions = [i for i in list_of(usage.get("iterations"))
                   if isinstance(i, Mapping) and i.get("type") == "compaction"]
    if not compactions:
        return dict(usage)
    out = dict(usage)
    for name in _ANTHROPIC_COUNTS:
        added = sum(_tokens(c.get(name)) for c in compactions)
        if added:
            out[name] = _tokens(out.get(name)) + added
    if isinstance(out.get("cache_creation"), Mapping):
        split = dict(out["cache_creation"])
        for c in compactions:
            given = c.get("cache_creation")
            given = given if isinstance(given, Mapping) else {
                "ephemeral_5m_input_tokens": c.get("cache_creation_input_tokens")}
            for ttl in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"):
                if _tokens(given.get(ttl)):
                    split[ttl] = _tokens(split.get(ttl)) + _tokens(given.get(ttl))
        out["cache_creation"] = split
    return out


def answer_texts(kind: str, raw: bytes | Mapping[str, Any]) -> list[str]:
    """The generated text of a whole (non-streamed) responses or messages answer, for metering
    when it has no usage (a chat answer's, choice by choice: _answer_choice_texts)."""
    body = _json(raw) if isinstance(raw, bytes) else raw
    texts: list[str] = []
    if body is None:
        return texts
    if kind == RESPONSES:  # what a stream sends as deltas (RESPONSES_DELTAS), item by item
        for item in list_of(body.get("output")):
            if not isinstance(item, Mapping):
                continue
            # a function call's name (as its stream's item added), a function's or MCP call's
            # arguments, a custom tool's input, the code interpreter's code
            texts += tool_call_names("response.output_item.added", {"item": item})
            texts += [item[k] for k in ("arguments", "input", "code") if isinstance(item.get(k), str)]
            action = item.get("action") if item.get("type") == "shell_call" else None
            if isinstance(action, Mapping):
                texts += [c for c in list_of(action.get("commands")) if isinstance(c, str)]
            for part in [*list_of(item.get("content")), *list_of(item.get("summary"))]:  # text, refusal, reasoning
                if isinstance(part, Mapping):
                    texts += [part[k] for k in ("text", "refusal") if isinstance(part.get(k), str)]
    elif kind == MESSAGES:  # as a stream's text, thinking and input_json deltas
        for block in list_of(body.get("content")):
            if isinstance(block, Mapping):
                texts += [block[k] for k in ("text", "thinking") if isinstance(block.get(k), str)]
                texts += tool_call_names("content_block_start", {"content_block": block})  # a tool_use's name
                if block.get("type") in ("tool_use", "server_tool_use", "mcp_tool_use") and "input" in block:
                    texts.append(msgspec.json.encode(block.get("input")).decode())
    return texts


def _answer_choice_texts(body: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(the choice's index, its text) of each text of a whole chat answer, as its stream's chunks."""
    choices = [{**choice, "delta": choice.get("message")} for choice in list_of(body.get("choices"))
               if isinstance(choice, Mapping)]
    return choice_texts_of_chat_delta({"choices": choices})


def _tier_of(body: Mapping[str, Any]) -> str | None:
    """The `service_tier` OpenAI puts on an answer (or a chunk), beside the usage, not in it: the
    tier that served it; "auto" (the call's own choice echoed, PROVIDER_TIERS) tells none."""
    tier = body.get("service_tier")
    return tier if isinstance(tier, str) and tier and tier not in _NOT_SERVED else None


def _with_tier(usage: Mapping[str, Any], tier: str | None) -> dict[str, Any]:
    """OpenAI's usage with the answer's service tier copied in, so that the tier prices it
    (flex, priority); a tier the usage names itself stays."""
    return {**usage, "service_tier": tier} if tier is not None and "service_tier" not in usage else dict(usage)


# What a whole answer of each kind is at its top level: a chat completion, a response, a list of
# embeddings, a message (not an error object, nor any other JSON a proxy may send with a 200)
_ANSWER_SHAPES = {CHAT: ("object", "chat.completion"), RESPONSES: ("object", "response"),
                  EMBEDDINGS: ("object", "list"), MESSAGES: ("type", "message")}


def whole_answer(kind: str, raw: bytes) -> bool:
    """Whether `raw` is a whole JSON answer of the call's kind (see _ANSWER_SHAPES)."""
    body = _json(raw)
    field, value = _ANSWER_SHAPES.get(kind, ("", None))
    return body is not None and value is not None and body.get(field) == value


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    return body if isinstance(body, dict) else None


def _reported(kind: str, usage: Mapping[str, Any], tier: str | None) -> tuple[str, dict]:
    """(usage form, usage) of the usage an answer reports, in its provider's shape: Anthropic's as
    given; OpenAI's with the answer's service tier (`tier`); an embedding's {prompt_tokens,
    total_tokens}, all input."""
    if kind == MESSAGES:
        return "anthropic_usage", dict(usage)
    if kind == EMBEDDINGS:
        usage = {**usage, "completion_tokens": 0}
    return "openai_usage", _with_tier(usage, tier)


def answer_settlement(kind: str, raw: bytes, counter: TokenCounter, model: str, prompt_raw_tokens: int,
                      tally: StreamTally | None = None) -> tuple[str, dict] | None:
    """(usage form, usage) of a whole JSON answer: its own usage, else metered as a stream would be
    (by `tally`, which observed the answer; else a tally of its own)."""
    body = _json(raw)
    if body is None:
        return None
    usage = body.get("usage")
    if isinstance(usage, Mapping):
        return _reported(kind, usage, _tier_of(body))
    if kind == EMBEDDINGS:
        return "usage", {"input_tokens": prompt_raw_tokens}
    if tally is None:
        tally = StreamTally(kind)
        tally.observe_answer(body)
    return tally.settlement(counter, model, prompt_raw_tokens) or ("usage", {"input_tokens": prompt_raw_tokens})


def cut_answer_settlement(kind: str, part: bytes, counter: TokenCounter, model: str, prompt_raw_tokens: int,
                          tally: StreamTally) -> tuple[str, dict]:
    """(usage form, usage) of a whole JSON answer whose body was cut short (`part`, what arrived):
    its headers and first bytes came, so the upstream generated it and bills it. Settled as a
    stream cut mid-way is: the prompt's count and the output metered from the text that arrived
    (api.gateway.partial: the text cut mid-string counts as far as it came), with the tools its
    items showed. A usage cut mid-way is not read: a count cut mid-digits would be taken as smaller.
    But the provider's usage whose object came whole (its closing brace before the cut: the answer's
    top-level `usage`, in its provider's shape) is what the provider bills: the answer is settled by
    it, as a whole one is (with its service tier if that came whole too; the tools its items showed
    besides). An answer whose JSON all came before the cut (only the body's end, as HTTP frames it,
    was lost) but is not of the call's kind (api.gateway.forwarding passes one that is on, 200) is
    settled as any whole answer is, by its own usage if it has one. A service tier that came whole
    without the usage (a response's comes before it) is the tally's (`service_tier`): the gateway
    prices the metered settlement at it (api.gateway.forwarding)."""
    whole = _json(part)
    if whole is not None:
        if kind != EMBEDDINGS:
            tally.observe_answer(whole)
        return answer_settlement(kind, part, counter, model, prompt_raw_tokens, tally) \
            or ("usage", {"input_tokens": prompt_raw_tokens})
    if kind != EMBEDDINGS:  # an embeddings list has no text to meter (its prompt is counted)
        body = partial_json(part)
        if body is not None:
            tally.observe_answer(body)
    came = whole_members(part, "usage", "service_tier")  # a tier cut mid-string, "prior", is not read
    if isinstance(came.get("usage"), Mapping):
        return _reported(kind, came["usage"], _tier_of(came))
    tally.service_tier = _tier_of(came) or tally.service_tier  # a responses answer's, before its usage
    return tally.settlement(counter, model, prompt_raw_tokens) or ("usage", {"input_tokens": prompt_raw_tokens})

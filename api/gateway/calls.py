"""What a provider call asks for, read from its JSON body (pure: no I/O).

For the hold: the model, whether it streams, the prompt's tokens (tiktoken, offline; the model's
own encoding, else cl100k_base plus a margin) and the most output it may produce. For the
upstream: the body to forward, changed only where metering needs it:

- a chat stream asks for its usage (`stream_options.include_usage`); the usage-only chunk is
  dropped again on the way back unless the caller asked for it;
- a call that sets no output cap is sent with the gateway's default cap, so the hold is a true
  upper bound (`max_completion_tokens` for chat, `max_output_tokens` for responses; Anthropic
  requires `max_tokens` already);
- `n` choices of a chat call may each produce the cap: the hold counts all of them.

Prompt tokens: every string in the fields the provider bills as input (messages or input,
system or instructions, tool definitions, response formats), counted one by one, plus 3 tokens
per message and 3 for the reply (OpenAI's cookbook overhead); a non-text part (an image, audio,
a file) counts NON_TEXT_PART_TOKENS, about the most one image costs at either provider.
Embedding inputs given as token ids count one each.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from pricing.errors import PricingError
from pricing.tokens import REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE, TokenCounter, with_margin

CHAT, RESPONSES, EMBEDDINGS, MESSAGES = "chat.completions", "responses", "embeddings", "messages"
# (provider, path under its mount) -> the kind of call
KINDS = {("openai", "/chat/completions"): CHAT, ("openai", "/responses"): RESPONSES,
         ("openai", "/embeddings"): EMBEDDINGS, ("anthropic", "/v1/messages"): MESSAGES}
NON_TEXT_PART_TOKENS = 2500
NON_TEXT_TYPES = frozenset({"image_url", "input_image", "image", "input_audio", "audio", "document", "file",
                            "input_file"})
# The fields each kind bills as input.
PROMPT_FIELDS = {CHAT: ("messages", "tools", "functions", "response_format"),
                 RESPONSES: ("input", "instructions", "tools", "text"),
                 MESSAGES: ("system", "messages", "tools")}
MAX_COUNT = 10**12


class CallError(Exception):
    """A call the gateway cannot meter: names the field (the caller's request is malformed)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True, slots=True)
class Call:
    kind: str
    model: str
    stream: bool
    prompt_tokens: int  # for the hold: margin included when the encoding is not the model's own
    prompt_raw_tokens: int  # for a settle without the provider's usage: the count itself
    max_output_tokens: int
    body: bytes  # what goes upstream
    usage_chunk_wanted: bool = True  # a chat stream's usage-only chunk reaches the caller


def _count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise CallError(name, "must be a whole number, 0 or more")
    return value


@dataclass(slots=True)
class _Prompt:
    texts: list[str]
    non_text: int = 0
    ids: int = 0  # token ids given as such (embeddings)
    messages: int = 0


def _walk(value: Any, prompt: _Prompt) -> None:
    if isinstance(value, str):
        prompt.texts.append(value)
    elif isinstance(value, Mapping):
        if value.get("type") in NON_TEXT_TYPES:
            prompt.non_text += 1
            return
        for item in value.values():
            _walk(item, prompt)
    elif isinstance(value, list):
        for item in value:
            _walk(item, prompt)


def _prompt_of(kind: str, body: Mapping[str, Any]) -> _Prompt:
    prompt = _Prompt([])
    if kind == EMBEDDINGS:
        given = body.get("input")
        items = given if isinstance(given, list) else [given]
        for item in items:
            if isinstance(item, str):
                prompt.texts.append(item)
            elif isinstance(item, int) and not isinstance(item, bool):
                prompt.ids += 1
            elif isinstance(item, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
                prompt.ids += len(item)
            else:
                raise CallError("input", "must be a string, a list of strings or of token ids")
        return prompt
    for name in PROMPT_FIELDS[kind]:
        _walk(body.get(name), prompt)
    turns = body.get("messages") if kind != RESPONSES else body.get("input")
    prompt.messages = len(turns) if isinstance(turns, list) else 1
    return prompt


def count_prompt(kind: str, body: Mapping[str, Any], model: str, counter: TokenCounter) -> tuple[int, int]:
    """(tokens for the hold, raw tokens) of a call's input."""
    prompt = _prompt_of(kind, body)
    try:
        encoding, exact = counter.encoding_for(model)
    except PricingError as exc:
        raise CallError("model", str(exc)) from None
    counted = sum(len(encoding.encode_ordinary(text)) for text in prompt.texts)
    overhead = 0 if kind == EMBEDDINGS else TOKENS_PER_MESSAGE * prompt.messages + REPLY_PRIMING_TOKENS
    fixed = overhead + prompt.ids + NON_TEXT_PART_TOKENS * prompt.non_text
    return with_margin(counted, 0 if exact else counter.margin_percent) + fixed, counted + fixed


def _output_cap(kind: str, body: dict[str, Any], default: int) -> tuple[int, bool]:
    """(the most output the call may produce, whether the body was given the default cap)."""
    if kind == EMBEDDINGS:
        return 0, False
    names = {CHAT: ("max_completion_tokens", "max_tokens"), RESPONSES: ("max_output_tokens",),
             MESSAGES: ("max_tokens",)}[kind]
    given = [c for c in (_count(body.get(n), n) for n in names) if c is not None]
    cap = min(given) if given else default
    added = not given and kind != MESSAGES  # Anthropic refuses a call without max_tokens itself
    if added:
        body[names[0]] = default
    if kind == CHAT:
        cap *= _count(body.get("n"), "n") or 1
    return cap, added


def parse_call(kind: str, raw: bytes, *, default_max_output: int, counter: TokenCounter) -> Call:
    """The call in `raw` (a provider's JSON request body), or CallError."""
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise CallError("body", f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CallError("body", "must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not 0 < len(model) <= 200:
        raise CallError("model", "is required: a string of 1 to 200 characters")
    stream = body.get("stream") is True and kind != EMBEDDINGS
    prompt_tokens, raw_tokens = count_prompt(kind, body, model, counter)
    cap, changed = _output_cap(kind, body, default_max_output)
    wanted = True
    if stream and kind == CHAT:
        options = body.get("stream_options")
        options = dict(options) if isinstance(options, Mapping) else {}
        wanted = options.get("include_usage") is True
        if not wanted:
            body["stream_options"] = {**options, "include_usage": True}
            changed = True
    return Call(kind, model, stream, prompt_tokens, raw_tokens, cap,
                msgspec.json.encode(body) if changed else raw, wanted)

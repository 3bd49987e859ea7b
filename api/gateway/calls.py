"""What a provider call asks for, read from its JSON body (pure: no I/O).

For the hold: the model, whether it streams, the prompt's tokens (tiktoken, offline; the model's
own encoding, else cl100k_base plus a margin) and the most output it may produce. For the
upstream: the body to forward, changed only where metering needs it:

- a chat stream asks for its usage (`stream_options.include_usage`); the usage-only chunk is
  dropped again on the way back unless the caller asked for it;
- a call that sets no output cap is sent with the gateway's default cap, so the hold is a true
  upper bound (`max_completion_tokens` for chat, `max_output_tokens` for responses; Anthropic
  requires `max_tokens` already);
- `n` choices of a chat call may each produce the cap: the hold counts all of them;
- the fields that choose the provider's prices (PRICED_FIELDS: OpenAI's `service_tier`,
  Anthropic's `speed` and `inference_geo`) are the call's dimensions, so a book's rules that
  match them price its hold and its charge; a tier left to the provider (`auto`, or none:
  PROVIDER_TIERS) is held at the dearest tier the book prices, and charged at the one the
  answer reports; or, where the operator pins it (`standard_tier`), sent with the standard tier
  (STANDARD_TIERS);
- an Anthropic call that marks its prompt for caching (`cache_control`) may be billed it at the
  cache write price (1.25 times input for 5 minutes, twice for an hour): `cache_write` names it,
  and its hold prices the prompt at the dearer of it and input (pricing.estimate); an OpenAI chat
  or responses prompt, which OpenAI caches by itself, always may (its usage's cache writes);
- a chat call's predicted output (`prediction`) is billed, the tokens of it the answer rejects,
  as completion tokens beyond the cap: the hold counts the prediction's tokens as output too.
- a call whose thinking is billed as output but not streamed (OpenAI's reasoning models, Anthropic's
  extended thinking: `hidden_output`) is read on to its end for its usage when its caller leaves
  (api.gateway.forwarding), and charged its output cap only when cut all the same before it.

Prompt tokens: every string in the fields the provider bills as input (messages or input, system
or instructions, tool definitions, response formats, Anthropic's output formats), counted one by one, plus 3 tokens per
message and 3 for the reply (OpenAI's cookbook overhead); for the hold, the keys of the JSON
schemas of tool definitions and response formats too (SCHEMA_KEYS: a parameter's name is billed).
An image counts what the model's provider charges for it (pricing.images: by its size, read from
the header of an inline image, and its `detail`; the rule's most for an image given by URL or file
id); an image for a model no rule names counts NON_TEXT_PART_TOKENS. Audio and PDFs count by
pricing.attachments: an audio clip by its duration (an upper bound from its size where that cannot
be read), a PDF by its pages (text and an image each; PDF_MAX_PAGES when given by URL or file id,
or not countable). A text document (Anthropic's `text` source, an inline file that is UTF-8 text)
counts as text; a file of another kind counts as a PDF of PDF_MAX_PAGES. Embedding inputs given as
token ids count one each.

What the provider bills as input but the body does not show:

- Anthropic adds a system prompt of its own to a call with `tools`, of a size it documents per
  model and `tool_choice` (api.gateway.tools); a model the table does not list counts the
  table's most. Counted in both prompt counts: it is a fixed figure, not a bound.
- Anthropic's client tools it defines itself (`bash_*`, `text_editor_*`, `computer_*` typed tools)
  add the input tokens it documents per tool (api.gateway.tools; computer use also
  adds its system prompt), in place of the definition's own words: fixed figures, in
  both prompt counts.
- Anthropic's server tools run inside the call (api.gateway.tools). Each use returns its results as
  input: a web fetch at most its `max_content_tokens`, a web search an allowance
  (`server_tool_result_tokens`) per search. A tool without `max_uses` is sent with the gateway's
  (`server_tool_max_uses`), and a web fetch without `max_content_tokens` with the allowance, so
  the hold has a bound. Held only (a cut stream settles the body's count); web searches are also
  held at their per-search fee (`tool_uses`, priced by the book's `web_search` rule).
- OpenAI's web and file search (a responses call's `web_search*`, `file_search` tools)
  likewise: each held for the call's `max_tool_calls` searches (sent with `server_tool_max_uses`
  when it sets none), each at its fee, with the results allowance as input once per call; a chat
  call with `web_search_options` for its one search.
- Code execution (Anthropic's `code_execution_*` tool, OpenAI's `code_interpreter` and hosted
  `shell`) is billed per container, which no usage reports (api.gateway.tools): held at the
  `code_execution` units of its container (OpenAI's by its memory limit), and charged per
  container the answer shows (`container_units` each); an OpenAI container given by id was
  billed when an earlier call made it (`reused_containers`): neither held nor charged again.
- A chat message that refers to an earlier answer's audio by id (`audio: {"id": ...}`) is billed
  that audio as input: held at AUDIO_REFERENCE_TOKENS of audio, the most audio an answer can
  have. In the hold only (`hold_audio_tokens`): a settle without the provider's usage (a cut
  stream) charges the body's own count, not the bound.
- A responses call that continues a conversation (`previous_response_id`, `conversation`), refers
  to an earlier item by id (`item_reference`; a stored reasoning item without its content) or uses
  a stored prompt template (`prompt`) is billed the earlier turns (the item, the template) as
  input: `prior_context` marks it, and its hold counts the model's context window
  (pricing.estimate), not the body alone; its settle, the provider's usage (without it, a cut
  stream: the body's count, as any call's).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from api.gateway.tools import (
    MAX_COUNT,
    SERVER_TOOL_MAX_USES,
    SERVER_TOOL_RESULT_TOKENS,
    CallError,
    anthropic_containers,
    anthropic_mcp_servers,
    anthropic_unmetered,
    openai_chat_search,
    openai_tools,
    server_tools,
    template_tools,
    tool_use_system_prompt,
    without_built_in_tools,
)
from api.json_keys import UNPAIRED, repeated_key, unpaired_surrogate
from api.routes.wire import nested_too_deep
from pricing.attachments import audio_tokens, decoded, pdf_pages, pdf_tokens
from pricing.errors import PricingError
from pricing.images import base64_size, data_url_size, rule_for
from pricing.tokens import REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE, TokenCounter, with_margin
from pricing.usage import MAX_QUANTITY

CHAT, RESPONSES, EMBEDDINGS, MESSAGES = "chat.completions", "responses", "embeddings", "messages"
# (provider, path under its mount) -> the kind of call
KINDS = {("openai", "/chat/completions"): CHAT, ("openai", "/responses"): RESPONSES,
         ("openai", "/embeddings"): EMBEDDINGS, ("anthropic", "/v1/messages"): MESSAGES}
NON_TEXT_PART_TOKENS = 2500
IMAGE_TYPES = frozenset({"image_url", "input_image", "image", "computer_screenshot"})  # the last: computer use's
AUDIO_TYPES = frozenset({"input_audio", "audio"})
FILE_TYPES = frozenset({"document", "file", "input_file"})
_DATA_URL = re.compile(r"data:([^;,]*)(?:;[^;,]*)*;base64,", re.ASCII)
# The fields each kind bills as input.
PROMPT_FIELDS = {CHAT: ("messages", "tools", "functions", "response_format"),
                 RESPONSES: ("input", "instructions", "tools", "text"),
                 MESSAGES: ("system", "messages", "tools", "output_format", "output_config")}
# The fields that define tools and output schemas, and in them the JSON schemas whose keys the provider
# bills too (OpenAI renders a function's parameters by name, Anthropic an input_schema as JSON):
# counted for the hold only, where the rendering's own words are not known exactly.
SCHEMA_FIELDS = frozenset({"tools", "functions", "response_format", "text", "output_format", "output_config"})
SCHEMA_KEYS = frozenset({"parameters", "input_schema", "schema"})
# The fields of a call that choose the provider's prices, held and charged as dimensions of the same
# names that a book's rules match: OpenAI's service_tier (priority, flex; "auto", its project's
# choice, is none: the answer's reported tier prices the charge), Anthropic's speed (fast mode) and
# inference_geo (where it runs).
PRICED_FIELDS = {CHAT: ("service_tier",), RESPONSES: ("service_tier",), MESSAGES: ("speed", "inference_geo")}
# A service tier left to the provider: OpenAI's "auto" (its default) serves at the tier the project is set
# to (priority, say); Anthropic's "auto" (its default) uses Priority Tier capacity where the organization
# has it, unlike "standard_only". Either answer reports the tier, which prices the charge; the hold is
# the dearest tier the book prices (pricing.estimate).
PROVIDER_TIERS = {CHAT: ("auto",), RESPONSES: ("auto",), MESSAGES: ("auto",)}
# The tiers an OpenAI call that names its service tier is served, and billed, at (its answer reports the
# tier that served it, which prices the charge: api.gateway.streams): flex as named (OpenAI answers 429
# rather than serve it at another tier), default as named, priority or the default tier OpenAI may serve
# it at instead (past the project's ramp rate). The reserve's free check tries just these; a call naming
# another tier may be reported at any the book prices.
# How deep a call's arrays and objects may nest (api.routes.wire.nested_too_deep), counted before it is
# decoded: msgspec gives up near 995 levels in RecursionError. Deeper than the API's 32: a tool's or a
# response format's JSON schema nests 2 to 4 levels for each of its own (properties, anyOf, items).
MAX_CALL_DEPTH = 128
SERVED_TIERS = {"flex": ("flex",), "default": ("default",), "priority": ("priority", "default")}
# The standard tier a call that leaves its tier to the provider is sent with when the operator pins
# it (GatewaySettings.service_tier "standard"): never served at a premium tier its book may not price.
STANDARD_TIERS = {CHAT: "default", RESPONSES: "default", MESSAGES: "standard_only"}
MAX_PRICED_VALUE = 40
# An earlier answer's audio, referred to by id: at most a whole answer of audio, the most output
# tokens OpenAI's audio models produce (gpt-4o-audio-preview, gpt-audio: 16,384 max output tokens).
AUDIO_REFERENCE_TOKENS = 16_384


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
    prompt_audio_tokens: int = 0  # of both prompt counts, audio (priced as input_audio)
    hold_audio_tokens: int = 0  # of prompt_tokens, audio: prompt_audio_tokens plus audio referred to by id
    prior_context: bool = False  # the provider bills earlier turns the body does not show
    tool_uses: tuple[tuple[str, int], ...] = ()  # the most uses of per-call tools the provider runs ("web_search", 5)
    container_units: int = 0  # the code_execution units charged per container the answer shows it ran code in
    dimensions: tuple[tuple[str, str], ...] = ()  # the prices the call asks for (PRICED_FIELDS): ("speed", "fast")
    cache_write: str | None = None  # the prompt may be written to the cache, billed as this type (cache_write_1h)
    reused_containers: tuple[str, ...] = ()  # OpenAI containers given by id, billed when made: not charged again
    chosen_by_provider: tuple[str, ...] = ()  # left to the provider (service_tier auto): held at the dearest
    served_tiers: tuple[str, ...] = ()  # the tiers a call naming its tier may be billed at (SERVED_TIERS); (): any
    audio_format: str | None = None  # chat: the format the answer's audio comes in (`audio.format`), if any
    hidden_output: bool = False  # it may think in tokens billed as output that its stream does not show
    # a stored prompt's call that shows no built-in tool and sets no max_tool_calls, as sent with
    # `max_tool_calls: 0` (no built-in tool runs) and held for no tool: what the gateway sends when
    # the customer's book cannot price the tools the prompt may bring (api.gateway.proxy)
    untooled: Call | None = None
    # the field that bounds its output and where the cap came from ("max_tokens", "1000 choices of
    # max_tokens 10**12"): what a hold too large to carry is refused naming (api.gateway.proxy)
    output_cap: tuple[str, str] = ("", "")
    result_tokens: int = 0  # of prompt_tokens, those held for its tools' results (a hold too big names them)


def _count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise CallError(name, f"must be a whole number from 0 to {MAX_COUNT}")
    return value


def _choices(value: Any) -> int:
    """A chat call's `n`: OpenAI's default 1 when not given (or null), else 1 or more (OpenAI refuses
    n 0: "0 is less than the minimum of 1 - 'n'"; was: held as 1 choice and forwarded)."""
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise CallError("n", f"must be a whole number from 1 to {MAX_COUNT}")
    return value


@dataclass(slots=True)
class _Prompt:
    texts: list[str]
    non_text: int = 0  # audio parts without inline data
    ids: int = 0  # token ids given as such (embeddings)
    messages: int = 0
    images: list[tuple[tuple[int, int] | None, str | None]] = field(default_factory=list)  # size, detail
    audio: int = 0  # the tokens of audio clips
    pdfs: list[int | None] = field(default_factory=list)  # pages (None: PDF_MAX_PAGES)
    audio_references: int = 0  # earlier answers' audio, referred to by id
    hidden: int = 0  # tokens the provider adds itself (Anthropic's tool-use system prompt)
    keys: dict[str, int] = field(default_factory=dict)  # the keys of tools' JSON schemas, each counted (held only)


def _image(part: Mapping[str, Any]) -> tuple[tuple[int, int] | None, str | None]:
    """An image part's size (None: not inline, or unreadable) and `detail`, in each provider's
    shape: chat `image_url: {url, detail}`, responses `image_url: "<url>", detail`, Anthropic
    `source: {type: base64, data}`."""
    given = part.get("image_url")
    if isinstance(given, Mapping):
        url, detail = given.get("url"), given.get("detail")
    else:
        url, detail = given, part.get("detail")
    source = part.get("source")
    if isinstance(source, Mapping) and source.get("type") == "base64" and isinstance(source.get("data"), str):
        size = base64_size(source["data"])
    else:
        size = data_url_size(url) if isinstance(url, str) else None
    return size, detail if isinstance(detail, str) else None


def _audio(part: Mapping[str, Any], prompt: _Prompt) -> None:
    """An audio part (`input_audio: {data, format}`): its tokens by pricing.attachments; a part
    without inline data (no shape the providers take as input) keeps the flat allowance."""
    given = part.get("input_audio", part.get("audio"))
    data = given.get("data") if isinstance(given, Mapping) else part.get("data")
    if isinstance(data, str) and data:
        prompt.audio += audio_tokens(data)
    else:
        prompt.non_text += 1


def _inline(data: str) -> tuple[str | None, str]:
    """(media type, base64) of a `data:` URL, or (None, data) for bare base64."""
    match = _DATA_URL.match(data)
    return (match.group(1).lower(), data[match.end():]) if match else (None, data)


def _file(part: Mapping[str, Any], prompt: _Prompt) -> None:
    """A file or document part, in each provider's shape: OpenAI chat `file: {file_data,
    file_id}`, responses `file_data` / `file_id` / `file_url`, Anthropic `source: {type: base64 |
    text | content | url | file}` (its title and context are text)."""
    source = part.get("source")
    if isinstance(source, Mapping):  # Anthropic's document
        for name in ("title", "context"):
            _walk(part.get(name), prompt)
        kind = source.get("type")
        if kind == "text":
            _walk(source.get("data"), prompt)
            return
        if kind == "content":
            _walk(source.get("content"), prompt)
            return
        data = source.get("data") if kind == "base64" else None
        media = source.get("media_type")
    else:
        given = part.get("file")
        given = given if isinstance(given, Mapping) else part
        data, media = given.get("file_data"), None
        if isinstance(data, str):
            media, data = _inline(data)
    raw = decoded(data) if isinstance(data, str) else None
    if raw is None or raw.startswith(b"%PDF-") or media == "application/pdf":  # by URL or file id: the cap
        prompt.pdfs.append(pdf_pages(raw) if raw is not None else None)
        return
    try:  # a text file (plain text, code, CSV, ...): the provider extracts its text
        prompt.texts.append(raw.decode("utf-8"))
    except UnicodeDecodeError:  # another kind (a spreadsheet, a word processor's file): the cap
        prompt.pdfs.append(None)


def _walk(value: Any, prompt: _Prompt, keys: bool | None = False) -> None:
    """The strings of `value` into `prompt`, by part type; with `keys` True its objects' keys too,
    with None those of the JSON schemas it holds (SCHEMA_KEYS)."""
    if isinstance(value, str):
        prompt.texts.append(value)
    elif isinstance(value, Mapping):
        kind = value.get("type")
        kind = kind if isinstance(kind, str) else None  # a list or object there is no part type
        if kind in IMAGE_TYPES:
            prompt.images.append(_image(value))
            return
        if kind in AUDIO_TYPES:
            _audio(value, prompt)
            return
        if kind in FILE_TYPES:
            _file(value, prompt)
            return
        if keys is True:
            for key in value:
                prompt.keys[key] = prompt.keys.get(key, 0) + 1
        for key, item in value.items():
            _walk(item, prompt, True if keys is None and key in SCHEMA_KEYS else keys)
    elif isinstance(value, list):
        for item in value:
            _walk(item, prompt, keys)


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
        given = body.get(name)
        if kind == CHAT and name == "messages" and isinstance(given, list):
            given = [_without_audio_reference(message, prompt) for message in given]
        if kind == MESSAGES and name == "tools" and isinstance(given, list):
            given, built_in = without_built_in_tools(given)
            prompt.hidden += built_in
        _walk(given, prompt, None if name in SCHEMA_FIELDS else False)
    if kind == MESSAGES:
        prompt.hidden += tool_use_system_prompt(body)
    turns = body.get("messages") if kind != RESPONSES else body.get("input")
    prompt.messages = len(turns) if isinstance(turns, list) else 1
    return prompt


def _without_audio_reference(message: Any, prompt: _Prompt) -> Any:
    """A chat message without its `audio: {"id": ...}` (an earlier answer's audio), counted apart."""
    if isinstance(message, Mapping) and isinstance(message.get("audio"), Mapping) \
            and isinstance(message["audio"].get("id"), str):
        prompt.audio_references += 1
        return {k: v for k, v in message.items() if k != "audio"}
    return message


def count_prompt(kind: str, body: Mapping[str, Any], model: str,
                 counter: TokenCounter) -> tuple[int, int, int, int]:
    """(tokens for the hold, raw tokens, audio tokens among both, audio tokens held only) of a
    call's input."""
    prompt = _prompt_of(kind, body)
    try:
        encoding, exact = counter.encoding_for(model)
    except PricingError as exc:
        raise CallError("model", str(exc)) from None
    counted = sum(len(encoding.encode_ordinary(text)) for text in prompt.texts)
    keyed = sum(n * len(encoding.encode_ordinary(key)) for key, n in prompt.keys.items())  # each distinct once
    overhead = 0 if kind == EMBEDDINGS else TOKENS_PER_MESSAGE * prompt.messages + REPLY_PRIMING_TOKENS
    rule = rule_for(model)
    images = sum(rule.tokens(size, detail) if rule is not None else NON_TEXT_PART_TOKENS
                 for size, detail in prompt.images)
    page_image = rule.most_tokens if rule is not None else NON_TEXT_PART_TOKENS  # a page's size is not read
    pdfs = sum(pdf_tokens(pages, page_image) for pages in prompt.pdfs)
    fixed = (overhead + prompt.ids + NON_TEXT_PART_TOKENS * prompt.non_text + images + prompt.audio + pdfs
             + prompt.hidden)
    referred = AUDIO_REFERENCE_TOKENS * prompt.audio_references
    return (with_margin(counted + keyed, 0 if exact else counter.margin_percent) + fixed + referred, counted + fixed,
            prompt.audio, referred)


def _output_cap(kind: str, body: dict[str, Any], default: int) -> tuple[int, bool, tuple[str, str]]:
    """(the most output the call may produce, whether the body was given the default cap, the
    field that bounds it and the words that tell where it came from: Call.output_cap)."""
    if kind == EMBEDDINGS:
        return 0, False, ("", "")
    names = {CHAT: ("max_completion_tokens", "max_tokens"), RESPONSES: ("max_output_tokens",),
             MESSAGES: ("max_tokens",)}[kind]
    given = [(c, n) for c, n in ((_count(body.get(n), n), n) for n in names) if c is not None]
    cap, name = max(given) if given else (default, names[0])  # both caps of a chat call: the upstream may obey either
    added = not given and kind != MESSAGES  # Anthropic refuses a call without max_tokens itself
    if added:
        body[names[0]] = default
    # the gateway's own cap is named as such (was: "max_completion_tokens 10**15", a cap the caller never sent)
    told = f"{name} {cap}" if given else (f"the gateway's default output cap {cap} "
                                          f"(TOKENTILL_GATEWAY_MAX_OUTPUT_TOKENS; the call sets no {name})")
    choices = _choices(body.get("n")) if kind == CHAT else 1
    told = f"{choices} choices of {told}" if choices != 1 else told
    if cap * choices > MAX_QUANTITY:  # the hold would refuse it naming its own max_output_tokens
        raise CallError("n", f"holds {told}: {cap * choices} output tokens, past the {MAX_QUANTITY} a hold counts")
    return cap * choices, added, (name, told)


def _priced(kind: str, body: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The dimensions of PRICED_FIELDS the call sets."""
    out = []
    for name in PRICED_FIELDS.get(kind, ()):
        value = body.get(name)
        if value is None or (name == "service_tier" and value == "auto"):
            continue
        if not isinstance(value, str) or not 0 < len(value) <= MAX_PRICED_VALUE:
            raise CallError(name, f"must be a string of 1 to {MAX_PRICED_VALUE} characters")
        out.append((name, value))
    return tuple(out)


# OpenAI bills a search by its web_search_preview tool apart from one by its web_search tool ($25 per
# 1,000 with a non-reasoning model, $10): the same model, the same output items. A responses call
# with a preview tool is a call of this dimension, which the book's web_search rules match to price
# it (pricing.premium: it must).
SEARCH_TOOL_DIMENSION = ("web_search_tool", "web_search_preview")


def _search_tool(kind: str, body: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """(SEARCH_TOOL_DIMENSION,) for a responses call with a web_search_preview tool (or a dated one)."""
    tools = body.get("tools") if kind == RESPONSES else None
    if isinstance(tools, list) and any(isinstance(t, Mapping) and isinstance(t.get("type"), str)
                                       and t["type"].startswith("web_search_preview") for t in tools):
        return (SEARCH_TOOL_DIMENSION,)
    return ()


def _chosen_by_provider(kind: str, body: Mapping[str, Any]) -> tuple[str, ...]:
    """("service_tier",) when the call leaves its tier to the provider (PROVIDER_TIERS, or none given);
    and ("inference_geo",) for an Anthropic call that names no geography: the workspace's default
    (`default_inference_geo`, "us" say) applies, reported in its usage."""
    tier = body.get("service_tier")
    chosen = ("service_tier",) if kind in PROVIDER_TIERS and (tier is None or tier in PROVIDER_TIERS[kind]) else ()
    return (*chosen, "inference_geo") if kind == MESSAGES and body.get("inference_geo") is None else chosen


def _served_tiers(kind: str, body: Mapping[str, Any]) -> tuple[str, ...]:
    """The tiers an OpenAI call naming its service tier may be served at (SERVED_TIERS), else ()."""
    tier = body.get("service_tier")
    return SERVED_TIERS.get(tier, ()) if kind in (CHAT, RESPONSES) and isinstance(tier, str) else ()


def _cache_write(kind: str, value: Any) -> str | None:
    """The cache write a call may be billed: OpenAI's chat and responses prompts, cached by OpenAI
    itself, "cache_write" (its usage's `cache_write_tokens`); an Anthropic call's, what it asks for
    with `cache_control` anywhere in its body (at the top, automatic caching; or on a block):
    "cache_write_1h" when one asks for a ttl of 1h, else "cache_write"; None without."""
    if kind in (CHAT, RESPONSES):
        return "cache_write"
    if kind != MESSAGES:
        return None
    found: str | None = None
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            control = item.get("cache_control")
            if isinstance(control, Mapping):
                if control.get("ttl") == "1h":
                    return "cache_write_1h"
                found = "cache_write"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _prediction_tokens(body: Mapping[str, Any], model: str, counter: TokenCounter) -> int:
    """The tokens of a chat call's predicted output (`prediction: {type: content, content}`, a
    string or text parts), which OpenAI bills as completion tokens where the answer rejects them:
    the model's encoding, else cl100k_base plus the margin."""
    prediction = body.get("prediction")
    content = prediction.get("content") if isinstance(prediction, Mapping) else None
    parts = [content] if isinstance(content, str) else content if isinstance(content, list) else []
    texts = [p if isinstance(p, str) else p.get("text") if isinstance(p, Mapping) else None for p in parts]
    texts = [text for text in texts if isinstance(text, str)]
    if not texts:
        return 0
    encoding, exact = counter.encoding_for(model)  # the model was checked with the prompt
    counted = sum(len(encoding.encode_ordinary(text)) for text in texts)
    return with_margin(counted, 0 if exact else counter.margin_percent)


def parse_call(kind: str, raw: bytes, *, default_max_output: int, counter: TokenCounter,
               server_tool_max_uses: int = SERVER_TOOL_MAX_USES,
               server_tool_result_tokens: int = SERVER_TOOL_RESULT_TOKENS, standard_tier: bool = False) -> Call:
    """The call in `raw` (a provider's JSON request body), or CallError. With `standard_tier`, a
    call that leaves its service tier to the provider is sent with the standard one (STANDARD_TIERS)."""
    if nested_too_deep(raw, MAX_CALL_DEPTH):  # the decoder would recurse into it (RecursionError, a 500)
        raise CallError("body", f"JSON nested deeper than {MAX_CALL_DEPTH} arrays and objects")
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        unpaired = unpaired_surrogate(raw)
        if unpaired is not None:
            raise CallError(unpaired, UNPAIRED) from None
        raise CallError("body", f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CallError("body", "must be a JSON object")
    repeated = repeated_key(raw, body)  # read last here, it may be read first upstream: an under-hold
    if repeated is not None:
        raise CallError(repeated, "given more than once in one object")
    model = body.get("model")
    if not isinstance(model, str) or not 0 < len(model) <= 200:
        raise CallError("model", "is required: a string of 1 to 200 characters")
    for flag in ("stream", "background"):  # an upstream may read "true" or 1 as true: the gateway would not
        if body.get(flag) is not None and not isinstance(body[flag], bool):
            raise CallError(flag, "must be true or false")
    if kind == RESPONSES and body.get("background") is True:
        # generated upstream after the call returns (and after a caller who streams it leaves):
        # its output would never be metered here, nor its result fetched through the gateway
        raise CallError("background", "a background response cannot be metered by the gateway: call without it")
    stream = body.get("stream") is True and kind != EMBEDDINGS
    prompt_tokens, raw_tokens, audio_tokens, referred = count_prompt(kind, body, model, counter)
    prior = kind == RESPONSES and (body.get("previous_response_id") is not None
                                   or body.get("conversation") is not None or body.get("prompt") is not None
                                   or _item_reference(body.get("input")))
    cap, changed, output_cap = _output_cap(kind, body, default_max_output)
    if kind == CHAT:
        cap += _prediction_tokens(body, model, counter)
    uses, results, containers, reused, plain = (), 0, 0, (), False
    if kind == MESSAGES:
        anthropic_unmetered(body)
        uses, results, tools_changed = server_tools(body, server_tool_max_uses, server_tool_result_tokens)
        changed, containers = changed or tools_changed, anthropic_containers(body)
        results += anthropic_mcp_servers(body) * server_tool_result_tokens  # each server's tool listing
        uses = tuple(sorted((*uses, ("code_execution", containers)))) if containers else uses
    elif kind == RESPONSES:
        uses, results, tools_changed, containers, reused = openai_tools(body, server_tool_max_uses,
                                                                        server_tool_result_tokens)
        changed = changed or tools_changed
        if body.get("prompt") is not None:  # a stored prompt may bring tools the body does not show
            plain = not uses and not results and not containers and not reused and body.get("max_tool_calls") is None
            uses, results, tools_changed, containers = template_tools(body, uses, results, containers,
                                                                      server_tool_max_uses, server_tool_result_tokens)
            changed = changed or tools_changed
    elif kind == CHAT:
        uses, results = openai_chat_search(body, server_tool_result_tokens)
    if prompt_tokens + results > MAX_QUANTITY:  # the hold would refuse it naming its own prompt_tokens
        raise CallError("tools" if kind == MESSAGES else "max_tool_calls",
                        f"holds {results} input tokens of tool results, past the {MAX_QUANTITY} a hold counts")
    if standard_tier and "service_tier" in _chosen_by_provider(kind, body):
        body["service_tier"], changed = STANDARD_TIERS[kind], True
    wanted = True
    if stream and kind == CHAT:
        options = body.get("stream_options")
        options = dict(options) if isinstance(options, Mapping) else {}
        wanted = options.get("include_usage") is True
        if not wanted:
            body["stream_options"] = {**options, "include_usage": True}
            changed = True
    call = Call(kind, model, stream, prompt_tokens + results, raw_tokens, cap,
                msgspec.json.encode(body) if changed else raw, wanted, audio_tokens, audio_tokens + referred,
                prior, uses, containers, (*_priced(kind, body), *_search_tool(kind, body)), _cache_write(kind, body),
                reused, _chosen_by_provider(kind, body), _served_tiers(kind, body), _audio_format(kind, body),
                _hidden_output(kind, body, model), output_cap=output_cap, result_tokens=results)
    if not plain:
        return call
    untooled = replace(call, prompt_tokens=prompt_tokens, tool_uses=(), container_units=0, result_tokens=0,
                       body=msgspec.json.encode({**body, "max_tool_calls": 0}))
    return replace(call, untooled=untooled)


# OpenAI's reasoning models (by their ids' start; a fine-tuned one's after "ft:"): they think in
# tokens billed as output that no stream shows, counted only in the final usage. Not their -chat
# models; not a call that asks for no reasoning (`reasoning_effort` "none").
REASONING_MODELS = ("o1", "o3", "o4", "gpt-5", "codex")


def _hidden_output(kind: str, body: Mapping[str, Any], model: str) -> bool:
    """Whether the call may generate tokens billed as output that its stream does not show: OpenAI's
    reasoning (REASONING_MODELS, or a call that asks for an effort) and a chat call's predicted
    output's rejected tokens, Anthropic's extended thinking (`thinking` enabled or adaptive:
    Claude 4 models send a summary of it, and bill all of it)."""
    if kind == MESSAGES:
        thinking = body.get("thinking")
        return isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")
    if kind == CHAT:
        effort = body.get("reasoning_effort")
        if isinstance(body.get("prediction"), Mapping):  # its rejected tokens are billed as output, never sent
            return True
    elif kind == RESPONSES:
        reasoning = body.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, Mapping) else None
    else:
        return False
    if effort is not None:
        return effort != "none"
    name = model.removeprefix("ft:")
    return name.startswith(REASONING_MODELS) and "-chat" not in name


def _item_reference(given: Any) -> bool:
    """Whether a responses input refers to an earlier item by id (`{"type": "item_reference", "id"}`,
    its type optional; or a stored response's reasoning, `{"type": "reasoning", "id", "summary"}`
    without its `encrypted_content`, which OpenAI looks up by id): the provider bills the item
    as input, which the body does not show (of reasoning, its summary alone)."""
    return isinstance(given, list) and any(
        isinstance(item, Mapping) and (item.get("type") == "item_reference"
                                       or ("type" not in item and set(item) == {"id"})
                                       or (item.get("type") == "reasoning" and not item.get("encrypted_content")))
        for item in given)


def _audio_format(kind: str, body: Mapping[str, Any]) -> str | None:
    """The format a chat call asks its answer's audio in (`audio: {"format": ...}`); a stream's is pcm16."""
    audio = body.get("audio") if kind == CHAT else None
    given = audio.get("format") if isinstance(audio, Mapping) else None
    return given if isinstance(given, str) else None

"""JSON Schemas, for the OpenAPI document, of the objects the routes take as plain JSON and the
domain validates (an estimate, usage in its three forms), and of rules between fields.

Litestar renders a `dict[str, Any]` field as any object; these say what is really accepted, so
that a client (or a fuzzer) reading the document sends what the server takes.
"""
from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar.params import Body, BodyKwarg

from api.routes.formats import free_text
from pricing.normalize import CANONICAL_FIELDS, EXTRA_FIELDS
from pricing.usage import MAX_QUANTITY

MAX_DIMENSIONS = 32
# a dimension's name (1 to this) and string value (at most this), at every entry that takes one (a reserve,
# a usage event, a price rule's match, the gateway's x-tokentill-dimensions), as a budget's dimensions
# (budgets.Short) and the usage report's groups (formats.DIMENSION_NAME) take them: a longer name was
# recorded that no budget could name and the report could not group by
MAX_DIMENSION_TEXT = 200
BIGINT = 2**63  # PostgreSQL's bigint holds -BIGINT to BIGINT - 1
# a dimension's string value: "" included, as a budget's (budgets.CreateBudgetRequest) binds it
DimensionText = Annotated[str, msgspec.Meta(max_length=MAX_DIMENSION_TEXT), free_text()]
Dimension = DimensionText | Annotated[
    int, msgspec.Meta(ge=-BIGINT, le=BIGINT - 1)] | bool
# pricing.usage refuses an empty name
DimensionName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_DIMENSION_TEXT), free_text()]
Dimensions = Annotated[dict[DimensionName, Dimension], msgspec.Meta(max_length=MAX_DIMENSIONS)]

COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_QUANTITY}
OPTIONAL_COUNT = {"anyOf": [COUNT, {"type": "null"}]}

_TEXT_PART = {"anyOf": [{"type": "string"},
                        {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}]}
_MESSAGE = {"type": "object", "properties": {
    # content parts are counted only when they are text; any other value is counted as its JSON
    "content": {"anyOf": [{"not": {"type": "array"}}, {"type": "array", "items": _TEXT_PART}]}}}

ESTIMATE = {
    "type": "object",
    "description": "Exactly one of `input_tokens`, `messages` (chat messages, counted here) or `prompt`"
                   " (text, counted here), and optionally `max_output_tokens`.",
    "properties": {"input_tokens": COUNT, "messages": {"type": "array", "items": _MESSAGE},
                   "prompt": {"type": "string"}, "max_output_tokens": COUNT},
    "additionalProperties": False,
    "oneOf": [{"required": ["input_tokens"]}, {"required": ["messages"]}, {"required": ["prompt"]}],
}

SERVICE_TIER = {"type": "string", "minLength": 1, "maxLength": 40,
                "description": "The service tier the provider reported (flex, priority, ...): it selects prices"}
INFERENCE_GEO = {"type": "string", "minLength": 1, "maxLength": 40,
                 "description": "Where the call ran, as Anthropic reports it (`inference_geo`: us, global): "
                                "it selects prices, as the service tier does"}
CANONICAL_USAGE = {
    "type": "object",
    "description": "Disjoint counts: `input_tokens` excludes cached, cache-write and audio/image/video input "
                   "tokens, `output_tokens` excludes reasoning and audio/image/video output tokens, "
                   "`cache_write_tokens` excludes one-hour writes (price book format 2 types). At least "
                   "one count, 0 where the call used nothing: usage with none ({}, only nulls) is a 422 "
                   "`validation_error` naming `usage`.",
    "properties": {**{name: OPTIONAL_COUNT for name in (*CANONICAL_FIELDS, *EXTRA_FIELDS)},
                   "service_tier": SERVICE_TIER, "inference_geo": INFERENCE_GEO},
    "additionalProperties": False,
    # at least one count (0 included): usage that counts nothing ({}, nulls) is refused, `usage`
    "anyOf": [{"required": [name], "properties": {name: COUNT}} for name in (*CANONICAL_FIELDS, *EXTRA_FIELDS)],
}


def _details(*names: str) -> dict[str, Any]:
    return {"anyOf": [{"type": "object", "properties": {n: OPTIONAL_COUNT for n in names}}, {"type": "null"}]}


_PROMPT_DETAILS = ("cached_tokens", "cache_write_tokens", "audio_tokens", "image_tokens")


OPENAI_USAGE = {
    "type": "object",
    "description": "OpenAI's `usage`, verbatim: Chat Completions (`prompt_tokens`, `completion_tokens`; an "
                   "embeddings usage has no `completion_tokens`) or Responses (`input_tokens`, `output_tokens`), "
                   "with the response's `service_tier` copied in. Subsets (cached, cache-write, reasoning, "
                   "audio, image, prediction tokens) may not exceed their totals, and `total_tokens` is their sum.",
    "oneOf": [
        {"required": ["prompt_tokens"],
         "properties": {"prompt_tokens": COUNT, "completion_tokens": COUNT, "total_tokens": OPTIONAL_COUNT,
                        "prompt_tokens_details": _details(*_PROMPT_DETAILS),
                        "completion_tokens_details": _details(
                            "reasoning_tokens", "audio_tokens", "image_tokens", "accepted_prediction_tokens",
                            "rejected_prediction_tokens"),
                        "service_tier": SERVICE_TIER, "input_tokens": False, "output_tokens": False}},
        {"required": ["input_tokens", "output_tokens"],
         "properties": {"input_tokens": COUNT, "output_tokens": COUNT, "total_tokens": OPTIONAL_COUNT,
                        "input_tokens_details": _details(*_PROMPT_DETAILS),
                        "output_tokens_details": _details("reasoning_tokens", "audio_tokens", "image_tokens"),
                        "service_tier": SERVICE_TIER,
                        "prompt_tokens": False, "completion_tokens": False,
                        "cache_creation_input_tokens": False, "cache_read_input_tokens": False}},
    ],
}

ANTHROPIC_USAGE = {
    "type": "object",
    "description": "Anthropic's `usage`, verbatim. Where `cache_creation` is given, its two counts add "
                   "up to `cache_creation_input_tokens`.",
    "required": ["input_tokens", "output_tokens"],
    "properties": {
        "input_tokens": COUNT, "output_tokens": COUNT, "cache_read_input_tokens": OPTIONAL_COUNT,
        "cache_creation_input_tokens": OPTIONAL_COUNT,
        "cache_creation": _details("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"),
        "server_tool_use": _details("web_search_requests", "web_fetch_requests"),
        "output_tokens_details": _details("thinking_tokens"), "service_tier": SERVICE_TIER,
        "inference_geo": INFERENCE_GEO,
    },
}


GEMINI_USAGE = {
    "type": "object",
    "description": "Google Gemini's `usageMetadata`, verbatim: `promptTokenCount` (with "
                   "`toolUsePromptTokenCount`) includes `cachedContentTokenCount`; `thoughtsTokenCount` is "
                   "reasoning; per-modality `promptTokensDetails`, `cacheTokensDetails`, `candidatesTokensDetails`.",
    "properties": {name: OPTIONAL_COUNT for name in (
        "promptTokenCount", "cachedContentTokenCount", "candidatesTokenCount", "thoughtsTokenCount",
        "toolUsePromptTokenCount", "totalTokenCount")},
}


def json_object(schema: dict[str, Any]) -> msgspec.Meta:
    """For a `dict[str, Any]` field that the domain validates: what it really accepts."""
    return msgspec.Meta(extra_json_schema=schema)


def exactly_one(**types: str) -> dict[str, Any]:
    """A body rule: exactly one of these fields is given (present, and not null)."""
    return {"oneOf": [{"required": [name], "properties": {name: {"type": kind}}} for name, kind in types.items()]}


def msgspec_schema(type_: Any) -> dict[str, Any]:
    """msgspec's own JSON Schema of `type_` (which keeps every constraint, where Litestar's drops
    those of list items and nested types), with its `$defs` inlined into one document."""
    schema = msgspec.json.schema(type_)
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: inline(value) for key, value in node.items() if key != "$ref"}
        if "$ref" in node:
            out = {**inline(defs[node["$ref"].rsplit("/", 1)[-1]]), **out}
        return out

    return inline(schema)


def json_body(type_: Any) -> BodyKwarg:
    """For a handler's `data`, taken as plain JSON and converted with wire.shaped: the document
    shows `type_` as msgspec sees it."""
    return Body(schema_extra=msgspec_schema(type_))

"""Provider usage objects -> canonical, disjoint counts by rating type (pricing.units).

Canonical fields (API.md) are disjoint, so no token is counted twice: ``input_tokens``
excludes cached, cache-write and audio/image/video input tokens, ``output_tokens`` excludes
reasoning and audio/image/video output tokens, ``cache_write_tokens`` excludes one-hour writes.

- OpenAI Chat Completions: ``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens``,
  ``.cache_write_tokens``, ``.audio_tokens`` and ``.image_tokens`` (cached audio and image
  tokens, where ``cached_tokens_details`` gives them, are inside both their cached and their
  modality counts); ``completion_tokens`` includes ``completion_tokens_details.reasoning_tokens``,
  ``.audio_tokens`` and ``.image_tokens`` (prediction tokens are billed as output). An
  embeddings ``usage`` has no ``completion_tokens``: none were produced.
- OpenAI Responses: the same with ``input_tokens`` / ``input_tokens_details`` and
  ``output_tokens`` / ``output_tokens_details``. Either API's details are read under the other's
  name too (an OpenAI-compatible upstream's chat answer may give Responses totals and Chat details).
- Anthropic Messages: ``input_tokens`` already excludes ``cache_creation_input_tokens`` and
  ``cache_read_input_tokens``; ``cache_creation`` splits writes into 5-minute and one-hour;
  ``server_tool_use.web_search_requests`` are web searches; thinking tokens, where
  ``output_tokens_details.thinking_tokens`` reports them, are reasoning inside ``output_tokens``.
- Google Gemini ``usageMetadata``: ``promptTokenCount`` (plus ``toolUsePromptTokenCount``)
  includes ``cachedContentTokenCount``; ``candidatesTokenCount`` and ``thoughtsTokenCount``
  (reasoning) are apart; per-modality details (``promptTokensDetails``, ``cacheTokensDetails``,
  ``candidatesTokensDetails``; a DOCUMENT counts as an image) split them further.

``service_tier``, where the provider reports it (OpenAI's response and Anthropic's usage carry
it; a caller copies OpenAI's into the usage object), becomes the ``service_tier`` dimension
that price rules match. Counts that are not billed (web fetches, prediction tokens) are kept as
informational ``details``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pricing.errors import InvalidUsageError
from pricing.units import FIELD_OF, FORMAT_1_TYPES, TYPE_OF_FIELD
from pricing.usage import MAX_QUANTITY
from pricing.usage_reader import (  # NormalizedUsage, CANONICAL_FIELDS, UNSPLIT: read from here too
    CANONICAL_FIELDS,
    TOKEN_TYPE_OF,
    UNSPLIT,
    NormalizedUsage,
    UsageReader,
    normalized,
)

# the format 2 types, and tool_tokens (format 1's `tool`: tokens the caller counts apart from its input)
EXTRA_FIELDS = tuple(f for t, f in FIELD_OF.items() if t not in FORMAT_1_TYPES or t == "tool")
_COUNTED_FIELDS = (*CANONICAL_FIELDS, *EXTRA_FIELDS)
_NO_COUNTS = {TYPE_OF_FIELD[name]: 0 for name in _COUNTED_FIELDS}
assert len(_NO_COUNTS) == len(_COUNTED_FIELDS)  # one rating type per field: no field overwrites another
# the canonical usage's strings beside its counts: the tier that served the call and where it ran
TIER_FIELDS = ("service_tier", "inference_geo")
NO_COUNT = ('gives no count: send what the call used, 0 where it used nothing '
            '({"input_tokens": 0, "output_tokens": 0})')
MODALITIES = ("audio", "image", "video")


_OTHER_SHAPE = {"prompt_tokens": "input_tokens", "completion_tokens": "output_tokens",
                "input_tokens": "prompt_tokens", "output_tokens": "completion_tokens"}


def _details(r: UsageReader, total_name: str) -> str:
    """The name of the details of `total_name` that the usage gives: its own shape's, else the other
    API's (an OpenAI-compatible upstream may send Responses totals with Chat details, or the reverse);
    both given with different counts is refused, as no count can be chosen (a count of 0 or null
    is the count left out: an upstream's SDK may spell out every field of one of them)."""
    own, other = f"{total_name}_details", f"{_OTHER_SHAPE[total_name]}_details"
    if r.obj.get(other) is None:
        return own
    if r.obj.get(own) is None:
        return other
    r.check(_counted(r.obj[own]) == _counted(r.obj[other]), own, f"differs from {other}: give one of them")
    return own


def _counted(value: Any) -> Any:
    """A details object as the counts it gives: its zeros, nulls and empty objects left out."""
    if not isinstance(value, Mapping):
        return value
    kept = {k: _counted(v) for k, v in value.items()}
    return {k: v for k, v in kept.items() if v is not None and not (type(v) is int and v == 0) and v != {}}


def _openai(r: UsageReader, prompt_name: str, completion_name: str, source: str) -> NormalizedUsage:
    """Subtract the subsets out of OpenAI's inclusive totals (both APIs), the details read under
    either API's names."""
    inp, out = _details(r, prompt_name), _details(r, completion_name)
    prompt = r.count(prompt_name, required=True)
    # an embeddings usage has no completion_tokens; a chat usage with completion details must
    completion = r.count(completion_name, required=out in r.obj or source == "openai_responses")
    cached = r.part(prompt, r.count(inp, "cached_tokens"), f"{inp}.cached_tokens", prompt_name)
    write = r.count(inp, "cache_write_tokens")
    reasoning = r.part(completion, r.count(out, "reasoning_tokens"), f"{out}.reasoning_tokens", completion_name)
    counts = {"cache_write": write, "reasoning": reasoning}
    for m in MODALITIES:  # cached audio and image are inside both the cached and the modality's counts
        modal = r.part(prompt, r.count(inp, f"{m}_tokens"), f"{inp}.{m}_tokens", prompt_name)
        counts[f"cached_input_{m}"] = r.part(modal, r.count(inp, "cached_tokens_details", f"{m}_tokens"),
                                             f"{inp}.cached_tokens_details.{m}_tokens", f"{inp}.{m}_tokens")
        counts[f"input_{m}"] = modal - counts[f"cached_input_{m}"]
        counts[f"output_{m}"] = r.part(completion, r.count(out, f"{m}_tokens"), f"{out}.{m}_tokens", completion_name)
    # each sum of details within its total, named as sent (was: the rating type it made negative)
    cached_by = sum(counts[f"cached_input_{m}"] for m in MODALITIES)
    r.within(cached, cached_by, f"{inp}.cached_tokens_details", f"audio_tokens + image_tokens + video_tokens "
             f"({cached_by}) exceed {inp}.cached_tokens ({cached})", f"{inp}.cached_tokens", prompt_name)
    counts["cached_input"] = cached - cached_by
    parts = cached + write + sum(counts[f"input_{m}"] for m in MODALITIES)
    r.within(prompt, parts, inp, f"cached_tokens + cache_write_tokens + the audio, image and video tokens not "
             f"cached ({parts}) exceed {prompt_name} ({prompt})", prompt_name)
    counts["input"] = prompt - parts
    parts = reasoning + sum(counts[f"output_{m}"] for m in MODALITIES)
    r.within(completion, parts, out, f"reasoning_tokens + audio_tokens + image_tokens + video_tokens ({parts}) "
             f"exceed {completion_name} ({completion})", completion_name)
    counts["output"] = completion - parts
    if r.obj.get("total_tokens") is not None:
        total = r.count("total_tokens")
        r.check(total == prompt + completion or r.refused("total_tokens", prompt_name, completion_name), "total_tokens",
                f"must equal {prompt_name} + {completion_name}")
    details = {f"{k}_prediction_tokens": r.part(completion, r.count(out, f"{k}_prediction_tokens"),
                                                f"{out}.{k}_prediction_tokens", completion_name)
               for k in ("accepted", "rejected")}
    return normalized(r, source, counts, r.tier("service_tier"), details)


def normalize_openai_chat(usage: Mapping[str, Any]) -> NormalizedUsage:
    """Chat Completions (or embeddings) ``usage`` -> canonical counts."""
    return _openai(UsageReader(usage, "openai_usage"), "prompt_tokens", "completion_tokens", "openai_chat")


def normalize_openai_responses(usage: Mapping[str, Any]) -> NormalizedUsage:
    """Responses API ``usage`` -> canonical counts."""
    return _openai(UsageReader(usage, "openai_usage"), "input_tokens", "output_tokens", "openai_responses")


def normalize_openai(usage: Mapping[str, Any]) -> NormalizedUsage:
    """OpenAI usage of either API, told apart by its keys (prompt_/completion_ vs input_/output_);
    an embeddings usage (``prompt_tokens`` alone) is a chat usage with no output."""
    if not isinstance(usage, Mapping):
        raise InvalidUsageError("openai_usage", "must be an object")
    chat = "prompt_tokens" in usage or "completion_tokens" in usage
    responses = "input_tokens" in usage or "output_tokens" in usage
    if chat == responses:
        raise InvalidUsageError("openai_usage", "expected prompt_tokens/completion_tokens (Chat "
                                "Completions) or input_tokens/output_tokens (Responses)")
    if responses and ("cache_creation_input_tokens" in usage or "cache_read_input_tokens" in usage):
        raise InvalidUsageError("openai_usage", "this is an Anthropic usage object")
    return normalize_openai_chat(usage) if chat else normalize_openai_responses(usage)


def normalize_anthropic(usage: Mapping[str, Any]) -> NormalizedUsage:
    """Anthropic Messages ``usage`` -> canonical counts (nested cache_creation tolerated)."""
    r = UsageReader(usage, "anthropic_usage")
    inp = r.count("input_tokens", required=True)
    out = r.count("output_tokens", required=True)
    read = r.count("cache_read_input_tokens")
    write = r.count("cache_creation_input_tokens")
    five = r.count("cache_creation", "ephemeral_5m_input_tokens")
    hour = r.count("cache_creation", "ephemeral_1h_input_tokens")
    if usage.get("cache_creation") is not None:
        if usage.get("cache_creation_input_tokens") is None:
            write = five + hour
        # more writes than their split: the anthropic package's accumulated stream usage, whose
        # total message_delta raised past message_start's split; the added ones are 5-minute writes
        # (the call's TTL unknown here), as cache_write is write - hour below, and named
        # `cache_writes_unsplit`: a settle whose reservation names its TTL takes them at it
        r.check(five + hour <= write or r.refused(*(f"cache_creation.ephemeral_{t}_input_tokens" for t in ("5m", "1h")),
                                                  "cache_creation_input_tokens"), "cache_creation",
                "ephemeral_5m + ephemeral_1h must not exceed cache_creation_input_tokens")
    thinking = r.part(out, r.count("output_tokens_details", "thinking_tokens"),
                      "output_tokens_details.thinking_tokens", "output_tokens")
    counts = {"input": inp, "cached_input": read, "cache_write": write - hour, "cache_write_1h": hour,
              "output": out - thinking, "reasoning": thinking,
              "web_search": r.count("server_tool_use", "web_search_requests")}
    details = {"web_fetch_requests": r.count("server_tool_use", "web_fetch_requests"),
               UNSPLIT: write - five - hour}  # no split at all (no cache_creation): every write
    return normalized(r, "anthropic", counts, r.tier("service_tier"), details, r.tier("inference_geo"))


GEMINI_COUNTS = ("promptTokenCount", "cachedContentTokenCount", "candidatesTokenCount", "thoughtsTokenCount",
                 "toolUsePromptTokenCount")


def normalize_gemini(usage: Mapping[str, Any]) -> NormalizedUsage:
    """Google Gemini ``usageMetadata`` -> canonical counts. One that gives none of its counts (``{}``,
    google-genai's ``model_dump()`` in snake_case, a total alone) is refused, as canonical usage
    with no count is: it was a call that used nothing."""
    r = UsageReader(usage, "gemini_usage")
    r.check(any(usage.get(name) is not None for name in GEMINI_COUNTS), "gemini_usage",
            f"gives none of Gemini's counts ({', '.join(GEMINI_COUNTS)}): send usageMetadata in its JSON "
            'names, 0 where the call used nothing ({"promptTokenCount": 0})')
    prompt = r.count("promptTokenCount") + r.count("toolUsePromptTokenCount")
    cached = r.part(prompt, r.count("cachedContentTokenCount"), "cachedContentTokenCount", "promptTokenCount",
                    "toolUsePromptTokenCount")
    thoughts = r.count("thoughtsTokenCount")
    candidates = r.count("candidatesTokenCount")
    modal_in = r.by_modality("promptTokensDetails")
    for m, n in r.by_modality("toolUsePromptTokensDetails").items():
        modal_in[m] = modal_in.get(m, 0) + n
    modal_cached, modal_out = r.by_modality("cacheTokensDetails"), r.by_modality("candidatesTokensDetails")
    counts: dict[str, int] = {"reasoning": thoughts}
    for m in MODALITIES:  # each sum of details within its total, named as sent (was: the rating type)
        given, of = modal_cached.get(m, 0), modal_in.get(m, 0)
        r.within(of, given, "cacheTokensDetails", f"{m.upper()}: {given} exceeds the {of} of promptTokensDetails + "
                 "toolUsePromptTokensDetails", "promptTokensDetails", "toolUsePromptTokensDetails")
        counts[f"cached_input_{m}"], counts[f"input_{m}"] = given, of - given
        counts[f"output_{m}"] = modal_out.get(m, 0)
    named, prompt_counts = "AUDIO + IMAGE + VIDEO", ("promptTokenCount", "toolUsePromptTokenCount")
    total = sum(modal_cached.get(m, 0) for m in MODALITIES)
    r.within(cached, total, "cacheTokensDetails", f"{named} ({total}) exceed cachedContentTokenCount ({cached})",
             "cachedContentTokenCount", *prompt_counts)
    counts["cached_input"] = cached - total
    total = cached + sum(counts[f"input_{m}"] for m in MODALITIES)
    r.within(prompt, total, "promptTokensDetails", f"cachedContentTokenCount + the AUDIO, IMAGE and VIDEO tokens not "
             f"cached ({total}) exceed promptTokenCount + toolUsePromptTokenCount ({prompt})", *prompt_counts,
             "cachedContentTokenCount", "cacheTokensDetails", "toolUsePromptTokensDetails")
    counts["input"] = prompt - total
    total = sum(counts[f"output_{m}"] for m in MODALITIES)
    r.within(candidates, total, "candidatesTokensDetails", f"{named} ({total}) exceed candidatesTokenCount "
             f"({candidates})", "candidatesTokenCount")
    counts["output"] = candidates - total
    return normalized(r, "gemini", counts, None)


_CANONICAL = frozenset(CANONICAL_FIELDS)


def _plain_canonical(usage: Mapping[str, Any]) -> NormalizedUsage | None:
    """The common case without a reader: only the five canonical fields, each an int in bounds
    or null. Anything else (an error to report, a format 2 field, a tier) returns None: the
    general path then decides, with the same result."""
    values = _plain_values(usage)
    return None if values is None else NormalizedUsage(*values)


def _plain_values(usage: Any) -> tuple[int, int, int, int, int] | None:
    """The five canonical fields of plain canonical usage, in CANONICAL_FIELDS' order (a null is
    0), or None for anything else (see `_plain_canonical`)."""
    if type(usage) is not dict:
        return None
    counted = False
    for name, value in usage.items():
        if name not in _CANONICAL:
            return None
        if value is not None:
            if type(value) is not int or not 0 <= value <= MAX_QUANTITY:
                return None
            counted = True
    if not counted:  # no count at all: the general reader refuses it
        return None
    get = usage.get
    return (get("input_tokens") or 0, get("cached_input_tokens") or 0, get("cache_write_tokens") or 0,
            get("output_tokens") or 0, get("reasoning_tokens") or 0)


_PLAIN_TYPES = tuple(TOKEN_TYPE_OF[name] for name in CANONICAL_FIELDS)


def plain_canonical_counts(usage: Any) -> tuple[dict[str, int], dict[str, Any]] | None:
    """For plain canonical usage (as `_plain_canonical` takes it): what
    `normalize_canonical(usage)` gives as `(token_counts(), as_usage_fields())`, built without
    the NormalizedUsage between them (a usage event's hot path). None: anything else."""
    values = _plain_values(usage)
    if values is None:
        return None
    return ({t: v for t, v in zip(_PLAIN_TYPES, values, strict=True) if v},
            dict(zip(CANONICAL_FIELDS, values, strict=True)))


def normalize_canonical(usage: Mapping[str, Any]) -> NormalizedUsage:
    """Validate the API's canonical ``usage`` object (unknown fields refused)."""
    plain = _plain_canonical(usage)
    return plain if plain is not None else _read_canonical(usage)


def _read_canonical(usage: Mapping[str, Any]) -> NormalizedUsage:
    r = UsageReader(usage, "usage")
    for key in usage:
        r.check(key in CANONICAL_FIELDS or key in EXTRA_FIELDS or key in TIER_FIELDS, str(key),
                "unknown usage field")
    counts = dict(_NO_COUNTS)  # a field not given counts 0: read only those given, in the same order
    for name in _COUNTED_FIELDS:
        if name in usage:
            counts[TYPE_OF_FIELD[name]] = r.count(name)
    # Usage that counts nothing at all ({}, nulls, a tier alone) is a lost report, most likely,
    # not a call that used nothing: that one says so with zeros.
    r.check(any(usage.get(name) is not None for name in _COUNTED_FIELDS), "usage", NO_COUNT)
    return normalized(r, "canonical", counts, r.tier("service_tier"), geo=r.tier("inference_geo"))


# each usage form of a settle or usage event by its field: the one table the server's reading and the SDK's check use
USAGE_FORMS = {"usage": normalize_canonical, "openai_usage": normalize_openai,
               "anthropic_usage": normalize_anthropic, "gemini_usage": normalize_gemini}

"""Provider usage objects -> canonical, disjoint token counts.

Canonical fields (API.md): ``input_tokens`` excludes cached and cache-write tokens,
``output_tokens`` excludes reasoning tokens, so no token is ever counted twice.

- OpenAI Chat Completions: ``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens``;
  ``completion_tokens`` includes ``completion_tokens_details.reasoning_tokens`` (and accepted /
  rejected prediction tokens, billed as output).
- OpenAI Responses: the same with ``input_tokens`` / ``input_tokens_details.cached_tokens`` and
  ``output_tokens`` / ``output_tokens_details.reasoning_tokens``.
- Anthropic Messages: ``input_tokens`` already excludes ``cache_creation_input_tokens`` and
  ``cache_read_input_tokens``; thinking tokens are inside ``output_tokens`` and not reported
  apart, so ``reasoning_tokens`` is 0.

Audio tokens, 1-hour cache writes and server tool requests are kept as informational subsets
(``details``); they are billed inside the canonical fields, not separately.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pricing.errors import InvalidUsageError, field_error
from pricing.usage import check_count

CANONICAL_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
                    "reasoning_tokens")
_TOKEN_TYPE_OF = {"input_tokens": "input", "cached_input_tokens": "cached_input",
                  "cache_write_tokens": "cache_write", "output_tokens": "output",
                  "reasoning_tokens": "reasoning"}


@dataclass(frozen=True, slots=True)
class NormalizedUsage:
    """Disjoint canonical counts, where they came from, and informational subsets."""

    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    source: str = "canonical"
    details: tuple[tuple[str, int], ...] = ()

    def as_usage_fields(self) -> dict[str, int]:
        """The canonical ``usage`` object of the API."""
        return {name: getattr(self, name) for name in CANONICAL_FIELDS}

    def token_counts(self) -> dict[str, int]:
        """Counts keyed by rating token type (input, cached_input, ...), zeros omitted."""
        return {_TOKEN_TYPE_OF[n]: v for n, v in self.as_usage_fields().items() if v}


class _Reader:
    """Reads integer fields of a provider object, collecting every error with its path."""

    def __init__(self, obj: object, kind: str) -> None:
        if not isinstance(obj, Mapping):
            raise InvalidUsageError(kind, "must be an object")
        self.obj = obj
        self.errors: list[dict[str, str]] = []

    def count(self, *path: str, required: bool = False) -> int:
        value: Any = self.obj
        for i, key in enumerate(path):
            if value is None:
                break
            if not isinstance(value, Mapping):
                self.errors.append(field_error(".".join(path[:i]), "must be an object"))
                return 0
            value = value.get(key)
        if value is None:
            if required:
                self.errors.append(field_error(".".join(path), "is required"))
            return 0
        return check_count(value, ".".join(path), self.errors)

    def check(self, ok: bool, name: str, message: str) -> None:
        if not ok:
            self.errors.append(field_error(name, message))

    def done(self) -> None:
        if self.errors:
            raise InvalidUsageError(self.errors)


def _split(r: _Reader, inp: str, cached_path: str, out: str, reasoning_path: str,
           source: str) -> NormalizedUsage:
    """Subtract the cached and reasoning subsets out of OpenAI's inclusive totals."""
    total = "total_tokens"
    prompt = r.count(inp, required=True)
    completion = r.count(out, required=True)
    cached = r.count(*cached_path.split("."))
    reasoning = r.count(*reasoning_path.split("."))
    r.check(cached <= prompt, cached_path, f"cached tokens exceed {inp}")
    r.check(reasoning <= completion, reasoning_path, f"reasoning tokens exceed {out}")
    if r.obj.get(total) is not None:
        r.check(r.count(total) == prompt + completion, total, f"must equal {inp} + {out}")
    r.done()
    return NormalizedUsage(prompt - cached, cached, 0, completion - reasoning, reasoning, source)


def normalize_openai_chat(usage: Mapping[str, Any]) -> NormalizedUsage:
    """Chat Completions ``usage`` -> canonical counts."""
    r = _Reader(usage, "openai_usage")
    result = _split(r, "prompt_tokens", "prompt_tokens_details.cached_tokens", "completion_tokens",
                    "completion_tokens_details.reasoning_tokens", "openai_chat")
    details = {
        "audio_input_tokens": r.count("prompt_tokens_details", "audio_tokens"),
        "audio_output_tokens": r.count("completion_tokens_details", "audio_tokens"),
        "accepted_prediction_tokens": r.count("completion_tokens_details", "accepted_prediction_tokens"),
        "rejected_prediction_tokens": r.count("completion_tokens_details", "rejected_prediction_tokens"),
    }
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    r.check(details["audio_input_tokens"] <= prompt, "prompt_tokens_details.audio_tokens",
            "audio tokens exceed prompt_tokens")
    for name in ("audio_output_tokens", "accepted_prediction_tokens", "rejected_prediction_tokens"):
        r.check(details[name] <= completion, f"completion_tokens_details.{name}",
                "exceeds completion_tokens")
    r.done()
    return _with_details(result, details)


def normalize_openai_responses(usage: Mapping[str, Any]) -> NormalizedUsage:
    """Responses API ``usage`` -> canonical counts."""
    r = _Reader(usage, "openai_usage")
    return _split(r, "input_tokens", "input_tokens_details.cached_tokens", "output_tokens",
                  "output_tokens_details.reasoning_tokens", "openai_responses")


def normalize_openai(usage: Mapping[str, Any]) -> NormalizedUsage:
    """OpenAI usage of either API, told apart by its keys (prompt_/completion_ vs input_/output_)."""
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
    r = _Reader(usage, "anthropic_usage")
    inp = r.count("input_tokens", required=True)
    out = r.count("output_tokens", required=True)
    read = r.count("cache_read_input_tokens")
    write = r.count("cache_creation_input_tokens")
    five = r.count("cache_creation", "ephemeral_5m_input_tokens")
    hour = r.count("cache_creation", "ephemeral_1h_input_tokens")
    if usage.get("cache_creation") is not None:
        if usage.get("cache_creation_input_tokens") is None:
            write = five + hour
        r.check(five + hour == write, "cache_creation",
                "ephemeral_5m + ephemeral_1h must equal cache_creation_input_tokens")
    searches = r.count("server_tool_use", "web_search_requests")
    fetches = r.count("server_tool_use", "web_fetch_requests")
    r.done()
    result = NormalizedUsage(inp, read, write, out, 0, "anthropic")
    return _with_details(result, {"cache_write_1h_tokens": hour, "web_search_requests": searches,
                                  "web_fetch_requests": fetches})


def normalize_canonical(usage: Mapping[str, Any]) -> NormalizedUsage:
    """Validate the API's canonical ``usage`` object (unknown fields refused)."""
    r = _Reader(usage, "usage")
    for key in usage:
        r.check(key in CANONICAL_FIELDS, str(key), "unknown usage field")
    counts = [r.count(name) for name in CANONICAL_FIELDS]
    r.done()
    return NormalizedUsage(*counts)


def _with_details(result: NormalizedUsage, details: Mapping[str, int]) -> NormalizedUsage:
    kept = tuple(sorted((k, v) for k, v in details.items() if v))
    return NormalizedUsage(result.input_tokens, result.cached_input_tokens, result.cache_write_tokens,
                           result.output_tokens, result.reasoning_tokens, result.source, kept)

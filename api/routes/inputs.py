"""Turning what a caller sends into what commands take: an estimate's token counts (counted
here, before any transaction, when a prompt or messages are given) and canonical usage."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pricing.errors import InvalidUsageError
from pricing.normalize import UNSPLIT, USAGE_FORMS, plain_canonical_counts
from pricing.usage import check_count

Kept = TypeVar("Kept")


@dataclass(frozen=True, slots=True)
class PreparedEstimate:
    prompt_tokens: int
    max_output_tokens: int
    stored: dict[str, Any]  # what the reservation keeps about it (counts, never the prompt)


def prepare_estimate(model: str, estimate: Mapping[str, Any]) -> PreparedEstimate:
    """Count the prompt's tokens (tiktoken, offline) or take the given count, and validate."""
    given = [k for k in ("input_tokens", "messages", "prompt") if k in estimate]
    if len(given) != 1:
        raise InvalidUsageError("estimate", "give exactly one of input_tokens, messages or prompt")
    unknown = sorted(set(estimate) - {"input_tokens", "messages", "prompt", "max_output_tokens"})
    if unknown:
        raise InvalidUsageError(f"estimate.{unknown[0]}", "unknown field")
    errors: list[dict[str, str]] = []
    max_output = check_count(estimate.get("max_output_tokens", 0), "estimate.max_output_tokens", errors)
    stored: dict[str, Any] = {"source": given[0], "max_output_tokens": max_output}
    if given[0] == "input_tokens":
        prompt = check_count(estimate["input_tokens"], "estimate.input_tokens", errors)
    else:
        from pricing.tokens import default_counter  # loads tiktoken: only when text is given

        counter = default_counter()
        try:
            counted = (counter.count_messages(estimate["messages"], model) if given[0] == "messages"
                       else counter.count_text(estimate["prompt"], model))
        except InvalidUsageError as exc:
            raise InvalidUsageError([{"field": f"estimate.{f['field']}", "message": f["message"]}
                                     for f in exc.fields]) from None
        prompt = counted.tokens
        stored.update(encoding=counted.encoding, counted_tokens=counted.raw_tokens,
                      margin_percent=counted.margin_percent)
    if errors:
        raise InvalidUsageError(errors)
    stored["input_tokens"] = prompt
    return PreparedEstimate(prompt, max_output, stored)


def usage_tokens(usage: Mapping[str, Any] | None, openai_usage: Mapping[str, Any] | None,
                 anthropic_usage: Mapping[str, Any] | None, gemini_usage: Mapping[str, Any] | None = None
                 ) -> tuple[dict[str, int], dict[str, Any]]:
    """Exactly one usage form -> (counts by rating token type, what to store with the charge)."""
    if usage is not None and openai_usage is None and anthropic_usage is None and gemini_usage is None:
        plain = plain_canonical_counts(usage)  # the common case, as below without the general reader
        if plain is not None:
            return plain[0], {"source": "usage", "reported": dict(usage), "canonical": plain[1]}
    forms = {"usage": usage, "openai_usage": openai_usage, "anthropic_usage": anthropic_usage,
             "gemini_usage": gemini_usage}
    given = {name: value for name, value in forms.items() if value is not None}
    if len(given) != 1:
        raise InvalidUsageError("usage", "give exactly one of usage, openai_usage, anthropic_usage or gemini_usage")
    name, value = next(iter(given.items()))
    normalized = USAGE_FORMS[name](value)
    stored = {"source": name, "reported": dict(value), "canonical": normalized.as_usage_fields()}
    if normalized.dimensions():  # the provider's word on the tier (and where it ran) prices it
        stored["dimensions"] = normalized.dimensions()
    if normalized.unsplit_cache_writes:  # taken at the TTL the reservation names (its settle)
        stored[UNSPLIT] = normalized.unsplit_cache_writes
    return normalized.token_counts(), stored


async def usage_or_kept(read: Callable[[], tuple[dict[str, int], dict[str, Any]]],
                        kept: Callable[[], Awaitable[Kept | None]]) -> tuple[dict[str, int], dict[str, Any]] | Kept:
    """A call's usage (`read`: usage_tokens), or, when its usage is refused, what was kept for the
    same call (`kept`: a settle's answer under its key, a usage event by its id): one taken before
    a rule on usage tightened (a `gemini_usage` of no count, 9bf37b7) is answered as it was when
    sent again; only a call never kept is refused (422)."""
    try:
        return read()
    except InvalidUsageError:
        found = await kept()
        if found is None:
            raise
        return found


def hashed_as_before(body: dict[str, Any]) -> dict[str, Any]:
    """A request body for its hash, without a `gemini_usage` it does not give: bodies sent before
    that form existed hash as they did, so their replays still match."""
    if body.get("gemini_usage") is None:
        body.pop("gemini_usage", None)
    return body

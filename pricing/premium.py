"""Prices a provider bills above its standard ones, which a price book must set itself for a call
that may be billed them: a book that does not would rate the call at a cheaper price (a fallback
type, a rule without the dimension, a price without prompt tiers), and the difference would be
given away. The gateway asks for the check (its calls are answered whatever their settle finds),
and so does an HTTP reserve naming `cache_ttl: "1h"`, by estimate or amount; a caller of the HTTP
API otherwise reports its own usage and gets the book's documented fallbacks.

- ``cache_write_1h``: Anthropic's one-hour cache write (twice the input price; a 5-minute one is
  1.25 times). Priced only by a rule of that type (a format 1 book has none: it rates one as a
  ``cache_write``).
- ``long_context``: long-context prices (Anthropic's ``context-1m`` beta: past 200,000 prompt
  tokens a call's input, output and cache tokens are billed dearer; OpenAI's past 272,000 for
  gpt-5.4 and the models genai-prices prices so). Priced only when every rule that prices the
  call's prompt and output for the model has ``prompt_tiers``.
- ``input_audio``, ``output_audio``: OpenAI's audio tokens (gpt-4o-audio-preview's audio input is
  16 times its text input price, its audio output 8 times its text output). Priced only by a rule
  of that type or of the book's ``audio`` type (a format 1 book's one price for audio in and out),
  not by the text price they fall back to.
- a premium value of a price-choosing dimension (``speed: fast``, ``service_tier: priority``,
  ``inference_geo: us``, ``web_search_tool: web_search_preview``): priced only by a rule that
  matches that dimension (one for the call's input or its output, as the book resolves them; a
  web_search rule for the search tool, PREMIUM_TYPES). The standard values (PLAIN_VALUES) and the
  cheaper ones (``flex``) need none.
"""
from __future__ import annotations

from collections.abc import Mapping

from pricing.books import DimValue, PriceVersion
from pricing.errors import UnpricedModelError
from pricing.units import TOOL_CALLS

PREMIUMS = ("cache_write_1h", "long_context", "input_audio", "output_audio")
# The values of the price-choosing dimensions billed at the standard prices, or below them: a book
# needs no rule of its own for them. Any other value (priority, scale, fast, a region) is a premium.
PLAIN_VALUES: dict[str, frozenset[str]] = {"service_tier": frozenset({"default", "standard", "flex", "auto"}),
                                           "speed": frozenset({"standard"}),
                                           "inference_geo": frozenset({"global"}),
                                           "web_search_tool": frozenset()}
# the types a premium dimension value is billed in, whose rule must match it (else: input or output)
PREMIUM_TYPES: dict[str, tuple[str, ...]] = {"web_search_tool": ("web_search",)}
# what a long-context call is billed at its long-context prices: its prompt (input, cache reads) and output
LONG_CONTEXT_TYPES = ("input", "cached_input", "output", "reasoning")


def premium_dimensions(dimensions: Mapping[str, str]) -> tuple[str, ...]:
    """The names of the price-choosing dimensions among `dimensions` whose value is a premium."""
    return tuple(sorted(name for name, value in dimensions.items()
                        if name in PLAIN_VALUES and value not in PLAIN_VALUES[name]))


def check_premiums(version: PriceVersion, model: str, dims: Mapping[str, DimValue], minute: int | None,
                   premiums: tuple[str, ...], dimensions: tuple[str, ...], cache_write: str | None) -> None:
    """UnpricedModelError when the version does not set a premium price the call may be billed:
    `premiums` (PREMIUMS), the premium `dimensions` (their values in `dims`)."""
    where = f"price book {version.book_id} version {version.version}"
    if "cache_write_1h" in premiums and version.find_rule("cache_write_1h", model, dims, minute) is None:
        raise UnpricedModelError(
            f"{where} has no cache_write_1h rule for model {model}: a prompt cached for an hour "
            "(cache_control ttl 1h) is billed at the one-hour cache write price, and would be charged "
            "at a cheaper one; add a cache_write_1h rule (format 2) or cache for 5 minutes",
            model=model, token_type="cache_write_1h")
    for audio in ("input_audio", "output_audio"):
        if audio in premiums and version.find_rule(audio, model, dims, minute) is None \
                and version.find_rule("audio", model, dims, minute) is None:
            raise UnpricedModelError(
                f"{where} has no {audio} (nor audio) rule for model {model}: the provider bills audio at "
                "its audio prices (gpt-4o-audio-preview's are 8 to 16 times its text prices), and it "
                f"would be charged at the text price; add an {audio} rule or call without audio",
                model=model, token_type=audio)
    if "long_context" in premiums:
        types = (*LONG_CONTEXT_TYPES, *((cache_write,) if cache_write else ()))
        for token_type in types:
            rule = version.resolve(token_type, model, dims, minute)
            if rule is not None and not rule.prompt_tiers:
                raise UnpricedModelError(
                    f"{where} prices {token_type} for model {model} by rule {rule.id} without prompt_tiers: "
                    "a call with the context-1m-2025-08-07 beta (Anthropic: past 200,000 prompt tokens), or whose "
                    "prompt may pass the size past which OpenAI prices the model dearer (272,000 tokens for "
                    "gpt-5.4 and later), is billed long-context prices, and would be charged the base ones; give "
                    "the model's rules prompt_tiers (above 200000 or 272000), or call without the beta or with "
                    "a shorter prompt", model=model, token_type=token_type)
    for name in dimensions:
        value = f'"{dims.get(name)}"'
        types = PREMIUM_TYPES.get(name, ("input", "output"))
        if version.format == 1 and set(types) & TOOL_CALLS:
            continue  # a format 1 book bills no per-call tool (pricing.units)
        rules = [version.resolve(t, model, dims, minute) for t in types]
        if all(rule is None for rule in rules) and set(types) & TOOL_CALLS:
            continue  # a tool the book's `unpriced: zero` gives away, as it gives away any of its calls
        if not any(rule is not None and any(key == name for key, _ in rule.match) for rule in rules):
            raise UnpricedModelError(
                f"{where} has no rule for model {model} that matches {name} {value}: the provider bills it "
                f'above its standard prices, and it would be charged at them; add rules that match {{"{name}": '
                f"{value}}} or call without it", model=model)

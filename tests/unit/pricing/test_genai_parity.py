"""Parity with genai-prices over its whole bundled snapshot: for every model it prices, random
usage shapes with every token type and feature the model has (prompt-size tiers crossed, cache
durations, modalities, tool calls, time-of-day windows, service tiers and other variants), at
random times across the snapshot's dates. The provider's own usage object (OpenAI, Anthropic,
Gemini; the canonical object for the others) is normalized and rated with the imported book; the
total must equal ``genai_prices.calc_price`` rounded half-even to the atomic unit (nano-dollar).
"""

from __future__ import annotations

import random
import warnings
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

genai_prices = pytest.importorskip("genai_prices")

from pricing.books import PriceBook  # noqa: E402
from pricing.genai import LEAF_UNITS, SINCE_ALWAYS, _contexts, _standard, provider_books  # noqa: E402
from pricing.normalize import normalize_anthropic, normalize_canonical, normalize_gemini, normalize_openai  # noqa: E402
from pricing.parse import parse_version  # noqa: E402
from pricing.rating import rate  # noqa: E402
from pricing.units import FIELD_OF, KINDS, PROMPT_TYPES  # noqa: E402
from pricing.usage import Usage  # noqa: E402

CASES_PER_MODEL = 4
TAKEN_ON = "2026-12-02"
UNTIL = datetime(2027, 6, 1, tzinfo=UTC)
OPENAI_LEAVES = {"input", "cached_input", "cache_write", "input_audio", "input_image", "cached_input_audio",
                 "cached_input_image", "output", "reasoning", "output_audio", "output_image"}
ANTHROPIC_LEAVES = {"input", "cached_input", "cache_write", "cache_write_1h", "output", "reasoning", "web_search"}
GEMINI_LEAVES = {"input", "cached_input", "output", "reasoning",
                 *(f"{k}_{m}" for k in ("input", "cached_input", "output") for m in ("audio", "image", "video"))}


def _genai_usage(leaves: dict[str, int]) -> dict[str, int]:
    from genai_prices.data_units import unit_data

    usage = {}
    for key, unit in unit_data.items():
        if key == "requests":
            continue
        dims = unit.get("dimensions", {}).items()
        usage[key] = sum(n for leaf, n in leaves.items() if dims <= LEAF_UNITS[leaf].items())
    return usage


def _openai(leaves: dict[str, int], tier: str | None) -> dict:
    g = leaves.get
    cached = g("cached_input", 0) + g("cached_input_audio", 0) + g("cached_input_image", 0)
    audio_in = g("input_audio", 0) + g("cached_input_audio", 0)
    image_in = g("input_image", 0) + g("cached_input_image", 0)
    prompt = g("input", 0) + cached + g("cache_write", 0) + g("input_audio", 0) + g("input_image", 0)
    completion = g("output", 0) + g("reasoning", 0) + g("output_audio", 0) + g("output_image", 0)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
             "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": g("cache_write", 0),
                                       "audio_tokens": audio_in, "image_tokens": image_in,
                                       "cached_tokens_details": {"audio_tokens": g("cached_input_audio", 0),
                                                                 "image_tokens": g("cached_input_image", 0)}},
             "completion_tokens_details": {"reasoning_tokens": g("reasoning", 0), "audio_tokens": g("output_audio", 0),
                                           "image_tokens": g("output_image", 0)}}
    return {**usage, "service_tier": tier} if tier else usage


def _anthropic(leaves: dict[str, int], tier: str | None) -> dict:
    g = leaves.get
    usage = {"input_tokens": g("input", 0), "output_tokens": g("output", 0) + g("reasoning", 0),
             "output_tokens_details": {"thinking_tokens": g("reasoning", 0)},
             "cache_read_input_tokens": g("cached_input", 0),
             "cache_creation_input_tokens": g("cache_write", 0) + g("cache_write_1h", 0),
             "cache_creation": {"ephemeral_5m_input_tokens": g("cache_write", 0),
                                "ephemeral_1h_input_tokens": g("cache_write_1h", 0)},
             "server_tool_use": {"web_search_requests": g("web_search", 0)}}
    return {**usage, "service_tier": tier} if tier else usage


def _gemini(leaves: dict[str, int]) -> dict:
    g = leaves.get
    modal = ("audio", "image", "video")
    cached = g("cached_input", 0) + sum(g(f"cached_input_{m}", 0) for m in modal)
    prompt = g("input", 0) + cached + sum(g(f"input_{m}", 0) for m in modal)

    def details(*names: str) -> list[dict]:
        return [{"modality": m.upper(), "tokenCount": sum(g(n.format(m), 0) for n in names)} for m in modal]

    return {"promptTokenCount": prompt, "cachedContentTokenCount": cached,
            "candidatesTokenCount": g("output", 0) + sum(g(f"output_{m}", 0) for m in modal),
            "thoughtsTokenCount": g("reasoning", 0),
            "promptTokensDetails": details("input_{}", "cached_input_{}"),
            "cacheTokensDetails": details("cached_input_{}"), "candidatesTokensDetails": details("output_{}")}


def _normalized(provider: str, leaves: dict[str, int], context: dict[str, str]):
    """The provider's own usage object for these counts, normalized as a settle does."""
    tier = context.get("service_tier")
    if provider == "openai" and set(leaves) <= OPENAI_LEAVES:
        return normalize_openai(_openai(leaves, tier))
    if provider == "anthropic" and set(leaves) <= ANTHROPIC_LEAVES:
        return normalize_anthropic(_anthropic(leaves, tier))
    if provider == "google" and set(leaves) <= GEMINI_LEAVES and tier is None:
        return normalize_gemini(_gemini(leaves))
    # a call that used nothing says so with a zero (usage with no count at all is refused)
    canonical = {FIELD_OF[t]: n for t, n in leaves.items() if t != "request"} or {"input_tokens": 0}
    return normalize_canonical({**canonical, **({"service_tier": tier} if tier else {})})


def _shape(rng: random.Random, priced: set[str], tiers: list[int]) -> dict[str, int]:
    """Random counts of the priced leaves (and now and then one more), sometimes past a tier."""
    leaves = {}
    for leaf in sorted(priced | ({rng.choice(sorted(LEAF_UNITS))} if rng.random() < 0.3 else set())):
        if leaf == "request" or rng.random() < 0.2:
            continue
        per = KINDS[leaf].per
        leaves[leaf] = rng.randint(1, 40) if per in (1, 3600) else rng.choice(
            [rng.randint(1, 999), rng.randint(1_000, 60_000), rng.randint(1, 10**6)])
    if tiers and rng.random() < 0.6:  # the whole prompt just below, at, or past a threshold
        others = sum(n for t, n in leaves.items() if t in PROMPT_TYPES and t != "input")
        target = rng.choice(tiers) + rng.choice([-1, 0, 1, 2, rng.randint(3, 50_000)])
        if target > others:
            leaves["input"] = target - others
    return leaves


def _time(rng: random.Random, starts: list[datetime], windows: list[tuple[int, int]]) -> datetime:
    i = rng.randrange(len(starts))
    end = starts[i + 1] if i + 1 < len(starts) else UNTIL
    start = max(starts[i], datetime(2024, 1, 1, tzinfo=UTC))
    at = start + timedelta(seconds=rng.randrange(int((end - start).total_seconds())))
    if windows and rng.random() < 0.5:
        w = rng.choice(windows)
        minute = (w[0] + rng.randrange((w[1] - w[0]) % 1440)) % 1440
        at = at.replace(hour=minute // 60, minute=minute % 60)
    return at


def _cases(provider, model, book, rng):
    from genai_prices.data_units import unit_data

    keys = {u.get("price_key", k): k for k, u in unit_data.items()}
    base, windows = _standard(model, datetime.now(UTC).date())
    priced_keys = {k for v in (base, *(p for _, p in windows), *(v.prices for v in model.price_variants or ()))
                   for k, x in vars(v).items() if x is not None and not k.startswith("_")}
    priced = {leaf for leaf, dims in LEAF_UNITS.items() for k in priced_keys if k in keys
              and unit_data[keys[k]].get("dimensions", {}).items() <= dims.items()}
    tiers = sorted({t.start for k in priced_keys for t in getattr(getattr(base, k, None), "tiers", [])})
    contexts = _contexts(model)
    for _ in range(CASES_PER_MODEL):
        yield (_shape(rng, priced, tiers), dict(rng.choice(contexts)),
               _time(rng, [v.effective_from for v in book.versions], [w for w, _ in windows]))


def test_rating_the_imported_books_agrees_with_genai_prices_over_the_whole_snapshot():
    from genai_prices import Usage as GenaiUsage
    from genai_prices import calc_price
    from genai_prices.data import providers

    rng = random.Random(14)
    books = {b.provider: b for b in provider_books(taken_on=TAKEN_ON)}
    models = cases = 0
    mismatches = []
    for provider in providers:
        plan = books[provider.id]
        book = PriceBook(plan.book_id, "USD", tuple(
            parse_version({"id": plan.book_id, "currency": "USD", "effective_from": at.isoformat(), "rules": rules,
                           "format": 2, "unpriced": "zero"}) for at, rules in plan.versions))
        for model in provider.models:
            if model.id in plan.skipped:
                continue
            models += 1
            name = plan.names[model.id][0]
            for leaves, context, at in _cases(provider, model, book, rng):
                cases += 1
                normalized = _normalized(provider.id, leaves, context)
                assert normalized.token_counts() == {k: v for k, v in leaves.items() if v}
                version = book.version_at(at)
                tokens = normalized.token_counts()
                if version.find_rule("request", name, {}) is not None:
                    tokens["request"] = 1
                dims = {**context, **normalized.dimensions()}
                ours = rate(Usage(name, tokens, at, dims), version).total_units
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    theirs = calc_price(GenaiUsage(**_genai_usage(leaves)), name, provider_id=provider.id,
                                        genai_request_timestamp=at, price_context=context or None).total_price
                expected = int(theirs.scaleb(9).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
                if ours != expected:
                    mismatches.append((provider.id, model.id, leaves, context, at.isoformat(), ours, expected))
    skipped = {f"{b.provider}/{m}": why for b in books.values() for m, why in b.skipped.items()}
    print(f"\nparity: {models} models, {cases} cases, {len(mismatches)} mismatches; not expressed: {skipped}")
    assert mismatches == []
    assert models >= 2300 and cases >= 4 * 2300
    assert set(skipped) == {"groq/whisper-large-v3", "groq/whisper-large-v3-turbo"}
    assert SINCE_ALWAYS < UNTIL


def test_the_snapshot_gives_a_models_context_window_by_genai_prices_own_lookup():
    from pricing.genai import context_window

    # genai-prices' data: gpt-4o 128,000 tokens, gpt-5 400,000 (a dated name finds its model)
    assert context_window("openai", "gpt-4o") == 128_000
    assert context_window("openai", "gpt-5-2025-08-07") == 400_000
    assert context_window("openai", "gpt-test") is None and context_window("nobody", "gpt-4o") is None

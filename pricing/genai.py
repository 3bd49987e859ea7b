"""Price books from genai-prices' bundled data snapshot (no network): one format 2 book per
provider, ``genai-<provider>``, one version per date the snapshot's prices change.

genai-prices prices *units* (input tokens, cache reads, audio input tokens, web searches, ...)
that nest: a token is priced by the most specific unit the model prices that contains it, and
tokens of no priced unit are free. Rating's types are disjoint leaves of those units
(:mod:`pricing.units`) whose fallbacks follow the same nesting, so a model needs a rule only for
each unit it prices, plus one for a leaf whose fallback would land elsewhere. Conditional prices
become versions (a start date) and rules with ``hours`` (a time of day); price variants become
rules that ``match`` the variant's context (``service_tier``, ``processing``, ...), with a rule
for each combination of two variants so that precedence orders them; prompt-size tiers become
``prompt_tiers``. The books' ``unpriced`` policy is ``zero``, as genai-prices'. A model this
cannot express is listed with the reason instead.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pricing.books import FALLBACKS, PriceVersion
from pricing.errors import PriceBookValidationError
from pricing.money import pricing_context
from pricing.parse import parse_rule
from pricing.rule_fields import format_hours
from pricing.units import KINDS, TOKEN_TYPES

SOURCE = "genai-prices"
SINCE_ALWAYS = datetime(2000, 1, 1, tzinfo=UTC)  # prices the snapshot gives no start date
_T = {"family": "tokens"}
_IN, _OUT = {**_T, "direction": "input"}, {**_T, "direction": "output"}
LEAF_UNITS: dict[str, dict[str, str]] = {  # rating type -> the genai-prices unit dimensions of its tokens
    "input": _IN, "cached_input": {**_IN, "token_type": "cache_read"},
    "cache_write": {**_IN, "token_type": "cache_write"},
    "cache_write_1h": {**_IN, "token_type": "cache_write", "cache_ttl": "1h"},
    **{f"input_{m}": {**_IN, "modality": m} for m in ("audio", "image", "video")},
    **{f"cached_input_{m}": {**_IN, "modality": m, "token_type": "cache_read"} for m in ("audio", "image", "video")},
    "output": _OUT, "reasoning": {**_OUT, "token_type": "reasoning"}, "citation": {**_OUT, "token_type": "citation"},
    **{f"output_{m}": {**_OUT, "modality": m} for m in ("audio", "image", "video")},
    "web_search": {"family": "tool_calls", "tool_type": "web_search"},
    "file_search": {"family": "tool_calls", "tool_type": "storage_search"},
    "code_execution": {"family": "tool_calls", "tool_type": "code_execution"},
    "request": {"family": "requests"},
    "input_characters": {"family": "characters", "direction": "input"},
    "input_message": {"family": "messages", "direction": "input", "modality": "text"},
    "audio_seconds": {"family": "durations", "modality": "audio"},
    "input_audio_seconds": {"family": "durations", "direction": "input", "modality": "audio"},
    "document_page": {"family": "document_pages", "direction": "input"},
    "annotated_document_page": {"family": "document_pages", "direction": "input", "page_type": "annotated"},
}
LEAVES = tuple(t for t in TOKEN_TYPES if t in LEAF_UNITS)  # fallback targets come first
UNSUPPORTED = {("groq", "whisper-large-v3"): "bills at least 10 seconds of audio per call",
               ("groq", "whisper-large-v3-turbo"): "bills at least 10 seconds of audio per call"}

Price = tuple[Decimal, tuple[tuple[int, Decimal], ...]]  # base, prompt tiers (above, price)
Situation = tuple[tuple[tuple[str, str], ...], tuple[int, int] | None]  # variant context, hours


@dataclass(slots=True)
class ProviderBook:
    """The versions of one provider's book, and the models left out with the reason."""

    provider: str
    book_id: str
    pricing_url: str | None
    versions: list[tuple[datetime, list[dict[str, Any]]]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    models: int = 0
    names: dict[str, list[str]] = field(default_factory=dict)  # model id -> the names its rules use


def _units() -> dict[str, tuple[dict[str, str], int]]:
    from genai_prices.data_units import unit_data

    return {u.get("price_key", k): (dict(u.get("dimensions", {})), int(u["per"])) for k, u in unit_data.items()}


def _leaf_prices(prices: Mapping[str, Any], units: Mapping[str, tuple[dict[str, str], int]]) -> dict[str, Price]:
    """Each leaf's price: the most specific unit priced that contains it, per our unit."""
    out: dict[str, Price] = {}
    for leaf, dims in LEAF_UNITS.items():
        best: tuple[int, str] | None = None
        for key in prices:
            unit = units.get(key)
            if unit is not None and unit[0].items() <= dims.items() and (best is None or len(unit[0]) > best[0]):
                best = (len(unit[0]), key)
        if best is not None:
            out[leaf] = _converted(prices[best[1]], units[best[1]][1], KINDS[leaf].per)
    return out


def _converted(value: Any, their_per: int, our_per: int) -> Price:
    with pricing_context():
        if hasattr(value, "tiers"):
            return (value.base * our_per / their_per,
                    tuple((t.start, t.price * our_per / their_per) for t in sorted(value.tiers, key=lambda t: t.start)))
        return value * our_per / their_per, ()


def _price_fields(price: Price) -> dict[str, Any]:
    fields: dict[str, Any] = {"price": _text(price[0])}
    if price[1]:
        fields["prompt_tiers"] = [{"above": above, "price": _text(p)} for above, p in price[1]]
    return fields


def _text(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def _prices_dict(model_price: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(model_price).items() if v is not None and not k.startswith("_")}


def _refs(provider: Any, model: Any) -> list[str]:
    """The names that select this model: its id and the exact names its match logic lists,
    where genai-prices' own lookup resolves them to this model; failing those, the prefixes and
    fragments it matches (AWS's regional ``us.anthropic.claude-...`` names, say)."""
    exact = [n for n in dict.fromkeys([model.id, *_literals(model.match, ("equals",))])
             if provider.find_model(n) is model]
    return exact or [n for n in dict.fromkeys(_literals(model.match, ("starts_with", "contains")))
                     if provider.find_model(n) is model]


def _literals(clause: Any, kinds: tuple[str, ...]) -> Iterator[str]:
    for kind in kinds:
        if isinstance(getattr(clause, kind, None), str):
            yield getattr(clause, kind).lower()
    for child in (getattr(clause, "or_", None) or ()):
        yield from _literals(child, kinds)


def _dates(model: Any) -> set[date]:
    found = {c.constraint.start_date for c in (model.prices if isinstance(model.prices, list) else ())
             if hasattr(getattr(c, "constraint", None), "start_date")}
    found |= {v.constraint.start_date for v in model.price_variants or () if hasattr(v.constraint, "start_date")}
    return found


def _standard(model: Any, day: date) -> tuple[Any, list[tuple[tuple[int, int], Any]]]:
    """The standard prices from ``day`` on and the time-of-day windows over them (later wins)."""
    if not isinstance(model.prices, list):
        return model.prices, []
    base_index = 0
    for i in range(len(model.prices) - 1, -1, -1):
        c = model.prices[i].constraint
        if c is None or (hasattr(c, "start_date") and c.start_date <= day):
            base_index = i
            break
    windows = [(_minutes(c.constraint), c.prices) for c in model.prices[base_index + 1:]
               if hasattr(c.constraint, "start_time")]
    return model.prices[base_index].prices, windows


def _minutes(constraint: Any) -> tuple[int, int]:
    return tuple(t.hour * 60 + t.minute for t in (constraint.start_time, constraint.end_time))  # type: ignore[return-value]


def _with_variants(base: Mapping[str, Any], model: Any, context: Mapping[str, str], day: date) -> dict[str, Any]:
    """genai-prices' resolution: each price key from the first active variant the context matches."""
    resolved = dict(base)
    taken: set[str] = set()
    for variant in model.price_variants or ():
        c = variant.constraint
        if c is not None and hasattr(c, "start_date") and c.start_date > day:
            continue
        if all(context.get(k) == v for k, v in variant.when.items()):
            for key, price in _prices_dict(variant.prices).items():
                if key not in taken:
                    resolved[key] = price
                    taken.add(key)
    return resolved


def _contexts(model: Any) -> list[tuple[tuple[str, str], ...]]:
    """Every combination of variant values (each key present or absent), fewest keys first."""
    values: dict[str, list[str]] = {}
    for variant in model.price_variants or ():
        for k, v in variant.when.items():
            if v not in values.setdefault(k, []):
                values[k].append(v)
    keys = sorted(values)
    combos = itertools.product(*[[None, *values[k]] for k in keys])
    out = [tuple((k, v) for k, v in zip(keys, combo, strict=True) if v is not None) for combo in combos]
    return sorted(out, key=len)


class _Resolver:
    """Our precedence, for one model's rules: the most specific rule of the first type in the
    leaf's fallback chain that has one; None on a tie (precedence could not order them)."""

    def __init__(self) -> None:
        self.rules: dict[str, list[tuple[Situation, Price]]] = {}

    def add(self, leaf: str, situation: Situation, price: Price) -> None:
        self.rules.setdefault(leaf, []).append((situation, price))

    def price(self, leaf: str, situation: Situation) -> Price | bool | None:
        context, hours = situation
        for candidate in (leaf, *FALLBACKS.get(leaf, ())):
            found = [(len(c) + (h is not None), p) for (c, h), p in self.rules.get(candidate, ())
                     if set(c) <= set(context) and (h is None or h == hours)]
            if found:
                top = max(n for n, _ in found)
                best = [p for n, p in found if n == top]
                return best[0] if len(best) == 1 else False
        return None


def model_rules(provider: Any, model: Any, day: date, units: Mapping[str, tuple[dict[str, str], int]],
                taken_on: str) -> list[dict[str, Any]]:
    """The rules pricing one model from ``day`` on (until the next date it changes)."""
    base, windows = _standard(model, day)
    resolver = _Resolver()
    rules: list[dict[str, Any]] = []
    source = f"{SOURCE}: {(provider.pricing_urls or [provider.id])[0]}"
    taken = day if day > SINCE_ALWAYS.date() else date.fromisoformat(taken_on)
    situations = [(c, h) for c in _contexts(model) for h in (None, *[w for w, _ in windows])]
    for context, hours in sorted(situations, key=lambda s: len(s[0]) + (s[1] is not None)):
        standard = next((p for w, p in reversed(windows) if w == hours), base) if hours else base
        prices = _leaf_prices(_with_variants(_prices_dict(standard), model, dict(context), day), units)
        for leaf in LEAVES:
            want = prices.get(leaf)
            if want is None or resolver.price(leaf, (context, hours)) == want:
                continue
            resolver.add(leaf, (context, hours), want)
            rules.append(_rule(model.id, leaf, context, hours, want, source, taken))
    if not rules:  # genai-prices prices nothing of it: free, and a model the book knows (not unpriced)
        rules.append(_rule(model.id, "input", (), None, (Decimal(0), ()), source, taken))
    return rules


def _rule(model: str, leaf: str, context: tuple[tuple[str, str], ...], hours: tuple[int, int] | None,
          price: Price, source: str, taken: date) -> dict[str, Any]:
    suffix = "".join(f":{k}={v}" for k, v in context) + (f"@{hours[0]}-{hours[1]}" if hours else "")
    rule: dict[str, Any] = {"id": f"{model}:{leaf}{suffix}", "model": model, "token_type": leaf,
                            **_price_fields(price), "source": source, "source_date": taken.isoformat()}
    if context:
        rule["match"] = dict(context)
        rule["label"] = ", ".join(v for _, v in context)[:60]
    if hours:
        rule["hours"] = format_hours(hours)
        rule["label"] = ", ".join(filter(None, [rule.get("label"), "off-peak"]))
    return rule


@functools.lru_cache(maxsize=4096)  # model names are the callers': bounded
def context_window(provider_id: str, model: str) -> int | None:
    """The context window (most input and output tokens of one call) genai-prices' snapshot gives
    the provider's model, as its own lookup finds the model by name; None when it knows none.
    The first call loads the snapshot (about a second): call it off an event loop."""
    from genai_prices.data import providers

    provider = next((p for p in providers if p.id == provider_id), None)
    found = provider.find_model(model) if provider is not None else None
    window = getattr(found, "context_window", None)
    return window if isinstance(window, int) and window > 0 else None


@functools.lru_cache(maxsize=4096)  # model names are the callers': bounded
def long_context_above(provider_id: str, model: str) -> int | None:
    """The prompt size past which genai-prices' snapshot prices the provider's model dearer (the
    smallest start of its prices' prompt tiers: OpenAI's gpt-5.4 and later past 272,000 tokens),
    as its own lookup finds the model by name; None when it prices the model by no prompt size.
    The first call loads the snapshot: call it off an event loop."""
    from genai_prices.data import providers

    provider = next((p for p in providers if p.id == provider_id), None)
    found = provider.find_model(model) if provider is not None else None
    return min(_tier_starts(found), default=None)


@functools.lru_cache(maxsize=16)
def lowest_long_context(provider_id: str) -> int | None:
    """The smallest prompt size past which genai-prices' snapshot prices any model of the provider
    dearer (a call whose prompt is no larger needs no look-up); None when it prices none so."""
    from genai_prices.data import providers

    found = [start for p in providers if p.id == provider_id for m in p.models for start in _tier_starts(m)]
    return min(found, default=None)


def _tier_starts(model: Any) -> list[int]:
    prices = getattr(model, "prices", None)
    given = prices if isinstance(prices, list) else [prices] if prices is not None else []
    return [tier.start for price in given for value in vars(getattr(price, "prices", price)).values()
            for tier in getattr(value, "tiers", None) or ()]


def provider_books(provider_id: str | None = None, model_id: str | None = None, *,
                   taken_on: str) -> list[ProviderBook]:
    """One book per provider of the snapshot (or the one named), with its dated versions."""
    from genai_prices.data import providers

    units = _units()
    books = []
    for provider in providers:
        if provider_id is not None and provider.id != provider_id:
            continue
        book = ProviderBook(provider.id, f"genai-{provider.id}", (provider.pricing_urls or [None])[0])
        models = [m for m in provider.models if model_id is None or m.id == model_id]
        book.models = len(models)
        days = [SINCE_ALWAYS.date(), *sorted({d for m in models for d in _dates(m)})]
        per_model = {m.id: _model_versions(provider, m, days, units, taken_on) for m in models}
        book.skipped = {mid: v for mid, v in per_model.items() if isinstance(v, str)}
        book.names = {m.id: _refs(provider, m) for m in models if m.id not in book.skipped}
        for day in days:
            rules = [r for m in models if not isinstance(per_model[m.id], str)
                     for r in per_model[m.id][day]]  # type: ignore[index]
            book.versions.append((datetime.combine(day, datetime.min.time(), UTC), rules))
        books.append(book)
    return books


def _model_versions(provider: Any, model: Any, days: list[date], units: Mapping[str, tuple[dict[str, str], int]],
                    taken_on: str) -> dict[date, list[dict[str, Any]]] | str:
    """The model's rules in force from each day (under each name that selects it), or the
    reason it cannot be expressed."""
    if (provider.id, model.id) in UNSUPPORTED:
        return UNSUPPORTED[(provider.id, model.id)]
    own = sorted(_dates(model))
    refs = _refs(provider, model)
    if not refs:
        return "genai-prices' own lookup selects it by no exact name (its id does not match its match logic)"
    by_start: dict[date, list[dict[str, Any]]] = {}
    out = {}
    for day in days:
        start = max((d for d in own if d <= day), default=SINCE_ALWAYS.date())
        if start not in by_start:
            try:
                rules = model_rules(provider, model, start, units, taken_on)
                PriceVersion("check", "USD", SINCE_ALWAYS, tuple(parse_rule(r) for r in rules), format=2,
                             unpriced="zero")
            except PriceBookValidationError as exc:
                return "; ".join(f"{f['field']}: {f['message']}" for f in exc.fields[:3])
            by_start[start] = [{**r, "id": r["id"].replace(model.id, ref, 1), "model": ref}
                               for ref in refs for r in rules]
        out[day] = by_start[start]
    return out

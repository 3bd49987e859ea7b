"""Upper-bound cost of a model call before it runs, for the reservation hold.

The bound is: prompt tokens at the input price, plus ``max_output_tokens`` at the dearest
price of the output side (output, reasoning, audio, image and video output, citations: a model
may spend its whole output budget on any of them), plus one call of any per-request fee rule.
Tiered rules count at their dearest tier; customer contract prices apply, discounts and
allowances do not (they only lower a bill, and a hold must not be too small). The result is a
:class:`~pricing.rating.Rating` rounded by the same single rule as any entry. Unpriced usage raises ``unpriced_model``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from pricing.books import REPORTED_DIMENSIONS, DimValue, PriceBook, PriceVersion, Rule, model_rank, per_units
from pricing.errors import InvalidUsageError, UnpricedModelError, field_error, wire_time
from pricing.fast_rating import CACHE_LIMIT, charges_requests, dims_key
from pricing.money import DEFAULT_SCALE, discount_unit, per_amount, pricing_context
from pricing.overrides import Overrides
from pricing.premium import PREMIUMS, check_premiums
from pricing.rating import Line, Rating, build_rating
from pricing.units import FORMAT_1_TYPES, KINDS, MODALITY_TYPES, OUTPUT_TYPES, TOOL_CALLS
from pricing.usage import Usage, check_count


def _unit_price(rule: Rule, model: str, token_type: str, overrides: Overrides,
                prompt: int) -> tuple[Decimal, str | None, int | None]:
    contract = overrides.contract_for(model, token_type, rule.token_type)
    if contract:
        return contract.price, contract.id, None
    if rule.prompt_tiers:
        price, tier = rule.price_at(prompt)
        return price, None, tier
    return rule.max_price(), None, None


def _line(version: PriceVersion, model: str, token_type: str, quantity: int, rule: Rule | None,
          overrides: Overrides, prompt: int) -> Line | None:
    if rule is None:
        return None  # unpriced, and the version's policy is zero
    price, override_id, tier = _unit_price(rule, model, token_type, overrides, prompt)
    with pricing_context():
        amount = per_amount(quantity * price, per_units(token_type))
    return Line("usage", token_type, quantity, price, amount, 0, rule.id, version.version, model, override_id, tier)


def _version(book_or_version: PriceBook | PriceVersion, at: datetime) -> PriceVersion:
    if isinstance(book_or_version, PriceBook):
        return book_or_version.version_at(at)
    if at < book_or_version.effective_from:
        raise UnpricedModelError(f"version {book_or_version.version} is not in force at {wire_time(at)}")
    return book_or_version


def estimate_upper_bound(
    version: PriceBook | PriceVersion,
    model: str,
    prompt_tokens: int,
    max_output_tokens: int,
    dimensions: Mapping[str, DimValue] | None,
    at: datetime,
    *,
    overrides: Overrides | None = None,
    scale: int = DEFAULT_SCALE,
    input_audio_tokens: int = 0,
    prior_context_tokens: int | None = None,
    tool_uses: Mapping[str, int] | None = None,
    prompt_cache_write: str | None = None,
    chosen_by_provider: tuple[str, ...] = (),
    premiums: tuple[str, ...] = (),
    premium_dimensions: tuple[str, ...] = (),
) -> Rating:
    """The most a call can cost: prompt at input price (the `input_audio_tokens` of it, audio the
    caller counted, at the audio input price, else input's), output budget at the dearest output-side
    price (pricing.units.OUTPUT_TYPES; the first of equals), plus any per-request fee; rounded
    once like any entry. Prices tiered by prompt size are taken at the tier the estimated prompt
    reaches (a prompt estimated past 272k tokens holds at the long-context price); rules with
    hours at the time of the reserve.

    `prior_context_tokens` (not None): the call continues a conversation the provider bills as
    input but `prompt_tokens` does not count (OpenAI's `previous_response_id`): the prompt is held
    at the model's context window as the book names it (pricing.books: the rules that price its
    input and output, else the version's), else at `prior_context_tokens`; never below its count.

    `tool_uses`: the most uses of per-call tools the provider may run itself ({"web_search": 5}),
    each held at its rule's price; no rule is `unpriced_model` (refused before the call, never
    given away), unless the version rates such usage at nothing (`unpriced: zero`). A format 1
    book holds none: it charges none (pricing.units).

    `prompt_cache_write` ("cache_write", "cache_write_1h"): the call may write its prompt to the
    provider's cache (Anthropic's `cache_control`), billed at that type's price: the prompt (but
    its audio) is held at the dearer of it and the input price (a format 1 book: its cache_write).

    `chosen_by_provider` ("service_tier",): dimensions the call leaves to the provider (OpenAI's
    service_tier "auto"), whose answer reports the values that price the charge: held at the
    dearest of the call as given and each combination of the values the version's rules for the
    model match for them (reportable_variants: a rule may match a tier and a geography together).

    `premiums` (pricing.premium.PREMIUMS: "cache_write_1h", "long_context") and
    `premium_dimensions` (names of `dimensions` set to a premium value: speed fast): prices the
    call may be billed above the standard ones, which the version must set itself, else
    `unpriced_model` (pricing.premium), whatever its `unpriced` policy."""
    if premiums or premium_dimensions:
        _check_premiums(version, model, dimensions, at, premiums, premium_dimensions, prompt_cache_write)
    if chosen_by_provider:
        return held_choices(version, model, prompt_tokens, max_output_tokens, dimensions, at, chosen_by_provider,
                            overrides=overrides, scale=scale, input_audio_tokens=input_audio_tokens,
                            prior_context_tokens=prior_context_tokens, tool_uses=tool_uses,
                            prompt_cache_write=prompt_cache_write)[0]
    errors: list[dict[str, str]] = []
    check_count(prompt_tokens, "prompt_tokens", errors)
    check_count(max_output_tokens, "max_output_tokens", errors)
    check_count(input_audio_tokens, "input_audio_tokens", errors)
    if prior_context_tokens is not None:
        check_count(prior_context_tokens, "prior_context_tokens", errors)
    for unit, uses in (tool_uses or {}).items():
        if unit not in TOOL_CALLS:
            errors.append(field_error(f"tool_uses.{unit}", "is not a per-call tool"))
        else:
            check_count(uses, f"tool_uses.{unit}", errors)
    if prompt_cache_write not in (None, *CACHE_WRITE_TYPES):
        errors.append(field_error("prompt_cache_write", f"must be one of {', '.join(CACHE_WRITE_TYPES)}"))
    if not errors and input_audio_tokens > prompt_tokens:
        errors.append(field_error("input_audio_tokens", "is part of prompt_tokens: at most it"))
    if errors:
        raise InvalidUsageError(errors)
    probe = Usage(model, {}, at, dimensions or {})  # validates model, dimensions and time
    resolved = _version(version, probe.occurred_at)
    overrides = overrides or _NO_OVERRIDES
    dims = probe.dimension_dict
    utc = probe.occurred_at  # hours are UTC windows, whatever the offset `at` was given in
    minute = utc.hour * 60 + utc.minute if resolved.timed else None
    prompt_tokens = _held_prompt(resolved, model, dims, minute, prompt_tokens, prior_context_tokens)

    def line(token_type: str, quantity: int) -> Line | None:
        rule = _resolved_rule(resolved, token_type, model, probe.dimensions, minute)
        return _line(resolved, model, token_type, quantity, rule, overrides, prompt_tokens)

    text = prompt_tokens - input_audio_tokens
    if not text and resolved.prices_model(model):
        lines = []  # no prompt needs no input price, as no output budget needs no output price
    elif prompt_cache_write is None:
        lines = [line("input", text)]
    else:  # written to the cache: at the dearer price (a type a format 1 book does not know, as its own)
        cache = prompt_cache_write if resolved.format != 1 else KINDS[prompt_cache_write].legacy or "cache_write"
        priced = [ln for ln in (line("input", text), line(cache, text)) if ln is not None]
        lines = [max(priced, key=lambda ln: ln.unit_price) if priced else None]
    if input_audio_tokens:
        lines.append(line("input_audio", input_audio_tokens))
    if max_output_tokens:  # a call that produces no output (embeddings) needs no output price
        # a type no rule prices falls back to output's price: only the others can be dearer
        # (an output modality also by its format 1 type: audio output at a book's `audio` rule)
        types = _output_types(resolved.token_types)
        types += _contract_output_types(overrides, types, resolved.format)
        outputs = [ln for ln in (line(t, max_output_tokens) for t in types) if ln]
        lines.append(max(outputs, key=lambda ln: ln.unit_price) if outputs else None)
    if resolved.format != 1:
        lines += [line(unit, uses) for unit, uses in (tool_uses or {}).items() if uses]
    if charges_requests(resolved, model, probe.dimensions, utc):
        lines.append(line("request", 1))
    usage = [ln for ln in lines if ln is not None and ln.quantity]
    return build_rating(resolved, [*usage, *_whole_discounts(usage, overrides)], scale)


def held_choices(version: PriceBook | PriceVersion, model: str, prompt_tokens: int, max_output_tokens: int,
                 dimensions: Mapping[str, DimValue] | None, at: datetime, chosen_by_provider: tuple[str, ...] = (),
                 *, premiums: tuple[str, ...] = (), premium_dimensions: tuple[str, ...] = (),
                 **options: Any) -> tuple[Rating, dict[str, DimValue]]:
    """`estimate_upper_bound` (its other keywords in `options`), and the values of the dimensions
    it leaves to the provider (`chosen_by_provider`) that the hold was priced at: those of the
    dearest variant (the first of equals: the call as given, which sets none). A settlement whose
    answer does not tell them is charged at them (api.gateway.forwarding), as the hold priced it."""
    if not chosen_by_provider:  # most calls: the estimate itself
        return estimate_upper_bound(version, model, prompt_tokens, max_output_tokens, dimensions, at,
                                    premiums=premiums, premium_dimensions=premium_dimensions, **options), {}
    if premiums or premium_dimensions:
        _check_premiums(version, model, dimensions, at, premiums, premium_dimensions,
                        options.get("prompt_cache_write"))
    given = dimensions or {}
    rating, variant = max(((estimate_upper_bound(version, model, prompt_tokens, max_output_tokens, variant, at,
                                                 **options), variant)
                           for variant in reportable_variants(version, model, given, at, chosen_by_provider)),
                          key=lambda pair: pair[0].total_units)
    return rating, {name: variant[name] for name in chosen_by_provider if name in variant and name not in given}


def charges_other_types(version: PriceBook | PriceVersion, model: str, dimensions: Mapping[str, DimValue] | None,
                        at: datetime, overrides: Overrides | None = None, *, tools: bool = False) -> bool:
    """Whether a rule of the version prices, for the model, some type a settle may report (cached
    input, image input, a cache write, reasoning, audio output, ...; not the request fee, which a
    hold prices, nor the per-call tools unless `tools`: a call that declares the tools it may run
    is held at them) above 0: its dearest price, or the customer's contract price, less the
    discounts that cover it (less than 100 % off)."""
    probe = Usage(model, {}, at, dimensions or {})
    resolved = _version(version, probe.occurred_at)
    utc = probe.occurred_at
    minute = utc.hour * 60 + utc.minute if resolved.timed else None
    overrides = overrides or _NO_OVERRIDES
    for token_type in KINDS:
        if token_type == "request" or (token_type in TOOL_CALLS and not tools):
            continue
        try:
            rule = _resolved_rule(resolved, token_type, model, probe.dimensions, minute)
        except UnpricedModelError:
            continue
        if rule is None:
            continue
        contract = overrides.contract_for(model, token_type, rule.token_type)
        price = contract.price if contract else rule.max_price()
        off = sum((d.percent for d in overrides.discounts if d.covers(model, token_type, rule.token_type)),
                  Decimal(0))
        if price > 0 and off < 100:
            return True
    return False



def reportable_variants(version: PriceBook | PriceVersion, model: str, dimensions: Mapping[str, DimValue] | None,
                        at: datetime, names: tuple[str, ...] = REPORTED_DIMENSIONS) -> list[dict[str, DimValue]]:
    """The call's dimensions as given and with every combination of the values the version's rules
    for the model match for `names` (the dimensions the provider chooses and its usage reports: a
    settle is rated at what it reports, whatever the call said): where a call may be rated. At
    most MAX_REPORTED_VARIANTS for a version posted (pricing.parse)."""
    resolved = _version(version, at)
    key = ("reportable", model, names)  # read once per version and model
    values = resolved.resolved.get(key)
    if values is None:
        if len(resolved.resolved) >= CACHE_LIMIT:
            resolved.resolved.clear()
        values = resolved.resolved[key] = tuple(sorted(
            {(n, v) for rule in resolved.rules for n, v in rule.match
             if n in names and model_rank(rule.model, model) is not None}, key=repr))
    given = dict(dimensions or {})
    variants = [given]
    for name in names:
        options = [v for n, v in values if n == name and given.get(name) != v]  # type: ignore[misc]
        variants += [{**variant, name: value} for variant in variants for value in options]
    return variants


def premiums_priced(version: PriceBook | PriceVersion, model: str, dimensions: Mapping[str, DimValue] | None,
                    at: datetime, premiums: tuple[str, ...], cache_write: str | None = None) -> None:
    """`estimate_upper_bound`'s check of the premium prices alone, for a hold given as an amount
    that names one (an HTTP reserve's `cache_ttl: "1h"`): UnpricedModelError where the book does not set it."""
    _check_premiums(version, model, dimensions, at, premiums, (), cache_write)


def _check_premiums(version: PriceBook | PriceVersion, model: str, dimensions: Mapping[str, DimValue] | None,
                    at: datetime, premiums: tuple[str, ...], named: tuple[str, ...], cache_write: str | None) -> None:
    errors = [field_error("premiums", f"{p!r} is not one of {', '.join(PREMIUMS)}") for p in premiums
              if p not in PREMIUMS]
    errors += [field_error("premium_dimensions", f"{n!r} is not a dimension of the call") for n in named
               if n not in (dimensions or {})]
    if errors:
        raise InvalidUsageError(errors)
    probe = Usage(model, {}, at, dimensions or {})
    resolved = _version(version, probe.occurred_at)
    utc = probe.occurred_at
    minute = utc.hour * 60 + utc.minute if resolved.timed else None
    check_premiums(resolved, model, probe.dimension_dict, minute, premiums, named, cache_write)


def _resolved_rule(version: PriceVersion, token_type: str, model: str, dims: tuple[tuple[str, DimValue], ...],
                   minute: int | None) -> Rule | None:
    """`version.resolve` (with its fallbacks) for these normalized dimensions, kept among the
    version's resolved rules (as rating keeps its plans): a version never changes. A type it
    cannot price raises, every time, and is not kept."""
    key = ("estimate rule", token_type, model, dims_key(dims), minute)
    cache = version.resolved
    if key in cache:
        return cache[key]  # type: ignore[return-value]
    rule = version.resolve(token_type, model, dict(dims), minute)
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    cache[key] = rule
    return rule


def _output_types(priced: frozenset[str]) -> tuple[str, ...]:
    """The output-side types a version whose rules price `priced` may hold an output budget at:
    output, those it prices, and (an output modality) those whose format 1 type it prices.
    Found once per set of priced types (a version's never changes)."""
    types = _OUTPUT_TYPES.get(priced)
    if types is None:
        types = _OUTPUT_TYPES[priced] = tuple(
            t for t in OUTPUT_TYPES if t == "output" or t in priced
            or MODALITY_TYPES.intersection(KINDS[t].fallbacks) & priced)
    return types


def _contract_output_types(overrides: Overrides, held: tuple[str, ...], book_format: int) -> tuple[str, ...]:
    """The output-side types a contract price of the customer names beyond those `held`: billed at
    the rule they fall back to, but at the contract's price, which a settle charges (reasoning at
    $50/M where the output rule is $20/M). A format 1 book folds the format 2 ones into output."""
    return tuple(sorted({c.token_type for c in overrides.contract_prices if c.token_type in OUTPUT_TYPES
                         and c.token_type not in held and (book_format != 1 or c.token_type in FORMAT_1_TYPES)}))


_OUTPUT_TYPES: dict[frozenset[str], tuple[str, ...]] = {}  # few: one per distinct set of priced types


def _whole_discounts(usage: list[Line], overrides: Overrides) -> list[Line]:
    """What the customer's discounts of every line of a model (no token type) take off the held
    lines: whatever lines the call is billed, each gets that share off, so the hold is still an
    upper bound (a 100 % one holds nothing). A discount of one token type may miss the type the
    call is billed in (the output budget spent as audio output an audio rule prices is not
    output), so a hold leaves it out, as it leaves out free allowances."""
    out = []
    for ln in usage:
        for discount in overrides.discounts:
            if discount.token_type is None and discount.covers(ln.model or "", ln.token_type or ""):
                with pricing_context():
                    unit, amount = discount_unit(ln.unit_price, discount.percent), -ln.amount * discount.percent / 100
                out.append(Line("discount", ln.token_type, ln.quantity, unit, amount, 0, ln.rule_id,
                                ln.price_version, ln.model, discount.id, ln.tier, ln.note))
    return out


CACHE_WRITE_TYPES = ("cache_write", "cache_write_1h")
_NO_OVERRIDES = Overrides()  # immutable: one for every estimate of a customer without overrides


def _held_prompt(resolved: PriceVersion, model: str, dims: Mapping[str, DimValue], minute: int | None,
                 prompt_tokens: int, prior_context_tokens: int | None) -> int:
    """The prompt a hold counts: `prompt_tokens`, or for a call that continues a conversation
    (`prior_context_tokens` not None) the model's context window as the book names it, else
    `prior_context_tokens`; never below its count."""
    if prior_context_tokens is None:
        return prompt_tokens
    rules = (resolved.resolve(t, model, dims, minute) for t in ("input", "output"))
    window = resolved.context_window_for(rule.id for rule in rules if rule is not None)
    return max(prompt_tokens, window if window is not None else prior_context_tokens)


def held_prompt_tokens(version: PriceBook | PriceVersion, model: str, prompt_tokens: int,
                       dimensions: Mapping[str, DimValue] | None, at: datetime,
                       prior_context_tokens: int | None) -> int:
    """The prompt tokens `estimate_upper_bound` holds for these arguments: what a token budget
    counts the hold at, so that it counts the same upper bound as the money."""
    if prior_context_tokens is None:
        return prompt_tokens
    probe = Usage(model, {}, at, dimensions or {})
    resolved = _version(version, probe.occurred_at)
    utc = probe.occurred_at
    minute = utc.hour * 60 + utc.minute if resolved.timed else None
    return _held_prompt(resolved, model, probe.dimension_dict, minute, prompt_tokens, prior_context_tokens)

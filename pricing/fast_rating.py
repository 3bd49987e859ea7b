"""Rating's fast path: one call without customer overrides, in integers, over rules resolved
once per (version, model, dimensions, token type) and kept on the version. It gives the very
Rating of the general path (pricing.rating), which it falls back to where it cannot (graduated
tiers, units priced per hour); tests hold the two equal, amounts' exponents included."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pricing.books import DimValue, PriceVersion, per_units
from pricing.lines import TOKEN_ORDER, Line, Rating, call_tokens, line_note, prompt_size
from pricing.money import DEFAULT_SCALE
from pricing.usage import Usage

_MISSING = object()
_FAST_PER = {1: 0, 1_000_000: 6}  # units per price -> its power of ten
_CACHE_LIMIT = 100_000


def _parts(price: Decimal) -> tuple[int, int]:
    """A price as (integer, decimals): Decimal("2.50") -> (250, 2)."""
    _, digits, exponent = price.as_tuple()
    number = int("".join(map(str, digits)) or "0")
    return (number * 10**exponent, 0) if exponent >= 0 else (number, -exponent)  # type: ignore[operator]


def _compiled(version: PriceVersion, token_type: str, model: str, dims: tuple[tuple[str, DimValue], ...],
              minute: int | None) -> tuple[Any, ...] | None:
    """Resolve and compile one (token type, model, dimensions, minute), and keep it on the version:
    (rule, per digits, base price parts, prompt tiers as (above, parts)); (None,) when unpriced
    under a zero policy; None when the rule has graduated tiers or a unit that is not a power of
    ten (the general path)."""
    rule = version.resolve(token_type, model, dict(dims), minute)
    per = _FAST_PER.get(per_units(token_type))
    if rule is None:
        hit: tuple[Any, ...] | None = (None,)
    elif rule.tiers or per is None or rule.price is None:
        hit = None
    else:
        hit = (rule, per, _parts(rule.price), tuple((t.above, _parts(t.price)) for t in rule.prompt_tiers))
    if len(version.resolved) >= _CACHE_LIMIT:
        version.resolved.clear()
    version.resolved[(token_type, model, dims, minute)] = hit
    return hit


def rate_call_fast(usage: Usage, version: PriceVersion) -> Rating | None:
    """One call without overrides, in integers over rules compiled once per version: the same
    Rating as the general path (same lines, amounts with the same exponents, the same rounding),
    or None where that path is needed (graduated tiers, units priced per hour)."""
    tokens = call_tokens(usage, version)
    at = usage.occurred_at
    minute = at.hour * 60 + at.minute if version.timed else None
    prompt = -1
    drafts = []
    cache, model, dims = version.resolved, usage.model, usage.dimensions
    for token_type, quantity in tokens:
        if not quantity:
            continue
        plan = cache.get((token_type, model, dims, minute), _MISSING)
        if plan is _MISSING:
            plan = _compiled(version, token_type, model, dims, minute)
        if plan is None:
            return None
        if plan[0] is None:
            continue  # unpriced, and the version's policy is zero
        rule, per, (number, decimals), tiers = plan
        price, tier = rule.price, None
        if tiers:
            prompt = prompt_size(tokens) if prompt < 0 else prompt
            for index in range(len(tiers), 0, -1):
                if prompt > tiers[index - 1][0]:
                    (number, decimals), price, tier = tiers[index - 1][1], rule.prompt_tiers[index - 1].price, index
                    break
        drafts.append((TOKEN_ORDER[token_type], rule.id, tier or 0, token_type, quantity, price, number, decimals,
                       per, rule, tier))
    drafts.sort()  # by token type: one draft each, so the first item decides
    return _rounded(version, usage.model, drafts)


def _rounded(version: PriceVersion, model: str, drafts: list[tuple[Any, ...]]) -> Rating:
    """The rounding rule of pricing.money.round_entry, in integers of 10**-(scale + shift)."""
    places = []
    for d in drafts:
        coefficient, exp = d[4] * d[6], d[7] + d[8]  # quantity x price / 10**per digits
        while exp > d[7] and coefficient % 10 == 0:  # an exact quotient keeps the price's exponent, as Decimal
            coefficient //= 10
            exp -= 1
        places.append((coefficient, exp))
    most = max([e for _, e in places] + [DEFAULT_SCALE])
    den = 10 ** (most - DEFAULT_SCALE)
    nums = [c * 10 ** (most - e) for c, e in places]
    total, rest = divmod(sum(nums), den)
    if 2 * rest > den or (2 * rest == den and total % 2):
        total += 1
    units = [n // den for n in nums]
    missing = total - sum(units)
    if missing:
        for i in sorted(range(len(nums)), key=lambda i: (-(nums[i] % den), i))[:missing]:
            units[i] += 1
    lines = tuple(Line("usage", d[3], d[4], d[5], Decimal(f"{c}e-{e}"), unit, d[9].id, version.version, model,
                       None, d[10], line_note(d[9], d[10]))
                  for d, (c, e), unit in zip(drafts, places, units, strict=True))
    top = max((e for _, e in places), default=0)
    exact = Decimal(f"{sum(c * 10 ** (top - e) for c, e in places)}e-{top}") if places else Decimal(0)
    return Rating(version.book_id, version.version, version.currency, DEFAULT_SCALE, lines, exact, total)

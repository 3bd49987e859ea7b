"""Rating's fast path: one call without customer overrides, in integers, over rules resolved and
compiled once per (version, model, dimensions, minute) and kept on the version. It gives the very
Rating of the general path (pricing.rating), which it falls back to where it cannot (graduated
tiers, units priced per hour); tests hold the two equal, amounts' exponents included.

A compiled plan prices one token type: the rule, the price's power of ten per unit (6 for a
price per million tokens, 0 per call), and each price it may take (the base price, then each
prompt-size tier) as (integer coefficient, decimals, the Decimal price, tier index, line note).
A line's exact amount is ``quantity * coefficient`` at ``decimals + per`` decimals, with the
trailing zeros a Decimal division would drop dropped down to the price's own decimals; the one
rounding rule (pricing.money.round_entry) then runs in integers. Decimal is only built for the
amounts the Rating carries."""

from __future__ import annotations

from datetime import datetime
from decimal import Context, Decimal
from typing import Any

from pricing.books import DimValue, PriceVersion, Rule, per_units
from pricing.lines import TOKEN_ORDER, Line, Rating, call_tokens, line_note, prompt_size
from pricing.money import DEFAULT_SCALE
from pricing.usage import Usage

_FAST_PER = {1: 0, 1_000_000: 6}  # units per price -> its power of ten
CACHE_LIMIT = 20_000  # (model, dimensions, minute) keys kept on a version
_GENERAL = "general"  # a plan the fast path cannot price
_ZERO = "zero"  # unpriced, and the version's policy is zero
_POW = tuple(10**k for k in range(80))
_SCALE = DEFAULT_SCALE
# a line's coefficient has at most 44 digits (a count of 16 at a price of 28), a sum in 10**-24
# (a per-call unit at 10**24 beside a per-1M one's 24 places) about 50: scaleb is exact
_EXACT = Context(prec=60)
_new = tuple.__new__


def _parts(price: Decimal) -> tuple[int, int]:
    """A price as (integer, decimals): Decimal("2.50") -> (250, 2)."""
    _, digits, exponent = price.as_tuple()
    number = int("".join(map(str, digits)) or "0")
    return (number * 10**exponent, 0) if exponent >= 0 else (number, -exponent)  # type: ignore[operator]


def _compiled(version: PriceVersion, token_type: str, model: str, dims: tuple[tuple[str, DimValue], ...],
              minute: int | None) -> Any:
    """Resolve and compile one token type of a (model, dimensions, minute): (base price, prompt
    tiers from the highest as (above, price)), each price a _choice; _ZERO or _GENERAL."""
    rule = version.resolve(token_type, model, dict(dims), minute)
    per = _FAST_PER.get(per_units(token_type))
    if rule is None:
        return _ZERO
    if rule.tiers or per is None or rule.price is None:
        return _GENERAL
    tiers = tuple((t.above, _choice(rule, per, t.price, i))
                  for i, t in reversed(list(enumerate(rule.prompt_tiers, 1))))
    return _choice(rule, per, rule.price, None), tiers


def _choice(rule: Rule, per: int, price: Decimal, tier: int | None) -> tuple[Any, ...]:
    """One price a plan may take: (coefficient, decimals, per digits, the Decimal price, rule id,
    prompt tier, line note)."""
    number, decimals = _parts(price)
    return number, decimals, per, price, rule.id, tier, line_note(rule, tier)


def dims_key(dims: tuple[tuple[str, DimValue], ...]) -> tuple[Any, ...]:
    """Normalized dimensions as a key of the version's resolved rules and plans: as they are,
    save a bool, keyed apart from the int Python holds equal to it (True == 1, with one hash),
    since rules tell them apart (`plan: true` is not priced by a rule matching `plan: 1`)."""
    for _, value in dims:
        if value.__class__ is bool:
            return tuple((name, (bool, v) if v.__class__ is bool else v) for name, v in dims)
    return dims


def _plans(version: PriceVersion, model: str, dims: tuple[tuple[str, DimValue], ...],
           minute: int | None) -> dict[str, Any]:
    """The compiled plans of one (model, dimensions, minute) by token type, filled as types come."""
    cache = version.resolved
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    plans: dict[str, Any] = {}
    cache[(model, dims_key(dims), minute)] = plans
    return plans


def charges_requests(version: PriceVersion, model: str, dims: tuple[tuple[str, DimValue], ...],
                     at: datetime) -> bool:
    """Whether a rule of the version prices ``request`` itself for the model and (normalized)
    dimensions at ``at`` (a rule with ``hours`` in its window only), so a call is charged its
    per-request fee: found once per (model, dimensions, minute) and kept with the plans (a key of
    its own: a plan's key has three parts)."""
    minute = at.hour * 60 + at.minute if version.timed else None
    key = ("request fee", model, dims_key(dims), minute)
    known = version.resolved.get(key)
    if known is None:
        known = version.resolved[key] = version.find_rule("request", model, dict(dims), minute) is not None
    return known  # type: ignore[return-value]


def rate_call_fast(usage: Usage, version: PriceVersion) -> Rating | None:
    """One call without overrides, in integers over rules compiled once per version: the same
    Rating as the general path (same lines, amounts with the same exponents, the same rounding),
    or None where that path is needed (graduated tiers, units priced per hour)."""
    model, dims = usage.model, usage.dimensions
    if version.timed:
        at = usage.occurred_at
        minute: int | None = at.hour * 60 + at.minute
    else:
        minute = None
    plans = version.resolved.get((model, dims_key(dims), minute))
    if plans is None:
        plans = _plans(version, model, dims, minute)
    legacy = version.format == 1
    tokens = call_tokens(usage, version) if legacy else usage.tokens
    prompt = -1
    top = whole = 0  # the most decimals of an exact amount; the sum in atomic units while exact
    scaleb, version_id = _EXACT.scaleb, version.version
    lines = []
    for token_type, quantity in tokens:
        if not quantity:
            continue
        plan = plans.get(token_type)
        if plan is None:
            plan = plans[token_type] = _compiled(version, token_type, model, dims, minute)
        if plan is _GENERAL:
            return None
        if plan is _ZERO:
            continue
        choice = plan[0]
        if plan[1]:
            if prompt < 0:
                prompt = prompt_size(tokens)
            for above, tier_choice in plan[1]:
                if prompt > above:
                    choice = tier_choice
                    break
        decimals = choice[1]
        coefficient, exp = quantity * choice[0], decimals + choice[2]
        while exp > decimals and not coefficient % 10:  # an exact quotient keeps the price's exponent
            coefficient //= 10
            exp -= 1
        if exp > top:
            top = exp
        units = coefficient * _POW[_SCALE - exp] if exp <= _SCALE else 0  # exact: no rounding to do
        whole += units
        lines.append(_new(Line, ("usage", token_type, quantity, choice[3], scaleb(Decimal(coefficient), -exp), units,
                                 choice[4], version_id, model, None, choice[5], choice[6])))
    if legacy:
        lines.sort(key=_token_order)  # folded types may come out of order
    if top > _SCALE:
        return _rounded(version, lines, top)
    if len(lines) == 1:
        exact = lines[0].amount
    else:
        exact = scaleb(Decimal(whole // _POW[_SCALE - top]), -top) if lines else Decimal(0)
    return Rating(version.book_id, version_id, version.currency, _SCALE, tuple(lines), exact, whole)


def _token_order(line: Line) -> int:
    return TOKEN_ORDER[line.token_type]  # type: ignore[index]


def _rounded(version: PriceVersion, lines: list[Line], top: int) -> Rating:
    """Some amount has more decimals than the atomic unit: the rounding rule of
    pricing.money.round_entry, in integers of 10**-top."""
    nums = []
    for line in lines:
        _, digits, exponent = line.amount.as_tuple()
        nums.append(int("".join(map(str, digits)) or "0") * _POW[top + exponent])  # type: ignore[operator]
    whole = sum(nums)
    den = _POW[top - _SCALE]
    total, rest = divmod(whole, den)
    if 2 * rest > den or (2 * rest == den and total % 2):
        total += 1
    units = [n // den for n in nums]
    missing = total - sum(units)
    if missing:
        for i in sorted(range(len(nums)), key=lambda i: (-(nums[i] % den), i))[:missing]:
            units[i] += 1
    exact = lines[0].amount if len(lines) == 1 else _EXACT.scaleb(Decimal(whole), -top)
    return Rating(version.book_id, version.version, version.currency, _SCALE,
                  tuple(ln._replace(amount_units=u) for ln, u in zip(lines, units, strict=True)), exact, total)

"""Rating: usage records -> priced line items, as a pure function over plain values.

``rate(usage, version, overrides, period_to_date)`` prices one or several usage records
with one price version and returns a :class:`Rating`: exact ``Decimal`` line amounts plus
their atomic-unit amounts under the single rounding rule of :mod:`pricing.money` (the total
is rounded once with ROUND_HALF_EVEN, lines are allocated by largest remainder so that they
sum to it exactly). ``rate_usage`` first picks the version in force at the usage's own time.

Line kinds, in this order: ``usage`` (one line per model, token type, rule and tier),
``discount`` (a negative twin of each usage line a discount covers), ``free_allowance`` (one
negative line per allowance used). Nothing is netted silently.

Tiers. Graduated tiers are applied to the customer's period-to-date quantity of the rule,
which the caller passes in per rule id (``PeriodToDate.quantities``); a crossing produces one
line per tier. Volume tiers ("every unit at the price of the tier reached") are only knowable
at period close: during the period they are rated exactly like graduated tiers, and
:func:`volume_true_up` computes the adjustment to post when the period closes (posting it is
the caller's job). The result never depends on the order of the usage records or token types:
quantities are aggregated and consumed in a canonical order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from pricing.books import (
    DimValue,
    PriceBook,
    PriceVersion,
    Rule,
    Tier,
    per_units,
)
from pricing.errors import InvalidUsageError, UnpricedModelError, wire_time
from pricing.fast_rating import rate_call_fast
from pricing.lines import TOKEN_ORDER, Line, Rating, call_tokens, line_note, prompt_size
from pricing.money import DEFAULT_SCALE, discount_unit, per_amount, pricing_context, round_entry, to_decimal
from pricing.overrides import ContractPrice, Overrides
from pricing.usage import PeriodToDate, Usage


@dataclass(frozen=True, slots=True)
class _Bucket:
    model: str
    token_type: str
    rule: Rule
    contract: ContractPrice | None
    prompt_tier: int | None = None


def _aggregate(usages: Sequence[Usage], version: PriceVersion, overrides: Overrides) -> dict[_Bucket, int]:
    buckets: dict[_Bucket, int] = {}
    for usage in usages:
        dims = usage.dimension_dict
        tokens = call_tokens(usage, version)
        prompt = prompt_size(tokens)
        at = usage.occurred_at
        minute = at.hour * 60 + at.minute if version.timed else None
        for token_type, quantity in tokens:
            if quantity == 0:
                continue
            rule = version.resolve(token_type, usage.model, dims, minute)
            if rule is None:
                continue  # the version's unpriced policy is zero
            contract = overrides.contract_for(usage.model, token_type, rule.token_type)
            tier = rule.price_at(prompt)[1] if rule.prompt_tiers and contract is None else None
            key = _Bucket(usage.model, token_type, rule, contract, tier)
            buckets[key] = buckets.get(key, 0) + quantity
    return buckets


def split_graduated(tiers: Sequence[Tier], start: int, quantity: int) -> list[tuple[int, int]]:
    """(tier index, quantity) for units ``start+1 .. start+quantity`` over graduated tiers."""
    out: list[tuple[int, int]] = []
    position, remaining = start, quantity
    for index, tier in enumerate(tiers):
        if remaining == 0:
            break
        if tier.up_to is not None and position >= tier.up_to:
            continue
        take = remaining if tier.up_to is None else min(remaining, tier.up_to - position)
        out.append((index, take))
        position += take
        remaining -= take
    return out


_NO_OVERRIDES = Overrides()
_NOTHING_SO_FAR = PeriodToDate()


def _amount(quantity: int, unit_price: Decimal, token_type: str) -> Decimal:
    """quantity * unit_price / per; the caller holds the pricing context."""
    return per_amount(quantity * unit_price, per_units(token_type))


def _usage_lines(buckets: dict[_Bucket, int], version: PriceVersion, ptd: PeriodToDate) -> list[Line]:
    # Lines are built whole (dataclasses.replace was a quarter of rating's time) in one context.
    order = sorted(buckets, key=lambda b: (b.rule.id, b.model, TOKEN_ORDER[b.token_type], b.prompt_tier or 0))
    position = {rule_id: qty for rule_id, qty in ptd.quantities}
    lines: list[Line] = []
    with pricing_context():
        for bucket in order:
            quantity, rule, token_type, contract = buckets[bucket], bucket.rule, bucket.token_type, bucket.contract
            if contract is not None:
                lines.append(Line("usage", token_type, quantity, contract.price,
                                  _amount(quantity, contract.price, token_type), 0, rule.id, version.version,
                                  bucket.model, contract.id, note=rule.label))
            elif rule.price is not None:
                tier = bucket.prompt_tier
                price = rule.price if tier is None else rule.prompt_tiers[tier - 1].price
                lines.append(Line("usage", token_type, quantity, price, _amount(quantity, price, token_type),
                                  0, rule.id, version.version, bucket.model, None, tier, line_note(rule, tier)))
            else:
                start = position.get(rule.id, 0)
                for tier_index, part in split_graduated(rule.tiers, start, quantity):
                    price = rule.tiers[tier_index].price
                    lines.append(Line("usage", token_type, part, price, _amount(part, price, token_type), 0,
                                      rule.id, version.version, bucket.model, tier=tier_index, note=rule.label))
            position[rule.id] = position.get(rule.id, 0) + quantity
    return sorted(lines, key=_line_key)


def _line_key(line: Line) -> tuple[object, ...]:
    token_index = TOKEN_ORDER[line.token_type] if line.token_type else -1
    return (line.model or "", token_index, line.rule_id or "", line.tier or 0, line.override_id or "")


def _discount_lines(usage_lines: list[Line], overrides: Overrides, priced_as: Mapping[str, str]) -> list[Line]:
    """A discount's negative twin of each usage line it covers; `priced_as` maps each rule id to
    its token type, the type a line was billed as (reasoning at the output rule is output)."""
    lines: list[Line] = []
    for line in usage_lines:
        for discount in overrides.discounts:
            if not discount.covers(line.model or "", line.token_type or "", priced_as.get(line.rule_id or "")):
                continue
            with pricing_context():
                unit = discount_unit(line.unit_price, discount.percent)
                amount = -line.amount * discount.percent / 100
            lines.append(Line("discount", line.token_type, line.quantity, unit, amount, 0, line.rule_id,
                              line.price_version, line.model, discount.id, line.tier, line.note))
    return lines


def _allowance_lines(net: Decimal, overrides: Overrides, ptd: PeriodToDate, version: str) -> list[Line]:
    used = dict(ptd.allowance_used)
    lines: list[Line] = []
    for allowance in overrides.allowances:
        with pricing_context():
            remaining = max(Decimal(0), allowance.amount - used.get(allowance.id, Decimal(0)))
            take = min(remaining, net)
            if take <= 0:
                continue
            net -= take
            paid = -take  # in the context: the global one would round it to 28 digits
        lines.append(Line("free_allowance", None, 0, Decimal(0), paid, 0, None, version,
                          override_id=allowance.id))
    return lines


def _as_usages(usage: Usage | Iterable[Usage]) -> tuple[Usage, ...]:
    usages = (usage,) if isinstance(usage, Usage) else tuple(usage)
    for i, item in enumerate(usages):
        if not isinstance(item, Usage):
            raise InvalidUsageError(f"usage[{i}]", "must be a Usage")
    return usages


def rate(
    usage: Usage | Iterable[Usage],
    version: PriceVersion,
    overrides: Overrides | None = None,
    period_to_date: PeriodToDate | Mapping[str, int] | None = None,
    *,
    scale: int = DEFAULT_SCALE,
    general: bool = False,
) -> Rating:
    """Price usage with one version (pure): usage lines, then discounts, then allowances. One
    call without overrides takes the fast path (pricing.fast_rating), which gives the same Rating;
    ``general=True`` takes the general path whatever the usage (tests hold the two equal)."""
    if (not general and isinstance(usage, Usage) and (overrides is None or overrides == _NO_OVERRIDES)
            and scale == DEFAULT_SCALE and usage.occurred_at >= version.effective_from):
        fast = rate_call_fast(usage, version)
        if fast is not None:
            return fast
    usages = _as_usages(usage)
    for item in usages:
        if item.occurred_at < version.effective_from:
            raise UnpricedModelError(
                f"version {version.version} of {version.book_id} is not in force at "
                f"{wire_time(item.occurred_at)}", model=item.model)
    overrides = overrides or _NO_OVERRIDES
    if isinstance(period_to_date, PeriodToDate):
        ptd = period_to_date
    else:
        ptd = PeriodToDate(period_to_date) if period_to_date else _NOTHING_SO_FAR
    buckets = _aggregate(usages, version, overrides)
    usage_lines = _usage_lines(buckets, version, ptd)
    discounts = _discount_lines(usage_lines, overrides, {b.rule.id: b.rule.token_type for b in buckets})
    with pricing_context():
        net = sum((ln.amount for ln in (*usage_lines, *discounts)), Decimal(0))
    allowances = _allowance_lines(net, overrides, ptd, version.version)
    return build_rating(version, [*usage_lines, *discounts, *allowances], scale)


def build_rating(version: PriceVersion, lines: list[Line], scale: int = DEFAULT_SCALE) -> Rating:
    """Round drafted lines once (the rule of :func:`pricing.money.round_entry`) into a Rating."""
    total_units, units = round_entry([ln.amount for ln in lines], scale)
    with pricing_context():
        total = sum((ln.amount for ln in lines), Decimal(0))
    final = tuple(Line(ln.kind, ln.token_type, ln.quantity, ln.unit_price, ln.amount, u, ln.rule_id,
                       ln.price_version, ln.model, ln.override_id, ln.tier, ln.note)
                  for ln, u in zip(lines, units, strict=True))
    return Rating(version.book_id, version.version, version.currency, scale, final, total, total_units)


def rate_usage(
    usage: Usage | Iterable[Usage],
    book: PriceBook,
    overrides: Overrides | None = None,
    period_to_date: PeriodToDate | Mapping[str, int] | None = None,
    *,
    scale: int = DEFAULT_SCALE,
) -> Rating:
    """Rate with the version in force at the usage's own time (never the processing time)."""
    usages = _as_usages(usage)
    if not usages:
        raise InvalidUsageError("usage", "nothing to rate")
    versions = {book.version_at(u.occurred_at).version: book.version_at(u.occurred_at) for u in usages}
    if len(versions) > 1:
        raise InvalidUsageError("usage", "usage records fall under several price versions; rate apart")
    return rate(usages, next(iter(versions.values())), overrides, period_to_date, scale=scale)


def volume_tier_price(rule: Rule, period_quantity: int) -> Decimal:
    """The unit price of the tier that ``period_quantity`` reaches (volume pricing)."""
    for tier in rule.tiers:
        if tier.up_to is None or period_quantity <= tier.up_to:
            return tier.price
    raise AssertionError("validated tiers always end with an open tier")


def volume_true_up(rule: Rule, period_quantity: int, amount_already_charged: Decimal | int | str,
                   reached: int | None = None) -> Decimal:
    """Period-close adjustment for a volume rule: all units at the reached tier's price minus
    what was charged during the period (negative: money back). Exact Decimal; not posted here.
    `reached`: the units that pick the tier when they are more than `period_quantity` (the
    period's units of the rule under every version tiering it by volume, of which this version
    rated `period_quantity`); by default `period_quantity` itself."""
    if rule.tier_mode != "volume" or not rule.tiers:
        raise ValueError(f"rule {rule.id} is not a volume-tiered rule")
    for name, value in (("period_quantity", period_quantity), ("reached", reached)):
        if (value is not None or name == "period_quantity") and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InvalidUsageError(name, "must be a non-negative int")
    charged = to_decimal(amount_already_charged, "amount_already_charged", allow_negative=True)
    tier_of = period_quantity if reached is None else reached
    with pricing_context():
        target = per_amount(period_quantity * volume_tier_price(rule, tier_of), per_units(rule.token_type))
        return target - charged


__all__ = [
    "DimValue", "Line", "PeriodToDate", "Rating", "Usage", "build_rating", "rate", "rate_usage",
    "split_graduated", "volume_tier_price", "volume_true_up",
]

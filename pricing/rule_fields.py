"""Fields of a price rule: prices, and what format 2 adds (prompt-size tiers, daily hours,
labels), each validated into a list of field errors."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from pricing.errors import field_error
from pricing.money import to_decimal
from pricing.units import FORMAT_1_TYPES, FORMATS

if TYPE_CHECKING:
    from pricing.books import PriceVersion, Rule

MAX_PRICE = Decimal(10) ** 9
MAX_PRICE_DECIMALS = 18


def checked_price(value: object, name: str, errors: list[dict[str, str]]) -> Decimal | None:
    try:
        price = to_decimal(value, name)
    except (TypeError, ValueError) as exc:
        errors.append(field_error(name, str(exc).split(": ", 1)[-1]))
        return None
    if price > MAX_PRICE or -price.as_tuple().exponent > MAX_PRICE_DECIMALS:  # type: ignore[operator]
        errors.append(field_error(name, f"at most {MAX_PRICE} with {MAX_PRICE_DECIMALS} decimals"))
        return None
    return price


_DECIMAL = re.compile(r"(-?)([0-9]+)((?:\.[0-9]+)?)")  # ASCII, as pricing.money reads one


def unplain_problem(value: object) -> str | None:
    """What keeps a decimal string `to_decimal` reads from the plain form the API takes for a price
    or a percent (api.routes.formats.PRICE): a leading zero ("01", "00.5") or a zero's sign ("-0"),
    with the form to write instead; None for anything else (a plain one, a negative one, not a
    decimal: `checked_price` words those). Stored versions are read by checked_price alone."""
    form = _DECIMAL.fullmatch(value) if isinstance(value, str) else None
    if form is None:
        return None
    sign, whole, fraction = form.groups()
    plain = (whole.lstrip("0") or "0") + fraction
    if sign and Decimal(value) == 0:  # type: ignore[arg-type]
        return f"not a plain decimal number: {value!r} is 0 with a sign (write {plain!r})"
    if not sign and plain != value:
        return f"not a plain decimal number: {value!r} has a leading zero (write {plain!r})"
    return None


@dataclass(frozen=True, slots=True)
class PromptTier:
    """Format 2: every unit of a call is priced at ``price`` once the call's prompt (all its
    input, cached and cache-write tokens, every modality) has more than ``above`` tokens."""

    above: int
    price: Decimal


_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")  # ASCII: \d takes any Unicode digit
MINUTES_PER_DAY = 24 * 60


def parse_hours(value: object, errors: list[dict[str, str]]) -> tuple[int, int] | None:
    """``{"from": "HH:MM", "to": "HH:MM"}`` (UTC, ``to`` excluded, may wrap past midnight) as
    minutes of the day."""
    if value is None:
        return None
    if isinstance(value, tuple):
        return value
    ends = [value.get(k) if isinstance(value, Mapping) else None for k in ("from", "to")]
    found = [_HHMM.fullmatch(e) if isinstance(e, str) else None for e in ends]
    if not isinstance(value, Mapping) or set(value) != {"from", "to"} or None in found or ends[0] == ends[1]:
        errors.append(field_error("hours", 'must be {"from": "HH:MM", "to": "HH:MM"}, two different UTC times'))
        return None
    start, end = (int(m.group(1)) * 60 + int(m.group(2)) for m in found)  # type: ignore[union-attr]
    return start, end


def in_hours(hours: tuple[int, int], minute: int) -> bool:
    """Whether a minute of the day falls in a window [from, to), which may wrap past midnight."""
    start, end = hours
    return start <= minute < end if start < end else minute >= start or minute < end


def hours_overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two daily windows share a minute."""
    return any(in_hours(b, m) for m in _window_starts(a)) or any(in_hours(a, m) for m in _window_starts(b))


def _pieces(w: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """A window as half-open spans of minutes within one day: one, or two when it wraps."""
    start, end = w
    if start < end or end == 0:
        return ((start, end or MINUTES_PER_DAY),)
    return ((start, MINUTES_PER_DAY), (0, end))


def overlapping(left: Sequence[tuple[int, tuple[int, int]]],
                right: Sequence[tuple[int, tuple[int, int]]] | None = None) -> list[tuple[int, int]]:
    """The pairs of windows that share a minute: (left index, right index), or without `right`
    (i, j), i < j, within `left`. A sweep over the windows' spans sorted by start: n log n, plus
    the spans still open at each start (none when no two overlap), not every pair."""
    sides = ((0, left),) if right is None else ((0, left), (1, right))
    spans = sorted((start, end, side, index) for side, items in sides for index, window in items
                   for start, end in _pieces(window))
    found: set[tuple[int, int]] = set()
    open_spans: list[tuple[int, int, int]] = []  # (end, side, index)
    for start, end, side, index in spans:
        open_spans = [span for span in open_spans if span[0] > start]
        for _, other_side, other in open_spans:
            if right is None and other != index:
                found.add((min(other, index), max(other, index)))
            elif right is not None and other_side != side:
                found.add((other, index) if other_side == 0 else (index, other))
        open_spans.append((end, side, index))
    return sorted(found)


def _window_starts(w: tuple[int, int]) -> tuple[int, ...]:
    """The first minute of each piece of a window: one piece, or two when it wraps past midnight
    (a window ending at 00:00 ends at midnight: it does not wrap)."""
    return (w[0],) if w[0] < w[1] or w[1] == 0 else (w[0], 0)


def format_hours(hours: tuple[int, int]) -> dict[str, str]:
    return {k: f"{m // 60:02d}:{m % 60:02d}" for k, m in zip(("from", "to"), hours, strict=True)}


_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # [0-9]: \d is any Unicode digit in Python
FORMAT_2_RULE_FIELDS = ("prompt_tiers", "hours", "label", "source_date")
MAX_LABEL = 60


def normalized_prompt_tiers(raw: Iterable[object], errors: list[dict[str, str]]) -> tuple[PromptTier, ...]:
    tiers: list[PromptTier] = []
    previous = -1
    for i, item in enumerate(raw):
        above, price = ((item.above, item.price) if isinstance(item, PromptTier)
                        else (item.get("above"), item.get("price")) if isinstance(item, Mapping) else (None, None))
        name = f"prompt_tiers[{i}]"
        if isinstance(above, bool) or not isinstance(above, int) or above <= previous:
            errors.append(field_error(f"{name}.above", "must be an integer, strictly increasing from 0"))
            above = previous + 1
        previous = above
        checked = checked_price(price, f"{name}.price", errors)
        tiers.append(PromptTier(above, checked if checked is not None else Decimal(0)))
    return tuple(tiers)


def window_errors(rules: tuple[Rule, ...]) -> list[dict[str, str]]:
    """Rules of one token type, model and match whose daily windows overlap: they would tie."""
    windows: dict[tuple[object, ...], list[tuple[int, tuple[int, int]]]] = {}
    for i, rule in enumerate(rules):
        if rule.hours is not None:
            windows.setdefault((rule.token_type, rule.model, rule.match), []).append((i, rule.hours))
    return [field_error(f"rules[{j}].hours", f"overlaps the hours of rule {rules[i].id!r}")
            for group in windows.values() for i, j in overlapping(group)]




def normalize_format_2(rule: Rule, errors: list[dict[str, str]]) -> None:
    """Validate and normalize a rule's format 2 fields in place (its __post_init__)."""
    object.__setattr__(rule, "hours", parse_hours(rule.hours, errors))
    if rule.label is not None and (not isinstance(rule.label, str) or not 0 < len(rule.label) <= MAX_LABEL):
        errors.append(field_error("label", f"must be a string of 1 to {MAX_LABEL} characters"))
    if rule.source_date is not None and (not isinstance(rule.source_date, str)
                                         or not _DATE_RE.fullmatch(rule.source_date)):
        errors.append(field_error("source_date", "must be a date, YYYY-MM-DD"))
    if rule.prompt_tiers:
        object.__setattr__(rule, "prompt_tiers", normalized_prompt_tiers(rule.prompt_tiers, errors))
        if rule.tiers:
            errors.append(field_error("prompt_tiers", "give prompt_tiers or tiers, not both"))


def format_errors(version: PriceVersion) -> list[dict[str, str]]:
    """A version's format and unpriced policy, and format 2 rules in a format 1 version."""
    if version.format not in FORMATS or isinstance(version.format, bool):
        return [field_error("format", "must be 1 or 2")]
    if version.unpriced not in ("error", "zero"):
        return [field_error("unpriced", "must be error or zero")]
    if version.format == 2:
        return []
    errors = [field_error("unpriced", "needs format 2")] if version.unpriced != "error" else []
    return errors + [field_error(f"rules[{i}]", "uses format 2 (a token type or field format 1 does not "
                                 'know); give "format": 2')
                     for i, rule in enumerate(version.rules) if uses_format_2(rule)]


def uses_format_2(rule: Rule) -> bool:
    """Whether a rule uses what only a format 2 book may: new token types or fields."""
    return (getattr(rule, "token_type", None) not in FORMAT_1_TYPES or bool(rule.prompt_tiers)
            or rule.hours is not None or rule.label is not None or rule.source_date is not None)

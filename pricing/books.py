"""Price books: versioned, effective-dated sets of price rules, validated when built.

Rule precedence, when several rules of a version match one usage token type:

1. a rule naming the exact model beats a rule with a glob ``model`` pattern (``fnmatchcase``:
   ``*``, ``?``, ``[seq]``; e.g. ``"gpt-4o*"``), which beats a rule without a model;
2. then a rule with more ``match`` dimensions beats one with fewer;
3. any tie left is an ambiguity, refused when the version is built. Two patterns are treated
   as overlapping unless their literal prefixes or suffixes prove them disjoint, so
   ``"gpt-4o*"`` and ``"gpt-4o-mini*"`` in one version is an error: name models exactly.

Fallbacks when no rule prices a token type: ``reasoning`` is priced as ``output``;
``cached_input`` and ``cache_write`` as ``input``; ``input`` as ``embedding`` (an embeddings
model's tokens, which providers report as input); format 2 types as listed in
:mod:`pricing.units`, which also says how many units a price covers (1,000,000 tokens, one call).
Format 2 rules may add ``prompt_tiers``, ``hours`` (a daily UTC window, which counts as one
more match dimension for precedence), ``label`` and ``source_date``; a format 2 version may
set ``unpriced: zero`` (usage no rule prices is not charged) instead of the default ``error``.

Plausibility (optional): a version's ``max_charge_per_request`` (money) and ``context_window``
(most input + output tokens one call can have), and a rule's own ``context_window``, bound what
one call may be charged; a call priced by rules that name context windows is bound by the
smallest of them, else by the version's.

Limits on a version posted (``pricing.parse``; versions stored before them still load):
``MAX_RULES`` rules, ``MAX_MATCH_DIMENSIONS`` match dimensions and ``MAX_TIERS`` tiers per
rule, ``MAX_DIMENSION_SETS`` distinct sets of match dimension names and ``MAX_PATTERNS``
distinct model patterns, which bound the cost of the ambiguity check (``pricing.ambiguity``), and
``MAX_REPORTED_VARIANTS`` combinations of the ``REPORTED_DIMENSIONS`` values a model's rules match,
which bound the estimates of a hold (``pricing.estimate.reportable_variants``).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fnmatch import fnmatchcase

from pricing.ambiguity import HOURS, ambiguity_errors, is_pattern
from pricing.ambiguity import patterns_may_overlap as patterns_may_overlap  # used by overrides
from pricing.errors import NOT_AN_INTEGER, PriceBookValidationError, UnpricedModelError, field_error, wire_time
from pricing.money import DEFAULT_SCALE, amount_problem, to_decimal
from pricing.rule_fields import PromptTier as PromptTier
from pricing.rule_fields import checked_price, format_errors, in_hours, normalize_format_2, window_errors
from pricing.units import KINDS, NOT_TOKENS, PER_UNITS, TOKEN_TYPES

FALLBACKS: dict[str, tuple[str, ...]] = {k.name: k.fallbacks for k in KINDS.values() if k.fallbacks}
TIER_MODES = ("graduated", "volume")
MAX_RULES = 10_000
MAX_MATCH_DIMENSIONS = 16
MAX_TIERS = 64
MAX_DIMENSION_SETS = 64
MAX_PATTERNS = 200
# what a settle's usage may report about its price (pricing.normalize: the provider's service tier,
# where it ran), and how many combinations of their values (none included) a hold may price
REPORTED_DIMENSIONS = ("service_tier", "inference_geo")
MAX_REPORTED_VARIANTS = 64
MAX_CONTEXT_WINDOW = 10**9
# characters of a rule's id, which keys the period's usage counters (a btree index entry holds
# at most 2,704 bytes: a 4,000-character id made every settle its book priced a 500), and of its
# model (a call's model has at most 200, so a longer rule model could price nothing)
MAX_RULE_ID = 200
MAX_MODEL = 200
_CURRENCY_RE = re.compile(r"[A-Z]{3}")

DimValue = str | int | bool


def per_units(token_type: str) -> int:
    """How many units one price covers: 1,000,000 tokens, 1 call (``request``, tool calls,
    pages), or 3,600 seconds (an hour of audio); see :mod:`pricing.units`."""
    return PER_UNITS[token_type]


def model_rank(rule_model: str | None, model: str) -> int | None:
    """2 exact, 1 pattern, 0 any model; None when the rule does not apply to ``model``."""
    if rule_model is None:
        return 0
    if is_pattern(rule_model):
        return 1 if fnmatchcase(model, rule_model) else None
    return 2 if rule_model == model else None


@dataclass(frozen=True, slots=True)
class Tier:
    """One step of a tiered price: units up to ``up_to`` (inclusive; None = no limit)."""

    up_to: int | None
    price: Decimal


@dataclass(frozen=True, slots=True)
class Rule:
    """A price for one token type, optionally limited to a model and to dimension values."""

    id: str
    token_type: str
    price: Decimal | None = None
    model: str | None = None
    match: tuple[tuple[str, DimValue], ...] = ()
    tiers: tuple[Tier, ...] = ()
    tier_mode: str = "graduated"
    source: str | None = None
    context_window: int | None = None  # most input + output tokens of one call this rule prices
    prompt_tiers: tuple[PromptTier, ...] = ()  # format 2: prices by the call's prompt size
    hours: tuple[int, int] | None = None  # format 2: daily UTC window (minutes), e.g. off-peak
    label: str | None = None  # format 2: shown on the rule's charge lines, e.g. "off-peak"
    source_date: str | None = None  # format 2: the date the price was taken from its source
    keyed_match: tuple[tuple[str, DimValue], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        errors = self._normalize()
        if errors:
            raise PriceBookValidationError(errors)

    def _normalize(self) -> list[dict[str, str]]:
        errors: list[dict[str, str]] = []
        if not isinstance(self.id, str) or not self.id:
            errors.append(field_error("id", "must be a non-empty string"))
        if self.token_type not in TOKEN_TYPES:
            errors.append(field_error("token_type", f"must be one of {', '.join(TOKEN_TYPES)}"))
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            errors.append(field_error("model", "must be a non-empty string or absent"))
        if self.source is not None and not isinstance(self.source, str):
            errors.append(field_error("source", "must be a string (where the price was taken from)"))
        if self.tier_mode not in TIER_MODES:
            errors.append(field_error("tier_mode", "must be graduated or volume"))
        if not _valid_context_window(self.context_window):
            errors.append(field_error("context_window", f"must be an integer from 1 to {MAX_CONTEXT_WINDOW}"))
        object.__setattr__(self, "match", self._normalized_match(errors))
        self._normalize_price(errors)
        normalize_format_2(self, errors)
        window = () if self.hours is None else ((HOURS, f"{self.hours[0]}-{self.hours[1]}"),)
        object.__setattr__(self, "keyed_match", tuple(sorted((*self.match, *window))))
        return errors

    def price_at(self, prompt: int) -> tuple[Decimal, int | None]:
        """A flat rule's unit price for a call with this prompt size, and the prompt tier reached
        (1 for the first above the base price; None: the base price)."""
        for index in range(len(self.prompt_tiers), 0, -1):
            if prompt > self.prompt_tiers[index - 1].above:
                return self.prompt_tiers[index - 1].price, index
        return self.price, None  # type: ignore[return-value]

    def _normalized_match(self, errors: list[dict[str, str]]) -> tuple[tuple[str, DimValue], ...]:
        items = self.match.items() if isinstance(self.match, Mapping) else self.match
        pairs: dict[str, DimValue] = {}
        for key, value in items:
            if not isinstance(key, str) or not key or key == "model":
                errors.append(field_error("match", f"bad dimension name {key!r}"))
            elif isinstance(value, float) or not isinstance(value, str | int):
                errors.append(field_error(f"match.{key}", "must be a string, int or bool"))
            elif key in pairs:
                errors.append(field_error(f"match.{key}", "duplicate dimension"))
            else:
                pairs[key] = value
        return tuple(sorted(pairs.items()))

    def _normalize_price(self, errors: list[dict[str, str]]) -> None:
        if (self.price is None) == (not self.tiers):
            errors.append(field_error("price", "give either price or tiers, not both or neither"))
        if self.price is not None:
            object.__setattr__(self, "price", checked_price(self.price, "price", errors))
        if self.tiers:
            object.__setattr__(self, "tiers", _normalized_tiers(self.tiers, errors))
        elif self.tier_mode == "volume":
            errors.append(field_error("tier_mode", "volume pricing needs tiers"))

    def matches(self, model: str, dimensions: Mapping[str, DimValue]) -> int | None:
        """The model rank (2/1/0) when this rule applies to the model and dimensions, else None."""
        rank = model_rank(self.model, model)
        if rank is None:
            return None
        for key, value in self.match:
            other = dimensions.get(key)
            if type(other) is not type(value) or other != value:
                return None
        return rank

    def max_price(self) -> Decimal:
        """The highest unit price this rule can charge (flat price or the dearest tier)."""
        if self.price is not None:
            return max((self.price, *(t.price for t in self.prompt_tiers)))
        return max(t.price for t in self.tiers)


def _valid_context_window(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool)
                             and 1 <= value <= MAX_CONTEXT_WINDOW)


def _normalized_tiers(raw: Iterable[object], errors: list[dict[str, str]]) -> tuple[Tier, ...]:
    tiers: list[Tier] = []
    items = list(raw)
    previous = 0
    for i, item in enumerate(items):
        up_to, price = (item.up_to, item.price) if isinstance(item, Tier) else _tier_fields(item)
        name = f"tiers[{i}]"
        last = i == len(items) - 1
        if last and up_to is not None:
            errors.append(field_error(f"{name}.up_to", "the last tier must have up_to null"))
        elif not last and (isinstance(up_to, bool) or not isinstance(up_to, int)):
            errors.append(field_error(f"{name}.up_to", "must be an integer (only the last tier is open)"))
        elif not last and up_to <= previous:  # type: ignore[operator]
            errors.append(field_error(f"{name}.up_to", "tiers must be strictly increasing and positive"))
        else:
            previous = up_to if up_to is not None else previous
        checked = checked_price(price, f"{name}.price", errors)
        tiers.append(Tier(up_to if isinstance(up_to, int) else None, checked or Decimal(0)))
    return tuple(tiers)


def _tier_fields(item: object) -> tuple[object, object]:
    if isinstance(item, Mapping):
        return item.get("up_to"), item.get("price")
    return None, None


@dataclass(frozen=True, slots=True)
class PriceVersion:
    """The rules of a price book in force from ``effective_from`` (aware UTC) on."""

    book_id: str
    currency: str
    effective_from: datetime
    rules: tuple[Rule, ...]
    version: str = ""
    max_charge_per_request: Decimal | None = None  # in the currency, at most DEFAULT_SCALE decimals
    context_window: int | None = None  # when the rules that price a call name none
    format: int = 1  # 2: the token types, prompt tiers, hours and fields of pricing.units
    unpriced: str = "error"  # format 2: "zero" rates usage no rule prices at nothing
    _by_id: dict[str, Rule] = field(init=False, repr=False, compare=False)
    _by_model: dict[tuple[str, str], tuple[Rule, ...]] = field(init=False, repr=False, compare=False)
    _generic: dict[str, tuple[Rule, ...]] = field(init=False, repr=False, compare=False)
    timed: bool = field(init=False, repr=False, compare=False)  # some rule has hours
    token_types: frozenset[str] = field(init=False, repr=False, compare=False)  # the types its rules price
    priced_dimensions: frozenset[str] = field(init=False, repr=False, compare=False)  # the names rules match
    _models: frozenset[str | None] = field(init=False, repr=False, compare=False)  # None: a rule for any
    # (a price for every model of a unit that is no token, a call's or an hour's, is not one: units.NOT_TOKENS)
    resolved: dict[tuple[object, ...], object] = field(init=False, repr=False, compare=False)  # rating's cache

    def __post_init__(self) -> None:
        errors = validate_version_fields(self)
        if errors:
            raise PriceBookValidationError(errors)
        object.__setattr__(self, "effective_from", self.effective_from.astimezone(UTC))
        object.__setattr__(self, "rules", tuple(self.rules))
        if self.max_charge_per_request is not None:
            object.__setattr__(self, "max_charge_per_request", to_decimal(self.max_charge_per_request))
        if not self.version:
            at = self.effective_from  # its own time: to the microsecond where it has a fraction
            object.__setattr__(self, "version", at.strftime("%Y-%m-%dT%H:%M:%S" + (".%fZ" if at.microsecond else "Z")))
        by_model: dict[tuple[str, str], list[Rule]] = {}
        generic: dict[str, list[Rule]] = {}
        for rule in self.rules:
            if rule.model is not None and not is_pattern(rule.model):
                by_model.setdefault((rule.token_type, rule.model), []).append(rule)
            else:
                generic.setdefault(rule.token_type, []).append(rule)
        object.__setattr__(self, "_by_id", {rule.id: rule for rule in self.rules})
        object.__setattr__(self, "_by_model", {k: tuple(v) for k, v in by_model.items()})
        object.__setattr__(self, "_generic", {k: tuple(v) for k, v in generic.items()})
        object.__setattr__(self, "timed", any(rule.hours is not None for rule in self.rules))
        object.__setattr__(self, "token_types", frozenset(rule.token_type for rule in self.rules))
        object.__setattr__(self, "priced_dimensions", frozenset(name for rule in self.rules for name, _ in rule.match))
        object.__setattr__(self, "_models", frozenset(r.model for r in self.rules
                                                      if r.model is not None or r.token_type not in NOT_TOKENS))
        object.__setattr__(self, "resolved", {})

    def context_window_for(self, rule_ids: Iterable[str | None]) -> int | None:
        """The context window of a call priced by these rules: the smallest that any of them
        names, else the version's (None: the book does not know it)."""
        named = [r.context_window for i in rule_ids if (r := self._by_id.get(i or "")) and r.context_window]
        return min(named) if named else self.context_window

    def find_rule(self, token_type: str, model: str, dimensions: Mapping[str, DimValue],
                  minute: int | None = None) -> Rule | None:
        """The rule that prices this exact token type by the documented precedence (no fallback);
        ``minute`` (of the UTC day) selects rules with ``hours``, which never apply without it."""
        best: list[Rule] = []
        best_key = (-1, -1)
        for rules in (self._by_model.get((token_type, model), ()), self._generic.get(token_type, ())):
            for rule in rules:
                rank = rule.matches(model, dimensions)
                if rank is None or (rule.hours is not None and (minute is None or not in_hours(rule.hours, minute))):
                    continue
                key = (rank, len(rule.keyed_match))
                if key > best_key:
                    best, best_key = [rule], key
                elif key == best_key:
                    best.append(rule)
        if len(best) > 1:
            ids = ", ".join(r.id for r in best)
            raise PriceBookValidationError("rules", f"ambiguous rules for {model}/{token_type}: {ids}")
        return best[0] if best else None

    def prices_model(self, model: str) -> bool:
        """Whether some rule of the version applies to the model (by name, pattern or no model;
        a rule for every model of a type that counts no tokens, a request fee, a tool call, audio
        seconds, characters, does not count: with ``unpriced: zero`` it made every model, a
        misspelt one too, a model whose tokens are free)."""
        return (model in self._models or None in self._models
                or any(fnmatchcase(model, p) for p in self._models if p is not None and is_pattern(p)))

    def resolve(self, token_type: str, model: str, dimensions: Mapping[str, DimValue],
                minute: int | None = None) -> Rule | None:
        """The rule pricing a token type, with fallbacks. None only when the version's
        ``unpriced`` policy is ``zero``; else no rule is UnpricedModelError."""
        for candidate in (token_type, *FALLBACKS.get(token_type, ())):
            rule = self.find_rule(candidate, model, dimensions, minute)
            if rule is not None:
                return rule
        if self.unpriced == "zero" and self.prices_model(model):
            return None  # a model the version prices, usage of a type it does not: not charged
        raise UnpricedModelError(
            f"no rule of price book {self.book_id} version {self.version} prices "
            f"{token_type} for model {model}",
            model=model,
            token_type=token_type,
        )


def _plausibility_errors(version: PriceVersion) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    if version.max_charge_per_request is not None:
        limit = checked_price(version.max_charge_per_request, "max_charge_per_request", errors)
        if limit is not None and (limit <= 0 or -limit.as_tuple().exponent > DEFAULT_SCALE):  # type: ignore[operator]
            errors.append(field_error("max_charge_per_request", amount_problem(format(limit, "f"))
                                      or f"must be positive, with at most {DEFAULT_SCALE} decimals"))
    if not _valid_context_window(version.context_window):
        errors.append(field_error("context_window", NOT_AN_INTEGER if isinstance(version.context_window, float)
                                  else f"must be an integer from 1 to {MAX_CONTEXT_WINDOW}"))
    return errors


def validate_version_fields(version: PriceVersion) -> list[dict[str, str]]:
    """All problems of a version: identity, currency, time, duplicate ids and ambiguous rules."""
    errors: list[dict[str, str]] = []
    if not isinstance(version.book_id, str) or not version.book_id:
        errors.append(field_error("id", "must be a non-empty string"))
    if not isinstance(version.currency, str) or not _CURRENCY_RE.fullmatch(version.currency):
        errors.append(field_error("currency", "must be a three-letter upper-case code"))
    at = version.effective_from
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        errors.append(field_error("effective_from", "must be an aware datetime (UTC)"))
    if not isinstance(version.version, str):
        errors.append(field_error("version", "must be a string"))
    errors.extend(_plausibility_errors(version))
    errors.extend(format_errors(version))
    rules = tuple(version.rules)
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        if not isinstance(rule, Rule):
            errors.append(field_error(f"rules[{i}]", "must be a Rule"))
        elif rule.id in seen:
            errors.append(field_error(f"rules[{i}].id", f"duplicate rule id {rule.id!r}"))
        else:
            seen.add(rule.id)
    if not errors:
        errors.extend(window_errors(rules))
        errors.extend(ambiguity_errors(rules))
    return errors


@dataclass(frozen=True, slots=True)
class PriceBook:
    """A named price book: its versions sorted by ``effective_from``."""

    id: str
    currency: str
    versions: tuple[PriceVersion, ...]
    _starts: tuple[datetime, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        versions = tuple(sorted(self.versions, key=lambda v: v.effective_from))
        errors: list[dict[str, str]] = []
        for i, v in enumerate(versions):
            if v.book_id != self.id or v.currency != self.currency:
                errors.append(field_error(f"versions[{i}]", "belongs to another book or currency"))
            if i and v.effective_from == versions[i - 1].effective_from:
                errors.append(field_error(f"versions[{i}].effective_from", "two versions at one time"))
        if len({v.version for v in versions}) != len(versions):
            errors.append(field_error("versions", "version identifiers must be unique"))
        if errors:
            raise PriceBookValidationError(errors)
        object.__setattr__(self, "versions", versions)
        object.__setattr__(self, "_starts", tuple(v.effective_from for v in versions))

    def version_at(self, at: datetime) -> PriceVersion:
        """The version in force at ``at`` (latest effective_from <= at), by usage time."""
        if at.tzinfo is None or at.utcoffset() is None:
            raise TypeError("usage time must be an aware datetime")
        i = bisect_right(self._starts, at)
        if i == 0:
            raise UnpricedModelError(f"price book {self.id} has no version in force at {wire_time(at)}")
        return self.versions[i - 1]

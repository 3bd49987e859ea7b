"""Build price versions and books from their JSON shape (as in API.md), listing every error.

Prices must be decimal strings (or ints); a float anywhere is a validation error. Times are
RFC 3339 with an offset (``Z`` included); naive times are refused. A version posted is held to
the limits of :mod:`pricing.books` (rules, dimensions, tiers, name sets, patterns); one read
back from storage is not, so that versions stored before a limit existed still load.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pricing.ambiguity import is_pattern
from pricing.books import (
    MAX_DIMENSION_SETS,
    MAX_MATCH_DIMENSIONS,
    MAX_MODEL,
    MAX_PATTERNS,
    MAX_REPORTED_VARIANTS,
    MAX_RULE_ID,
    MAX_RULES,
    MAX_TIERS,
    REPORTED_DIMENSIONS,
    PriceBook,
    PriceVersion,
    Rule,
)
from pricing.errors import NOT_AN_INTEGER, PriceBookValidationError, field_error
from pricing.rule_fields import FORMAT_2_RULE_FIELDS
from pricing.text import REFUSED_CATEGORIES

_RULE_KEYS = {"id", "token_type", "price", "model", "match", "tiers", "tier_mode", "source", "context_window",
              *FORMAT_2_RULE_FIELDS}


def uppercase_z(text: str) -> str:
    """`text` with a final "z" (UTC, which RFC 3339 5.6 lets be lowercase, as its "t") made "Z":
    datetime.fromisoformat takes any separator, but not a lowercase "z"."""
    return text[:-1] + "Z" if text.endswith("z") else text


def parse_time(value: object, name: str = "effective_from") -> datetime:
    """An aware datetime, in UTC, from an RFC 3339 string (or an aware datetime). In UTC: RFC 3339
    allows offsets up to ±23:59, PostgreSQL reads at most ±15:59 where a time reaches it as text."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(uppercase_z(value))
        except ValueError:
            raise PriceBookValidationError(name, "not an RFC 3339 date-time") from None
    if value is None:  # absent: it was told it "must be an RFC 3339 date-time", as if one were sent
        raise PriceBookValidationError(name, "is required: an RFC 3339 date-time with a UTC offset")
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise PriceBookValidationError(name, "must be an RFC 3339 date-time with a UTC offset")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # in UTC before the year 1 or past 9999 (0001-01-01T00:00:00+05:00)
        raise PriceBookValidationError(name, "out of range in UTC") from None


def starting_time(value: object, name: str = "effective_from") -> datetime:
    """A time something takes effect from, as parse_time, but a fraction finer than a microsecond
    read as the next microsecond (rounded_up): its 7th to 9th digits were dropped, and a version
    from .1234567 rated usage at .123456."""
    return rounded_up(parse_time(value, name), value)


def rounded_up(at: datetime, sent: object) -> datetime:
    """`at`, parsed from `sent`, as a time compared with times kept to the microsecond (a version
    or overrides in force from it, a query's bounds): where the fraction `sent` has a digit past
    the 6th that is not 0, the next microsecond (usage at .123456 is before .1234567); a datetime
    drops those digits (.123456)."""
    finer = re.search(r"\.[0-9]{6}([0-9]+)", sent) if isinstance(sent, str) else None
    return at + timedelta(microseconds=1) if finer and finer.group(1).strip("0") else at


_INTEGER_KEYS = frozenset({"up_to", "above", "context_window", "match"})  # counts, and match's dimension values


def _float_fields(value: Any, path: str, integer: bool = False) -> list[dict[str, str]]:
    """Every float in a rule: a price is a decimal string, a count or dimension value a JSON
    integer (1000.0 and 1e3 included: they were taken as 1000, as the wallet routes did)."""
    if isinstance(value, float):
        return [field_error(path, NOT_AN_INTEGER if integer else "floats are not accepted; use a decimal string")]
    if isinstance(value, Mapping):
        return [e for k, v in value.items()
                for e in _float_fields(v, f"{path}.{k}", integer or k in _INTEGER_KEYS)]
    if isinstance(value, list | tuple):
        return [e for i, v in enumerate(value) for e in _float_fields(v, f"{path}[{i}]", integer)]
    return []


def parse_rule(data: Mapping[str, Any], path: str = "rule") -> Rule:
    """One rule from its JSON object; errors name fields under ``path``."""
    if not isinstance(data, Mapping):
        raise PriceBookValidationError(path, "must be an object")
    errors = _float_fields(data, path)
    errors += [field_error(f"{path}.{k}", "unknown field") for k in data if k not in _RULE_KEYS]
    if errors:
        raise PriceBookValidationError(errors)
    try:
        return Rule(
            id=data.get("id"),  # type: ignore[arg-type]
            token_type=data.get("token_type"),  # type: ignore[arg-type]
            price=data.get("price"),
            model=data.get("model"),
            match=data.get("match") or {},  # type: ignore[arg-type]
            tiers=tuple(data.get("tiers") or ()),
            tier_mode=data.get("tier_mode") or "graduated",
            source=data.get("source"),
            context_window=data.get("context_window"),
            prompt_tiers=tuple(data.get("prompt_tiers") or ()),
            hours=data.get("hours"),
            label=data.get("label"),
            source_date=data.get("source_date"),
        )
    except PriceBookValidationError as exc:
        raise PriceBookValidationError(
            [field_error(f"{path}.{f['field']}", f["message"]) for f in exc.fields]
        ) from None


def _rule_size_errors(raw: Any, path: str) -> list[dict[str, str]]:
    """A rule's match dimensions, tiers, id and model over their limits (checked before it is built)."""
    errors: list[dict[str, str]] = []
    if not isinstance(raw, Mapping):
        return errors
    match = raw.get("match")
    if isinstance(match, Mapping | list) and len(match) > MAX_MATCH_DIMENSIONS:
        errors.append(field_error(f"{path}.match", f"at most {MAX_MATCH_DIMENSIONS} dimensions per rule"))
    for name in ("tiers", "prompt_tiers"):
        if isinstance(raw.get(name), list) and len(raw[name]) > MAX_TIERS:
            errors.append(field_error(f"{path}.{name}", f"at most {MAX_TIERS} tiers per rule"))
    for name, most in (("id", MAX_RULE_ID), ("model", MAX_MODEL)):
        if isinstance(raw.get(name), str) and len(raw[name]) > most:
            errors.append(field_error(f"{path}.{name}", f"at most {most} characters"))
    return errors


def _variety_errors(rules: list[Rule]) -> list[dict[str, str]]:
    """Name sets and patterns over their limits: they bound the cost of the ambiguity check."""
    errors: list[dict[str, str]] = []
    name_sets = {tuple(k for k, _ in rule.match) for rule in rules}
    if len(name_sets) > MAX_DIMENSION_SETS:
        errors.append(field_error("rules", f"at most {MAX_DIMENSION_SETS} distinct sets of match dimension "
                                           f"names per version (this one has {len(name_sets)})"))
    patterns = {rule.model for rule in rules if rule.model is not None and is_pattern(rule.model)}
    if len(patterns) > MAX_PATTERNS:
        errors.append(field_error("rules", f"at most {MAX_PATTERNS} distinct model patterns per version "
                                           f"(this one has {len(patterns)}); name models exactly"))
    return errors + _reported_errors(rules)


def _reported_errors(rules: list[Rule]) -> list[dict[str, str]]:
    """A model's combinations of the values its rules match for the dimensions a usage reports
    (a hold prices each: pricing.estimate.reportable_variants) over MAX_REPORTED_VARIANTS. A rule
    for every model (none, or a pattern) counts towards each model's."""
    shared: dict[str, set[Any]] = {name: set() for name in REPORTED_DIMENSIONS}
    own: dict[str, dict[str, set[Any]]] = {}
    for rule in rules:
        exact = rule.model is not None and not is_pattern(rule.model)
        values = own.setdefault(rule.model, {n: set() for n in REPORTED_DIMENSIONS}) if exact else shared  # type: ignore[arg-type]
        for name, value in rule.match:
            if name in REPORTED_DIMENSIONS:
                values[name].add(value)
    for model, values in [*own.items(), ("every model", shared)]:
        counts = [len(values[name] | shared[name]) for name in REPORTED_DIMENSIONS]
        variants = math.prod(1 + c for c in counts)
        if variants > MAX_REPORTED_VARIANTS:
            return [field_error("rules", f"at most {MAX_REPORTED_VARIANTS} combinations of the "
                                         f"{' and '.join(REPORTED_DIMENSIONS)} values a model's rules match, none "
                                         f"included, per version: {model} has "
                                         f"{' x '.join(f'(1 + {c})' for c in counts)} = {variants}")]
    return []


_UNREACHABLE = frozenset("?#%\\")  # a query, a fragment, an escape (decoded twice), a backslash
# the free-text rule's categories (pricing.text), and Cf too: a label is a path segment, where a
# bidi mark or a joiner is nothing a reader can see or type back
_NOT_IN_A_LABEL = REFUSED_CATEGORIES | {"Cf"}


def _label_errors(label: Any) -> list[dict[str, str]]:
    """A posted version's label must be one that `GET .../versions/{label}` can name: segments
    between `/` non-empty and not `.` or `..` (a path normalizes them away), none of `?#%\\`, no
    control character."""
    if not isinstance(label, str) or not label:
        return []  # the schema's checks, or the effective time as the label
    if any(s in ("", ".", "..") for s in label.split("/")) or any(
            c in _UNREACHABLE or unicodedata.category(c) in _NOT_IN_A_LABEL for c in label):
        return [field_error("version", "must be readable back as a path: segments between '/' not empty, "
                                       "'.' or '..'; no '?', '#', '%', '\\' or control character")]
    return []


def parse_version(data: Mapping[str, Any], *, version: str = "", limits: bool = True) -> PriceVersion:
    """A validated version from ``{"id", "currency", "effective_from", "rules": [...]}``, the
    optional plausibility bounds ``max_charge_per_request`` and ``context_window``, and the
    format 2 fields ``format`` and ``unpriced``. `limits`
    False: a stored version, read back without the limits on what may be posted."""
    if not isinstance(data, Mapping):
        raise PriceBookValidationError("body", "must be an object")
    errors: list[dict[str, str]] = []
    rules: list[Rule] = []
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, Sequence) or isinstance(raw_rules, str):
        errors.append(field_error("rules", "must be a list"))
        raw_rules = []
    if limits and len(raw_rules) > MAX_RULES:
        raise PriceBookValidationError("rules", f"at most {MAX_RULES} rules per version "
                                                f"(this one has {len(raw_rules)})")
    for i, raw in enumerate(raw_rules):
        sizes = _rule_size_errors(raw, f"rules[{i}]") if limits else []
        if sizes:
            errors.extend(sizes)
            continue
        try:
            rules.append(parse_rule(raw, f"rules[{i}]"))
        except PriceBookValidationError as exc:
            errors.extend(exc.fields)
    try:
        effective_from = starting_time(data.get("effective_from"))
    except PriceBookValidationError as exc:
        errors.extend(exc.fields)
    if limits:
        errors.extend(_label_errors(data.get("version")))
    if limits and not errors:
        errors.extend(_variety_errors(rules))
    if errors:
        raise PriceBookValidationError(errors)
    return PriceVersion(
        book_id=data.get("id"),  # type: ignore[arg-type]
        currency=data.get("currency"),  # type: ignore[arg-type]
        effective_from=effective_from,
        rules=tuple(rules),
        version=str(data.get("version") or version),
        max_charge_per_request=data.get("max_charge_per_request"),
        context_window=data.get("context_window"),
        format=data.get("format") or 1,  # type: ignore[arg-type]
        unpriced=data.get("unpriced") or "error",  # type: ignore[arg-type]
    )


def parse_book(data: Mapping[str, Any]) -> PriceBook:
    """A book from ``{"id", "currency", "versions": [{"effective_from", "rules"}, ...]}``."""
    versions = []
    errors: list[dict[str, str]] = []
    for i, raw in enumerate(data.get("versions") or ()):
        body = {"id": data.get("id"), "currency": data.get("currency"), **raw}
        try:
            versions.append(parse_version(body))
        except PriceBookValidationError as exc:
            errors.extend(field_error(f"versions[{i}].{f['field']}", f["message"]) for f in exc.fields)
    if errors:
        raise PriceBookValidationError(errors)
    return PriceBook(id=data.get("id"), currency=data.get("currency"), versions=tuple(versions))  # type: ignore[arg-type]

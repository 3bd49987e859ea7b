"""Build price versions and books from their JSON shape (as in API.md), listing every error.

Prices must be decimal strings (or ints); a float anywhere is a validation error. Times are
RFC 3339 with an offset (``Z`` included); naive times are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pricing.books import PriceBook, PriceVersion, Rule
from pricing.errors import PriceBookValidationError, field_error

_RULE_KEYS = {"id", "token_type", "price", "model", "match", "tiers", "tier_mode", "source"}


def parse_time(value: object, name: str = "effective_from") -> datetime:
    """An aware datetime from an RFC 3339 string (or an aware datetime)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise PriceBookValidationError(name, "not an RFC 3339 date-time") from None
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise PriceBookValidationError(name, "must be an RFC 3339 date-time with a UTC offset")
    return value


def _float_fields(value: Any, path: str) -> list[dict[str, str]]:
    if isinstance(value, float):
        return [field_error(path, "floats are not accepted; use a decimal string")]
    if isinstance(value, Mapping):
        return [e for k, v in value.items() for e in _float_fields(v, f"{path}.{k}")]
    if isinstance(value, list | tuple):
        return [e for i, v in enumerate(value) for e in _float_fields(v, f"{path}[{i}]")]
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
        )
    except PriceBookValidationError as exc:
        raise PriceBookValidationError(
            [field_error(f"{path}.{f['field']}", f["message"]) for f in exc.fields]
        ) from None


def parse_version(data: Mapping[str, Any], *, version: str = "") -> PriceVersion:
    """A validated version from ``{"id", "currency", "effective_from", "rules": [...]}``."""
    if not isinstance(data, Mapping):
        raise PriceBookValidationError("body", "must be an object")
    errors: list[dict[str, str]] = []
    rules: list[Rule] = []
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, Sequence) or isinstance(raw_rules, str):
        errors.append(field_error("rules", "must be a list"))
        raw_rules = []
    for i, raw in enumerate(raw_rules):
        try:
            rules.append(parse_rule(raw, f"rules[{i}]"))
        except PriceBookValidationError as exc:
            errors.extend(exc.fields)
    try:
        effective_from = parse_time(data.get("effective_from"))
    except PriceBookValidationError as exc:
        errors.extend(exc.fields)
    if errors:
        raise PriceBookValidationError(errors)
    return PriceVersion(
        book_id=data.get("id"),  # type: ignore[arg-type]
        currency=data.get("currency"),  # type: ignore[arg-type]
        effective_from=effective_from,
        rules=tuple(rules),
        version=str(data.get("version") or version),
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

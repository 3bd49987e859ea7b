"""Usage records and period-to-date counters: the plain inputs of rating, validated on build.

Token counts are ints (never bool or float), keyed by the token types of
:data:`pricing.books.TOKEN_TYPES`; ``request`` counts calls. Times are aware and kept in UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
from msgspec.structs import force_setattr

from pricing.books import TOKEN_TYPES, DimValue
from pricing.errors import NOT_AN_INTEGER, InvalidUsageError, field_error
from pricing.money import to_decimal

MAX_QUANTITY = 10**15  # a quadrillion tokens in one record is a bug, not usage


def _pairs(value: object) -> list[tuple[object, object]]:
    if isinstance(value, Mapping):
        return list(value.items())
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return [tuple(p) for p in value]  # type: ignore[misc]
    return [(None, value)]


def check_count(value: object, name: str, errors: list[dict[str, str]], maximum: int = MAX_QUANTITY) -> int:
    """Validate a token count: an int (not bool/float: 100.0 is refused as 1.5 is), 0 <= value <= maximum."""
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(field_error(name, NOT_AN_INTEGER if isinstance(value, float)
                                  else f"must be an integer, not {type(value).__name__}"))
        return 0
    if value < 0:
        errors.append(field_error(name, "must not be negative"))
    elif value > maximum:
        errors.append(field_error(name, f"must be at most {maximum}"))
    return value


_ORDER = {token_type: index for index, token_type in enumerate(TOKEN_TYPES)}


_REQUEST = _ORDER["request"]


def _item_order(item: tuple[str, int]) -> int:
    return _ORDER[item[0]]


def _tokens(raw: object, errors: list[dict[str, str]]) -> tuple[tuple[str, int], ...]:
    if type(raw) is dict and all(type(v) is int and 0 <= v <= MAX_QUANTITY for v in raw.values()):
        try:  # the common case, a dict of known types and valid counts: no error to collect
            return tuple(sorted(raw.items(), key=_item_order))
        except (KeyError, TypeError):
            pass  # an unknown type: the full check below names it
    counts: dict[str, int] = {}
    for key, value in _pairs(raw):
        if key not in TOKEN_TYPES:
            message = f"unknown token type; one of {', '.join(TOKEN_TYPES)}"
            errors.append(field_error(f"tokens.{key}", message))
        elif key in counts:
            errors.append(field_error(f"tokens.{key}", "given twice"))
        else:
            counts[key] = check_count(value, f"tokens.{key}", errors)  # type: ignore[index]
    return tuple(sorted(counts.items(), key=lambda kv: TOKEN_TYPES.index(kv[0])))


NOT_A_DIMENSION_VALUE = "must be a string, int or bool"


def _dimensions(raw: object, errors: list[dict[str, str]]) -> tuple[tuple[str, DimValue], ...]:
    if raw == () or (type(raw) is dict and not raw):
        return ()
    dims: dict[str, DimValue] = {}
    for key, value in _pairs(raw):
        if not isinstance(key, str) or not key:
            errors.append(field_error("dimensions", f"bad dimension name {key!r}"))
        elif isinstance(value, float) or not isinstance(value, str | int):
            errors.append(field_error(f"dimensions.{key}", NOT_A_DIMENSION_VALUE))
        else:
            dims[key] = value
    return tuple(sorted(dims.items()))


class Usage(msgspec.Struct, frozen=True, gc=False):
    """What one model call (or usage event) consumed, with its own time and dimensions: an
    immutable msgspec Struct (built for every call rated), checked and normalized when built."""

    model: str
    tokens: tuple[tuple[str, int], ...]
    occurred_at: datetime
    dimensions: tuple[tuple[str, DimValue], ...] = ()

    def __post_init__(self) -> None:
        errors: list[dict[str, str]] = []
        if not isinstance(self.model, str) or not self.model:
            errors.append(field_error("model", "must be a non-empty string"))
        at = self.occurred_at
        if type(at) is datetime and at.tzinfo is UTC:
            pass  # in UTC already
        elif not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
            errors.append(field_error("occurred_at", "must be an aware datetime"))
        else:
            force_setattr(self, "occurred_at", at.astimezone(UTC))
        force_setattr(self, "tokens", _tokens(self.tokens, errors))
        force_setattr(self, "dimensions", _dimensions(self.dimensions, errors))
        if errors:
            raise InvalidUsageError(errors)

    def with_request(self) -> Usage:
        """This usage with one ``request`` counted (a call's per-request fee), built without
        checking again what was checked when this one was built."""
        tokens = self.tokens
        if not tokens or _ORDER[tokens[-1][0]] < _REQUEST:
            counted = (*tokens, ("request", 1))  # every type sorts before it: no request counted yet
        else:
            counts = dict(tokens)
            counts["request"] = 1
            counted = tuple(sorted(counts.items(), key=_item_order))
        usage = self.__copy__()
        force_setattr(usage, "tokens", counted)
        return usage

    @property
    def token_counts(self) -> dict[str, int]:
        """Token counts by type as a plain dict."""
        return dict(self.tokens)

    @property
    def dimension_dict(self) -> dict[str, DimValue]:
        """Dimensions as a plain dict."""
        return dict(self.dimensions)


@dataclass(frozen=True, slots=True)
class PeriodToDate:
    """What the customer used earlier in the billing period: quantity per rule id (for
    graduated tiers) and money already taken from each free allowance."""

    quantities: tuple[tuple[str, int], ...] = ()
    allowance_used: tuple[tuple[str, Decimal], ...] = ()

    def __post_init__(self) -> None:
        errors: list[dict[str, str]] = []
        quantities = {}
        for key, value in _pairs(self.quantities):
            quantities[str(key)] = check_count(value, f"quantities.{key}", errors, maximum=10**18)
        used = {}
        for key, value in _pairs(self.allowance_used):
            try:
                used[str(key)] = to_decimal(value, f"allowance_used.{key}")
            except (TypeError, ValueError) as exc:
                errors.append(field_error(f"allowance_used.{key}", str(exc).split(": ", 1)[-1]))
        if errors:
            raise InvalidUsageError(errors)
        object.__setattr__(self, "quantities", tuple(sorted(quantities.items())))
        object.__setattr__(self, "allowance_used", tuple(sorted(used.items())))

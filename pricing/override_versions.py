"""A customer's overrides over time: versions numbered 1, 2, … each in force from its
``effective_from`` until the next one's; the version in force at a usage's own time rates it
(as price book versions do). A stored body is parsed back into :class:`Overrides` here.

Body (as posted and stored): ``{"contract_prices": [{"id", "model"?, "token_type"?, "price"}],
"discounts": [{"id", "model"?, "token_type"?, "percent"}], "free_allowances": [{"id", "amount"}]}``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

from pricing.errors import PriceBookValidationError, field_error
from pricing.overrides import ContractPrice, Discount, FreeAllowance, Overrides

GROUPS = (("contract_prices", ContractPrice, ("id", "price", "model", "token_type")),
          ("discounts", Discount, ("id", "percent", "model", "token_type")),
          ("free_allowances", FreeAllowance, ("id", "amount")))
MAX_ITEMS = 1000  # overrides of one kind in one version


def parse_overrides(body: Mapping[str, Any]) -> Overrides:
    """The overrides of a body, every bad field listed at once (``contract_prices[2].price``)."""
    errors: list[dict[str, str]] = []
    built: dict[str, list[Any]] = {}
    for name, kind, fields in GROUPS:
        items = body.get(name) or []
        if not isinstance(items, list) or len(items) > MAX_ITEMS:
            errors.append(field_error(name, f"must be a list of at most {MAX_ITEMS} items"))
            continue
        built[name] = []
        for i, item in enumerate(items):
            where = f"{name}[{i}]"
            if not isinstance(item, Mapping):
                errors.append(field_error(where, "must be an object"))
                continue
            unknown = sorted(set(item) - set(fields))
            if unknown:
                errors.append(field_error(f"{where}.{unknown[0]}", "unknown field"))
                continue
            try:
                built[name].append(kind(**{k: item.get(k) for k in fields}))
            except PriceBookValidationError as exc:
                errors.extend(field_error(f"{where}.{f['field']}", f["message"]) for f in exc.fields)
    if errors:
        raise PriceBookValidationError(errors)
    # Overrides' own checks (duplicate ids, ties, discounts over 100 %) name the body's paths too
    return Overrides(tuple(built["contract_prices"]), tuple(built["discounts"]), tuple(built["free_allowances"]))


@dataclass(frozen=True, slots=True)
class OverrideVersion:
    version: int
    effective_from: datetime
    overrides: Overrides


@dataclass(frozen=True, slots=True)
class OverrideHistory:
    """A customer's versions, oldest first (each takes effect after the one before)."""

    versions: tuple[OverrideVersion, ...]

    def __post_init__(self) -> None:
        starts = [v.effective_from for v in self.versions]
        if any(b <= a for a, b in pairwise(starts)):
            raise ValueError("override versions must take effect in order")

    def at(self, at: datetime) -> OverrideVersion | None:
        """The version in force at `at` (None before the first one)."""
        index = bisect_right([v.effective_from for v in self.versions], at)
        return self.versions[index - 1] if index else None

    @property
    def has_allowances(self) -> bool:
        return any(v.overrides.allowances for v in self.versions)


def history(rows: Sequence[tuple[int, datetime, Mapping[str, Any]]]) -> OverrideHistory:
    """A history from stored (version, effective_from, body) rows, oldest first."""
    return OverrideHistory(tuple(OverrideVersion(n, at, parse_overrides(body)) for n, at, body in rows))

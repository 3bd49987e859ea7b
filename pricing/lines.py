"""The values rating produces: priced lines and the rating of one entry, and what both the
general and the fast path of rating need to build them alike."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import NamedTuple

import msgspec

from pricing.books import PriceVersion, Rule
from pricing.errors import UnpricedModelError
from pricing.units import (
    FORMAT_1_TYPES,
    KINDS,
    MODALITY_TYPES,
    PROMPT_TYPES,
    TOKEN_TYPES,
    TOOL_CALLS,
    legacy_counts,
)
from pricing.usage import Usage

TOKEN_ORDER = {token_type: index for index, token_type in enumerate(TOKEN_TYPES)}


class Line(NamedTuple):
    """One priced line, an immutable named tuple (rating builds millions). For usage and discount
    lines amount = quantity * unit_price / per (pricing.units: 1,000,000 tokens, 1 call, ...);
    allowance lines have no quantity."""

    kind: str
    token_type: str | None
    quantity: int
    unit_price: Decimal
    amount: Decimal
    amount_units: int
    rule_id: str | None
    price_version: str
    model: str | None = None
    override_id: str | None = None
    tier: int | None = None  # graduated tier index, or prompt tier (1 = the first above the base)
    note: str | None = None  # shown after the token type on an invoice: "long context", "off-peak"


class Rating(msgspec.Struct, frozen=True, gc=False):
    """The priced lines of one journal entry, exact and rounded once (an immutable msgspec Struct:
    built for every call rated, ten times cheaper than a frozen dataclass)."""

    book_id: str
    price_version: str
    currency: str
    scale: int
    lines: tuple[Line, ...]
    total: Decimal
    total_units: int

    def rule_quantities(self) -> dict[str, int]:
        """Quantity priced per rule id, to add to the period-to-date counters."""
        out: dict[str, int] = {}
        for line in self.lines:
            if line.kind == "usage" and line.rule_id is not None:
                out[line.rule_id] = out.get(line.rule_id, 0) + line.quantity
        return out


def call_tokens(usage: Usage, version: PriceVersion) -> tuple[tuple[str, int], ...]:
    """A call's counts as the version rates them: a format 1 book folds format 2 types into
    the types it knows (pricing.units.legacy_counts); audio and image tokens into ``audio`` and
    ``image`` where a rule of that type prices the call's model (before any type ahead of it in
    their fallbacks: cached audio input is ``cached_input`` where the book prices that)."""
    if version.format != 1 or all(t in FORMAT_1_TYPES for t, _ in usage.tokens):
        return usage.tokens
    for name, quantity in usage.tokens:
        if quantity and KINDS[name].legacy is None and name not in TOOL_CALLS:  # it was dropped: free
            raise UnpricedModelError(
                f"version {version.version} of price book {version.book_id} is format 1, which prices no "
                f"{name} (model {usage.model}): post a format 2 version with a {name} rule", model=usage.model,
                token_type=name)
    if not MODALITY_TYPES & version.token_types:
        return tuple(legacy_counts(dict(usage.tokens)).items())
    dims = usage.dimension_dict
    at = usage.occurred_at
    minute = at.hour * 60 + at.minute if version.timed else None

    def modality(name: str) -> str | None:
        for candidate in KINDS[name].fallbacks:
            if candidate in FORMAT_1_TYPES and version.find_rule(candidate, usage.model, dims, minute) is not None:
                return candidate if candidate in MODALITY_TYPES else None
        return None

    return tuple(legacy_counts(dict(usage.tokens), modality).items())


def prompt_size(tokens: Iterable[tuple[str, int]]) -> int:
    """The prompt size that selects a prompt tier: every input-side token of one call."""
    return sum(q for t, q in tokens if t in PROMPT_TYPES)


def line_note(rule: Rule, prompt_tier: int | None) -> str | None:
    if prompt_tier is None:
        return rule.label
    return "long context" if rule.label is None else f"long context, {rule.label}"



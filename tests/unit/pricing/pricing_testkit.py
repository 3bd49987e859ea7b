"""Shared builders for the pricing unit tests (kept out of conftest to avoid name clashes)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from pricing.books import PriceVersion
from pricing.parse import parse_version

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
JAN_1 = "2026-01-01T00:00:00Z"
FIXTURES = Path(__file__).parent / "fixtures"


def version(*rules: dict[str, Any], effective_from: str = JAN_1, book: str = "standard") -> PriceVersion:
    """A validated USD version of ``book`` with the given rule objects."""
    return parse_version(
        {"id": book, "currency": "USD", "effective_from": effective_from, "rules": list(rules)}
    )


def worked_example_version() -> PriceVersion:
    """The book of the worked example: a per-request fee plus model-a and model-b prices."""
    return version(
        {"id": "call", "token_type": "request", "price": "0.01"},
        {"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"},
        {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
        {"id": "b-in", "model": "model-b", "token_type": "input", "price": "5.00"},
        {"id": "b-out", "model": "model-b", "token_type": "output", "price": "10.00"},
    )


def load_fixture(name: str) -> dict[str, Any]:
    """A provider response fixture; decimals in it are read as Decimal, never float."""
    return json.loads((FIXTURES / name).read_text(), parse_float=Decimal)


def walk_values(value: Any) -> list[Any]:
    """Every leaf value of a rating-like object (dataclasses, msgspec Structs, tuples, dicts)."""
    if hasattr(value, "__dataclass_fields__"):
        return [v for name in value.__dataclass_fields__ for v in walk_values(getattr(value, name))]
    if hasattr(value, "__struct_fields__"):
        return [v for name in value.__struct_fields__ for v in walk_values(getattr(value, name))]
    if isinstance(value, tuple | list):
        return [v for item in value for v in walk_values(item)]
    if isinstance(value, dict):
        return [v for item in value.items() for v in walk_values(item)]
    return [value]

"""The reference price book shipped in ``pricing/data``: public list prices, for tests only.
Nothing loads it implicitly; a customer is never priced from it by default."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from pricing.books import PriceBook
from pricing.parse import parse_book

REFERENCE_FILE = "reference_prices.json"


def _raw() -> dict[str, Any]:
    text = resources.files("pricing").joinpath("data", REFERENCE_FILE).read_text(encoding="utf-8")
    return json.loads(text)  # a float price in the file must fail validation, not be coerced


def load_reference_book() -> PriceBook:
    """The reference book (id ``reference``, USD), validated like any other book."""
    return parse_book(_raw())

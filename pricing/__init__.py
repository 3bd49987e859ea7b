"""tokentill pricing: versioned price books, pure rating, money, usage normalization and
offline token counting. Imports no web framework and nothing from ledger, wallets or api.

Token counting and estimates live in :mod:`pricing.tokens` and :mod:`pricing.estimate`
(imported on demand, as they load tiktoken).
"""

from pricing.books import FALLBACKS, TOKEN_TYPES, PriceBook, PriceVersion, Rule, Tier
from pricing.errors import (
    EncodingIntegrityError,
    InvalidAmountError,
    InvalidUsageError,
    PriceBookValidationError,
    PricingError,
    UnpricedModelError,
)
from pricing.money import DEFAULT_SCALE, format_amount, parse_amount, round_entry
from pricing.normalize import (
    NormalizedUsage,
    normalize_anthropic,
    normalize_canonical,
    normalize_openai,
)
from pricing.overrides import ContractPrice, Discount, FreeAllowance, Overrides
from pricing.parse import parse_book, parse_version
from pricing.rating import Line, Rating, rate, rate_usage, volume_true_up
from pricing.reference import load_reference_book
from pricing.usage import PeriodToDate, Usage

__all__ = [
    "DEFAULT_SCALE", "FALLBACKS", "TOKEN_TYPES", "ContractPrice", "Discount", "EncodingIntegrityError",
    "FreeAllowance", "InvalidAmountError", "InvalidUsageError", "Line", "NormalizedUsage", "Overrides",
    "PeriodToDate", "PriceBook", "PriceBookValidationError", "PriceVersion", "PricingError", "Rating",
    "Rule", "Tier", "UnpricedModelError", "Usage", "format_amount", "load_reference_book",
    "normalize_anthropic", "normalize_canonical", "normalize_openai", "parse_amount", "parse_book",
    "parse_version", "rate", "rate_usage", "round_entry", "volume_true_up",
]

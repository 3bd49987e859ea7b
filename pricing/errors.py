"""Domain errors of the pricing engine, each with a stable machine ``code``.

The API layer maps codes to HTTP statuses; nothing here knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime


def wire_time(at: datetime) -> str:
    """A time in an answer, an event or a refusal, spelled as the API spells every time: RFC 3339 UTC
    with Z (refusals and events said +00:00 beside the Z of the answers and of the webhook's timestamp)."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


class PricingError(Exception):
    """Base of every pricing error; ``code`` is the stable machine-readable name."""

    code = "pricing_error"


class UnpricedModelError(PricingError):
    """Usage that no rule of the price version in force prices: an error, never a free charge."""

    code = "unpriced_model"

    def __init__(self, message: str, *, model: str | None = None, token_type: str | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.token_type = token_type


class _FieldsError(PricingError, ValueError):
    """An error that lists the offending fields as ``[{"field": ..., "message": ...}]``."""

    code = "validation_error"

    def __init__(self, fields: Iterable[Mapping[str, str]] | str, message: str | None = None) -> None:
        if isinstance(fields, str):
            fields = [{"field": fields, "message": message or "invalid"}]
        self.fields: list[dict[str, str]] = [
            {"field": str(f["field"]), "message": str(f["message"])} for f in fields
        ]
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in self.fields)
        super().__init__(message if message and not summary else summary or "invalid")


class InvalidUsageError(_FieldsError):
    """A usage record or provider usage object that is malformed or inconsistent."""


class PriceBookValidationError(_FieldsError):
    """A price book, version, rule or customer override that fails validation."""


class InvalidAmountError(_FieldsError):
    """A money amount that cannot be parsed exactly (too many decimals, exponent, NaN, ...)."""


# what an integer field says of any other number (100.0, 1e2, 1.5): JSON's integers only, no float
NOT_AN_INTEGER = "must be an integer: digits only, no fraction or exponent"


def field_error(field: str, message: str) -> dict[str, str]:
    """Build one ``{"field", "message"}`` entry for a fields-listing error."""
    return {"field": field, "message": message}


class EncodingIntegrityError(PricingError):
    """A bundled tokenizer file whose SHA-256 differs from the pinned one: refuse to use it."""

    code = "encoding_integrity"

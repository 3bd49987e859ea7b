"""Shared pieces of the wallet routes: money on the wire, times, Idempotency-Key handling and
the one way a command's outcome becomes a response (fresh or replayed)."""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, Response

from api.auth import principal_of
from api.errors import error_response
from api.routes.formats import (
    AMOUNT,
    AMOUNT_TEXT,
    DATE_TIME,
    DATE_TIME_TEXT,
    POSITIVE_AMOUNT,
    matches,
    mismatched_patterns,
)
from pricing.errors import InvalidAmountError
from pricing.money import format_amount, parse_amount
from pricing.parse import parse_time
from wallets.batch import IdemKey, Replayed
from wallets.errors import WalletValidationError

SCALE = 9  # atomic units of every wallet currency (wallets.chart.ASSET_SCALE)
MAX_AMOUNT = 10**18  # 1e9 currency units: larger top-ups and holds are mistakes
PROBLEM = "application/problem+json"


def money(units: int | None) -> str | None:
    return None if units is None else format_amount(units, SCALE)


def amount_in(value: str, field: str, *, positive: bool = True) -> int:
    """Parse a decimal money string into atomic units; errors name `field`. The accepted strings
    are exactly those of the published pattern (formats.POSITIVE_AMOUNT or formats.AMOUNT)."""
    if not isinstance(value, str):
        raise WalletValidationError(field, "money is a decimal string, such as \"10.00\"")
    if not matches(POSITIVE_AMOUNT if positive else AMOUNT, value):
        raise WalletValidationError(field, ("must be more than 0: " if positive else "must be 0 or more: ")
                                    + AMOUNT_TEXT)
    try:
        units = parse_amount(value, SCALE)
    except (InvalidAmountError, TypeError) as exc:
        raise WalletValidationError(field, str(exc).split(": ", 1)[-1]) from None
    if units > MAX_AMOUNT or (positive and units <= 0):
        raise WalletValidationError(field, "must be more than 0 and at most 1000000000" if positive
                                    else "must be at most 1000000000")
    return units


def time_in(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str) or not matches(DATE_TIME, value):
        raise WalletValidationError(field, "must be " + DATE_TIME_TEXT)
    try:
        return parse_time(value, field)
    except ValueError as exc:
        raise WalletValidationError(field, "must be " + DATE_TIME_TEXT) from exc


def checked(data: Any, type_: Any = None) -> Any:
    """`data`, once every pattern-constrained string in it is known to match all the way."""
    wrong = mismatched_patterns(data, type_)
    if wrong:
        raise WalletValidationError(wrong[0], "does not match the pattern in the OpenAPI document")
    return data


def integral(value: Any) -> Any:
    """JSON has one kind of number, and JSON Schema counts 5.0 as the integer 5: so do we. Other
    floats stay floats (for the schema, and pricing, to refuse)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [integral(item) for item in value]
    if isinstance(value, dict):
        return {key: integral(item) for key, item in value.items()}
    return value


def shaped(data: Any, type_: Any) -> Any:
    """`data` (decoded JSON) as `type_`, strictly (Litestar's own conversion would also take "5"
    for an integer), or a validation error naming the first field that is wrong."""
    try:
        return checked(msgspec.convert(integral(data), type_), type_)
    except msgspec.ValidationError as exc:
        text = str(exc)  # "Expected `str` - at `$.rules[0].id`" (or "at `key` in `$.…`")
        where = re.search(r" - at (?:`key` in )?`\$\.?([^`]*)`$", text)
        field = (where.group(1) if where else "") or "body"
        raise WalletValidationError(field, text[:where.start()] if where else text) from None


def time_out(value: datetime | str | None) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def body_hash(request: Request, body: Any) -> bytes:
    """What identifies a request for idempotency: method, path and the body's canonical JSON."""
    text = json.dumps([request.method, request.url.path, msgspec.to_builtins(body)], sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).digest()


def idempotency(request: Request, body: Any, render: Callable[[Any], tuple[int, Any]]) -> IdemKey | None:
    """The call's IdemKey when it carries an Idempotency-Key header (scoped to the API key)."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not 1 <= len(key) <= 255:
        raise WalletValidationError("Idempotency-Key", "must be 1 to 255 characters")
    return IdemKey(f"http:{principal_of(request).key_id}", key, body_hash(request, body), render)


def renderer(request: Request, success: Callable[[Any], tuple[int, Any]]) -> Callable[[Any], tuple[int, Any]]:
    """outcome -> (status, body): `success` for results, the problem document for domain errors."""

    def render(outcome: Any) -> tuple[int, Any]:
        if isinstance(outcome, BaseException):
            response = error_response(request, outcome)  # type: ignore[arg-type]
            status, body = response.status_code, response.content
        else:
            status, body = success(outcome)
        return status, {"json": msgspec.json.encode(body).decode()}  # kept as text: replays byte for byte

    return render


def respond(outcome: Any, render: Callable[[Any], tuple[int, Any]]) -> Response:
    replayed = isinstance(outcome, Replayed)
    status, body = (outcome.status, outcome.body) if replayed else render(outcome)
    return Response(body["json"].encode(), status_code=status,
                    media_type=PROBLEM if status >= 400 else "application/json",
                    headers={"Idempotent-Replayed": "true"} if replayed else None)

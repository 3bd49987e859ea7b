"""Opaque keyset cursors: base64url of a small JSON array naming what was listed (the route and a
digest of its filters), the snapshot watermark of the first page, and the last position read.

A listing whose pages need no snapshot (keyset pages of rows that only ever leave it, such as
the console's open reservations) keeps an empty one: `encode_position`, `decode_position`.

A cursor is checked, never trusted: anything malformed, a cursor of another listing or of other
filters is 400 `invalid_cursor`. Authorization never depends on it (every page applies the key's
customers again), and balances are recomputed from postings on every page.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import datetime
from typing import Annotated, Any

from litestar.params import QueryParameter

from api.errors import ApiError
from ledger.journal import parse_snapshot

VERSION = 1
# characters: what a request can carry back. The HTTP server (uvicorn, httptools) refuses a request
# head over 64 KiB with a text/plain 400, before the app, so 200,000 was never reachable; a
# snapshot lists at most max_connections in-progress ids, a few tens of KiB at the most.
MAX_CURSOR = 60_000
PATTERN = "^[A-Za-z0-9_-]+$"  # what encode makes (unpadded base64url), published in the document
# the query parameters of every cursor listing (the journal, statements, budgets)
PAGE = 100
MAX_PAGE = 1000
Limit = Annotated[int, QueryParameter(name="limit", ge=1, le=MAX_PAGE, description="Items per page (1-1000)")]
Cursor = Annotated[str | None, QueryParameter(
    name="cursor", max_length=MAX_CURSOR, description="`next_cursor` of the previous page",
    schema_extra={"one_of": None, "type": "string", "min_length": 1, "pattern": PATTERN})]


def _digest(listing: str, filters: Any) -> str:
    text = json.dumps([listing, filters], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def encode(listing: str, filters: Any, snapshot: str, position: list[Any]) -> str:
    raw = json.dumps([VERSION, _digest(listing, filters), snapshot, position], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def encode_position(listing: str, filters: Any, position: list[Any]) -> str:
    """A cursor of a listing that pins no snapshot: the position reached alone."""
    return encode(listing, filters, "", position)


def invalid(detail: str) -> ApiError:
    return ApiError("invalid_cursor", f"cursor: {detail}; start again without a cursor", 400)


def decode(token: str, listing: str, filters: Any) -> tuple[str, list[Any]]:
    """(snapshot, position) of a cursor that `encode(listing, filters, …)` made."""
    snapshot, position = _decode(token, listing, filters)
    if parse_snapshot(snapshot) is None:
        raise invalid("its snapshot is malformed")
    return snapshot, position


def decode_position(token: str, listing: str, filters: Any) -> list[Any]:
    """The position of a cursor that `encode_position(listing, filters, …)` made."""
    snapshot, position = _decode(token, listing, filters)
    if snapshot:
        raise invalid("not a cursor of this listing")
    return position


def time_and_id(position: list[Any]) -> tuple[datetime, str]:
    """A position of an aware time (ISO 8601) and an id (400 `invalid_cursor` for any other)."""
    try:
        at, item = position
        when = datetime.fromisoformat(at)
    except (TypeError, ValueError):
        raise invalid("not a cursor of this listing") from None
    if when.tzinfo is None or not isinstance(item, str):
        raise invalid("not a cursor of this listing")
    return when, item


def _decode(token: str, listing: str, filters: Any) -> tuple[str, list[Any]]:
    if len(token) > MAX_CURSOR:
        raise invalid("too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise invalid("not a cursor of this API") from None
    if not _storable(value):
        raise invalid("not a cursor of this API")
    if not (isinstance(value, list) and len(value) == 4 and value[0] == VERSION
            and isinstance(value[2], str) and isinstance(value[3], list)):
        raise invalid("not a cursor of this API")
    if value[1] != _digest(listing, filters):
        raise invalid("made for another listing or other filters")
    return value[2], value[3]


def _storable(value: Any) -> bool:
    """Whether every string in a decoded cursor is one a text column takes: json.loads reads a lone
    surrogate escape ("\\ud800") and a NUL, which no cursor we make holds, and a position edited to
    hold one went to the database as a parameter (a 500 for the surrogate, a 422 on `body` for
    the NUL). Walked without recursion: a cursor may nest as deep as json.loads reads."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return False
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
    return True

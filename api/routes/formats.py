"""The wire formats the routes accept, each one regular expression that the OpenAPI document
publishes and the handlers enforce (with `fullmatch`), so that the schema is the behaviour.

The expressions use no lookarounds and `[0-9]` rather than `\\d` (which is any Unicode digit in
Python), so that they mean the same in ECMA-262 (JSON Schema) and in Python.
"""
from __future__ import annotations

import functools
import re
from typing import Annotated, Any

import msgspec
from litestar.params import QueryParameter

from pricing.text import PATTERN as TEXT_PATTERN
from pricing.text import text_problem

MAX_WHOLE_DIGITS = 9  # amounts are at most 1000000000 ...
MAX_DECIMALS = 9  # ... with at most 9 decimals (the atomic unit of every wallet currency)


def _anchored(*alternatives: str) -> str:
    return "^(?:" + "|".join(alternatives) + ")$"


def _positive_amount() -> list[str]:
    """From 0.000000001 up to 1000000000, as plain decimals without leading zeros or a sign."""
    fraction = rf"(?:\.[0-9]{{1,{MAX_DECIMALS}}})?"
    below_one = [rf"0\.{'0' * zeros}[1-9]" + (rf"[0-9]{{0,{rest}}}" if (rest := MAX_DECIMALS - 1 - zeros) else "")
                 for zeros in range(MAX_DECIMALS)]
    return [rf"[1-9][0-9]{{0,{MAX_WHOLE_DIGITS - 1}}}{fraction}",
            rf"1{'0' * MAX_WHOLE_DIGITS}(?:\.0{{1,{MAX_DECIMALS}}})?", *below_one]


POSITIVE_AMOUNT = _anchored(*_positive_amount())
AMOUNT = _anchored(*_positive_amount(), rf"0(?:\.0{{1,{MAX_DECIMALS}}})?")

MAX_PRICE_DECIMALS = 18  # pricing.books.MAX_PRICE_DECIMALS: unit prices are finer than amounts
PRICE = _anchored(rf"(?:0|[1-9][0-9]{{0,{MAX_WHOLE_DIGITS - 1}}})(?:\.[0-9]{{1,{MAX_PRICE_DECIMALS}}})?",
                  rf"1{'0' * MAX_WHOLE_DIGITS}(?:\.0{{1,{MAX_PRICE_DECIMALS}}})?")

_YEAR = "(?:[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"  # 1000-9998: every offset stays in range
_LEAP_YEAR = "(?:[1-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[13579][26])00)"
_DATE = "|".join([
    rf"{_YEAR}-(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
    rf"{_YEAR}-(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)",
    rf"{_YEAR}-02-(?:0[1-9]|1[0-9]|2[0-8])",
    rf"{_LEAP_YEAR}-02-29",
])
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
_OFFSET = "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
DATE_TIME = f"^(?:{_DATE})[Tt]{_TIME}{_OFFSET}$"  # "t" and "z" too: RFC 3339 5.6, NOTE

IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
# any name a usage event's dimension may have (région, user tier, 2fa), of 1 to 200 characters
# (schemas.MAX_DIMENSION_TEXT), but a comma (it separates them) or a control character, with no
# space at either end (the list's are read as separators)
DIMENSION_NAME = r"[^\s,\x00-\x1f\x7f](?:[^,\x00-\x1f\x7f]{0,198}[^\s,\x00-\x1f\x7f])?"
GROUP_BY = rf"^ *(?:{DIMENSION_NAME} *(?:, *{DIMENSION_NAME} *)*)?$"
MAX_GROUP_BY = 16 * 202  # 16 names (wallets.reports.MAX_GROUPS) of 200 characters, a comma and a space each

AMOUNT_TEXT = "a decimal string, such as \"10.00\": at most 1000000000, with at most 9 decimals"
DATE_TIME_TEXT = "an RFC 3339 date-time with an offset, such as \"2026-01-01T00:00:00Z\" (years 1000 to 9998)"


def unstorable_at(text: str) -> int | None:
    """The index of the first character of `text` PostgreSQL text cannot hold, or None: U+0000, or
    a lone surrogate (U+D800 to U+DFFF: a JSON escape left unpaired, or a byte not in UTF-8 that
    argv or the environment gave Python as U+DC80 to U+DCFF)."""
    return next((i for i, c in enumerate(text) if c == "\x00" or "\ud800" <= c <= "\udfff"), None)


def matches(pattern: str, value: str) -> bool:
    """Whether all of `value` is in the language of `pattern` (`fullmatch`: with `search`, as
    msgspec checks patterns, Python's `$` would also let a trailing newline through)."""
    return _compiled(pattern).fullmatch(value) is not None


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@functools.cache
def _type_info(type_: Any) -> msgspec.inspect.Type:
    return msgspec.inspect.type_info(type_)  # slow (it evaluates annotations): once per type


def mismatched_patterns(data: Any, type_: Any = None) -> list[tuple[str, str, bool]]:
    """(path, message, whether it is free text) of the strings in `data` (nested structs, lists and dicts included) that
    are not all in their declared pattern, or that are free text (`free_text`) the rule of
    pricing.text refuses. msgspec checks a pattern with `re.search`, where `$` also matches
    before a trailing newline; JSON Schema's (ECMA-262) `$` does not, nor does this. The free
    text is walked only where `data` as JSON may hold a character the rule refuses (`_suspect`)."""
    return _mismatched(data, _type_info(type(data) if type_ is None else type_), "", _suspect(data))


# what every character the rule refuses is in JSON as msgspec writes it: C0 escaped (a backslash),
# U+007F raw, C1 raw (UTF-8 C2 80 to C2 9F), U+2028 and U+2029 raw (E2 80 A8, E2 80 A9); a
# backslash also starts an escaped quote or backslash, which is walked as well, to be safe
_SUSPECT = re.compile(rb"\\|\x7f|\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]")


def _suspect(data: Any) -> bool:
    """Whether `data` may hold a character pricing.text's rule refuses, by one search of its JSON
    (a reserve's body: under 1 µs, where walking its free text took 26): no, and the walk keeps to
    the patterns, as before the rule."""
    try:
        return _SUSPECT.search(msgspec.json.encode(data)) is not None
    except (TypeError, ValueError):  # not JSON (msgspec.EncodeError is a ValueError): walked
        return True


_PATTERNED: dict[tuple[int, bool], bool] = {}  # (id of a cached type info, free text walked) -> whether walked


def _patterned(info: msgspec.inspect.Type, text: bool) -> bool:
    """Whether any string under `info` has a pattern, or is free text where `text`: a subtree
    without one is not walked (a batch of 1,000 usage events took 9 ms here, walking every usage
    and dimension)."""
    known = _PATTERNED.get((id(info), text))
    if known is None:
        if isinstance(info, msgspec.inspect.StrType):
            known = bool(info.pattern)
        elif text and _is_free_text(info):
            known = True
        else:
            _PATTERNED[(id(info), text)] = True  # a recursive type meets itself: walked, to be safe
            known = any(_patterned(child, text) for child in _children(info))
        _PATTERNED[(id(info), text)] = known
    return known


_FIELDS: dict[tuple[int, bool], list[tuple[str, str, msgspec.inspect.Type]]] = {}  # as _PATTERNED: walked fields


def _patterned_fields(info: msgspec.inspect.StructType, text: bool) -> list[tuple[str, str, msgspec.inspect.Type]]:
    """(name, encoded name, type) of a struct's fields with a pattern under them, found once per
    struct type, not once per value (a batch of 1,000 usage events walked 9 fields each)."""
    fields = _FIELDS.get((id(info), text))
    if fields is None:
        fields = _FIELDS[(id(info), text)] = [(f.name, f.encode_name, f.type) for f in info.fields
                                              if _patterned(f.type, text)]
    return fields


def _children(info: msgspec.inspect.Type) -> list[msgspec.inspect.Type]:
    if isinstance(info, msgspec.inspect.Metadata):
        return [info.type]
    if isinstance(info, msgspec.inspect.UnionType):
        return list(info.types)
    if isinstance(info, msgspec.inspect.StructType):
        return [f.type for f in info.fields]
    if isinstance(info, msgspec.inspect.ListType):
        return [info.item_type]
    if isinstance(info, msgspec.inspect.DictType):
        return [info.key_type, info.value_type]
    return []


def _mismatched(value: Any, info: msgspec.inspect.Type, path: str, text: bool) -> list[tuple[str, str, bool]]:
    if not _patterned(info, text):
        return []
    if isinstance(info, msgspec.inspect.Metadata):
        problem = text_problem(value) if text and _is_free_text(info) and isinstance(value, str) else None
        return [(path, problem, True)] if problem is not None else _mismatched(value, info.type, path, text)
    if isinstance(info, msgspec.inspect.UnionType):
        return [p for member in info.types for p in _mismatched(value, member, path, text)]
    if isinstance(info, msgspec.inspect.StrType):
        return [(path, "does not match the pattern in the OpenAPI document", False)] \
            if isinstance(value, str) and info.pattern and not matches(info.pattern, value) else []
    if isinstance(info, msgspec.inspect.StructType) and isinstance(value, info.cls):
        return [p for name, encoded, kind in _patterned_fields(info, text)
                for p in _mismatched(getattr(value, name), kind, f"{path}.{encoded}".lstrip("."), text)]
    if isinstance(info, msgspec.inspect.ListType) and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _mismatched(item, info.item_type, f"{path}[{i}]", text)]
    if isinstance(info, msgspec.inspect.DictType) and isinstance(value, dict):
        return [p for key, item in value.items()
                for p in (*[(where or "body", "a key " + message, free)
                            for where, message, free in _mismatched(key, info.key_type, path, text)],
                          *_mismatched(item, info.value_type, f"{path}.{key}".lstrip("."), text))]
    return []


_FREE_TEXT = "free_text"


def _is_free_text(info: msgspec.inspect.Type) -> bool:
    return isinstance(info, msgspec.inspect.Metadata) and bool((info.extra or {}).get(_FREE_TEXT))


def free_text(**meta: Any) -> msgspec.Meta:
    """Metadata of a free-text field (a name, a description, a reference, a caller's id, a model,
    a dimension's name or string value): held to the one rule of pricing.text, by `shaped`, with
    a message naming the character and where it is; the document shows the rule as a pattern."""
    return msgspec.Meta(extra={_FREE_TEXT: True}, extra_json_schema={"pattern": TEXT_PATTERN}, **meta)


def documented_as(pattern: str, description: str, **schema: Any) -> msgspec.Meta:
    """Schema-only metadata: the document shows `pattern`, and the handler enforces it (through
    wire.amount_in or wire.time_in) with a message of its own, where msgspec's would quote the
    whole expression."""
    return msgspec.Meta(description=description, extra_json_schema={"pattern": pattern, **schema})


PositiveAmount = Annotated[str, documented_as(POSITIVE_AMOUNT, "More than 0: " + AMOUNT_TEXT)]
Amount = Annotated[str, documented_as(AMOUNT, "0 or more: " + AMOUNT_TEXT)]
DateTime = Annotated[str, documented_as(DATE_TIME, DATE_TIME_TEXT, format="date-time")]
Identifier = Annotated[str, msgspec.Meta(pattern=IDENTIFIER)]  # a customer's id, as its CHECK says
# a query parameter naming one customer (named as the handler's argument): Litestar enforces a query
# parameter's pattern given here, not an Identifier's msgspec.Meta, so GET /v1/budgets?customer_id=bad$$id
# (or empty) listed nothing, 200, where the journal's customer of the same was a 422 naming it
CustomerQuery = Annotated[str | None, QueryParameter(max_length=100, pattern=IDENTIFIER)]
# a query parameter naming one currency, an asset code (named as the handler's argument): the trial
# balance's was bounded at 16 characters only, and `currency=` (empty) answered the default, USD
CurrencyQuery = Annotated[str | None, QueryParameter(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_.-]+$")]

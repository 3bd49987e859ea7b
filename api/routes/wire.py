"""Shared pieces of the wallet routes: money on the wire, times, Idempotency-Key handling, the
one way a command's outcome becomes a response (fresh or replayed), and the edge guard that
refuses what no handler should see (a body that is not JSON, JSON nested too deep, text that
PostgreSQL cannot store)."""
from __future__ import annotations

import asyncio
import hashlib
import math
import re
import uuid
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, NoReturn
from urllib.parse import parse_qsl

import msgspec
from litestar import Request, Response
from litestar.datastructures import MutableScopeHeaders
from litestar.exceptions import ClientException, HTTPException, SerializationException
from litestar.params import QueryParameter
from litestar.response.base import ASGIResponse

from api.accept import JSON, taken
from api.auth import header, principal_of
from api.errors import STATUS_BY_CODE, ApiError, refusal
from api.json_keys import UNPAIRED, nodes, repeated_key, unpaired_surrogate
from api.routes.formats import (
    AMOUNT,
    AMOUNT_TEXT,
    DATE_TIME,
    DATE_TIME_TEXT,
    POSITIVE_AMOUNT,
    matches,
    mismatched_patterns,
    unstorable_at,
)
from ledger.db import Database
from ledger.model import CANONICAL_JSON
from pricing.errors import InvalidAmountError, PriceBookValidationError, field_error
from pricing.money import CURRENCY_MINOR_UNITS, FINER, amount_problem, format_money, minor_unit_text, parse_amount
from pricing.parse import parse_time, rounded_up, uppercase_z
from pricing.rule_fields import unplain_problem
from pricing.text import text_problem
from pricing.usage import NOT_A_DIMENSION_VALUE, NOT_AN_INTEGER
from wallets import reports, store
from wallets.chart import ASSET_SCALE
from wallets.core.idempotency import OK, IdemKey, Replayed, check_key, http_scope
from wallets.core.state import wire_time
from wallets.errors import SubMinorAmountError, TextRuleError, WalletValidationError

SCALE = ASSET_SCALE
MAX_AMOUNT = 10**18  # 1e9 currency units: larger top-ups and holds are mistakes
PROBLEM = "application/problem+json"
MAX_JSON_DEPTH = 32  # arrays and objects within one another; the deepest body we take needs 5


def money(units: int | None, currency: str) -> str | None:
    """Atomic units as the wire shows them: exact, with at least `currency`'s decimals."""
    return None if units is None else format_money(units, currency)


def amount_in(value: str, field: str, *, positive: bool = True) -> int:
    """Parse a decimal money string into atomic units; errors name `field`. The accepted strings
    are exactly those of the published pattern (formats.POSITIVE_AMOUNT or formats.AMOUNT)."""
    if not isinstance(value, str):
        raise WalletValidationError(field, "money is a decimal string, such as \"10.00\"")
    if not matches(POSITIVE_AMOUNT if positive else AMOUNT, value):
        raise WalletValidationError(field, _amount_problem(value, field, positive))
    try:
        units = parse_amount(value, SCALE)
    except (InvalidAmountError, TypeError) as exc:
        raise WalletValidationError(field, str(exc).split(": ", 1)[-1]) from None
    if units > MAX_AMOUNT or (positive and units <= 0):
        raise WalletValidationError(field, "must be more than 0 and at most 1000000000" if positive
                                    else "must be at most 1000000000")
    return units


def _amount_problem(value: str, field: str, positive: bool) -> str:
    """What is wrong with a money string the amount pattern refused (pricing.money.amount_problem:
    below or at 0, past 1000000000, more than 9 decimals; pricing.rule_fields.unplain_problem: a
    leading zero, a zero's sign); else (not a decimal) what an amount looks like. More than 9
    decimals is a _FinerThanAtomic, which cash_in may tell in its currency."""
    said = amount_problem(value, positive=positive)
    if said is not None and said.endswith(FINER):
        raise _FinerThanAtomic(field, said)
    said = said or unplain_problem(value)  # "01", "-0": told so, not "must be more than 0"
    return said or ("must be more than 0: " if positive else "must be 0 or more: ") + AMOUNT_TEXT


class _FinerThanAtomic(WalletValidationError):
    """An amount of more decimals than the atomic unit's 9 (in every currency): `cash_in` tells it
    the currency's own limit where it knows the currency."""


def cash_in(value: str, field: str, currency: str | None, *, positive: bool = True) -> int:
    """amount_in for cash (a top-up, grant, refund, invoice payment, overdraft limit), whose limit
    is its currency's minor unit: an amount past the 9 decimals of the atomic unit that holds a
    fraction of that unit is refused as one of 3 decimals is, 422 `invalid_amount` naming the
    currency ("JPY amounts have no decimals: 1.0000000001"), not the 9 that only prices may reach.
    Without a currency (or one the ISO table does not list, a credit, whose limit is the 9), and for
    extra decimals all 0 ("10.0000000000" yen), amount_in's refusal stands."""
    try:
        return amount_in(value, field, positive=positive)
    except _FinerThanAtomic:
        decimals = CURRENCY_MINOR_UNITS.get(currency or "")
        if currency is not None and decimals is not None and Decimal(value) != round(Decimal(value), decimals):
            raise SubMinorAmountError(field, f"{minor_unit_text(currency)}: {value}", currency=currency,
                                      decimals=decimals) from None
        raise


async def cash_of(value: str, field: str, db: Database, *, positive: bool = True, **whose: Any) -> int:
    """cash_in where the currency must be read (`whose`: a customer_id's, an invoice_id's, as
    wallets.reports.currency_of takes them): read only for an amount past the atomic unit's 9
    decimals."""
    try:
        return amount_in(value, field, positive=positive)
    except _FinerThanAtomic:
        return cash_in(value, field, await db.read(lambda conn: reports.currency_of(conn, **whose)),
                       positive=positive)


def time_param(name: str) -> QueryParameter:
    """An optional date-time query parameter: a string or absent, as the schema says (not
    Litestar's string-or-null), in the published pattern."""
    return QueryParameter(name=name, description=DATE_TIME_TEXT, schema_extra={
        "one_of": None, "type": "string", "pattern": DATE_TIME, "format": "date-time"})


def time_in(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    if type(value) is str and (known := _TIMES.get(value)) is not None:
        return known  # the batch's events often share a time: checked and parsed once
    if not isinstance(value, str) or not matches(DATE_TIME, value):
        raise WalletValidationError(field, "must be " + DATE_TIME_TEXT + _plus_hint(value))
    try:
        parsed = parse_time(value, field)
    except ValueError as exc:
        raise WalletValidationError(field, "must be " + DATE_TIME_TEXT) from exc
    if type(value) is str:
        if len(_TIMES) >= 4096:
            _TIMES.clear()
        _TIMES[value] = parsed
    return parsed


_FRACTION = re.compile(r"\.([0-9]+)")


def bound_in(value: str | None, field: str) -> datetime | None:
    """A time bounding what is kept to the microsecond (`occurred_at >= from`, `< to`, `< at`, and
    an `effective_from`, from which overrides or a version rate usage): a fraction finer than a
    microsecond is read as the next microsecond (pricing.parse.rounded_up), which keeps exactly the
    same times (an entry at .123456 occurred before .1234561, and before .123457); time_in drops
    the 7th to 9th digits (.123456), which left that entry out of `to`/`at` and in `from`."""
    parsed = time_in(value, field)
    return None if parsed is None else rounded_up(parsed, value)


def instant_in(value: str, field: str) -> tuple[datetime, int]:
    """A time as sent, to its 9th digit: (its microsecond, the nanoseconds past it), ordered as the
    instants are. bound_in reads .7890121 and .7890129 alike, as .789013: two bounds compared as
    read were equal where one is before the other."""
    return time_in(value, field), int(_digits(value)[6:9].ljust(3, "0"))


def ends_before(end: str | None, start: str | None, end_field: str, start_field: str) -> bool:
    """Whether a range's end `end` is before its start `start` (both sent, compared to the 9th
    digit): a 422 naming the end, where read as bounds (bound_in) `.7890121` and `.7890129` are one
    microsecond, `.789013`, and the range was taken for an empty one."""
    return end is not None and start is not None and instant_in(end, end_field) < instant_in(start, start_field)


def bound_event_in(value: str | None, event_id: str | None) -> str | None:
    """The event id that narrows a bound `value` within its microsecond (a re-drive window is in
    the order (time, event id)), or none where `value` is finer than a microsecond: such a time
    lies between two microseconds, after every event of the one and before every event of the
    next, whatever the id. bound_in reads it as the next microsecond, and the id beside it was
    applied to that microsecond's events, which the caller did not name (`since` .7890115 from
    `evt_b` skipped the events of .789012 before `evt_b`, `until` kept them)."""
    return None if value is not None and len(_digits(value)) > 6 else event_id


def _digits(sent: str) -> str:
    """The fraction of a second of an RFC 3339 text as sent, its trailing zeros dropped (up to 9
    digits: finer than the microsecond a datetime and PostgreSQL keep)."""
    found = _FRACTION.search(sent)
    return found.group(1).rstrip("0") if found else ""


def instant_text(at: datetime, sent: str) -> str:
    """The instant a time `sent` names (`at`, parsed from it), as an event's hash reads it:
    wire_time, and where the fraction sent is finer than a microsecond, that fraction whole (a
    datetime drops the 7th to 9th digits: .1234561 and .1234569 are two instants, not .123456)."""
    digits = _digits(sent)
    if len(digits) <= 6:
        return wire_time(at)
    return wire_time(at.replace(microsecond=0))[:-1] + "." + digits + "Z"


def spellings(at: datetime, sent: str) -> list[str]:
    """RFC 3339 texts of the instant `sent` names (`at`, parsed from it) that a client may have
    sent it as, `sent` first: `T` or `t`; in UTC with `Z`, `z`, `+00:00` or `-00:00`, or at the
    offset `sent` has; the seconds whole, where they are, or the fraction as sent in as many digits
    as it takes up to 9. (Not every offset: zone_spellings spells the others.) Where the fraction
    is finer than a microsecond, also wire_time(at): the hash of an event kept since c1c9c09 read
    the instant so, to the microsecond."""
    own = datetime.fromisoformat(uppercase_z(sent)).utcoffset()
    digits = _digits(sent)
    fractions = ["." + digits.ljust(n, "0") if n else "" for n in range(len(digits), 10)]
    zones = [(UTC, ("Z", "z", "+00:00", "-00:00"))]
    if own:  # `sent` ends ±hh:mm
        zones.append((timezone(own), (sent[-6:],)))
    texts = [sent]
    for zone, offsets in zones:
        local = at.astimezone(zone)
        day, clock = local.strftime("%Y-%m-%d"), local.strftime("%H:%M:%S")
        texts += [f"{day}{t}{clock}{f}{o}" for t in "Tt" for f in fractions for o in offsets]
    if len(digits) > 6:
        texts.append(wire_time(at))
    return texts


# The offsets a time zone keeps (every one in use is a multiple of 15 minutes, from -12:00 to
# +14:00), besides UTC's: an event kept at one of them before its hash read the instant
ZONE_OFFSETS = tuple(timedelta(minutes=m) for m in range(-720, 841, 15) if m)


def _offset_text(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    return f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def zone_spellings(at: datetime, sent: str) -> Iterator[str]:
    """The texts of the instant `sent` names (`at`) at each of ZONE_OFFSETS but the one `sent`
    has (`spellings` spells that one): `T` or `t`, the seconds whole or the fraction as sent in
    as many digits as it takes up to 9. An event kept before the hash read the instant, at one
    offset, and sent now at another is found so (tried after `spellings`, only on a conflict)."""
    own = datetime.fromisoformat(uppercase_z(sent)).utcoffset()
    digits = _digits(sent)
    fractions = ["." + digits.ljust(n, "0") if n else "" for n in range(len(digits), 10)]
    for offset in ZONE_OFFSETS:
        if offset != own:
            local = at.astimezone(timezone(offset))
            day, clock, zone = local.strftime("%Y-%m-%d"), local.strftime("%H:%M:%S"), _offset_text(offset)
            yield from (f"{day}{t}{clock}{f}{zone}" for t in "Tt" for f in fractions)


# a batch's fraction styles: (digits, whether a zero fraction is left out); 0 digits: none where
# it is zero, else as many as it needs (so (1, True) is the same as (0, False)): 18
FRACTION_STYLES = ((0, False), (1, False), *((n, omit) for n in range(2, 10) for omit in (False, True)))


def _fraction(digits: str, width: int, omit: bool) -> str:
    if omit and not digits:
        return ""
    padded = digits.ljust(width, "0")
    return "." + padded if padded else ""


def uniform_spellings(times: Sequence[tuple[datetime, str]]) -> Iterator[tuple[str, ...]]:
    """A batch's times (each instant and its text as sent) spelled alike, as one serializer spells
    them: `T` or `t`; in UTC with `Z`, `z`, `+00:00` or `-00:00`, or each at the offset it is sent
    at; the fraction in a fixed number of digits, 0 to 9 (more where the instant needs them), a
    zero one written or left out (18 ways): 2 x 5 x 18 = 180 spellings of the batch."""
    parts = []
    for at, sent in times:
        own = datetime.fromisoformat(uppercase_z(sent)).utcoffset()
        utc, local = at.astimezone(UTC), at.astimezone(timezone(own)) if own else at.astimezone(UTC)
        parts.append((utc.strftime("%Y-%m-%d"), utc.strftime("%H:%M:%S"), local.strftime("%Y-%m-%d"),
                      local.strftime("%H:%M:%S"), sent[-1] if sent[-1] in "Zz" else sent[-6:], _digits(sent)))
    for t in "Tt":
        for zone in ("Z", "z", "+00:00", "-00:00", None):
            for width, omit in FRACTION_STYLES:
                if zone is None:
                    yield tuple(f"{day}{t}{clock}{_fraction(digits, width, omit)}{sent_zone}"
                                for _, _, day, clock, sent_zone, digits in parts)
                else:
                    yield tuple(f"{day}{t}{clock}{_fraction(digits, width, omit)}{zone}"
                                for day, clock, _, _, _, digits in parts)


_MARK = f"tokentill-respelled-{uuid.uuid4().hex}"  # no client sends it: a place for a text to try


# texts put in place (one sha256 update each, ~1-15 us with the spelling made) between two turns of
# the event loop while Hashes.holds searches: a conflict's search (up to 2,161 hashes an event,
# 2,161,000 for a batch of 1,000) lets every other request of the worker go on between
PACE = 64


class Hashes(Container[bytes]):
    """sha256 hashes of `value()`'s canonical JSON (as request_hash and body_hash make them) with
    its MARK strings, in the text's order, each replaced by the text of a tuple `texts()` gives:
    computed only when a hash is looked for (`holds`, or `in`: on a conflict), one by one until it
    is found. None are found where the MARKs are not as many as a tuple's texts."""

    __slots__ = ("_texts", "_value", "_width")

    def __init__(self, value: Callable[[], Any], texts: Callable[[], Iterable[Sequence[str]]]) -> None:
        self._value, self._texts, self._width = value, texts, 1

    def __iter__(self) -> Iterator[bytes]:
        head, *pieces = [p.encode() for p in CANONICAL_JSON.encode(self._value()).split(f'"{_MARK}"')]
        self._width = max(len(pieces), 1)  # texts each hash puts in place
        start = hashlib.sha256(head)
        for texts in self._texts():
            if len(texts) != len(pieces):
                return
            digest = start.copy()
            for text, piece in zip(texts, pieces, strict=True):
                digest.update(b'"' + text.encode() + b'"' + piece)  # an RFC 3339 text needs no escape
            yield digest.digest()

    def __contains__(self, digest: object) -> bool:
        return any(found == digest for found in self)

    async def holds(self, digest: bytes, every: int = PACE) -> bool:
        """`digest in self`, on the event loop without holding it: the loop turns before the
        search and again after each hash that brings the texts put in place since its last turn
        to `every` or more (a hash is never cut: one of a batch of 1,000 events puts 1,000)."""
        await asyncio.sleep(0)
        placed = 0
        for found in self:
            if found == digest:
                return True
            placed += self._width
            if placed >= every:
                placed = 0
                await asyncio.sleep(0)
        return False


def marked(item: Any) -> Any:
    """A usage event (JSON values) with its timestamp as the place `Hashes` puts a text."""
    return {**item, "timestamp": _MARK}


def _plus_hint(value: object) -> str:
    """A query string decodes an unencoded '+' as a space: a time whose offset lost its sign so
    is told how to send it, not only asked for the offset it gave."""
    if isinstance(value, str) and matches(DATE_TIME, value.replace(" ", "+")):
        return "; a '+' in a query string arrives as a space: send it as %2B"
    return ""


_TIMES: dict[str, datetime] = {}  # times that passed time_in lately (a datetime is immutable)


def checked(data: Any, type_: Any = None) -> Any:
    """`data`, once every pattern-constrained string in it is known to match all the way, and
    every free-text one (formats.free_text) to hold to pricing.text's rule."""
    wrong = mismatched_patterns(data, type_)
    if wrong:
        field, message, text = wrong[0]
        raise (TextRuleError if text else WalletValidationError)(field, message)
    return data


def refused_in_words(shape_error: WalletValidationError, data: Any, parse: Callable[[Any], object]) -> NoReturn:
    """A priced body (a book version, price overrides) the schema refused, in pricing's words where
    `parse` refuses it too (every bad field at once), or where a price or percent is a decimal
    pricing reads but not in the plain form the schema takes ("01", "-0":
    pricing.rule_fields.unplain_problem); else the schema's own error. msgspec's words for those
    quoted the whole pattern ("Expected `str` matching regex '^(?:(?:0|[1-9]...")."""
    try:
        parse(data)
    except PriceBookValidationError:
        raise
    except (TypeError, ValueError, AttributeError):
        raise shape_error from None  # a shape pricing cannot read at all: the schema's error names it
    unplain = [field_error(where, said) for where, value in _prices(data) if (said := unplain_problem(value))]
    if unplain:
        raise PriceBookValidationError(unplain) from None
    raise shape_error from None


def _prices(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Each `price` and `percent` in a decoded body, with where it is (`rules[0].tiers[1].price`)."""
    if isinstance(node, dict):
        for key, value in node.items():
            at = f"{where}.{key}" if where else str(key)
            yield from [(at, value)] if key in ("price", "percent") else _prices(value, at)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _prices(value, f"{where}[{i}]")


def shaped(data: Any, type_: Any) -> Any:
    """`data` (decoded JSON) as `type_`, strictly (Litestar's own conversion would also take "5"
    for an integer, and JSON Schema 5.0: an integer field takes a JSON integer alone, never a
    number with a fraction or exponent, 100.0 or 1e2 included), or a validation error naming the
    first field that is wrong."""
    try:
        fitted = _fitted(data)
    except _Unfit:
        raise WalletValidationError(*unstorable(data)) from None  # where, and why
    try:
        return checked(msgspec.convert(fitted, type_), type_)
    except msgspec.ValidationError as exc:
        text = str(exc)  # "Expected `str` - at `$.rules[0].id`" (or "at `key` in `$.…`")
        where = re.search(r" - at (?:`key` in )?`\$\.?([^`]*)`$", text)
        field = (where.group(1) if where else "") or "body"
        message = text[:where.start()] if where else text
        wrong = _WRONG_TYPE.fullmatch(message)
        if wrong is not None:
            expected, got = wrong.groups()
            if got == "float" and "int" in expected.split(" | "):  # as pricing says it of a count
                message = NOT_AN_INTEGER
            elif expected == "bool | int | str":  # a dimension's value, as pricing says it
                message = NOT_A_DIMENSION_VALUE
            named, value = _key_named(fitted, field, got)
            if expected == "str" and got in ("int", "bool") and field.endswith("dimensions[...]") and named != field:
                spelled = msgspec.json.encode(value).decode()  # a budget's: a call's 2 is bound by "2"
                message = f'must be a string: "{spelled}" binds a call\'s {spelled}'
            field = named
        unknown = _UNKNOWN.fullmatch(message)
        if unknown is not None:  # name the field itself: "pricebook", not "body"
            field, message = (unknown.group(1) if field == "body" else f"{field}.{unknown.group(1)}"), "unknown field"
        raise WalletValidationError(field, message) from None


_UNKNOWN = re.compile(r"Object contains unknown field `(.*)`")
# a float where an integer goes (`int`, `int | null`, a dimension's `bool | int | str`): one
# message for it wherever it is refused (a budget's limit is not shaped here: budgets._limit)
_WRONG_TYPE = re.compile(r"Expected `([^`]*)`, got `([a-z]+)`")
_STEP = re.compile(r"\[([0-9]+)\]|\.?([^.\[]+)")
_JSON_TYPES: dict[str, Any] = {"float": float, "object": dict, "array": list, "null": type(None), "str": str,
                               "int": int, "bool": bool}


def _key_named(data: Any, field: str, got: str) -> tuple[str, Any]:
    """`field` as msgspec names it, a dict's value as `[...]` (`[0].dimensions[...]`), with the
    key of the dict's first value of the JSON type it `got` instead (`[0].dimensions.tier`), as
    other fields are named; and that value (None: `field` left as it was)."""
    kind = _JSON_TYPES.get(got)
    if not field.endswith("[...]") or kind is None:
        return field, None
    path, at = field[:-5], data
    for step in _STEP.finditer(path):
        index, name = step.groups()
        at = (at[int(index)] if isinstance(at, list) and int(index) < len(at) else None) if index is not None \
            else (at.get(name) if isinstance(at, dict) else None)
    key = next((k for k, v in at.items() if type(v) is kind), None) if isinstance(at, dict) else None
    return (field, None) if key is None else (f"{path}.{key}".lstrip("."), at[key])


_SURROGATE = re.compile(r"[\ud800-\udfff]")  # in a str only as a lone half: pairs decode to one code point


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain U+0000 (NUL): PostgreSQL text cannot hold it"
    if not text.isascii() and unstorable_at(text) is not None:
        return "must not contain a lone surrogate (U+D800 to U+DFFF)"
    return None


class _Unfit(Exception):
    pass


def _fitted(value: Any) -> Any:
    """`value`, once the walk that checks what `unstorable` checks (raising _Unfit where that
    would name a problem) finds nothing: no paths built unless something is wrong, nothing
    copied. A float stays a float, 100.0 included, for msgspec and pricing to refuse where an
    integer goes (it was made an int here: 100.0 tokens were charged as 100, 1.5 refused)."""
    if isinstance(value, str):
        if "\x00" in value or (not value.isascii() and _SURROGATE.search(value)):
            raise _Unfit
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and ("\x00" in key or (not key.isascii() and _SURROGATE.search(key))):
                raise _Unfit
            kind = type(item)
            if kind is str:  # the common leaves, checked here rather than by a call each
                if "\x00" in item or (not item.isascii() and _SURROGATE.search(item)):
                    raise _Unfit
                continue
            if kind is int or kind is bool or item is None:
                continue
            _fitted(item)
        return value
    if isinstance(value, list):
        for item in value:
            _fitted(item)
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise _Unfit
    return value


def unstorable(value: Any, path: str = "") -> tuple[str, str] | None:
    """(field, message) of the first string (key or value) or number in decoded JSON that
    PostgreSQL would refuse to store, or None. Checked before shaping, so that such a value
    never reaches a wallet batch, where it would fail every command that rides with it."""
    for where, node, is_key in nodes(value, path):
        if isinstance(node, str):
            problem = _text_problem(node)
            if problem is not None:
                return where or "body", ("a key " + problem) if is_key else problem
        elif isinstance(node, float) and not is_key and not math.isfinite(node):
            return where or "body", "must be a finite number"
    return None


_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')  # once escapes are gone, a string has no quote inside
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def nested_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON `body` has arrays and objects more than `limit` deep, found by counting
    brackets outside strings, before any parser recurses into it. Linear (no regex here can
    backtrack), and a deep body is known after `limit` brackets."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # brackets in strings only add to the count
    if b"\\" in body:
        body = _ESCAPE.sub(b"", body)
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKET)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return False
    depth = 0
    for byte in brackets:  # about 50 ns a bracket: 50 ms for a mebibyte of them, at worst
        depth += 1 if byte in b"[{" else -1
        if depth > limit:
            return True
    return False


def is_json(media_type: str, options: dict[str, str]) -> bool:
    """application/json or application/*+json, in UTF-8 (the only encoding JSON has, RFC 8259)."""
    media_type = media_type.strip().lower()
    json_type = media_type == "application/json" or (media_type.startswith("application/")
                                                      and media_type.endswith("+json"))
    return json_type and options.get("charset", "utf-8").strip().lower() in ("utf-8", "utf8")


class WireRequest(Request):
    """Litestar's Request, reading Content-Length from the scope's raw headers: its own property
    builds the case-insensitive multidict of every header first (on every request whose body is
    read, the largest single cost of reading it)."""

    @property
    def content_length(self) -> int | None:
        value = header(self, b"content-length")
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise ClientException(f"Invalid content-length: {value!r}") from None


_PLAIN_JSON = frozenset({"application/json", "application/json; charset=utf-8", "application/json;charset=utf-8"})


async def guard_request(request: Request) -> None:
    """Litestar's before_request hook (after the guards, before the body is decoded): path and
    query values PostgreSQL cannot store are 422, a body on a route that takes one must be JSON
    (415, a missing Content-Type included) nested at most MAX_JSON_DEPTH deep (422). None of it
    touches the database."""
    scope = request.scope
    values = (*scope["path_params"].items(), *request.query_params.items()) if scope.get("query_string") \
        else scope["path_params"].items()
    for name, value in values:
        problem = _text_problem(value) if isinstance(value, str) else None
        if problem is not None:
            raise WalletValidationError(name, problem)
    if scope.get("query_string") and scope["path"].startswith("/v1/"):
        _check_query(request)
    if scope["path"].startswith("/v1/"):
        _check_accept(request)
    data = scope["route_handler"].parsed_fn_signature.parameters.get("data")
    if data is None:  # Litestar never reads the body of a route without `data`: nor would a handler
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and scope["path"].startswith("/v1/"):
            _nothing_said(await request.body())
        return
    body = await request.body()  # at most request_max_body_size (413 beyond)
    if not body:
        if data.has_default:
            return
        raise WalletValidationError("body", "a JSON body is required")
    content_type = header(request, b"content-type")
    if content_type not in _PLAIN_JSON and not is_json(*request.content_type):
        raise HTTPException(status_code=415, detail="the body must be JSON: Content-Type application/json")
    coding = header(request, b"content-encoding")
    if coding is not None and coding.strip().lower() not in ("", "identity"):
        raise HTTPException(status_code=415, detail=f"Content-Encoding {coding.strip()} is not supported: "
                                                    "send the body uncompressed")
    if nested_too_deep(body):
        raise WalletValidationError("body", f"JSON nested deeper than {MAX_JSON_DEPTH} arrays and objects")
    try:
        decoded = await request.json()  # decoded once: the handler gets this value
    except SerializationException as exc:
        unpaired = unpaired_surrogate(body)  # msgspec: "Input data was truncated", of a whole body
        if unpaired is not None:
            raise WalletValidationError(unpaired, UNPAIRED) from None
        raise ClientException(str(exc)) from exc  # as Litestar answers it: malformed JSON
    repeated = repeated_key(body, decoded)
    if repeated is not None:
        raise WalletValidationError(repeated, "given more than once in one object")


def _check_accept(request: Request) -> None:
    """An Accept header that refuses (q=0) every media type the route answers in (its
    `opt["media_types"]`, JSON by default) is 406, before the body is read or anything written."""
    accept = request.headers.get("accept")
    if accept is None or "=" not in accept:  # no q= weight: nothing refused (the hot path's usual case)
        return
    answers = request.scope["route_handler"].opt.get("media_types", (JSON,))
    if not taken(accept, answers):
        raise ApiError("not_acceptable", f"the Accept header ({accept}) refuses every media type this route "
                                         f"answers in: {', '.join(answers)}", 406)


def _nothing_said(body: bytes) -> None:
    """A body sent to a route that takes none must say nothing (none, `{}` or `null`): anything
    else would be ignored (`{"amount": "0.50"}` to a release, which releases the whole hold)."""
    if not body.strip() or body.strip() in (b"{}", b"null"):
        return
    if nested_too_deep(body):  # the parser would recurse into it (RecursionError, a 500)
        raise WalletValidationError("body", "this route takes no body")
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise WalletValidationError("body", "this route takes no body (and this one is not JSON)") from None
    if isinstance(decoded, dict) and decoded:
        raise WalletValidationError(str(next(iter(decoded))), "unknown field: this route takes no body")
    if decoded not in ({}, None):
        raise WalletValidationError("body", "this route takes no body")


# route handler: (names, names that repeat, names that are integers, name -> its declared pattern)
_QUERY: dict[Any, tuple[frozenset[str], frozenset[str], frozenset[str], dict[str, str]]] = {}
_DIGITS = re.compile(r"-?[0-9]+")


def _query_names(request: Request) -> tuple[frozenset[str], frozenset[str], frozenset[str], dict[str, str]]:
    """The query parameters the request's route handler takes (their names on the wire), those
    of them that are lists, those that are integers, and the patterns declared for them; read
    from the kwargs models Litestar built for the app."""
    handler = request.route_handler
    known = _QUERY.get(handler)
    if known is None:
        for route in request.app.routes:
            for each, model in getattr(route, "route_handler_map", {}).values():
                params = model.expected_query_params if model is not None else ()
                signature = each.parsed_fn_signature.parameters
                _QUERY[each] = (frozenset(p.field_alias for p in params),
                                frozenset(p.field_alias for p in params if p.is_sequence),
                                frozenset(p.field_alias for p in params if _integer(signature[p.field_name])),
                                {p.field_alias: pattern for p in params
                                 if (pattern := _pattern(signature[p.field_name])) is not None})
        known = _QUERY.setdefault(handler, (frozenset(), frozenset(), frozenset(), {}))
    return known


def _check_query(request: Request) -> None:
    """A query parameter the route does not take, or a single one given twice, is a 422 naming
    it: ignored, a misspelt filter (`?customr=acme`) would answer everyone's data. An integer
    parameter must be digits: msgspec's lax conversion would take `limit=1.0` (or `1e0`) as 1. A
    parameter with a declared pattern must be all in it: msgspec checks one with `re.search`, where
    `$` also matches before a trailing newline (`?customer_id=acme%0A` listed nothing, 200)."""
    names, repeatable, integers, patterns = _query_names(request)
    seen: set[str] = set()
    for name, value in parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True):
        if name not in names:
            raise WalletValidationError(name, "not a query parameter of this route"
                                        + (f"; it takes {', '.join(sorted(names))}" if names else "; it takes none"))
        if name in seen and name not in repeatable:
            raise WalletValidationError(name, "given more than once")
        if name in integers and not _DIGITS.fullmatch(value):
            raise WalletValidationError(name, "must be an integer: digits only")
        if name in patterns and not matches(patterns[name], value):
            raise WalletValidationError(name, _unmatched(patterns[name]))
        seen.add(name)


def check_patterns(handler: Any, values: dict[str, str | None]) -> None:
    """The pattern check the request guard makes of a query, for a caller of a route's function
    (or of what it reads) past the guard, such as a console page: each value given (by the
    handler's argument name) must be all in the pattern its QueryParameter declares, else a 422
    naming it."""
    signature = handler.parsed_fn_signature.parameters
    for name, value in values.items():
        pattern = _pattern(signature[name])
        if value and pattern is not None and not matches(pattern, value):
            raise WalletValidationError(name, _unmatched(pattern))


def _unmatched(pattern: str) -> str:
    return f"must match the pattern {pattern}, all of it"


def _pattern(field: Any) -> str | None:
    """The pattern a handler parameter's QueryParameter declares, if any."""
    return getattr(field.kwarg_definition, "pattern", None)


def _integer(field: Any) -> bool:
    """Whether a handler parameter is an integer (or an optional one)."""
    return int in (field.annotation, *(field.args if field.is_optional else ()))


def time_out(value: datetime | str | None) -> str | None:
    """A time in an answer: a datetime in UTC with a Z (pricing.errors.wire_time), a string (a
    result's time already spelled) with its +00:00 as Z."""
    if value is None:
        return None
    if not isinstance(value, str):
        return wire_time(value)
    return value[:-6] + "Z" if value.endswith("+00:00") else value


def body_hash(request: Request, body: Any, path: str | None = None) -> bytes:
    """What identifies a request for idempotency: method, path and the body's canonical JSON."""
    text = CANONICAL_JSON.encode([request.method, path or request.url.path, msgspec.to_builtins(body)])
    return hashlib.sha256(text.encode()).digest()


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key, read as UTF-8 and stripped, or None. Sent on two lines it is
    two keys, and a proxy or log that reads the other line keys the call differently: a 422 naming
    the header."""
    lines = [value for name, value in request.scope["headers"] if name.lower() == b"idempotency-key"]
    if len(lines) > 1:
        raise WalletValidationError("Idempotency-Key", "given more than once: send one key")
    key = header(request, b"idempotency-key")
    if key is None:
        return None
    try:  # read as UTF-8, as a bulk item's JSON key: "clé" either way is one key (Latin-1 made it "clÃ©")
        key = key.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        raise WalletValidationError("Idempotency-Key", "must be UTF-8") from None
    return checked_key(key.strip(), "Idempotency-Key")


def checked_key(key: str, field: str) -> str:
    """An idempotency key (stripped) held to its length and to the rule of free text: a key is an
    id the caller makes up, logged and exported as one; a bad one is a 422 naming `field`."""
    if not 1 <= len(key) <= 255:
        raise WalletValidationError(field, "must be 1 to 255 characters")
    problem = text_problem(key)
    if problem is not None:
        raise WalletValidationError(field, problem)
    return key


def idempotency(request: Request, body: Any, *, key: str | None = None, path: str | None = None,
                field: str = "Idempotency-Key") -> IdemKey | None:
    """The call's IdemKey when it carries an Idempotency-Key header (scoped to the customers the API
    key acts for: `http_scope`). A
    bulk call's item gives its own `key` and the `path` of the single call it stands for, so that
    both share one key: sent either way, it is answered (and charged) once; a bad one is refused
    naming `field`, where the item's key came from."""
    key = idempotency_key(request) if key is None else checked_key(key.strip(), field)
    if key is None:
        return None
    principal = principal_of(request)
    scope = http_scope(principal.visible(), own=principal.scope.startswith("customer:"))
    return IdemKey(scope, key, body_hash(request, body, path))


async def kept_answer(db: Database, idem: IdemKey | None, customer_id: str | None = None) -> Replayed | None:
    """The answer kept under `idem`, to replay (an idempotency_conflict if the body differs),
    looked up before the route looks up what it acts on: a DELETE retried after a lost answer
    answers what it first answered, though what it deleted is gone. A wallet command's answer is
    kept in its customer's lane: `customer_id` names it."""
    if idem is None:
        return None
    customers = () if customer_id is None else (customer_id,)
    loaded = await db.read(lambda conn: store.load(conn, customers, idempotency=[(idem.scope, idem.key)]))
    return check_key(loaded.idempotency.get((idem.scope, idem.key)), idem)


def _own_code(result: Any) -> str:
    return result.code


@dataclass(frozen=True, slots=True)
class Answer:
    """How a route answers an outcome. `wire` makes a result its response (None: the result is
    already {"json": text}, composed here); `kept` is the type a kept body is rebuilt as for it;
    `code` is a fresh result's outcome code. A replay is answered by the same function as the
    first answer, from the code and body kept: the same status and the same bytes."""

    wire: Callable[[Any], Any] | None = None
    kept: Any = None
    code: Callable[[Any], str] = _own_code


COMPOSED = Answer(code=lambda _: OK)  # an answer composed at the edge, kept as its text


def answered(request: Request, outcome: Any, answer: Answer) -> tuple[int, bytes, bool]:
    """(status, body bytes, replayed) of a fresh result or of a kept answer. A fresh result that
    gives an earlier one again, nothing done (the same final settle under another key), is a replay."""
    if not isinstance(outcome, Replayed):
        return (*_rendered(request, answer.code(outcome), outcome, answer), getattr(outcome, "replayed", False))
    if outcome.status is not None:  # kept before answers had codes: the first answer's status and text
        return outcome.status, outcome.body["json"].encode(), True
    body = outcome.body
    if answer.kept is not None and STATUS_BY_CODE.get(outcome.code, 422) < 400:
        body = msgspec.convert(body, answer.kept)
    return (*_rendered(request, outcome.code, body, answer), True)


def _rendered(request: Request, code: str, body: Any, answer: Answer) -> tuple[int, bytes]:
    status = STATUS_BY_CODE.get(code, 422)
    if status >= 400:
        status, problem = refusal(request, code, body)
        return status, msgspec.json.encode(problem)
    if answer.wire is None:
        return status, body["json"].encode()
    return status, msgspec.json.encode(answer.wire(body), order="deterministic")  # dicts as jsonb gives them back


class _Sent(ASGIResponse):
    """What Litestar's ASGIResponse sends for bytes, a media type and an optional
    Idempotent-Replayed header (the same start message: these headers, then content-type and
    content-length), built without its generic header handling."""

    __slots__ = ()

    def __init__(self, body: bytes, status: int, media_type: str, replayed: bool,
                 retry_after: str | None = None) -> None:
        headers = [(b"idempotent-replayed", b"true")] if replayed else []
        if retry_after is not None:
            headers.append((b"retry-after", retry_after.encode("latin-1")))
        headers.append((b"content-type", media_type.encode("latin-1")))
        headers.append((b"content-length", str(len(body)).encode("latin-1")))
        self.headers = MutableScopeHeaders({"headers": headers})
        self.background, self.body, self.content_length, self._encoded_cookies = None, body, len(body), ()
        self.encoding, self.is_head_response, self.status_code = "utf-8", False, status


class Answered(Response):
    """A wallet route's answer: bytes already encoded, a status and whether it is a replay.
    Turned into `_Sent` directly when nothing else (route headers, cookies, a background task, a
    HEAD request) asks for Litestar's general path; that path cost more than the route's own work."""

    def __init__(self, body: bytes, status: int, replayed: bool, retry_after: str | None = None) -> None:
        # What Response.__init__ sets for these arguments, without its general conversions.
        self.content, self.status_code, self._replayed, self._retry_after = body, status, replayed, retry_after
        self.media_type = PROBLEM if status >= 400 else "application/json"
        self.headers = {"Idempotent-Replayed": "true"} if replayed else {}
        if retry_after is not None:
            self.headers["Retry-After"] = retry_after
        self.background, self.cookies, self.encoding, self.response_type_encoders = None, [], "utf-8", {}

    def to_asgi_response(self, app: Any, request: Request, *, background: Any = None, cookies: Any = None,
                         encoded_headers: Any = None, headers: Any = None, is_head_response: bool = False,
                         media_type: Any = None, status_code: int | None = None,
                         type_encoders: Any = None) -> ASGIResponse:
        if background or cookies or encoded_headers or headers or is_head_response or self.cookies \
                or self.background:
            return super().to_asgi_response(app, request, background=background, cookies=cookies,
                                            encoded_headers=encoded_headers, headers=headers,
                                            is_head_response=is_head_response, media_type=media_type,
                                            status_code=status_code, type_encoders=type_encoders)
        return _Sent(self.content, self.status_code, self.media_type, self._replayed, self._retry_after)


def respond(request: Request, outcome: Any, answer: Answer) -> Response:
    """The response to a fresh result or a kept answer (refusals are raised, and answered by the
    error handlers, unless replayed)."""
    status, body, replayed = answered(request, outcome, answer)
    # a refusal replayed with the Retry-After its first answer had (a rolling budget window's wait,
    # as its body's retry_after_seconds): the replay answered the body alone, without the header
    kept = outcome.body if isinstance(outcome, Replayed) and outcome.status is None and status >= 400 else None
    wait = kept.get("retry_after_seconds") if isinstance(kept, dict) else None
    return Answered(body, status, replayed, str(wait) if isinstance(wait, int) else None)


def composed(body: Any) -> dict[str, str]:
    """An answer composed at the edge, as the text it is kept and answered as."""
    return {"json": msgspec.json.encode(body).decode()}

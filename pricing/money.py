"""Exact money: atomic units, decimal strings, currencies and the one rounding rule.

Amounts inside tokentill are ``int`` counts of a currency's *atomic unit*, ``10**-scale`` of
the currency (default scale 9: a nano-dollar, because one token of a cheap model costs a few
billionths of a dollar). Prices and rating work in :class:`decimal.Decimal` under a local
context (:func:`pricing_context`); floats are rejected everywhere.

Rounding rule (:func:`round_entry`), the only one in the engine: an entry's exact total is
rounded once to atomic units with ROUND_HALF_EVEN; each line's exact amount is floored to
atomic units and the units still missing are handed out one each to the lines with the
largest fractional remainders (ties: earlier line first). The lines therefore sum exactly to
the rounded total, each line is within one unit of its exact amount, and the total is within
half a unit of the exact total.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from decimal import (
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)

from pricing.errors import InvalidAmountError

DEFAULT_SCALE = 9  # the atomic unit of every currency, 10**-9; wallets.chart.ASSET_SCALE is this one
MAX_SCALE = 18
SHOWN_DECIMALS = 2  # the decimals shown of an asset the table below does not list (a credit, say)

# ISO 4217 minor units, the one table of them: the decimals an amount always shows (`format_money`)
# and an invoice line is rounded to (wallets.core.billing.line_decimals; an asset not listed here
# keeps its atomic unit there). Amounts themselves are atomic units at DEFAULT_SCALE in every currency.
# Every active code of ISO 4217's list one (and a few withdrawn since, for ledgers that hold them),
# funds codes included; the codes with no minor unit (gold XAU, silver XAG, XDR, the test code
# XTS, ...) are not listed. Before, only 31 were: a dirham (AED) or CFA franc (XOF) invoice asked
# its exact 0.075 or 4.5, which no payment could match, and cash took a fraction of a franc.
_ZERO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"
_FOUR_DECIMALS = "CLF UYW"
_TWO_DECIMALS = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN "
    "BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP "
    "GBP GEL GHS GIP GMD GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT "
    "LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO "
    "NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS "
    "SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD "
    "XCG YER ZAR ZMW ZWG ZWL"
)
CURRENCY_MINOR_UNITS: dict[str, int] = {
    code: decimals
    for codes, decimals in ((_TWO_DECIMALS, 2), (_ZERO_DECIMALS, 0), (_THREE_DECIMALS, 3), (_FOUR_DECIMALS, 4))
    for code in codes.split()
}

_AMOUNT_RE = re.compile(r"(-)?([0-9]+)(?:\.([0-9]+))?")  # ASCII: \d takes any Unicode digit, and Decimal reads them
# Digits enough for every exact amount valid inputs make: a count (16 digits) at a price (28) is 44,
# a discount's share of it (a percent of 20 more) 64, and lines of such amounts summed a few more.
# At 60, a discount of a huge charge was trapped as Inexact (a 500) before the charge could be
# refused as more than a posting carries (wallets.core.rating.unpostable).
_CONTEXT = Context(
    prec=100,
    rounding=ROUND_HALF_EVEN,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)


_DIVIDE = Context(prec=60, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow])


def per_amount(value: Decimal, per: int) -> Decimal:
    """``value / per``: exact when ``per`` is a power of ten (tokens, calls); for other units
    (3,600 seconds an hour) rounded half-even to 30 decimal places. That is far below an atomic
    unit, and a quotient that ends exactly on a half unit has fewer places (a price has at most
    18), so the one rounding to atomic units gives what it gives on the exact quotient."""
    if per == 1:
        return value
    if per in _POWERS_OF_TEN:
        return value / per
    with localcontext(_DIVIDE):
        return (value / per).quantize(_PLACES)


_POWERS_OF_TEN = frozenset(10**k for k in range(19))
_PLACES = Decimal(1).scaleb(-30)


def pricing_context() -> AbstractContextManager[Context]:
    """A local 100-digit decimal context that traps any inexact result (never the global one)."""
    return localcontext(_CONTEXT)


def discount_unit(price: Decimal, percent: Decimal) -> Decimal:
    """A discount's unit price off `price`: -price x percent / 100, the percent in its normal form
    (a percent stored as "10.0" or "1E+1" is 10, "12.50" is 12.5), so one percent writes one unit
    price wherever it is derived (a charge's discount line, a held call's, a close's true-up line of
    the discount): -0.10 of 1.00 at 10 %, never -0.100. The caller holds the pricing context."""
    normal = percent.normalize()
    whole = isinstance(normal.as_tuple().exponent, int) and normal.as_tuple().exponent > 0  # 1E+1: 10
    return -price * (normal.quantize(Decimal(1)) if whole else normal) / 100


def shown_decimals(currency: str) -> int:
    """The decimals an amount in `currency` always shows: its minor unit (JPY 0, USD 2, KWD 3),
    `SHOWN_DECIMALS` for an asset the table does not list."""
    return CURRENCY_MINOR_UNITS.get(currency, SHOWN_DECIMALS)


def minor_unit(currency: str, scale: int = DEFAULT_SCALE) -> int:
    """Atomic units (at `scale`) in one of `currency`'s minor units: a cent is 10**7; 1 for an asset
    the table does not list (a credit keeps its atomic unit)."""
    decimals = CURRENCY_MINOR_UNITS.get(currency)
    return 1 if decimals is None or decimals >= scale else 10 ** (scale - decimals)


def finer_than_minor_unit(units: int, currency: str, scale: int = DEFAULT_SCALE) -> bool:
    """Whether `units` (atomic, at `scale`) hold a fraction of `currency`'s minor unit (half a yen,
    a tenth of a cent). Never for an asset the table does not list: a credit keeps its atomic
    unit. Cash (a top-up, a payment) must not; a price or a charge may."""
    return abs(units) % minor_unit(currency, scale) != 0


def minor_unit_text(currency: str) -> str:
    """How a person is told a currency's minor unit: "JPY amounts have no decimals", "KWD
    amounts have 3 decimals" (KeyError for an asset the table does not list)."""
    decimals = CURRENCY_MINOR_UNITS[currency]
    return f"{currency} amounts have {'no' if decimals == 0 else decimals} decimals"


def format_money(units: int, currency: str, scale: int = DEFAULT_SCALE) -> str:
    """Atomic units of `currency` as people and other books read them, exact: at least the
    currency's decimals, more only where the amount has them (JPY 1000 "1000", 1.5 "1.5"; KWD
    1.5 "1.500"; USD 0.00015 "0.00015")."""
    return format_amount(units, scale, min(shown_decimals(currency), scale))


def plain(value: str | None) -> str | None:
    """A decimal as a line stores it (str(Decimal): "5E-7" for 0.0000005) as it is shown (JSON, CSV,
    PDF, the console): format(d, "f"), never an exponent, with the digits the value carries (the
    price book's "0.50" stays "0.50", "1E+1" is "10"); a value str(Decimal) wrote plainly already is
    returned as it is, and None stays None. Stored lines keep their text: rollup items group by it
    and a finalized document's hash covers it."""
    if value is None or ("E" not in value and "e" not in value):
        return value
    return format(Decimal(value), "f")


MOST = 10**9  # the most an amount taken in may be, in any currency (larger top-ups and holds are mistakes)
FINER = f"more than the {DEFAULT_SCALE} an amount may have"  # the atomic unit's decimals, in every currency


def amount_problem(value: str, *, positive: bool = True) -> str | None:
    """What is wrong with a decimal string as an amount, in one set of words for every route and
    book: below (or at) 0 ("must be more than 0, not -1.00"), past MOST, more decimals than the
    atomic unit's (ending in FINER); None for an amount that is fine, or a string no decimal."""
    form = _AMOUNT_RE.fullmatch(value)
    if form is None:
        return None
    decimals, number = len(form.group(3) or ""), Decimal(value)
    if number < 0 or (positive and number == 0):
        return f"must be more than 0, not {value}" if positive else f"must be 0 or more, not {value}"
    if number > MOST:
        return f"{value} is more than {MOST}, the most an amount may be"
    return f"{value} has {decimals} decimals, {FINER}" if decimals > DEFAULT_SCALE else None


def _check_scale(scale: int) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= MAX_SCALE:
        raise TypeError(f"scale must be an int in 0..{MAX_SCALE}")


def to_decimal(value: object, field: str = "amount", *, allow_negative: bool = False) -> Decimal:
    """Exact Decimal from a decimal string, int or Decimal; floats, bools, NaN and inf are refused."""
    if isinstance(value, float):
        raise TypeError(f"{field}: floats are not accepted for money; pass a decimal string")
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise InvalidAmountError(field, "must be a decimal string, int or Decimal")
    if isinstance(value, str):
        match = _AMOUNT_RE.fullmatch(value)
        if match is None:
            raise InvalidAmountError(field, f"not a plain decimal number: {value!r}")
        result = Decimal(value)
    else:
        result = Decimal(value)
    if not result.is_finite():
        raise InvalidAmountError(field, "must be finite")
    if result < 0 and not allow_negative:
        raise InvalidAmountError(field, "must not be negative")
    return result


def parse_amount(
    text: str | int | Decimal, scale: int = DEFAULT_SCALE, *, allow_negative: bool = False
) -> int:
    """Parse a decimal money string (or int/Decimal) into exact atomic units at ``scale``."""
    _check_scale(scale)
    if isinstance(text, str):
        match = _AMOUNT_RE.fullmatch(text)
        if match is None:
            raise InvalidAmountError("amount", f"not a plain decimal number: {text!r}")
        if match.group(3) and len(match.group(3)) > scale:
            raise InvalidAmountError("amount", f"more than {scale} decimal places: {text!r}")
    value = to_decimal(text, "amount", allow_negative=allow_negative)
    units = value.scaleb(scale)
    if units != units.to_integral_value():
        raise InvalidAmountError("amount", f"more than {scale} decimal places: {text!r}")
    return int(units)


def format_amount(units: int, scale: int = DEFAULT_SCALE, min_decimals: int = 2) -> str:
    """Exact decimal string for atomic units, trailing zeros trimmed down to ``min_decimals``."""
    _check_scale(scale)
    if isinstance(units, bool) or not isinstance(units, int):
        raise TypeError("units must be an int")
    if not 0 <= min_decimals <= scale:
        raise ValueError("min_decimals must be between 0 and scale")
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**scale)
    digits = str(frac).rjust(scale, "0") if scale else ""
    digits = digits.rstrip("0").ljust(min_decimals, "0")
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def units_of(amount: Decimal, scale: int = DEFAULT_SCALE) -> Decimal:
    """An exact amount expressed in (possibly fractional) atomic units."""
    return amount.scaleb(scale)


def round_entry(amounts: Sequence[Decimal], scale: int = DEFAULT_SCALE) -> tuple[int, tuple[int, ...]]:
    """Apply the rounding rule: (total units, per-line units summing exactly to the total)."""
    _check_scale(scale)
    with pricing_context():
        exact = [units_of(a, scale) for a in amounts]
        total = int(sum(exact, Decimal(0)).to_integral_value(rounding=ROUND_HALF_EVEN))
        floors = [int(u.to_integral_value(rounding=ROUND_FLOOR)) for u in exact]
        remainders = [u - f for u, f in zip(exact, floors, strict=True)]
    missing = total - sum(floors)
    order = sorted(range(len(floors)), key=lambda i: (-remainders[i], i))
    for i in order[:missing]:
        floors[i] += 1
    return total, tuple(floors)

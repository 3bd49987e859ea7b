from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pricing.errors import InvalidAmountError
from pricing.money import (
    CURRENCY_MINOR_UNITS,
    DEFAULT_SCALE,
    format_amount,
    parse_amount,
    round_entry,
    shown_decimals,
)


def test_default_atomic_scale_is_nine_decimals():
    assert DEFAULT_SCALE == 9


def test_currency_table_knows_minor_units():
    assert shown_decimals("USD") == 2
    assert shown_decimals("EUR") == 2
    assert shown_decimals("GBP") == 2
    assert shown_decimals("JPY") == 0
    assert CURRENCY_MINOR_UNITS["KWD"] == 3


@pytest.mark.parametrize(
    ("units", "text"),
    [
        (150_000, "0.00015"),
        (0, "0.00"),
        (104_700_000_000, "104.70"),
        (1, "0.000000001"),
        (-500_000_000, "-0.50"),
        (100_000_000_000, "100.00"),
        (123_456_789_012, "123.456789012"),
    ],
)
def test_format_amount_is_exact_and_trims_to_min_decimals(units, text):
    assert format_amount(units) == text


def test_format_amount_respects_scale_and_min_decimals():
    assert format_amount(1234, scale=2) == "12.34"
    assert format_amount(7, scale=0, min_decimals=0) == "7"
    assert format_amount(150_000, min_decimals=6) == "0.000150"


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("104.70", 104_700_000_000),
        ("0.000150", 150_000),
        ("0", 0),
        ("5", 5_000_000_000),
        ("0.000000001", 1),
        (3, 3_000_000_000),
        (Decimal("0.25"), 250_000_000),
    ],
)
def test_parse_amount_is_exact(text, units):
    assert parse_amount(text) == units


@pytest.mark.parametrize(
    "text",
    [
        "1e3",
        "1E-2",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        " 1",
        "1.",
        ".5",
        "+1",
        "1,5",
        "",
        "0x10",
        "0.0000000001",
    ],
)
def test_parse_amount_refuses_anything_but_plain_decimals_within_scale(text):
    with pytest.raises(InvalidAmountError) as info:
        parse_amount(text)
    assert info.value.code == "validation_error"


def test_parse_amount_refuses_floats_and_bools():
    with pytest.raises(TypeError):
        parse_amount(0.1)  # type: ignore[arg-type]
    with pytest.raises(InvalidAmountError):
        parse_amount(True)  # type: ignore[arg-type]


def test_parse_amount_refuses_negatives_unless_allowed():
    with pytest.raises(InvalidAmountError):
        parse_amount("-1.00")
    assert parse_amount("-1.00", allow_negative=True) == -1_000_000_000


def test_parse_amount_counts_decimals_against_the_scale():
    assert parse_amount("1.23", scale=2) == 123
    with pytest.raises(InvalidAmountError):
        parse_amount("1.234", scale=2)
    with pytest.raises(InvalidAmountError):
        parse_amount(Decimal("NaN"))


@given(st.integers(min_value=-(10**20), max_value=10**20), st.integers(min_value=0, max_value=12))
def test_format_then_parse_round_trips(units, scale):
    assert parse_amount(format_amount(units, scale, min_decimals=0), scale, allow_negative=True) == units


def test_round_entry_rounds_the_total_half_even_and_allocates_by_largest_remainder():
    # 0.4 + 0.35 + 0.25 units = 1.0 unit: floors 0,0,0, one unit to the largest remainder
    total, lines = round_entry([Decimal("0.0000000004"), Decimal("0.00000000035"), Decimal("0.00000000025")])
    assert (total, lines) == (1, (1, 0, 0))
    # 2.5 units rounds half-even to 2
    total, lines = round_entry([Decimal("0.0000000025")])
    assert (total, lines) == (2, (2,))
    # three lines of 1.5 units: total 4.5 -> 4, ties go to the earlier line
    total, lines = round_entry([Decimal("0.0000000015")] * 3)
    assert (total, lines) == (4, (2, 1, 1))


amount_st = st.decimals(
    min_value=Decimal("-1000"), max_value=Decimal("1000"), places=15, allow_nan=False, allow_infinity=False
)


@given(st.lists(amount_st, max_size=12), st.integers(min_value=0, max_value=12))
def test_round_entry_lines_sum_to_total_and_stay_within_one_unit(amounts, scale):
    total, lines = round_entry(amounts, scale)
    exact = [a.scaleb(scale) for a in amounts]
    assert sum(lines) == total
    assert abs(Decimal(total) - sum(exact, Decimal(0))) <= Decimal("0.5")
    assert all(abs(Decimal(u) - e) < 1 for u, e in zip(lines, exact, strict=True))
    assert all(type(u) is int for u in lines) and type(total) is int


@pytest.mark.parametrize("text", ["\u0661\u0660", "1\u0660", "\uff11\uff10", "\u0661.\u0665", "1.\u0665"])
def test_digits_other_than_ascii_are_refused_by_every_money_parser(text):
    """`\\d` matched any Unicode digit and Decimal reads them: to_decimal("١٠") (Arabic-Indic) gave
    10, parse_amount("١٠", 2) 1000 units. The API's patterns refused them already; a caller of the
    pricing library (a book's price, an override, an allowance) did not."""
    from pricing.money import to_decimal

    for parse in (to_decimal, parse_amount, lambda t: parse_amount(t, 2)):
        with pytest.raises(InvalidAmountError) as info:
            parse(text)
        assert info.value.code == "validation_error"


@pytest.mark.parametrize("hours", [{"from": "1\u0660:00", "to": "12:00"}, {"from": "09:00", "to": "1\u0667:30"}])
def test_a_rule_s_hours_in_other_digits_are_refused(hours):
    """A rule's `hours` matched `[01]\\d`: "1٠:00" (an Arabic-Indic 0) was read as 10:00 by int()."""
    from pricing.rule_fields import parse_hours

    errors: list[dict[str, str]] = []
    assert parse_hours(hours, errors) is None
    assert [e["field"] for e in errors] == ["hours"]

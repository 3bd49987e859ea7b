"""Invoice lines round to the currency's minor unit, once per line, half to even, and a rounding
line carries the difference to the exact total (DESIGN.md, Money). Worked by hand; amounts are
atomic units of 10^-9."""
from __future__ import annotations

import pytest

from api.renderings import facts, rows
from wallets.core.billing import line_decimals, round_line, rounded_lines

CENT = 10_000_000


def _line(kind: str, amount: int) -> dict:
    return {"kind": kind, "model": "m", "token_type": "input", "quantity": 1, "amount_units": amount}


@pytest.mark.parametrize(("currency", "decimals"), [
    ("USD", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("CLP", 0), ("BHD", 3), ("KWD", 3), ("JOD", 3), ("OMR", 3),
    ("TND", 3), ("CREDITS", 9), ("XYZ", 9),
    # ISO 4217 codes the table left out (9, kept atomic): dirham, CFA franc, Iraqi dinar, Chilean
    # unidad de fomento; gold has no minor unit and stays atomic
    ("AED", 2), ("XOF", 0), ("IQD", 3), ("CLF", 4), ("XAU", 9)])
def test_lines_round_to_the_iso_minor_unit_and_an_unknown_asset_keeps_its_atomic_unit(currency, decimals) -> None:
    assert line_decimals(currency) == decimals


@pytest.mark.parametrize(("units", "decimals", "rounded"), [
    (13_400_000, 2, 10_000_000),       # 0.0134 -> 0.01
    (-13_400_000, 2, -10_000_000),     # a discount: -0.0134 -> -0.01
    (5_000_000, 2, 0),                 # 0.005 -> 0.00 (half to even)
    (15_000_000, 2, 20_000_000),       # 0.015 -> 0.02
    (25_000_000, 2, 20_000_000),       # 0.025 -> 0.02
    (-15_000_000, 2, -20_000_000),     # -0.015 -> -0.02
    (15_000_001, 2, 20_000_000),       # just above half
    (24_999_999, 2, 20_000_000),       # just below half
    (2_500_000_000, 0, 2_000_000_000),  # 2.5 yen -> 2
    (3_500_000_000, 0, 4_000_000_000),  # 3.5 yen -> 4
    (13_450_000, 3, 13_000_000),       # 0.01345 dinar -> 0.013
    (13_500_000, 3, 14_000_000),       # 0.0135 -> 0.014 (half to even: 13.5 -> 14)
    (123, 9, 123),                     # an atomic unit is its own minor unit
])
def test_a_line_rounds_half_to_even(units, decimals, rounded) -> None:
    assert round_line(units, decimals) == rounded


def test_three_lines_of_0_0134_show_0_01_each_and_a_rounding_line_of_0_0102() -> None:
    lines = rounded_lines([_line("usage", 13_400_000) for _ in range(3)], "USD")
    assert [(ln["kind"], ln["amount"]) for ln in lines] == [
        ("usage", "0.01"), ("usage", "0.01"), ("usage", "0.01"), ("rounding", "0.0102")]
    assert sum(ln["amount_units"] for ln in lines) == 40_200_000  # the exact total, 0.0402
    assert lines[-1]["quantity"] is None and lines[-1]["model"] is None


def test_no_rounding_line_when_the_rounded_lines_already_sum_to_the_total() -> None:
    lines = rounded_lines([_line("usage", 15_000_000), _line("usage", 25_000_000)], "USD")  # 0.02 + 0.02 = 0.04
    assert [ln["amount"] for ln in lines] == ["0.02", "0.02"]


def test_a_negative_rounding_line_and_yen() -> None:
    lines = rounded_lines([_line("usage", 1_600_000_000), _line("discount", -200_000_000)], "JPY")  # 1.6 - 0.2 yen
    assert [(ln["kind"], ln["amount_units"]) for ln in lines] == [
        ("usage", 2_000_000_000), ("discount", 0), ("rounding", -600_000_000)]
    assert [ln["amount"] for ln in lines] == ["2", "0", "-0.6"]  # whole yen, not "2.00"


def test_dinar_lines_show_three_decimals() -> None:
    lines = rounded_lines([_line("usage", 1_500_000_000), _line("usage", 13_450_000)], "KWD")
    assert [ln["amount"] for ln in lines] == ["1.500", "0.013", "0.00045"]


def test_an_unknown_asset_is_not_rounded() -> None:
    lines = rounded_lines([_line("usage", 13_400_123)], "CREDITS")
    assert [(ln["kind"], ln["amount"]) for ln in lines] == [("usage", "0.013400123")]


def test_the_printed_rounding_line_says_how_lines_were_rounded() -> None:
    document = {"line_rounding": {"decimals": 2, "mode": "half_even"},
                "lines": [{"kind": "rounding", "model": None, "token_type": None, "quantity": None,
                           "unit_price": None, "amount": "0.0102", "original_period": None}]}
    [row] = rows(document)
    assert (row.description, row.quantity, row.unit_price, row.amount) == (
        "Rounding difference (each line rounded to 0.01, half to even)", "", "", "0.0102")


def test_a_reader_tells_a_document_with_exact_lines_from_one_with_rounded_lines() -> None:
    base = {"customer_id": "acme", "billing": "postpaid", "issued_at": "2026-12-01T01:00:00Z",
            "due_at": "2026-12-31T00:00:00Z", "currency": "USD",
            "period": {"label": "2026-11", "start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z",
                       "time_zone": "UTC"}}
    assert ("Line amounts", "exact amounts, not rounded") in facts(base)  # finalized before: no line_rounding
    rounded = {**base, "line_rounding": {"decimals": 0, "mode": "half_even"}}
    assert ("Line amounts", "each line rounded to 1, half to even") in facts(rounded)

"""pricing.money.plain: a decimal as str(Decimal) stored it, shown without an exponent, its own
digits kept. By hand: 5E-7 is 0.0000005; 5.0E-7 carries one digit more, 0.00000050; -1.25E-8 is
-0.0000000125; 1E+1 is 10; "0.50" and "10.00" were written plainly and stay as written."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pricing.money import plain
from wallets.core.billing import as_issued


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("5E-7", "0.0000005"),
        ("5.0E-7", "0.00000050"),
        ("-1.25E-8", "-0.0000000125"),
        ("1E+1", "10"),
        ("0.50", "0.50"),
        ("10.00", "10.00"),
        ("-0.125", "-0.125"),
        ("0", "0"),
        (None, None),
    ],
)
def test_a_stored_decimal_is_shown_plain(stored, shown) -> None:
    assert plain(stored) == shown
    if stored is not None:
        assert Decimal(shown) == Decimal(stored)  # the same value


def test_an_issued_document_shows_its_lines_plain_and_keeps_its_content() -> None:
    content = {
        "customer_name": "x",
        "lines": [{"kind": "request", "unit_price": "5E-7"}, {"kind": "rounding", "unit_price": None}],
    }
    assert as_issued(content)["lines"] == [
        {"kind": "request", "unit_price": "0.0000005"},
        {"kind": "rounding", "unit_price": None},
    ]
    assert content["lines"][0]["unit_price"] == "5E-7"  # the stored document is not touched

"""A percent-derived unit price is written one way wherever it is derived: a charge's discount line
(pricing.rating), a held call's (pricing.estimate) and a close's true-up line of the discount
(wallets.core.invoicing) write -price x percent / 100 with the percent in its normal form, so a
percent stored as "10.0" writes what "10" writes.

By hand: the worked example's model-a output is $20.00/M; 10 % off it is $2/M off: 20.00 x 10 /
100 = 2.00, written "-2.00" (the price's own digits), not "-2.000" (20.00 x 10.0 / 100 keeps the
percent's decimal too). 12.50 % off $1.00/M: 1.00 x 12.5 / 100 = 0.125, "-0.125"."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pricing_testkit import AT, worked_example_version

from pricing.money import discount_unit, pricing_context
from pricing.overrides import Discount, Overrides
from pricing.rating import Usage, rate
from wallets.core.invoicing import _discount_unit


@pytest.mark.parametrize("percent", ["10", "10.0", "10.00", "1E+1"])
def test_a_charge_s_discount_line_writes_one_unit_price_for_one_percent(percent: str) -> None:
    overrides = Overrides(discounts=(Discount("d", Decimal(percent), model="model-a"),))
    rating = rate(Usage("model-a", {"output": 1000}, AT), worked_example_version(), overrides)
    [line] = [ln for ln in rating.lines if ln.kind == "discount"]
    assert str(line.unit_price) == "-2.00", line


@pytest.mark.parametrize(
    ("price", "percent", "written"),
    [("20", "10.0", "-2"), ("1.00", "10.0", "-0.10"), ("1.00", "12.50", "-0.125"), ("20", "100.0", "-20")],
)
def test_the_true_up_line_and_the_charge_line_write_the_same_unit_price(price: str, percent: str, written: str) -> None:
    with pricing_context():
        share = Decimal(percent) / 100  # what the close reads back: -unit / price
        assert str(discount_unit(Decimal(price), Decimal(percent))) == written
        assert str(_discount_unit(Decimal(price), share)) == written

"""An amount field's refusal says what is wrong with the value (api.routes.wire.amount_in, which
every route taking an amount runs: top-ups, grants, refunds, payments, reservations, budgets,
customers' limits). Before, each of these read the generic "must be more than 0: a decimal
string, such as "10.00": at most 1000000000, with at most 9 decimals", wrong about "more than 0"
for 1.0000000001. By hand: "1.0000000001" has 10 decimals (past 9); "-1.00" is below 0; "0" and
"0.00" are not more than 0; "1000000000.01" is past 1,000,000,000; "ten" is no decimal at all."""
from __future__ import annotations

import pytest

from api.routes.wire import amount_in
from wallets.errors import WalletValidationError


@pytest.mark.parametrize(("value", "positive", "said"), [
    ("1.0000000001", True, "1.0000000001 has 10 decimals, more than the 9 an amount may have"),
    ("1.0000000001", False, "1.0000000001 has 10 decimals, more than the 9 an amount may have"),
    ("-1.00", True, "must be more than 0, not -1.00"),
    ("-1.00", False, "must be 0 or more, not -1.00"),
    ("0", True, "must be more than 0, not 0"),
    ("0.00", True, "must be more than 0, not 0.00"),
    ("1000000000.01", True, "1000000000.01 is more than 1000000000, the most an amount may be"),
    ("1000000000.01", False, "1000000000.01 is more than 1000000000, the most an amount may be"),
])
def test_an_amount_refused_says_what_is_wrong_with_it(value: str, positive: bool, said: str) -> None:
    with pytest.raises(WalletValidationError) as refused:
        amount_in(value, "amount", positive=positive)
    assert str(refused.value).startswith("amount: ") and said in str(refused.value), str(refused.value)


def test_a_string_that_is_no_decimal_is_told_the_form() -> None:
    """guard: passed before: "ten" is told what an amount looks like."""
    with pytest.raises(WalletValidationError) as refused:
        amount_in("ten", "amount")
    assert 'a decimal string, such as "10.00"' in str(refused.value)


@pytest.mark.parametrize(("value", "positive", "said"), [
    ("01", True, "not a plain decimal number: '01' has a leading zero (write '1')"),
    ("010.50", False, "not a plain decimal number: '010.50' has a leading zero (write '10.50')"),
    ("00", False, "not a plain decimal number: '00' has a leading zero (write '0')"),
    ("-0", False, "not a plain decimal number: '-0' is 0 with a sign (write '0')"),
    ("-0", True, "must be more than 0, not -0"),  # guard: it is not more than 0 either way
])
def test_an_amount_with_a_leading_zero_or_a_signed_zero_is_told_so(value: str, positive: bool, said: str) -> None:
    """A top-up of "01" was told "must be more than 0: a decimal string, such as "10.00": ...", which
    1 is; "-0" where 0 is taken, "must be 0 or more", which it is. Written plainly (the leading
    zeros dropped, the zero's sign dropped) each is taken: "1", "10.50", "0", "0"."""
    with pytest.raises(WalletValidationError) as refused:
        amount_in(value, "amount", positive=positive)
    assert str(refused.value) == f"amount: {said}"
    assert amount_in(said.rsplit("'", 2)[-2] if "write" in said else "1", "amount", positive=positive) >= 0

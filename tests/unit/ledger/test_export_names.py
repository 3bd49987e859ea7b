"""Beancount account names from account codes: a pure function, one-to-one and always valid."""
from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.export import beancount_names

# Beancount's grammar: a root, then components starting with an upper-case letter or a digit,
# made of letters, digits and dashes.
NAME = re.compile(r"^(Assets|Liabilities|Equity|Income|Expenses)(:[A-Z0-9][A-Za-z0-9-]*)+$")
TYPES = ["asset", "liability", "equity", "income", "expense"]


def test_the_chart_of_accounts_reads_naturally():
    names = beancount_names([("liability:customer:acme:lot:7f3c", "liability"),
                             ("asset:platform:cash:USD", "asset"),
                             ("income:platform:usage:USD", "income"),
                             ("expense:platform:promotions:USD", "expense"),
                             ("asset:customer:acme:receivable", "asset")])
    assert names == {"liability:customer:acme:lot:7f3c": "Liabilities:Customer:Acme:Lot:7f3c",
                     "asset:platform:cash:USD": "Assets:Platform:Cash:USD",
                     "income:platform:usage:USD": "Income:Platform:Usage:USD",
                     "expense:platform:promotions:USD": "Expenses:Platform:Promotions:USD",
                     "asset:customer:acme:receivable": "Assets:Customer:Acme:Receivable"}


def test_a_code_sanitized_exactly_keeps_its_name_and_a_lossy_one_always_carries_its_hash():
    """Worked out by hand: `acme` upper-cases back to itself, so it is exact; `Acme`, `a.b` and
    `a_b` lose their case or character, so each carries `--` and the first 8 hex digits of its
    own code's sha256, even with no other code to share a name with."""
    codes = ["liability:customer:acme:reserved", "liability:customer:Acme:reserved",
             "liability:customer:a.b:reserved", "liability:customer:a_b:reserved"]
    for code in codes:
        alone = beancount_names([(code, "liability")])[code]
        digest = hashlib.sha256(code.encode()).hexdigest()[:8]
        assert alone == ("Liabilities:Customer:Acme:Reserved" if code == codes[0]
                         else f"Liabilities:Customer:{'Acme' if 'Acme' in code else 'A-b'}:Reserved--{digest}")
    assert len(set(beancount_names([(c, "liability") for c in codes]).values())) == 4


def test_a_customer_s_names_do_not_change_when_a_customer_that_would_share_them_is_created():
    """`a_b`'s receivable was `Assets:Customer:A-b:Receivable` until a customer `a-b` existed,
    then `...:Receivable-6f94698c`: an auditor carrying balances over lost the match."""
    before = beancount_names([("asset:customer:a_b:receivable", "asset")])
    after = beancount_names([("asset:customer:a_b:receivable", "asset"), ("asset:customer:a-b:receivable", "asset")])
    assert after["asset:customer:a_b:receivable"] == before["asset:customer:a_b:receivable"]
    assert after["asset:customer:a-b:receivable"] == "Assets:Customer:A-b:Receivable"  # exact: a-b has no loss


@given(st.lists(st.tuples(st.text(min_size=1, max_size=30), st.sampled_from(TYPES)), unique_by=lambda t: t[0],
                max_size=20))
def test_names_are_valid_and_one_to_one_for_any_codes(accounts):
    names = beancount_names(accounts)
    assert len(set(names.values())) == len(accounts)
    assert all(NAME.match(name) for name in names.values())



# Codes made of few characters and parts, so that sanitized forms often meet: case, `_`, `.`, `-`
# (also doubled, as in a suffix), `:` (empty parts), a type word kept or dropped, hex digits.
PART = st.text(alphabet="aA_.-9", max_size=3) | st.sampled_from(["asset", "expense", "--0f9a1b2c"])
CODE = st.builds(lambda parts: ":".join(parts), st.lists(PART, min_size=1, max_size=3))
ACCOUNT = st.tuples(CODE, st.sampled_from(["asset", "expense"]))


@given(st.lists(ACCOUNT, unique_by=lambda t: t[0], max_size=30))
def test_a_name_depends_on_its_own_code_alone_and_no_two_codes_share_one(accounts):
    names = beancount_names(accounts)
    assert len(set(names.values())) == len(accounts)
    assert all(NAME.match(name) for name in names.values())
    for code, type_ in accounts:  # the same name alone as among any others
        assert beancount_names([(code, type_)])[code] == names[code]


def test_two_lossy_codes_whose_hashes_share_8_hex_digits_stop_the_export_rather_than_share_a_name():
    # Found by trying codes of `_` and `.`: both sanitize to `Assets:X------------------` and their
    # sha256 both begin 9045347d.
    one, two = "asset:.___.___...._.____", "asset:.._._.._.___...._."
    assert hashlib.sha256(one.encode()).hexdigest()[:8] == hashlib.sha256(two.encode()).hexdigest()[:8] == "9045347d"
    assert beancount_names([(one, "asset")]) == {one: "Assets:X------------------" + "--9045347d"}
    with pytest.raises(ValueError, match="would share the Beancount name"):
        beancount_names([(one, "asset"), (two, "asset")])

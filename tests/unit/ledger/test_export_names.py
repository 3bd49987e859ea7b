"""Beancount account names from account codes: a pure function, one-to-one and always valid."""
from __future__ import annotations

import re

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


def test_codes_that_would_share_a_name_each_get_a_suffix_of_their_own():
    names = beancount_names([("liability:customer:acme:reserved", "liability"),
                             ("liability:customer:Acme:reserved", "liability"),
                             ("liability:customer:a.b:reserved", "liability"),
                             ("liability:customer:a_b:reserved", "liability")])
    assert len(set(names.values())) == 4
    assert all(re.fullmatch(r"Liabilities:Customer:(Acme|A-b):Reserved-[0-9a-f]{8}", n) for n in names.values())


@given(st.lists(st.tuples(st.text(min_size=1, max_size=30), st.sampled_from(TYPES)), unique_by=lambda t: t[0],
                max_size=20))
def test_names_are_valid_and_one_to_one_for_any_codes(accounts):
    names = beancount_names(accounts)
    assert len(set(names.values())) == len(accounts)
    assert all(NAME.match(name) for name in names.values())


"""The rule of a customer change (wallets.core.customers), without a database: which fields may
change, what a change is (old and new), and what a lowered overdraft limit does to the wallet."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from wallets.core import customers as rules
from wallets.errors import ImmutableFieldError, SubMinorAmountError, WalletValidationError
from wallets.model import Customer, Wallet

NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
USD = 10**9  # atomic units of a dollar


def _customer(**changes) -> Customer:
    base = Customer("acme", "Acme", "USD", "postpaid", "standard", 10 * USD, None, False, False, NOV_1)
    for name, value in changes.items():
        setattr(base, name, value)
    return base


@pytest.mark.parametrize("field", ["id", "currency", "billing", "time_zone", "billing_anchor_day", "created_at"])
def test_a_field_that_rewrites_history_is_immutable(field):
    with pytest.raises(ImmutableFieldError) as caught:
        rules.change(_customer(), {field: "x", "name": "B"})
    assert caught.value.code == "immutable_field" and caught.value.context["fields"][0]["field"] == field


def test_nothing_asked_or_an_unknown_field_is_a_validation_error():
    for asked, field in (({}, "body"), ({"nmae": "B"}, "nmae")):
        with pytest.raises(WalletValidationError) as caught:
            rules.change(_customer(), asked)
        assert caught.value.context["fields"][0]["field"] == field


def test_a_change_lists_only_what_changes_with_old_and_new():
    changes = rules.change(_customer(), {"name": "Acme", "price_book": "dear", "overdraft_limit": None})
    assert changes == {"price_book": ("standard", "dear"), "overdraft_limit": (10 * USD, None)}
    assert rules.on_record(changes, "USD") == {"price_book": {"old": "standard", "new": "dear"},
                                               "overdraft_limit": {"old": "10.00", "new": None}}
    assert rules.changed(_customer(), changes).price_book == "dear"


def test_a_limit_takes_whole_minor_units_of_the_currency():
    with pytest.raises(SubMinorAmountError):
        rules.change(_customer(), {"overdraft_limit": 10 * USD + 1})
    with pytest.raises(SubMinorAmountError):
        rules.change(_customer(currency="JPY"), {"overdraft_limit": USD // 2})


def test_a_limit_below_what_is_owed_is_taken_and_blocks_the_wallet():
    w = Wallet(_customer(), {}, reserved=0, receivable=6 * USD)
    changes = rules.change(w.customer, {"overdraft_limit": 4 * USD})
    w.customer = rules.changed(w.customer, changes)
    assert w.blocked and w.headroom() == 0
    w.customer = rules.changed(w.customer, rules.change(w.customer, {"overdraft_limit": 8 * USD}))
    assert not w.blocked and w.headroom() == 2 * USD

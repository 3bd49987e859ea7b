"""Changing a customer after creation (PATCH /v1/customers/{id}), as a pure rule: which fields
may change, what each change is (old and new value), and the customer as it is after it."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pricing.money import format_money
from wallets.core.credits import whole_minor_units
from wallets.errors import ImmutableFieldError, WalletValidationError
from wallets.model import Customer

CHANGEABLE = ("name", "price_book", "overdraft_limit")
# What a change may never touch: it would rewrite history (the currency of every posting, prepaid
# usage read as postpaid, the billing periods already invoiced) or the customer's identity; and
# what is set at creation only (the rest of the cycle, the alert and plausibility bounds), which
# was "unknown field" while a second POST of another value sent its caller to PATCH.
IMMUTABLE = ("id", "currency", "billing", "time_zone", "billing_anchor_day", "created_at", "grace_period_seconds",
             "payment_terms_days", "low_balance_threshold", "max_charge_per_request")


def refuse_immutable(fields: Mapping[str, Any]) -> None:
    """An asked change of a field that never changes is `immutable_field`, naming it."""
    fixed = next((name for name in IMMUTABLE if name in fields), None)
    if fixed is not None:
        raise ImmutableFieldError(fixed)


def change(customer: Customer, asked: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The changes `asked` makes of `customer` (field -> (old, new)), only the fields whose value
    changes (asking for the value it has changes nothing). `asked` has at least one of CHANGEABLE
    and nothing else; an `overdraft_limit` (atomic units, or None: unlimited) must be whole minor
    units of the currency. A limit below what the customer owes is allowed: the wallet is then
    blocked (the shell sets it, the database checks it), so that it takes no new debt."""
    refuse_immutable(asked)
    unknown = next((name for name in asked if name not in CHANGEABLE), None)
    if unknown is not None:
        raise WalletValidationError(unknown, "unknown field")
    if not asked:
        raise WalletValidationError("body", f"give at least one of {', '.join(CHANGEABLE)}")
    if asked.get("overdraft_limit") is not None:
        whole_minor_units(asked["overdraft_limit"], customer.currency, "overdraft_limit")
    return {name: (getattr(customer, name), value) for name, value in asked.items()
            if getattr(customer, name) != value}


def changed(customer: Customer, changes: Mapping[str, tuple[Any, Any]]) -> Customer:
    """The customer once `changes` are made."""
    return replace(customer, **{name: new for name, (_, new) in changes.items()})


def on_record(changes: Mapping[str, tuple[Any, Any]], currency: str) -> dict[str, dict[str, Any]]:
    """The changes as the change log keeps them and the API shows them: money as decimal strings."""
    def shown(name: str, value: Any) -> Any:
        return format_money(value, currency) if name == "overdraft_limit" and value is not None else value

    return {name: {"old": shown(name, old), "new": shown(name, new)} for name, (old, new) in changes.items()}

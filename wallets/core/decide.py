"""One entry point to the wallet rules: `decide(state, command, now, book) -> Decision`. A domain
refusal (a wallet, ledger or pricing error) is an outcome, never an exception."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ledger.errors import LedgerError
from pricing.books import PriceBook
from pricing.errors import PricingError
from wallets.core.commands import (
    ClosePeriod,
    Command,
    ExpireLot,
    ExpireReservation,
    Extend,
    Grant,
    PayInvoice,
    RecordUsage,
    RefundCredit,
    Release,
    RerateCharges,
    Reserve,
    ReverseGrant,
    Settle,
    TopUp,
)
from wallets.core.credits import expire_lot, grant, record_usage, reverse_grant, top_up
from wallets.core.decision import Decision
from wallets.core.invoicing import close_period, pay_invoice
from wallets.core.refunds import refund_credit
from wallets.core.rerating import rerate_charges
from wallets.core.reservations import expire_reservation, extend, release, reserve, settle
from wallets.core.state import State

Rule = Callable[[State, Any, datetime, PriceBook | None], Decision]
RULES: dict[type[Command], Rule] = {
    Reserve: reserve, Settle: settle, Release: release, Extend: extend,
    ExpireReservation: expire_reservation,
    TopUp: top_up, Grant: grant, ExpireLot: expire_lot, RecordUsage: record_usage,
    ReverseGrant: reverse_grant, RefundCredit: refund_credit,
    ClosePeriod: close_period, PayInvoice: pay_invoice, RerateCharges: rerate_charges,
}


def decide(state: State, command: Command, now: datetime, book: PriceBook | None = None) -> Decision:
    """What `command` does to `state` at `now`, priced with `book` (the customer's, if it rates)."""
    try:
        return RULES[type(command)](state, command, now, book)
    except (LedgerError, PricingError) as error:
        return Decision.refuse(error)


__all__ = ["State", "decide"]

"""The state a wallet rule decides on, as plain values the shell loaded: the customer's wallet
(lots, reservations), answers kept under idempotency keys, recorded usage events, and the
units rated so far this period; and where new ids come from."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from pricing.errors import wire_time as wire_time  # in pricing: its refusals write times so too
from wallets.core.decision import OutboxEvent
from wallets.core.idempotency import Kept
from wallets.core.rating import PeriodUsage
from wallets.errors import NotFoundError
from wallets.model import Wallet, new_id


@dataclass(frozen=True, slots=True)
class InvoiceDue:
    """A finalized invoice as a payment sees it: what is due and what was paid, by reference, and
    the entry each payment was posted by (a payment named again tells it)."""

    id: str
    customer_id: str
    number: str
    currency: str
    amount_due: int
    payments: Mapping[str, int]  # reference -> amount
    period_start: datetime | None = None  # oldest first, when a top-up pays open invoices
    # reference -> its entry: the id (loaded), or the key of one posted earlier in this batch (its id
    # given at flush); absent when none is known (a payment the same close records)
    entries: Mapping[str, int | str] = field(default_factory=dict)

    @property
    def paid(self) -> int:
        return sum(self.payments.values())


@dataclass(frozen=True, slots=True)
class Unapplied:
    """Money an entry paid off the receivable that no invoice records yet: a prepaid top-up's
    that paid usage not invoiced when it came (the invoice of that usage, once finalized, counts it
    as paid), or money a correction gave back (a credit note's, a volume true-up's) beyond what the
    period it is billed in owes (the customer's older open invoices count it as paid)."""

    entry_id: int | None  # the entry that paid it (None: the close's own true-up)
    reference: str  # topup:<lot id>, credit-note:<number>, true-up:<period>
    amount: int  # what is left of it to apply
    at: datetime | None  # when it was paid (a correction's: when its close applies it)


@dataclass(frozen=True, slots=True)
class RefundOnRecord:
    """A cash refund of overpaid credit already posted, found by its customer and reference."""

    refund_id: str
    entry_id: int
    amount: int
    reason: str
    lots: tuple[tuple[str, int], ...]  # (lot id, amount) it was taken from


@dataclass(frozen=True, slots=True)
class ReversalOnRecord:
    """A top-up's refund already posted, found by its customer and the processor's refund id."""

    entry_id: int
    lot_id: str
    amount: int
    reason: str


# (charge id, account (None: the receivable, funding not recorded), amount it paid, the rule's
# units and amount at the book's price on the charge (None once a re-rate moved it), and the book
# version those units were rated at and what its discounts took off them (store.rule_funding; a
# re-rate's rows leave them off))
RulePaid = tuple[int, str | None, int, int | None, int | None] | tuple[int, str | None, int, int | None, int | None,
                                                                       str | None, int]


@dataclass(frozen=True, slots=True)
class TopUpOnRecord:
    """The first top-up a customer was credited under a payment reference: its entry, the cash
    it brought in, and its lot as it is now (a Lot, or None when no lot row was found)."""

    entry_id: int
    amount: int
    lot: Any


class State(msgspec.Struct, frozen=True):
    """An immutable msgspec Struct (the shell builds one per command, and one more for its alerts
    when one is due): a frozen dataclass of its eleven fields then took ~2 µs to build, in Python."""

    customer_id: str
    wallet: Wallet | None
    answers: Mapping[tuple[str, str], Kept] = msgspec.field(default_factory=dict)  # (scope, key) -> kept answer
    events: Mapping[tuple[str, str], bytes] = msgspec.field(default_factory=dict)  # (customer, event id) -> hash
    period_usage: PeriodUsage = msgspec.field(default_factory=dict)
    # customer -> billing period -> rollup item -> (quantity, amount), of its open periods (closes)
    rollups: Mapping[str, Mapping[str, Mapping[str, tuple[int, int]]]] = msgspec.field(default_factory=dict)
    invoice_seqs: Mapping[tuple[str, int], int] = msgspec.field(default_factory=dict)  # (issuer, year) -> last number
    invoices: Mapping[str, InvoiceDue] = msgspec.field(default_factory=dict)  # invoices being paid, by id
    rerates: Mapping[tuple[str, str], Any] = msgspec.field(default_factory=dict)  # (customer, period) -> RerateInput
    credit_note_seqs: Mapping[tuple[str, int], int] = msgspec.field(default_factory=dict)  # (issuer, year) -> last
    # customer -> its top-ups' payments of the receivable not applied to an invoice yet, oldest first (closes)
    unapplied: Mapping[str, tuple[Unapplied, ...]] = msgspec.field(default_factory=dict)
    # customer -> money its re-rates billed in its open period gave back off the receivable (closes)
    corrections: Mapping[str, tuple[Unapplied, ...]] = msgspec.field(default_factory=dict)
    # customer -> the cash its entries brought in less what they paid out: top-ups, invoice
    # payments, refunds (loaded for cash refunds)
    cash: Mapping[str, int] = msgspec.field(default_factory=dict)
    # (customer, reference) -> the cash refund of overpaid credit posted under it (cash refunds)
    refunds: Mapping[tuple[str, str], RefundOnRecord] = msgspec.field(default_factory=dict)
    # (customer, period) -> rule id -> what paid the charges of the period's own usage it rated,
    # by charge and account, with the rule's units and amount on the charge (store.rule_funding;
    # closes: money their volume true-up gives back goes there)
    rule_funding: Mapping[tuple[str, str], Mapping[str, tuple[RulePaid, ...]]] = msgspec.field(default_factory=dict)
    # (customer, reference) -> the first top-up credited under it (top-ups with a reference)
    topups: Mapping[tuple[str, str], TopUpOnRecord] = msgspec.field(default_factory=dict)
    # (customer, reference) -> the top-up refund posted under it (reversals with a reference)
    reversals: Mapping[tuple[str, str], ReversalOnRecord] = msgspec.field(default_factory=dict)
    # (customer, period) -> the charges of the period's own usage billed in it that re-rates moved:
    # (model, lines as charged, the version the last re-rate rated them with, its amounts by model
    # and token type, the rules it rated them with by token type or None) (store.rerated_charges;
    # closes: the volume true-up counts them as re-rated)
    rerated: Mapping[tuple[str, str], tuple[Any, ...]] = msgspec.field(default_factory=dict)
    ids: Callable[[str], str] = new_id

    def require_wallet(self) -> Wallet:
        if self.wallet is None:
            raise NotFoundError(f"no customer {self.customer_id}", customer_id=self.customer_id)
        return self.wallet

    def event(self, topic: str, customer_id: str, dedup_key: str, now: datetime,
              payload: Mapping[str, Any]) -> OutboxEvent:
        """An outbox event (delivered at least once, deduplicated by `dedup_key`)."""
        return OutboxEvent(topic, customer_id, dedup_key, {
            "id": self.ids("evt"), "type": topic, "customer_id": customer_id, "created_at": wire_time(now),
            **payload})



"""Outcome bodies: what each wallet command answers, each with its outcome `code`. A result that
posts an entry carries its key; the shell fills in the entry's id once the batch is posted."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from wallets.core.budgets import BudgetView, budget_view
from wallets.model import Lot, Wallet

REPLAYED = "replayed"  # the same request again: the first answer, nothing done twice


@dataclass(frozen=True, slots=True)
class LotView:
    id: str
    kind: str
    granted: int
    remaining: int
    priority: int
    expires_at: datetime | None
    created_at: datetime
    reason: str = ""
    reference: str = ""


@dataclass(frozen=True, slots=True)
class WalletView:
    customer_id: str
    currency: str
    available: int
    reserved: int
    receivable: int
    blocked: bool
    overdraft_limit: int | None
    grants: tuple[LotView, ...]
    budgets: tuple[BudgetView, ...] = ()


def lot_view(lot: Lot) -> LotView:
    return LotView(lot.id, lot.kind, lot.granted, lot.balance, lot.priority, lot.expires_at, lot.created_at,
                   lot.reason, lot.reference)


def wallet_view(w: Wallet, now: datetime) -> WalletView:
    return WalletView(w.customer.id, w.customer.currency, w.available(now), w.reserved, w.receivable,
                      w.blocked, w.customer.overdraft_limit,
                      tuple(lot_view(lot) for lot in w.live_lots(now)),
                      tuple(budget_view(b, w.customer.currency, now) for _, b in sorted(w.budgets.items())))


@dataclass(frozen=True, slots=True)
class ReservationSummary:
    id: str
    request_id: str
    customer_id: str
    model: str
    currency: str
    status: str
    amount: int
    created_at: str
    expires_at: str

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}


@dataclass(slots=True)
class ReserveResult:
    reservation: ReservationSummary
    replayed: bool
    entry_key: str | None = None
    entry_id: int | None = None
    # the values of the dimensions the call left to the provider that its hold was priced at
    # (pricing.estimate.held_choices: service_tier "priority"); a replay's, from its estimate
    # (wallets.core.reservations._held_at)
    held_at: dict[str, Any] = field(default_factory=dict)

    @property
    def code(self) -> str:
        return REPLAYED if self.replayed else "reserved"


@dataclass(slots=True)
class SettleResult:
    reservation_id: str
    status: str
    charged: int
    released: int
    lines: list[dict[str, Any]]
    price_book: str
    price_version: str
    replayed: bool
    currency: str
    entry_key: str | None = None
    entry_id: int | None = None

    @property
    def code(self) -> str:
        return REPLAYED if self.replayed else "settled" if self.status == "settled" else "captured"


@dataclass(slots=True)
class ReleaseResult:
    reservation_id: str
    status: str
    released: int
    replayed: bool
    entry_key: str | None = None
    entry_id: int | None = None
    currency: str = ""  # the wallet's (answers kept before it had one show two decimals, as then)

    @property
    def code(self) -> str:
        return REPLAYED if self.replayed else self.status  # released, or expired (the job)


@dataclass(slots=True)
class ExtendResult:
    reservation_id: str
    status: str
    expires_at: str  # ISO 8601, the new expiry

    code = "extended"


@dataclass(slots=True)
class CreditResult:
    grant: LotView
    wallet: WalletView
    applied_to_receivable: int
    entry_key: str | None = None
    entry_id: int | None = None
    replayed: bool = False  # its payment reference was credited before: answered again, nothing posted

    @property
    def code(self) -> str:
        return REPLAYED if self.replayed else "credited"


@dataclass(slots=True)
class ReversalResult:
    """A lot's reversal: a top-up's refund or a grant's revocation (`kind`), and the lot and the
    wallet as they are after it."""

    kind: str  # refund | revocation
    amount: int
    reason: str
    reference: str
    grant: LotView
    wallet: WalletView
    entry_key: str | None = None
    entry_id: int | None = None
    replayed: bool = False  # its refund reference was refunded before: answered again, nothing posted

    @property
    def code(self) -> str:
        return REPLAYED if self.replayed else "reversed"


@dataclass(slots=True)
class RefundResult:
    """Cash paid back of a customer's overpaid credit: the lots it came from (lot id, amount),
    what is still refundable after it, and the wallet as it is after it."""

    refund_id: str
    customer_id: str
    amount: int
    currency: str
    reference: str
    reason: str
    lots: list[tuple[str, int]]
    refundable: int
    wallet: WalletView
    entry_key: str | None = None
    entry_id: int | None = None
    replayed: bool = False  # its reference was paid back before: answered again, nothing posted

    @property
    def code(self) -> str:
        return REPLAYED if self.replayed else "refunded"


@dataclass(slots=True)
class ExpiryResult:
    lot_id: str
    amount: int
    entry_key: str | None = None
    entry_id: int | None = None

    code = "lot_expired"


@dataclass(slots=True)
class UsageResult:
    event_id: str
    duplicate: bool
    charged: int = 0
    entry_key: str | None = None
    entry_id: int | None = None

    @property
    def code(self) -> str:
        return "duplicate" if self.duplicate else "usage_recorded"


@dataclass(slots=True)
class InvoiceClosed:
    invoice_id: str
    number: str
    customer_id: str
    period: str
    total: int
    amount_due: int
    entry_key: str | None = None  # the volume true-up's, if one was posted
    entry_id: int | None = None
    currency: str = ""

    code = "invoice_finalized"


@dataclass(slots=True)
class PaymentResult:
    invoice_id: str
    number: str
    reference: str
    amount: int
    paid: int  # paid on the invoice in all, this payment included
    amount_due: int
    replayed: bool
    entry_key: str | None = None
    entry_id: int | None = None
    currency: str = ""  # the invoice's (answers kept before it had one show two decimals, as then)
    # what the invoice may still be paid after it: what is left of its amount due, at most what the
    # customer owes then (None in answers kept from before: what is left)
    remaining: int | None = None

    @property
    def status(self) -> str:
        return payment_status(self.amount_due, self.paid)

    @property
    def code(self) -> str:
        return REPLAYED if self.replayed else "payment_recorded"


def payment_status(amount_due: int, paid: int) -> str:
    return "paid" if paid >= amount_due else "partially_paid" if paid else "open"

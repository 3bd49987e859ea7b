"""What a wallet rule decides: the journal entry it posts (balanced legs), typed effects on the
wallet's state, and an outcome (a code and a body). Frozen values; the shell applies them."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.model import JournalEntry


@dataclass(frozen=True, slots=True)
class LotOpened:
    """A top-up or grant opens a lot: a bounded liability account of its own."""

    customer_id: str
    lot_id: str
    code: str
    currency: str
    kind: str
    granted: int
    priority: int
    expires_at: datetime | None
    created_at: datetime
    reason: str = ""
    reference: str = ""


@dataclass(frozen=True, slots=True)
class LotSwept:
    """An expired lot's remainder went to breakage (`amount`); it never takes part again."""

    customer_id: str
    lot_id: str
    code: str
    amount: int
    expired_at: datetime


@dataclass(frozen=True, slots=True)
class HoldPiece:
    seq: int
    account: str
    amount: int


@dataclass(frozen=True, slots=True)
class ReservationOpened:
    customer_id: str
    reservation_id: str
    request_id: str
    request_hash: bytes
    model: str
    amount: int
    created_at: datetime
    expires_at: datetime
    holds: tuple[HoldPiece, ...]
    dimensions: Mapping[str, Any]
    estimate: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class ReservationChanged:
    """A reservation's new figures and status (a capture, a final settle, a release, an expiry)."""

    customer_id: str
    reservation_id: str
    status: str
    captured: int
    released: int
    charged: int
    captures: int
    closed_at: datetime | None


@dataclass(frozen=True, slots=True)
class ChargeRecorded:
    """What one charge cost and how it was paid, with all that is needed to recompute it."""

    customer_id: str
    reservation_id: str | None
    event_id: str | None
    request_id: str
    seq: int
    capture_id: str | None
    final: bool
    request_hash: bytes
    model: str
    occurred_at: datetime
    usage: Mapping[str, Any]
    dimensions: Mapping[str, Any]
    price_book: str
    price_version: str
    lines: tuple[Mapping[str, Any], ...]
    charged: int
    from_hold: int
    from_lots: int
    from_receivable: int
    released: int
    funding: tuple[tuple[str, int], ...] = ()  # what paid it: (lot or receivable account, amount)


@dataclass(frozen=True, slots=True)
class TrueUpPosted:
    """A period's volume true-up: its lines and what paid (or got back) the difference."""

    customer_id: str
    period: str
    lines: tuple[Mapping[str, Any], ...]
    funding: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class AdjustmentPosted:
    """A re-rate's adjustment of charges of `period`: its lines and what paid (or got back) it."""

    customer_id: str
    period: str
    lines: tuple[Mapping[str, Any], ...]
    funding: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class ChargeAdjusted:
    """A charge re-rated to `version`: its amounts by (model, token type) before and after."""

    customer_id: str
    charge_id: int
    version: str
    rerate_id: str
    period: str
    old_amount: int
    new_amount: int
    old_lines: tuple[tuple[str, str, int], ...]
    new_lines: tuple[tuple[str, str, int], ...]
    credit_note_id: str | None


@dataclass(frozen=True, slots=True)
class CreditNoteIssued:
    """A credit (total < 0) or debit note correcting a finalized invoice, numbered and frozen."""

    customer_id: str
    credit_note_id: str
    invoice_id: str
    rerate_id: str
    issuer: str
    year: int
    seq: int
    number: str
    currency: str
    total: int
    content: Mapping[str, Any]
    issued_at: datetime


@dataclass(frozen=True, slots=True)
class InvoiceFinalized:
    """A closed period's invoice, numbered and frozen (`content` is the document)."""

    customer_id: str
    invoice_id: str
    period: str
    period_start: datetime
    period_end: datetime
    issuer: str
    year: int
    seq: int
    number: str
    currency: str
    total: int
    amount_due: int
    due_at: datetime
    content: Mapping[str, Any]
    finalized_at: datetime


@dataclass(frozen=True, slots=True)
class PeriodAdvanced:
    """The customer's first open period now starts at `open_period_start`."""

    customer_id: str
    open_period_start: datetime
    next_close_at: datetime


@dataclass(frozen=True, slots=True)
class PaymentRecorded:
    customer_id: str
    invoice_id: str
    payment_id: str
    amount: int
    reference: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UsageEventRecorded:
    customer_id: str
    event_id: str
    request_hash: bytes
    model: str
    occurred_at: datetime
    usage: Mapping[str, Any]
    dimensions: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class UsageCounted:
    """Units rated per rule in a billing period (graduated tiers continue from there)."""

    customer_id: str
    period: str
    book_id: str
    quantities: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    topic: str
    customer_id: str
    dedup_key: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class BudgetCounted:
    """A reservation's count in one budget's window moved by `held` and `used` (changes, in the
    budget's metric); `opened`: its first hold there, which opens the reservation's record."""

    customer_id: str
    reservation_id: str
    budget_id: str
    window_start: datetime
    metric: str
    held: int
    used: int
    opened: bool = False


@dataclass(frozen=True, slots=True)
class CustomerFlagged:
    """The customer's alert flags changed (a low balance crossed, blocked or unblocked)."""

    customer_id: str
    low_balance_alerted: bool
    blocked: bool


@dataclass(frozen=True, slots=True)
class AnswerKept:
    """An answer kept for replays under an idempotency scope and key (a code and a body)."""

    scope: str
    key: str
    request_hash: bytes
    code: str
    body: Any


Effect = (LotOpened | LotSwept | ReservationOpened | ReservationChanged | ChargeRecorded | UsageEventRecorded
          | UsageCounted | BudgetCounted | OutboxEvent | CustomerFlagged | AnswerKept | TrueUpPosted
          | InvoiceFinalized | PeriodAdvanced | PaymentRecorded | AdjustmentPosted | ChargeAdjusted
          | CreditNoteIssued)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A code (`reserved`, `settled`, `insufficient_funds`, …) and a body: the result value, or
    the domain error of a refusal. `None` as a body: nothing was due (a job found nothing to do)."""

    code: str
    body: Any = None

    @property
    def refused(self) -> bool:
        return isinstance(self.body, Exception)


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    entry: JournalEntry | None = None
    effects: tuple[Effect, ...] = field(default=())

    @staticmethod
    def refuse(error: Exception, *effects: Effect) -> Decision:
        return Decision(Outcome(getattr(error, "code", "error"), error), None, effects)


NOTHING_DUE = Decision(Outcome("nothing_due"))  # a job's command that finds nothing to do

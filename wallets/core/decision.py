"""What a wallet rule decides: the journal entry it posts (balanced legs), typed effects on the
wallet's state, and an outcome (a code and a body). Frozen values; the shell applies them.

Each is an immutable msgspec Struct, not a frozen dataclass: a usage event builds about six of
them, and a frozen dataclass sets each field through `object.__setattr__` (ChargeRecorded: ~3.8
against ~0.14 µs to build). Effects hold plain values and no reference back, so the garbage
collector need not track them (`gc=False`); an outcome may hold a refusal, whose traceback can
lead back to it, so outcomes and decisions are tracked."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from ledger.model import JournalEntry


class LotOpened(msgspec.Struct, frozen=True, gc=False):
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
    paid_owed: int = 0  # what of a top-up paid the receivable first (lots.paid_receivable: the close reads it)


class LotSwept(msgspec.Struct, frozen=True, gc=False):
    """An expired lot's remainder went to breakage (`amount`); it never takes part again."""

    customer_id: str
    lot_id: str
    code: str
    amount: int
    expired_at: datetime


class LotRevoked(msgspec.Struct, frozen=True, gc=False):
    """A grant revoked in whole: closed for good; what comes back to it goes to promotions."""

    customer_id: str
    lot_id: str
    code: str
    revoked_at: datetime


class HoldPiece(msgspec.Struct, frozen=True, gc=False):
    seq: int
    account: str
    amount: int


class ReservationOpened(msgspec.Struct, frozen=True, gc=False):
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
    hold_tokens: tuple[int | None, int | None] | None = None  # what a token budget counts it at


class ReservationChanged(msgspec.Struct, frozen=True, gc=False):
    """A reservation's new figures and status (a capture, a final settle, a release, an expiry)."""

    customer_id: str
    reservation_id: str
    status: str
    captured: int
    released: int
    charged: int
    captures: int
    closed_at: datetime | None


class ReservationExtended(msgspec.Struct, frozen=True, gc=False):
    """An open reservation's new, later expiry (its hold and figures do not change)."""

    customer_id: str
    reservation_id: str
    expires_at: datetime


class ChargeRecorded(msgspec.Struct, frozen=True, gc=False):
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


class TrueUpPosted(msgspec.Struct, frozen=True, gc=False):
    """A period's volume true-up: its lines and what paid (or got back) the difference."""

    customer_id: str
    period: str
    lines: tuple[Mapping[str, Any], ...]
    funding: tuple[tuple[str, int], ...]


class AdjustmentPosted(msgspec.Struct, frozen=True, gc=False):
    """A re-rate's adjustment of charges of `period`: its lines and what paid (or got back) it."""

    customer_id: str
    period: str
    lines: tuple[Mapping[str, Any], ...]
    funding: tuple[tuple[str, int], ...]


class TrueUpsCorrected(msgspec.Struct, frozen=True, gc=False):
    """The corrections of a closed period's volume true-ups by a re-rate whose lines net 0, so
    posted no entry to keep them in its metadata (`true_ups`: [period, rule, model, old, new]
    each): kept on their own (`rerate_true_ups`, migration 0064) for the apply's answer. `payers`:
    its payer rows as TrueUpChargesGiven writes them (none: ()), kept beside them (`payer_rows`,
    migration 0091): no entry's `beyond_payer_rows` ties them, verify ties them to this."""

    customer_id: str
    rerate_id: str
    period: str
    true_ups: tuple[tuple[str, str, str, int, int], ...]
    payers: tuple[tuple[int, str | None, int], ...] = ()


class TrueUpChargesGiven(msgspec.Struct, frozen=True, gc=False):
    """What a period's volume true-up (its close's, `rerate_id` None, or a re-rate's correction of
    it) gave back of each charge of each rule it priced per charge: (rule id, charge id, units;
    taken back: negative), a rule kept with nothing given back as (rule id, None, 0). Kept in
    `true_up_charges` (migration 0068), read back by store.true_up_given for the next correction.
    `payers`: what each payer got of each charge, over its rules ((charge id, account, units); None:
    none of the charge's payers), kept in `true_up_payers` (migration 0082), read back by
    store.true_up_payers."""

    customer_id: str
    period: str
    rerate_id: str | None
    given: tuple[tuple[str, int | None, int], ...]
    payers: tuple[tuple[int, str | None, int], ...] = ()


class ChargeAdjusted(msgspec.Struct, frozen=True, gc=False):
    """A charge re-rated to `version` (and its customer's overrides version in force at its usage
    time, 0: none): its amounts by (model, token type) before and after."""

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
    overrides_version: int = 0
    allowance_moves: Mapping[str, int] = {}  # allowance id -> units it takes more (less: negative)
    # the rules of its usage at the book's price, by token type, before and after (rerating.usage_rules)
    old_rules: Mapping[str, str] = {}
    new_rules: Mapping[str, str] = {}


class CreditNoteIssued(msgspec.Struct, frozen=True, gc=False):
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


class InvoiceFinalized(msgspec.Struct, frozen=True, gc=False):
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


class PeriodAdvanced(msgspec.Struct, frozen=True, gc=False):
    """The customer's first open period now starts at `open_period_start`."""

    customer_id: str
    open_period_start: datetime
    next_close_at: datetime


class PaymentRecorded(msgspec.Struct, frozen=True, gc=False):
    customer_id: str
    invoice_id: str
    payment_id: str
    amount: int
    reference: str
    created_at: datetime
    # the entry that paid it, when posted earlier (a top-up applied at a later close); None: the
    # decision's own entry
    entry_id: int | None = None


class UsageEventRecorded(msgspec.Struct, frozen=True, gc=False):
    customer_id: str
    event_id: str
    request_hash: bytes
    model: str
    occurred_at: datetime
    usage: Mapping[str, Any]
    dimensions: Mapping[str, Any]


class UsageCounted(msgspec.Struct, frozen=True, gc=False):
    """Units rated per rule in a billing period (graduated tiers continue from there)."""

    customer_id: str
    period: str
    book_id: str
    quantities: Mapping[str, int]


class OutboxEvent(msgspec.Struct, frozen=True, gc=False):
    topic: str
    customer_id: str
    dedup_key: str
    payload: Mapping[str, Any]


class BudgetCounted(msgspec.Struct, frozen=True, gc=False):
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


class CustomerFlagged(msgspec.Struct, frozen=True, gc=False):
    """The customer's alert flags changed (a low balance crossed, blocked or unblocked)."""

    customer_id: str
    low_balance_alerted: bool
    blocked: bool


class AnswerKept(msgspec.Struct, frozen=True, gc=False):
    """An answer kept for replays under an idempotency scope and key (a code and a body)."""

    scope: str
    key: str
    request_hash: bytes
    code: str
    body: Any


Effect = (LotOpened | LotSwept | ReservationOpened | ReservationChanged | ReservationExtended | ChargeRecorded
          | UsageEventRecorded | UsageCounted | BudgetCounted | OutboxEvent | CustomerFlagged | AnswerKept
          | TrueUpPosted | InvoiceFinalized | PeriodAdvanced | PaymentRecorded | AdjustmentPosted | ChargeAdjusted
          | CreditNoteIssued | TrueUpsCorrected | TrueUpChargesGiven)


class Outcome(msgspec.Struct, frozen=True):  # tracked: a refusal's traceback may lead back to it
    """A code (`reserved`, `settled`, `insufficient_funds`, …) and a body: the result value, or
    the domain error of a refusal. `None` as a body: nothing was due (a job found nothing to do)."""

    code: str
    body: Any = None

    @property
    def refused(self) -> bool:
        return isinstance(self.body, Exception)


class Decision(msgspec.Struct, frozen=True):
    outcome: Outcome
    entry: JournalEntry | None = None
    effects: tuple[Effect, ...] = ()

    @staticmethod
    def refuse(error: Exception, *effects: Effect) -> Decision:
        return Decision(Outcome(getattr(error, "code", "error"), error), None, effects)


NOTHING_DUE = Decision(Outcome("nothing_due"))  # a job's command that finds nothing to do

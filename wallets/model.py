"""A customer's wallet as plain values: its customer, lots (in consumption order), holds and
reservations. The state the wallet rules (wallets/core) decide on; the shell loads it and
follows decisions in it. No database, no clock: `now` is always passed in.
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.forksafe import ForkSafeLock
from ledger.model import Posting
from pricing.override_versions import OverrideHistory
from wallets import chart
from wallets.periods import DEFAULT_GRACE_S, DEFAULT_TERMS_DAYS, Cycle, Period, assigned

_NEVER = datetime.max.replace(tzinfo=None)


_last_us = 0  # the microsecond of the last id this process made
_ids_lock = ForkSafeLock()  # a forked child's own when another thread held it at the fork


def new_id(prefix: str) -> str:
    """A unique id whose text sorts by creation within a process: the microseconds, then random.
    An id made in the microsecond of the one before (or after the clock stepped back) takes the
    next microsecond: the random part alone ordered them, so the events one decision makes back to
    back (the thresholds a hold crosses at once; wallet.blocked, then unblocked) sorted shuffled."""
    global _last_us
    with _ids_lock:
        _last_us = max(time.time_ns() // 1000, _last_us + 1)
        us = _last_us
    return f"{prefix}_{us:013x}{secrets.token_hex(5)}"


@dataclass(slots=True)
class Customer:
    id: str
    name: str
    currency: str
    billing: str
    price_book: str | None
    overdraft_limit: int | None  # None: unlimited credit
    low_balance_threshold: int | None
    low_balance_alerted: bool
    blocked: bool
    created_at: datetime
    book_versions: int = 0  # how many versions its price book has (cache check)
    max_charge_per_request: int | None = None  # overrides its price book's (None: the book's)
    cycle: Cycle = field(default_factory=Cycle)  # its billing periods: time zone and anchor day
    open_period_start: datetime | None = None  # start of its first period not closed (None: unknown)
    grace_s: int = DEFAULT_GRACE_S
    terms_days: int = DEFAULT_TERMS_DAYS
    override_versions: int = 0  # how many versions of price overrides it has (cache check)
    # its changes of price book (PATCH), oldest first: when, and the book it had until then
    book_changes: tuple[tuple[datetime, str | None], ...] = ()

    def book_at(self, at: datetime) -> str | None:
        """The price book it had at `at` (a reservation's time): a move to another book prices
        what is reserved from then on, as a book's version prices usage from its effective time."""
        for changed_at, book in self.book_changes:
            if changed_at > at:
                return book
        return self.price_book

    def billed_in(self, at: datetime) -> Period:
        """The period what happened at `at` is billed in (the first open one if its own is closed)."""
        return assigned(at, self.open_period_start or at, self.cycle)


@dataclass(slots=True)
class Lot:
    id: str
    code: str
    kind: str
    granted: int
    priority: int
    expires_at: datetime | None
    created_at: datetime
    balance: int
    swept: bool = False  # the expiry job has moved its remainder to breakage
    reason: str = ""
    reference: str = ""
    # the kind of the entry that opened it ("topup", "grant", "rerate_adjustment", "volume_true_up",
    # "invoice_rounding"), loaded only for a lot a command names (None: not loaded)
    opened_by: str | None = None
    # a grant revoked in whole: closed for good, what comes back to it is revoked again
    revoked: bool = False
    # its row's mark as loaded (`lots.empty`, migration 0072: it held nothing when last written);
    # a batch's load does not read a lot so marked as live, the batch writes it as the balance ends
    empty: bool = False
    # what went where a lot closed since put its money, for it: what it held when it closed (its
    # sweep's remainder to breakage; a grant revoked in whole, its revocation's; expired, not swept
    # yet, its balance) and what closes and re-rates since gave there for it less what they took
    # (entries' `closed_lots`), loaded only for the lots a re-rate's or a close's charges were paid
    # by (store.load_payers): the most a correction can take back from there
    closed_with: int | None = None

    def live(self, now: datetime) -> bool:
        return not self.swept and not self.revoked and (self.expires_at is None or self.expires_at > now)


def consumption_key(lot: Lot) -> tuple[Any, ...]:
    """Priority (lower first), then earliest expiry (none last), then the oldest lot. Expiries
    compare as instants (in UTC): a grant's may carry any offset, and loaded ones the session's."""
    expiry = _NEVER
    if lot.expires_at is not None:
        expiry = lot.expires_at.astimezone(UTC) if lot.expires_at.tzinfo else lot.expires_at
        expiry = expiry.replace(tzinfo=None)
    return (lot.priority, lot.expires_at is None, expiry, lot.created_at, lot.id)


def consumption_position(lot: Lot) -> list[int | str]:
    """`consumption_key` in numbers and text alone (instants as microseconds since the epoch, in
    UTC), ordered as the key is: a position a page of lots can be told to start after."""
    priority, never, expiry, created, lot_id = consumption_key(lot)
    return [priority, int(never), _micros(expiry), _micros(created), lot_id]


def _micros(at: datetime) -> int:
    naive = at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo else at
    return (naive - datetime(1, 1, 1)) // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Hold:
    seq: int
    account: str
    amount: int


@dataclass(slots=True)
class BudgetHold:
    """What one reservation counts in one budget's window: its hold (what is left of the upper
    bound) and what it used (the actual, once settled), in the budget's metric."""

    budget_id: str
    window_start: datetime
    metric: str
    held: int
    used: int = 0


@dataclass(slots=True)
class Budget:
    """A customer's budget: its scope (narrowed by API key, model pattern, dimension values),
    window, metric and limit, and the windows loaded for it (start -> [used, held])."""

    id: str
    customer_id: str
    name: str
    api_key: str | None
    model: str | None
    dimensions: dict[str, str]
    window: str  # request | minute | day | month | lifetime
    metric: str  # money | tokens | input_tokens | output_tokens | requests
    limit: int
    mode: str  # hard | soft
    thresholds: tuple[int, ...]
    time_zone: str  # the budget's own, else its customer's, else UTC
    created_at: datetime
    set_by: str = "operator"  # operator (an admin key) | customer (its own key): who may change it
    windows: dict[datetime, list[int]] = field(default_factory=dict)


@dataclass(slots=True)
class Reservation:
    id: str
    customer_id: str
    request_id: str
    request_hash: bytes
    model: str
    amount: int
    status: str
    created_at: datetime
    expires_at: datetime
    holds: list[Hold]
    dimensions: dict[str, Any] = field(default_factory=dict)
    estimate: dict[str, Any] | None = None
    captured: int = 0
    released: int = 0
    charged: int = 0
    captures: int = 0
    closed_at: datetime | None = None
    final_hash: bytes | None = None  # request hash of the final settle, for replays
    final_charge: dict[str, Any] | None = None
    release_entry: int | None = None  # a released one's entry id (loaded, not written): a release again tells it
    capture_ids: dict[str, tuple[bytes, dict[str, Any]]] = field(default_factory=dict)
    budget_holds: dict[str, BudgetHold] = field(default_factory=dict)  # by budget id
    # the (prompt, output) tokens its hold counts in a token budget (None: an amount alone), kept so
    # that a token budget made while it is open counts it (written, not loaded)
    hold_tokens: tuple[int | None, int | None] | None = None

    @property
    def is_open(self) -> bool:
        return self.status in chart.OPEN_STATUSES

    @property
    def hold_left(self) -> int:
        return self.amount - self.captured - self.released if self.is_open else 0


@dataclass(slots=True)
class Wallet:
    customer: Customer
    lots: dict[str, Lot]  # by account code; swept lots only when a hold or a command refers to them
    reserved: int
    receivable: int
    reservations: dict[str, Reservation] = field(default_factory=dict)
    credit_held: int | None = None  # receivable held by open reservations (loaded for top-ups)
    budgets: dict[str, Budget] = field(default_factory=dict)  # live budgets, by id
    overrides: OverrideHistory | None = None  # its price overrides, set for commands that rate usage

    def live_lots(self, now: datetime) -> list[Lot]:
        return sorted((lot for lot in self.lots.values() if lot.live(now) and lot.balance > 0),
                      key=consumption_key)

    def available(self, now: datetime) -> int:
        return sum(lot.balance for lot in self.lots.values() if lot.live(now))

    @property
    def blocked(self) -> bool:
        limit = self.customer.overdraft_limit
        return limit is not None and self.receivable > limit

    def headroom(self) -> int | None:
        """How much more the receivable may take for new holds (None: no limit)."""
        limit = self.customer.overdraft_limit
        return None if limit is None else max(0, limit - self.receivable)

    def apply(self, postings: Iterable[Posting]) -> None:
        """Follow an entry's postings in the cached balances (platform accounts are not here)."""
        cid = self.customer.id
        for p in postings:
            if p.account in self.lots:
                self.lots[p.account].balance -= p.amount
            elif p.account == chart.reserved_account(cid):
                self.reserved -= p.amount
            elif p.account == chart.receivable_account(cid):
                self.receivable += p.amount

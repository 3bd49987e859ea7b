"""A customer's wallet as plain values, and the rules over it: consumption order, holds,
charges and their postings. Pure: no database, no clock; `now` is always passed in.

Sign convention is the ledger's: a posting's amount is a debit when > 0, a credit when < 0.
Lots and the reserved account are liabilities (credit-normal), the receivable is an asset.
"""
from __future__ import annotations

import secrets
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.model import Posting
from wallets import chart

OPEN = ("held", "capturing")
_NEVER = datetime.max.replace(tzinfo=None)


def new_id(prefix: str) -> str:
    """A unique id whose text sorts by creation time within a process (µs, then random)."""
    return f"{prefix}_{time.time_ns() // 1000:013x}{secrets.token_hex(5)}"


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

    def live(self, now: datetime) -> bool:
        return not self.swept and (self.expires_at is None or self.expires_at > now)


def consumption_key(lot: Lot) -> tuple[Any, ...]:
    """Priority (lower first), then earliest expiry (none last), then the oldest lot."""
    expiry = lot.expires_at.replace(tzinfo=None) if lot.expires_at else _NEVER
    return (lot.priority, lot.expires_at is None, expiry, lot.created_at, lot.id)


@dataclass(frozen=True, slots=True)
class Hold:
    seq: int
    account: str
    amount: int


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
    capture_ids: dict[str, tuple[bytes, dict[str, Any]]] = field(default_factory=dict)
    entry_key: str | None = None  # the reserve entry, for a reservation created in this batch
    new: bool = False
    dirty: bool = False

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    @property
    def hold_left(self) -> int:
        return self.amount - self.captured - self.released if self.is_open else 0


@dataclass(slots=True)
class Wallet:
    customer: Customer
    lots: dict[str, Lot]  # by account code; swept lots only when a hold refers to them
    reserved: int
    receivable: int
    reservations: dict[str, Reservation] = field(default_factory=dict)
    credit_held: int | None = None  # receivable held by open reservations (loaded for top-ups)
    customer_dirty: bool = False

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


def allocate(sources: Iterable[tuple[str, int | None]], amount: int) -> list[tuple[str, int]] | None:
    """Take `amount` from `sources` in order ((account, available or None for unlimited)).

    Returns the pieces (account, amount > 0), or None when the sources cannot cover it.
    """
    pieces: list[tuple[str, int]] = []
    left = amount
    for account, available in sources:
        if left == 0:
            break
        take = left if available is None else min(left, available)
        if take > 0:
            pieces.append((account, take))
            left -= take
    return pieces if left == 0 else None


def pieces_left(holds: Iterable[Hold], consumed: int) -> list[tuple[str, int]]:
    """What is left of each hold piece once `consumed` units were taken in seq order."""
    out: list[tuple[str, int]] = []
    for hold in sorted(holds, key=lambda h: h.seq):
        used = min(consumed, hold.amount)
        consumed -= used
        if hold.amount - used:
            out.append((hold.account, hold.amount - used))
    return out


class Legs:
    """Postings under construction: signed amounts summed per account, zeros dropped."""

    def __init__(self, currency: str) -> None:
        self.currency = currency
        self._sums: dict[str, int] = defaultdict(int)

    def debit(self, account: str, amount: int) -> Legs:
        self._sums[account] += amount
        return self

    def credit(self, account: str, amount: int) -> Legs:
        self._sums[account] -= amount
        return self

    def postings(self) -> tuple[Posting, ...]:
        return tuple(Posting(a, v, self.currency) for a, v in sorted(self._sums.items()) if v)


def return_target(wallet: Wallet, account: str) -> str:
    """Where a returned hold piece goes: its lot, the receivable, or breakage if the lot was swept."""
    if account == chart.receivable_account(wallet.customer.id):
        return account
    lot = wallet.lots.get(account)  # a lot the expiry job swept is not loaded at all
    if lot is None or lot.swept:
        return chart.breakage_account(wallet.customer.currency)
    return account


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one charge is paid: from the hold, then live lots, then the receivable."""

    cost: int
    from_hold: int
    from_lots: tuple[tuple[str, int], ...]
    from_receivable: int
    returned: tuple[tuple[str, int], ...]  # hold pieces given back (final captures only)

    @property
    def released(self) -> int:
        return sum(a for _, a in self.returned)


def settlement(wallet: Wallet, reservation: Reservation | None, cost: int, final: bool,
               now: datetime) -> Settlement:
    """Split a charge over the hold, the lots and the receivable; never refuses (usage happened)."""
    hold_left = reservation.hold_left if reservation is not None else 0
    from_hold = min(cost, hold_left)
    extra = cost - from_hold
    lots = allocate(((lot.code, lot.balance) for lot in wallet.live_lots(now)), extra) if extra else []
    if lots is None:
        lots = [(lot.code, lot.balance) for lot in wallet.live_lots(now)]
    from_lots = sum(a for _, a in lots)
    returned: list[tuple[str, int]] = []
    if final and reservation is not None and reservation.is_open:
        returned = pieces_left(reservation.holds, reservation.captured + from_hold)
    return Settlement(cost, from_hold, tuple(lots), extra - from_lots, tuple(returned))


def settlement_legs(wallet: Wallet, s: Settlement) -> Legs:
    currency, cid = wallet.customer.currency, wallet.customer.id
    legs = Legs(currency)
    legs.debit(chart.reserved_account(cid), s.from_hold + s.released)
    legs.credit(chart.revenue_account(currency), s.cost)
    for account, amount in s.from_lots:
        legs.debit(account, amount)
    legs.debit(chart.receivable_account(cid), s.from_receivable)
    for account, amount in s.returned:
        legs.credit(return_target(wallet, account), amount)
    return legs

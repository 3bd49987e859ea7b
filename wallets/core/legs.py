"""Money rules over plain values: taking an amount from sources in order, what is left of a
hold, how a charge is paid (hold, then lots, then receivable), and the postings of it all.

Sign convention is the ledger's: a posting's amount is a debit when > 0, a credit when < 0.
Lots and the reserved account are liabilities (credit-normal), the receivable is an asset.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import msgspec

from ledger.model import JournalEntry, Posting
from wallets import chart
from wallets.model import Hold, Reservation, Wallet


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


def entry(key: str, kind: str, legs: Legs, customer_id: str, now: datetime,
          metadata: Mapping[str, Any]) -> JournalEntry | None:
    """The balanced journal entry of `legs`, or None when it would move nothing."""
    postings = legs.postings()
    if len(postings) < 2:
        return None
    return JournalEntry(key, kind, postings, customer_id, now, dict(metadata))


def return_target(wallet: Wallet, account: str) -> str:
    """Where a returned hold piece goes: its lot, the receivable, breakage if the lot was swept, or
    promotions if it is a grant revoked in whole (closed for good: revoked again)."""
    if account == chart.receivable_account(wallet.customer.id):
        return account
    lot = wallet.lots.get(account)  # a lot the expiry job swept is not loaded at all
    if lot is not None and lot.revoked:  # closed by its revocation before any expiry
        return chart.promotions_account(wallet.customer.currency)
    if lot is None or lot.swept:
        return chart.breakage_account(wallet.customer.currency)
    return account


class Settlement(msgspec.Struct, frozen=True, gc=False):
    """How one charge is paid: from the hold, then live lots, then the receivable (an immutable
    msgspec Struct: one is built for every charge, and a frozen dataclass set each field in Python)."""

    cost: int
    from_hold: int
    from_lots: tuple[tuple[str, int], ...]
    from_receivable: int
    returned: tuple[tuple[str, int], ...]  # hold pieces given back (final captures only)

    @property
    def released(self) -> int:
        return sum(a for _, a in self.returned)

    @property
    def from_lots_total(self) -> int:
        return sum(a for _, a in self.from_lots)


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


def funding(wallet: Wallet, reservation: Reservation | None, s: Settlement) -> tuple[tuple[str, int], ...]:
    """What paid a charge, by account: the hold pieces it consumed (in seq order), then the lots,
    then the receivable (what the invoice shows as credits applied and charged to account)."""
    paid: dict[str, int] = defaultdict(int)
    if reservation is not None and s.from_hold:
        for account, amount in allocate(pieces_left(reservation.holds, reservation.captured), s.from_hold) or ():
            paid[account] += amount
    for account, amount in s.from_lots:
        paid[account] += amount
    if s.from_receivable:
        paid[chart.receivable_account(wallet.customer.id)] += s.from_receivable
    return tuple(sorted(paid.items()))


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

"""The reference model both stateful wallet tests compare against (tests/unit/wallets, in memory,
and tests/integration/wallets, on PostgreSQL): balances as plain integers, and the rules written
out the obvious way, independently of the code under test."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from wallets import chart

CENT = 10**7  # atomic units of $0.01
TOKEN = 10**6  # model-x input: $1.00 per 1,000 tokens


@dataclass
class RefLot:
    code: str
    remaining: int
    priority: int
    expires_at: datetime | None
    order: int
    swept: bool = False

    def live(self, now: datetime) -> bool:
        return not self.swept and (self.expires_at is None or self.expires_at > now)


@dataclass
class RefReservation:
    id: str
    pieces: list[tuple[str, int]]  # in consumption order
    expires_at: datetime
    captured: int = 0
    status: str = "held"
    final_tokens: int | None = None

    def left(self) -> list[tuple[str, int]]:
        out, consumed = [], self.captured
        for code, amount in self.pieces:
            used = min(consumed, amount)
            consumed -= used
            if amount - used:
                out.append((code, amount - used))
        return out


@dataclass
class Ref:
    """The reference: balances as plain integers, rules written out the obvious way."""

    customer: str
    limit: int
    lots: dict[str, RefLot] = field(default_factory=dict)
    reservations: dict[str, RefReservation] = field(default_factory=dict)
    reserved: int = 0
    receivable: int = 0
    cash: int = 0
    promotions: int = 0
    revenue: int = 0
    breakage: int = 0

    def live(self, now: datetime) -> list[RefLot]:
        lots = [lot for lot in self.lots.values() if lot.live(now) and lot.remaining > 0]
        return sorted(lots, key=lambda lot: (lot.priority, lot.expires_at is None,
                                             lot.expires_at or now, lot.order))

    def give_back(self, pieces: list[tuple[str, int]]) -> None:
        for code, amount in pieces:
            self.reserved -= amount
            if code == chart.receivable_account(self.customer):
                self.receivable -= amount
            elif self.lots[code].swept:
                self.breakage += amount
            else:
                self.lots[code].remaining += amount

    def held_on_credit(self) -> int:
        """What the open holds take of the credit line (their receivable pieces left): a top-up pays
        only the receivable beyond it."""
        return sum(a for r in self.reservations.values() if r.status in chart.OPEN_STATUSES
                   for code, a in r.left() if code == chart.receivable_account(self.customer))

    def draw(self, amount: int, now: datetime) -> tuple[list[tuple[str, int]], int, bool]:
        """How a hold of `amount` draws: its pieces (the live lots in order, then the credit line),
        what none of them covers, and whether it is a hold of 0 on nothing to draw (refused:
        model-x is priced, the call is not free)."""
        sources = [(lot.code, lot.remaining) for lot in self.live(now)]
        if self.receivable <= self.limit:
            sources.append((chart.receivable_account(self.customer), self.limit - self.receivable))
        empty = amount == 0 and not any(available > 0 for _, available in sources)
        pieces, left = [], amount
        for code, available in sources:
            take = min(left, available)
            if take:
                pieces.append((code, take))
                left -= take
        return pieces, left, empty

    def hold(self, rid: str, pieces: list[tuple[str, int]], expires_at: datetime) -> None:
        """The hold `rid` of `pieces` (from draw) taken."""
        for code, take in pieces:
            if code in self.lots:
                self.lots[code].remaining -= take
            else:
                self.receivable += take
        self.reserved += sum(take for _, take in pieces)
        self.reservations[rid] = RefReservation(rid, pieces, expires_at)

    def settle(self, r: RefReservation, tokens: int, final: bool, now: datetime) -> None:
        """A settle of `tokens` on `r` taken (not a replay): the cost from the hold left, the rest
        from the live lots, then the receivable; a final settle gives back what the hold has left."""
        cost = tokens * TOKEN
        is_open = r.status in chart.OPEN_STATUSES
        from_hold = min(cost, sum(a for _, a in r.left()) if is_open else 0)
        extra = cost - from_hold
        for lot in self.live(now):
            take = min(extra, lot.remaining)
            lot.remaining -= take
            extra -= take
        self.receivable += extra
        self.reserved -= from_hold
        self.revenue += cost
        if is_open:
            r.captured += from_hold
        if final:
            if is_open:
                self.give_back(r.left())
            r.status, r.final_tokens = "settled", tokens
        elif is_open:
            r.status = "capturing"

    def release(self, r: RefReservation) -> None:
        """`r`, open, released: what it has left given back."""
        assert r.status in chart.OPEN_STATUSES
        self.give_back(r.left())
        r.status = "released"

    def expire(self, r: RefReservation, now: datetime) -> None:
        """`r` expired by the job at `now` if it is open and past its time."""
        if r.status in chart.OPEN_STATUSES and r.expires_at <= now:
            self.give_back(r.left())
            r.status = "expired"

    def sweep(self, lot: RefLot, now: datetime) -> None:
        """`lot` swept by the job at `now` if it expired: what it has left goes to breakage."""
        if lot.expires_at is not None and lot.expires_at <= now and not lot.swept:
            self.breakage += lot.remaining
            lot.remaining, lot.swept = 0, True

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

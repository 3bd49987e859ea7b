"""Credit coming in and going away: top-ups, promotional grants, grant expiry, post-hoc usage."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pricing.money import format_amount
from wallets import chart
from wallets.batch import Batch, LotView, WalletView, lot_view, wallet_view
from wallets.commands import Command, book_of, charge_lines, implausibility, rate_call
from wallets.errors import ConflictError, WalletValidationError
from wallets.model import Legs, Lot, Wallet, new_id, settlement, settlement_legs

TOPUP_PRIORITY, GRANT_PRIORITY = 100, 50


@dataclass(slots=True)
class CreditResult:
    grant: LotView
    wallet: WalletView
    applied_to_receivable: int
    entry_key: str | None = None
    entry_id: int | None = None


def _new_lot(batch: Batch, w: Wallet, kind: str, granted: int, priority: int, expires_at: datetime | None,
             reason: str, reference: str) -> Lot:
    if expires_at is not None and expires_at <= batch.now:
        raise WalletValidationError("expires_at", "must be in the future")
    lot_id = new_id("lot")
    spec = chart.lot_spec(w.customer.id, lot_id, w.customer.currency)
    lot = Lot(lot_id, spec.code, kind, granted, priority, expires_at, batch.now, 0, False, reason, reference)
    batch.accounts.append(spec)
    w.lots[spec.code] = lot
    return lot


def _lot_row(w: Wallet, lot: Lot, entry_key: str | None) -> dict[str, Any]:
    return {"id": lot.id, "customer_id": w.customer.id, "kind": lot.kind, "account_code": lot.code,
            "granted": lot.granted, "priority": lot.priority, "expires_at": lot.expires_at,
            "reason": lot.reason, "reference": lot.reference, "entry_key": entry_key,
            "created_at": lot.created_at}


@dataclass(frozen=True, slots=True, kw_only=True)
class TopUp(Command):
    """Paid credit. For a prepaid customer it first pays off what the receivable says is owed
    for settled usage (not what open reservations hold on credit); the rest becomes a lot."""

    amount: int
    reference: str = ""
    priority: int = TOPUP_PRIORITY
    expires_at: datetime | None = None
    exclusive = True  # needs the credit held on the receivable, read fresh from the database

    def needs(self) -> dict[str, list[Any]]:
        return {"credit_held_for": [self.customer_id]}

    def apply(self, batch: Batch) -> CreditResult:
        w = batch.wallet(self.customer_id)
        owed = max(0, w.receivable - (w.credit_held or 0)) if w.customer.billing == "prepaid" else 0
        paid = min(self.amount, owed)
        lot = _new_lot(batch, w, "topup", self.amount - paid, self.priority, self.expires_at, "", self.reference)
        cur, cid = w.customer.currency, w.customer.id
        legs = Legs(cur).debit(chart.cash_account(cur), self.amount).credit(lot.code, self.amount - paid)
        legs.credit(chart.receivable_account(cid), paid)
        key = batch.post(w, f"topup:{lot.id}", "topup", legs, {"lot_id": lot.id, "reference": self.reference})
        batch.add("lots", _lot_row(w, lot, key))
        return batch.track(CreditResult(lot_view(lot), wallet_view(w, batch.now), paid, key))


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant(Command):
    """Promotional or contractual credit, paid for by the platform's promotions expense."""

    amount: int
    priority: int = GRANT_PRIORITY
    expires_at: datetime | None = None
    reason: str = ""

    def apply(self, batch: Batch) -> CreditResult:
        w = batch.wallet(self.customer_id)
        lot = _new_lot(batch, w, "grant", self.amount, self.priority, self.expires_at, self.reason, "")
        cur = w.customer.currency
        legs = Legs(cur).debit(chart.promotions_account(cur), self.amount).credit(lot.code, self.amount)
        key = batch.post(w, f"grant:{lot.id}", "grant", legs, {"lot_id": lot.id, "reason": self.reason})
        batch.add("lots", _lot_row(w, lot, key))
        return batch.track(CreditResult(lot_view(lot), wallet_view(w, batch.now), 0, key))


@dataclass(slots=True)
class ExpiryResult:
    lot_id: str
    amount: int
    entry_key: str | None = None
    entry_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpireLot(Command):
    """Job: a lot past its expiry gives its remainder to breakage revenue, exactly once. What
    open reservations hold from it is not touched now; when given back, it goes to breakage."""

    lot_id: str

    @property
    def code(self) -> str:
        return chart.lot_account(self.customer_id, self.lot_id)

    def _keys(self) -> set[tuple[str, ...]]:
        return {("lot", self.lot_id)}

    def needs(self) -> dict[str, list[Any]]:
        return {"lot_codes": [self.code]}

    def apply(self, batch: Batch) -> ExpiryResult | None:
        w = batch.wallet(self.customer_id)
        lot = w.lots.get(self.code)
        if lot is None or lot.swept or lot.expires_at is None or lot.expires_at > batch.now:
            return None
        amount, cur = lot.balance, w.customer.currency
        legs = Legs(cur).debit(lot.code, amount).credit(chart.breakage_account(cur), amount)
        key = batch.post(w, f"grant-expiry:{lot.id}", "grant_expiry", legs, {"lot_id": lot.id})
        lot.swept = True
        batch.add("lot_expiries", {"id": lot.id, "expired_at": batch.now, "amount": amount, "entry_key": key})
        batch.outbox("grant.expired", w.customer.id, f"grant.expired:{lot.id}", {
            "grant_id": lot.id, "expired": format_amount(amount), "currency": cur})
        return batch.track(ExpiryResult(lot.id, amount, key))


@dataclass(slots=True)
class UsageResult:
    event_id: str
    duplicate: bool
    charged: int = 0
    entry_key: str | None = None
    entry_id: int | None = None


def usage_entry_key(customer_id: str, event_id: str) -> str:
    """The journal key of a usage event's entry: unique per (customer, event id). Customer ids
    hold no ':', so the first one after the prefix ends the customer. Events recorded before
    ids were per customer kept their `usage:<event id>` keys; this prefix never meets them. A
    key longer than the journal takes (300) carries the event id's sha256 instead."""
    key = f"usage-event:{customer_id}:{event_id}"
    if len(key) <= 300:
        return key
    return f"usage-event-sha256:{customer_id}:{hashlib.sha256(event_id.encode()).hexdigest()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordUsage(Command):
    """A post-hoc usage event: rated at its own time, paid from the lots, then the receivable.
    Event ids are per customer: another customer's event of the same id is another event."""

    event_id: str
    request_hash: bytes
    model: str
    occurred_at: datetime
    tokens: Mapping[str, int]
    usage: Mapping[str, Any]
    dimensions: Mapping[str, Any] = field(default_factory=dict)
    needs_book = True

    def _keys(self) -> set[tuple[str, ...]]:
        return {("event", self.customer_id, self.event_id)}

    def rating_time(self, wallets: Mapping[str, Wallet]) -> datetime | None:
        return self.occurred_at

    def needs(self) -> dict[str, list[Any]]:
        return {"events": [(self.customer_id, self.event_id)]}

    def apply(self, batch: Batch) -> UsageResult:
        known = batch.loaded.events.get((self.customer_id, self.event_id))
        if known is not None:
            if known != self.request_hash:
                raise ConflictError(f"event {self.event_id} was sent before with another body")
            return UsageResult(self.event_id, duplicate=True)
        w = batch.wallet(self.customer_id)
        rating = rate_call(batch, w, self.model, self.tokens, self.occurred_at, self.dimensions,
                           with_request_fee=True)
        problem = implausibility(w, book_of(batch, w).version_at(self.occurred_at), rating, self.tokens)
        if problem is not None:
            raise problem  # not recorded: the same event, corrected, may come again
        s = settlement(w, None, rating.total_units, False, batch.now)
        key = batch.post(w, usage_entry_key(w.customer.id, self.event_id), "usage", settlement_legs(w, s), {
            "event_id": self.event_id, "price_book": rating.book_id, "price_version": rating.price_version})
        batch.count(w.customer.id, self.occurred_at, rating.book_id, rating.rule_quantities())
        batch.add("usage_events", {
            "event_id": self.event_id, "customer_id": w.customer.id, "request_hash": self.request_hash,
            "model": self.model, "occurred_at": self.occurred_at, "usage": dict(self.usage),
            "dimensions": dict(self.dimensions), "entry_key": key})
        batch.add("charges", {
            "customer_id": w.customer.id, "reservation_id": None, "event_id": self.event_id,
            "request_id": self.event_id, "seq": 0, "capture_id": None, "final": True,
            "request_hash": self.request_hash, "model": self.model, "occurred_at": self.occurred_at,
            "usage": dict(self.usage), "dimensions": dict(self.dimensions), "price_book": rating.book_id,
            "price_version": rating.price_version, "lines": charge_lines(rating), "charged": s.cost,
            "from_hold": 0, "from_lots": sum(a for _, a in s.from_lots), "from_receivable": s.from_receivable,
            "released": 0, "entry_key": key})
        batch.loaded.events[(self.customer_id, self.event_id)] = self.request_hash
        return batch.track(UsageResult(self.event_id, False, s.cost, key))

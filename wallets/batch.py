"""The state one transaction works on: loaded wallets, the effects commands add, and the
flush that writes them (accounts, one ledger_post round trip, one write statement)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.model import AccountSpec, JournalEntry
from ledger.posting import Outcome, post_entries
from pricing.books import PriceBook
from pricing.money import format_amount
from wallets import store
from wallets.errors import NotFoundError
from wallets.model import Legs, Lot, Wallet, new_id


def billing_period(at: datetime) -> str:
    """The billing period of a usage time: its calendar month in UTC."""
    return at.astimezone(UTC).strftime("%Y-%m")


@dataclass(frozen=True, slots=True)
class IdemKey:
    """An Idempotency-Key of a mutating call: replays return `render`'s first answer."""

    scope: str
    key: str
    request_hash: bytes
    render: Callable[[Any], tuple[int, Any]]  # outcome (result or domain error) -> (status, body)


@dataclass(frozen=True, slots=True)
class Replayed:
    """The stored answer to an earlier call with the same idempotency key."""

    status: int
    body: Any


class HasEntry(Protocol):
    entry_key: str | None
    entry_id: int | None


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


def lot_view(lot: Lot) -> LotView:
    return LotView(lot.id, lot.kind, lot.granted, lot.balance, lot.priority, lot.expires_at, lot.created_at,
                   lot.reason, lot.reference)


def wallet_view(w: Wallet, now: datetime) -> WalletView:
    return WalletView(w.customer.id, w.customer.currency, w.available(now), w.reserved, w.receivable,
                      w.blocked, w.customer.overdraft_limit,
                      tuple(lot_view(lot) for lot in w.live_lots(now)))


@dataclass(slots=True)
class Batch:
    now: datetime
    loaded: store.Loaded
    books: Mapping[str, PriceBook | None] = field(default_factory=dict)
    entries: list[JournalEntry] = field(default_factory=list)
    accounts: list[AccountSpec] = field(default_factory=list)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    results: list[Any] = field(default_factory=list)  # results carrying an entry_key
    # (customer, period, book) -> rule -> units rated earlier in the period (loaded for tiered books)
    period_usage: dict[tuple[str, str, str], dict[str, int]] = field(default_factory=dict)
    counted: dict[tuple[str, str, str, str], int] = field(default_factory=dict)  # increments to write

    def period_to_date(self, customer_id: str, at: datetime, book_id: str) -> dict[str, int]:
        """Units per rule already rated this billing period (graduated tiers continue from there)."""
        return dict(self.period_usage.get((customer_id, billing_period(at), book_id), {}))

    def count(self, customer_id: str, at: datetime, book_id: str, quantities: Mapping[str, int]) -> None:
        key = (customer_id, billing_period(at), book_id)
        known = self.period_usage.setdefault(key, {})
        for rule_id, quantity in quantities.items():
            known[rule_id] = known.get(rule_id, 0) + quantity
            self.counted[(*key, rule_id)] = self.counted.get((*key, rule_id), 0) + quantity

    def wallet(self, customer_id: str) -> Wallet:
        wallet = self.loaded.wallets.get(customer_id)
        if wallet is None:
            raise NotFoundError(f"no customer {customer_id}", customer_id=customer_id)
        return wallet

    def post(self, wallet: Wallet, key: str, kind: str, legs: Legs, metadata: Mapping[str, Any]) -> str | None:
        """Add the entry of `legs` (if it moves anything) and follow it in the wallet's balances."""
        postings = legs.postings()
        if len(postings) < 2:
            return None
        entry = JournalEntry(key, kind, postings, wallet.customer.id, self.now, dict(metadata))
        self.entries.append(entry)
        wallet.apply(postings)
        return key

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(table, []).append(row)

    def track(self, result: Any) -> Any:
        """Remember a result whose entry id is known only once the batch is posted."""
        self.results.append(result)
        return result

    def outbox(self, topic: str, customer_id: str, dedup_key: str, payload: dict[str, Any]) -> None:
        event_id = new_id("evt")
        self.add("outbox", {"topic": topic, "customer_id": customer_id, "dedup_key": dedup_key,
                            "payload": {"id": event_id, "type": topic, "customer_id": customer_id,
                                        "created_at": self.now.isoformat(), **payload}})

    def alerts(self, customer_id: str) -> None:
        """balance.low when available falls below the threshold, wallet.blocked when the
        receivable passes the overdraft limit: once per crossing (re-armed when it recovers)."""
        w = self.loaded.wallets.get(customer_id)
        if w is None:
            return
        c, scale = w.customer, 9
        available = w.available(self.now)
        low = c.low_balance_threshold is not None and available < c.low_balance_threshold
        if low != c.low_balance_alerted:
            c.low_balance_alerted, w.customer_dirty = low, True
            if low:
                self.outbox("balance.low", c.id, f"balance.low:{c.id}:{new_id('x')}", {
                    "available": format_amount(available, scale), "currency": c.currency,
                    "threshold": format_amount(c.low_balance_threshold or 0, scale)})
        if w.blocked != c.blocked:
            c.blocked, w.customer_dirty = w.blocked, True
            topic = "wallet.blocked" if w.blocked else "wallet.unblocked"
            self.outbox(topic, c.id, f"{topic}:{c.id}:{new_id('x')}", {
                "receivable": format_amount(w.receivable, scale), "currency": c.currency,
                "overdraft_limit": format_amount(c.overdraft_limit or 0, scale)})

    async def flush(self, conn: AsyncConnection) -> None:
        await store.open_accounts(conn, self.accounts)
        posted = await post_entries(conn, self.entries)
        ids: dict[str, int] = {}
        for result in posted:
            if result.outcome is not Outcome.POSTED:
                # Every account a command touches is under its customer's lock: this is a bug.
                raise RuntimeError(f"entry {result.key} was {result.outcome.value} ({result.detail})")
            ids[result.key] = result.entry_id  # type: ignore[assignment]
        for table_rows in self.rows.values():
            for row in table_rows:
                if "entry_key" in row:
                    row["entry_id"] = ids.get(row.pop("entry_key") or "")
        for result in self.results:
            result.entry_id = ids.get(result.entry_key or "", result.entry_id)
        for w in self.loaded.wallets.values():
            for r in w.reservations.values():
                if r.new:
                    self.add("reservations", store.reservation_row(r, ids.get(r.entry_key or "")))
                    self.rows.setdefault("holds", []).extend(store.hold_rows(r))
                elif r.dirty:
                    self.add("reservation_updates", store.reservation_update(r))
            if w.customer_dirty:
                self.add("customers", store.customer_update(w))
        for (cid, period, book_id, rule_id), quantity in self.counted.items():
            self.add("usage_counters", {"customer_id": cid, "period": period, "book_id": book_id,
                                        "rule_id": rule_id, "quantity": quantity})

    async def write(self, conn: AsyncConnection) -> None:
        await store.write(conn, self.rows)

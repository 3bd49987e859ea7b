"""A wallet kept in memory for unit tests of the wallet rules: each command runs in a `Batch`
of its own (the shell's in-memory half: decide, then follow the decision), and what a flush
would write is kept here instead, as store.load would read it back. No database."""
from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.errors import LedgerError
from pricing.errors import PricingError
from pricing.money import parse_amount
from pricing.parse import parse_book
from wallets import chart
from wallets.batch import Batch
from wallets.commands import Command, Grant, RecordUsage, Release, Reserve, Settle, TopUp
from wallets.model import Customer, Wallet
from wallets.store import Loaded, StoredResponse

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CID = "acme"
# model-x: $1.00 per 1,000 input tokens, $2.00 per 1,000 output tokens: amounts read easily.
BOOK = parse_book({"id": "book-x", "currency": "USD", "versions": [{"effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "x-in", "model": "model-x", "token_type": "input", "price": "1000"},
    {"id": "x-out", "model": "model-x", "token_type": "output", "price": "2000"}]}]})


def usd(text: str) -> int:
    return parse_amount(text, chart.ASSET_SCALE)


class MemoryWallet:
    """One customer's wallet and every account's balance (signed: debit > 0), in memory."""

    def __init__(self, *, billing: str = "prepaid", overdraft: str | None = "0", low: str | None = None,
                 max_charge: str | None = None, book: Any = BOOK) -> None:
        customer = Customer(CID, "Acme", "USD", billing, "book-x", None if overdraft is None else usd(overdraft),
                            None if low is None else usd(low), False, False, T0, 1,
                            None if max_charge is None else usd(max_charge))
        self.loaded = Loaded({CID: Wallet(customer, {}, 0, 0)}, {}, {})
        self.book = book
        self.now = T0
        self.balances: dict[str, int] = defaultdict(int)
        self.period_usage: dict[tuple[str, str, str], dict[str, int]] = {}
        self.charges: list[dict[str, Any]] = []
        self.outbox: list[dict[str, Any]] = []
        self.entries: list[Any] = []
        self._ids = itertools.count(1)
        self._hashes = itertools.count(1)

    @property
    def wallet(self) -> Wallet:
        return self.loaded.wallets[CID]

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now

    def run(self, command: Command) -> Any:
        """Run `command` as its own batch: its result, or its refusal (returned, not raised)."""
        batch = Batch(self.now, self.loaded, {CID: self.book}, period_usage=self.period_usage)
        try:
            result = batch.apply(command)
        except (LedgerError, PricingError) as refusal:
            result = refusal
        self._commit(batch)
        return result

    def _commit(self, batch: Batch) -> None:
        for entry in batch.entries:
            self.entries.append(entry)
            for p in entry.postings:
                self.balances[p.account] += p.amount
        for row in batch.rows.get("idempotency", []):
            self.loaded.idempotency[(row["scope"], row["key"])] = StoredResponse(
                row["request_hash"], row["status"], row["response"])
        for row in batch.rows.get("charges", []):
            self.charges.append(row)
            r = self.wallet.reservations.get(row["reservation_id"] or "")
            charge = {**row, "entry_id": None}
            if r is not None and row["capture_id"]:
                r.capture_ids[row["capture_id"]] = (row["request_hash"], charge)
            if r is not None and row["final"]:
                r.final_hash, r.final_charge = row["request_hash"], charge
        self.outbox.extend(batch.rows.get("outbox", []))
        self.period_usage = batch.period_usage

    # Commands with amounts as decimal strings.
    def top_up(self, amount: str, **kw: Any) -> Any:
        return self.run(TopUp(customer_id=CID, amount=usd(amount), **kw))

    def grant(self, amount: str, **kw: Any) -> Any:
        return self.run(Grant(customer_id=CID, amount=usd(amount), **kw))

    def reserve(self, amount: str | None = None, *, request_id: str | None = None, ttl_seconds: int = 300,
                input_tokens: int = 0, max_output_tokens: int = 0, body: bytes | None = None,
                tool_uses: dict[str, int] | None = None) -> Any:
        return self.run(Reserve(
            customer_id=CID, request_id=request_id or f"req-{next(self._ids)}",
            request_hash=body or repr((amount, input_tokens, max_output_tokens, tool_uses)).encode(), model="model-x",
            ttl_seconds=ttl_seconds, amount=usd(amount) if amount is not None else None,
            prompt_tokens=input_tokens, max_output_tokens=max_output_tokens, tool_uses=tool_uses or {}))

    def settle(self, reservation_id: str, *, input_tokens: int = 0, output_tokens: int = 0, final: bool = True,
               capture_id: str | None = None, forced_by: str | None = None) -> Any:
        tokens = {"input": input_tokens, "output": output_tokens}
        return self.run(Settle(customer_id=CID, reservation_id=reservation_id,
                               request_hash=repr((tokens, final)).encode(), tokens=tokens, usage=tokens,
                               final=final, capture_id=capture_id, forced_by=forced_by))

    def release(self, reservation_id: str) -> Any:
        return self.run(Release(customer_id=CID, reservation_id=reservation_id))

    def usage_event(self, event_id: str, *, input_tokens: int = 0, output_tokens: int = 0,
                    body: bytes | None = None) -> Any:
        tokens = {"input": input_tokens, "output": output_tokens}
        return self.run(RecordUsage(customer_id=CID, event_id=event_id, request_hash=body or repr(tokens).encode(),
                                    model="model-x", occurred_at=self.now, tokens=tokens, usage=tokens))

    # Balances as the ledger shows them: normal balances, in atomic units.
    def lot(self, result: Any) -> int:
        return -self.balances[chart.lot_account(CID, result.grant.id)]

    @property
    def reserved(self) -> int:
        return -self.balances[chart.reserved_account(CID)]

    @property
    def receivable(self) -> int:
        return self.balances[chart.receivable_account(CID)]

    def platform(self, name: str) -> int:
        account = {"cash": chart.cash_account, "promotions": chart.promotions_account,
                   "revenue": chart.revenue_account, "breakage": chart.breakage_account}[name]("USD")
        return abs(self.balances[account])

"""A kit for billing scenarios: a clock, the seed price book of the issue ($0.01 per request;
model-a $10/M input and $20/M output; model-b $5/M input and $10/M output), calls by model and
token counts, closes, and the invoices' figures by name."""
from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any, ClassVar

from ledger.db import Database
from tests.integration.wallets.wallet_kit import Clock, usd
from wallets import billing, books
from wallets.commands import Grant, PayInvoice, RecordUsage, Release, Reserve, Settle, TopUp
from wallets.service import CustomerSpec, WalletService

NOV_23 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class BillingKit:
    SEED: ClassVar[dict[str, Any]] = {
        "id": "seed", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
        {"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"},
        {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
        {"id": "b-in", "model": "model-b", "token_type": "input", "price": "5.00"},
        {"id": "b-out", "model": "model-b", "token_type": "output", "price": "10.00"},
        {"id": "call", "token_type": "request", "price": "0.01"},
    ]}

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or Clock(NOV_23)
        self.service = WalletService(db, clock=self.clock)
        self.ids = itertools.count(1)

    async def add_book(self, body: dict[str, Any]) -> None:
        await self.db.run(lambda conn: books.add_version(conn, body))

    async def customer(self, cid: str, *, billing_mode: str = "prepaid", book: str = "seed",
                       overdraft: str | None = None, **cycle: Any) -> str:
        """A customer; a prepaid one has no overdraft unless `overdraft` (an amount) is given."""
        overdraft = None if billing_mode == "postpaid" else usd(overdraft or "0")
        await self.service.create_customer(CustomerSpec(cid, cid, "USD", billing_mode, book, overdraft, None, **cycle))
        return cid

    async def top_up(self, cid: str, amount: str, reference: str = ""):
        return await self.service.submit(TopUp(customer_id=cid, amount=usd(amount), reference=reference))

    async def pay(self, cid: str, invoice_id: str, amount: str, reference: str):
        return await self.service.submit(PayInvoice(customer_id=cid, invoice_id=invoice_id, amount=usd(amount),
                                                    reference=reference, currency="USD"))

    async def grant(self, cid: str, amount: str, expires_at: datetime | None = None):
        return await self.service.submit(Grant(customer_id=cid, amount=usd(amount), expires_at=expires_at))

    async def event(self, cid: str, model: str, input_tokens: int, output_tokens: int, at: datetime | None = None,
                    dimensions: dict[str, Any] | None = None):
        tokens = {"input": input_tokens, "output": output_tokens}
        n = next(self.ids)
        return await self.service.submit(RecordUsage(
            customer_id=cid, event_id=f"evt-{n}", request_hash=repr((n, tokens)).encode(), model=model,
            occurred_at=at or self.clock.now, tokens=tokens, usage=tokens, dimensions=dimensions or {}))

    async def reserve(self, cid: str, model: str, amount: str, ttl_seconds: int = 3600):
        n = next(self.ids)
        result = await self.service.submit(Reserve(
            customer_id=cid, request_id=f"req-{n}", request_hash=str(n).encode(), model=model,
            ttl_seconds=ttl_seconds, amount=usd(amount)))
        return result.reservation.id

    async def settle(self, cid: str, reservation_id: str, input_tokens: int, output_tokens: int, final: bool = True):
        tokens = {"input": input_tokens, "output": output_tokens}
        return await self.service.submit(Settle(
            customer_id=cid, reservation_id=reservation_id, request_hash=repr((tokens, final)).encode(),
            tokens=tokens, usage=tokens, final=final))

    async def release(self, cid: str, reservation_id: str):
        return await self.service.submit(Release(customer_id=cid, reservation_id=reservation_id))

    async def close(self, until: datetime):
        self.clock.now = until
        return await billing.close_due(self.db, until)

    async def invoices(self, cid: str) -> list[dict[str, Any]]:
        return (await self.db.read(lambda conn: billing.invoices(conn, cid)))["invoices"]

    async def upcoming(self, cid: str) -> dict[str, Any]:
        engine = self.service.engine
        return await self.db.read(lambda conn: billing.upcoming(conn, cid, self.clock.now, engine.books,
                                                                engine.overrides))

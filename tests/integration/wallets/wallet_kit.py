"""A small kit for wallet scenarios: a controllable clock, a price book with round prices,
commands built from decimal strings, and every account's balance by a short name."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.accounts import balances, customer_balances
from ledger.audit import Check, CheckFn, verify
from ledger.db import Database
from ledger.lanes import lane_count, lane_of
from pricing.money import parse_amount
from wallets import books, chart
from wallets.audit import WALLET_CHECKS
from wallets.commands import Grant, RecordUsage, Release, Reserve, Settle, TopUp
from wallets.core.decide import RULES
from wallets.errors import ConflictError
from wallets.service import CustomerSpec, WalletService

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

# model-x: $1.00 per 1,000 input tokens, $2.00 per 1,000 output tokens: amounts read easily.
BOOK = {"currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "x-in", "model": "model-x", "token_type": "input", "price": "1000"},
    {"id": "x-out", "model": "model-x", "token_type": "output", "price": "2000"},
]}


def usd(text: str) -> int:
    return parse_amount(text, 9)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class Kit:
    def __init__(self, db: Database, tag: str, clock: Clock | None = None, *, grouping: bool = True) -> None:
        self.db, self.tag = db, tag
        self.clock = clock or Clock()
        self.service = WalletService(db, clock=self.clock, grouping=grouping)
        self.book = f"book-{tag}"
        self.names: dict[str, str] = {}  # account code -> short name

    async def setup_book(self) -> None:
        await self.db.run(lambda conn: books.add_version(conn, {**BOOK, "id": self.book}))

    async def customer(self, name: str, *, billing: str = "prepaid", overdraft: str | None = "0",
                       low: str | None = None) -> str:
        cid = f"{name}-{self.tag}"
        spec = CustomerSpec(cid, name, "USD", billing, self.book, None if overdraft is None else usd(overdraft),
                            None if low is None else usd(low))
        await self.service.create_customer(spec)
        self.names[chart.reserved_account(cid)] = f"{name}.reserved"
        self.names[chart.receivable_account(cid)] = f"{name}.receivable"
        return cid

    async def top_up(self, cid: str, amount: str, name: str | None = None, **kw: Any):
        result = await self.service.submit(TopUp(customer_id=cid, amount=usd(amount), **kw))
        self.names[chart.lot_account(cid, result.grant.id)] = name or result.grant.id
        return result

    async def grant(self, cid: str, amount: str, name: str | None = None, **kw: Any):
        result = await self.service.submit(Grant(customer_id=cid, amount=usd(amount), **kw))
        self.names[chart.lot_account(cid, result.grant.id)] = name or result.grant.id
        return result

    async def reserve(self, cid: str, request_id: str, *, amount: str | None = None, input_tokens: int = 0,
                      max_output_tokens: int = 0, ttl_seconds: int = 300):
        body = {"amount": amount, "input": input_tokens, "output": max_output_tokens, "ttl": ttl_seconds}
        return await self.service.submit(Reserve(
            customer_id=cid, request_id=request_id, request_hash=repr(sorted(body.items())).encode(),
            model="model-x", ttl_seconds=ttl_seconds, amount=usd(amount) if amount is not None else None,
            prompt_tokens=input_tokens, max_output_tokens=max_output_tokens))

    async def settle(self, cid: str, reservation_id: str, *, input_tokens: int = 0, output_tokens: int = 0,
                     final: bool = True, capture_id: str | None = None):
        tokens = {"input": input_tokens, "output": output_tokens}
        return await self.service.submit(Settle(
            customer_id=cid, reservation_id=reservation_id, request_hash=repr((tokens, final)).encode(),
            tokens=tokens, usage=tokens, final=final, capture_id=capture_id))

    async def release(self, cid: str, reservation_id: str):
        return await self.service.submit(Release(customer_id=cid, reservation_id=reservation_id))

    async def usage_event(self, cid: str, event_id: str, *, input_tokens: int = 0, output_tokens: int = 0,
                          at: datetime | None = None):
        tokens = {"input": input_tokens, "output": output_tokens}
        return await self.service.submit(RecordUsage(
            customer_id=cid, event_id=event_id, request_hash=repr(tokens).encode(), model="model-x",
            occurred_at=at or self.clock.now, tokens=tokens, usage=tokens))

    async def balances(self, *customers: str, platform: bool = True) -> dict[str, int]:
        """Normal balances by short name: every account of `customers`, and the platform's."""

        async def read(conn):
            found = {}
            for cid in customers:
                found.update(await customer_balances(conn, cid))
            if platform:
                found.update(await balances(conn, [spec.code for spec in chart.platform_specs("USD")]))
            return found

        found = await self.db.read(read)
        short = {chart.cash_account("USD"): "cash", chart.promotions_account("USD"): "promotions",
                 chart.revenue_account("USD"): "revenue", chart.breakage_account("USD"): "breakage", **self.names}
        rounding = chart.rounding_account("USD")  # moves only when a close rounds an amount due
        return {short.get(code, code): b.normal for code, b in found.items() if code != rounding or b.normal}

    async def verify(self):
        return await self.db.read(lambda conn: verify(conn, WALLET_CHECKS))


def amounts(**named: str) -> dict[str, int]:
    return {name.replace("__", "."): usd(value) for name, value in named.items()}


def refusing(rule_type: type, customer_id: str, monkeypatch: Any) -> None:
    """The wallet core's rule for `rule_type` refuses `customer_id`'s command (ConflictError,
    "refused for the test") and decides the others as before, until `monkeypatch` is undone."""
    real = RULES[rule_type]

    def rule(state: Any, cmd: Any, now: datetime, book: Any) -> Any:
        if cmd.customer_id == customer_id:
            raise ConflictError("refused for the test")
        return real(state, cmd, now, book)

    monkeypatch.setitem(RULES, rule_type, rule)


async def forge_copy(conn: AsyncConnection, cid: str, entry_id: int, postings: dict[str, int]) -> None:
    """As a superuser with triggers off, insert into a lane other than `cid`'s a copy of `cid`'s entry
    `entry_id` (same id, kind and metadata) for a customer of that lane, with `postings` (account code
    -> amount). The caller reads what it checks in this transaction, then rolls it back."""
    lanes = await lane_count(conn)
    other = next(f"o{i}" for i in range(1000) if lane_of(f"o{i}", lanes) != lane_of(cid, lanes))
    await conn.execute(text("SET LOCAL session_replication_role = replica"))
    await conn.execute(text("""
        INSERT INTO journal_entries (lane, id, key, request_hash, kind, customer_id, occurred_at, recorded_at,
                                     metadata, txid)
        SELECT :lane, id, 'forged', request_hash, kind, :other, occurred_at, recorded_at, metadata, txid
          FROM journal_entries WHERE lane = :own AND id = :id"""),
                       {"lane": lane_of(other, lanes), "other": other, "own": lane_of(cid, lanes), "id": entry_id})
    for code, amount in postings.items():
        await conn.execute(text("""
            INSERT INTO postings (lane, entry_id, account_id, amount)
            SELECT :lane, :id, a.id, :amount FROM accounts a WHERE a.code = :code"""),
                           {"lane": lane_of(other, lanes), "id": entry_id, "code": code, "amount": amount})


async def forge_adjustment(conn: AsyncConnection, cid: str, new_lines: str = "[]") -> None:
    """As a superuser with triggers off, insert into a lane other than `cid`'s an adjustment of each
    of `cid`'s charges' ids (corrected_version 'forged', $2.00 -> $1.00, `new_lines` as JSON) for a
    customer of that lane. The caller reads what it checks in this transaction, then rolls it back."""
    lanes = await lane_count(conn)
    other = next(f"o{i}" for i in range(1000) if lane_of(f"o{i}", lanes) != lane_of(cid, lanes))
    await conn.execute(text("SET LOCAL session_replication_role = replica"))
    await conn.execute(text("""
        INSERT INTO charge_adjustments (lane, charge_id, corrected_version, rerate_id, customer_id, period,
                                        old_amount, new_amount, old_lines, new_lines)
        SELECT :lane, id, 'forged', 'forged', :other, period, 2000000000, 1000000000, '[]', CAST(:lines AS jsonb)
          FROM charges WHERE customer_id = :c"""),
                       {"lane": lane_of(other, lanes), "other": other, "c": cid, "lines": new_lines})


async def checked_beside_a_copy(kit: Kit, cid: str, entry_id: int, postings: dict[str, int], check: CheckFn) -> Check:
    """What `check` finds once `forge_copy` copied `cid`'s entry `entry_id` into another lane with
    `postings` (rolled back after)."""
    async def forged(conn: AsyncConnection) -> Check:
        await forge_copy(conn, cid, entry_id, postings)
        found = await check(conn)
        await conn.rollback()
        return found

    return await kit.db.read(forged)

"""Balances as of a past instant, and account statements, computed from postings.

Time is the entry's `occurred_at`. The balance *at T* counts every posting of an entry that
occurred before T (half-open, like a statement's [from, to)), so a statement's opening balance is
the balance at `from` and its closing balance the balance at `to`. A striped platform account is
read as a whole (every stripe). A statement is read a page at a time against the snapshot of its
first page (see ledger.journal); each page recomputes its balances from postings, so nothing in
a cursor but a position is trusted.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.audit import TrialBalance, TrialBalanceLine, tally

_VISIBLE = "pg_visible_in_snapshot(j.txid, CAST(:snapshot AS pg_snapshot))"


@dataclass(frozen=True, slots=True)
class AccountRef:
    id: int
    code: str
    type: str
    asset: str
    customer_id: str | None
    stripes: int

    @property
    def normal_sign(self) -> int:
        return 1 if self.type in ("asset", "expense") else -1


@dataclass(frozen=True, slots=True)
class StatementLine:
    occurred_at: datetime
    entry_id: int
    posting_id: int
    kind: str
    customer_id: str | None
    stripe: int
    amount: int  # signed: debit > 0
    balance: int  # debits - credits of the whole account after this posting


@dataclass(frozen=True, slots=True)
class Statement:
    account: AccountRef
    opening: int  # debits - credits before `from`
    debits: int  # within [from, to)
    credits: int
    lines: tuple[StatementLine, ...]  # this page's

    @property
    def closing(self) -> int:
        return self.opening + self.debits - self.credits


Position = tuple[datetime, int, int]  # (occurred_at, entry id, posting id) of the last line read


async def find_account(conn: AsyncConnection, code: str) -> AccountRef | None:
    row = (await conn.execute(text(
        "SELECT id, code, type, asset, customer_id, stripes FROM accounts WHERE code = :code"),
        {"code": code})).first()
    return None if row is None else AccountRef(row.id, row.code, row.type, row.asset, row.customer_id, row.stripes)


def _scope(account: AccountRef, params: dict[str, Any]) -> str:
    """Postings of `account`; a customer's account lives in its customer's lane only."""
    params["account_id"] = account.id
    if account.customer_id is None:
        return "p.account_id = :account_id"
    params["customer"] = account.customer_id
    return ("p.account_id = :account_id AND p.lane = ledger_entry_lane(:customer)"
            " AND j.lane = ledger_entry_lane(:customer)")


async def cached_balance(conn: AsyncConnection, account: AccountRef) -> tuple[int, int]:
    """(debits, credits) of `account` now, from its cached balance rows (every stripe)."""
    row = (await conn.execute(text(
        """SELECT coalesce(sum(debits), 0)::numeric AS d, coalesce(sum(credits), 0)::numeric AS c
             FROM account_balances WHERE account_id = :id"""), {"id": account.id})).one()
    return int(row.d), int(row.c)


async def balance_at(conn: AsyncConnection, account: AccountRef, at: datetime) -> tuple[int, int]:
    """(debits, credits) of `account` over the postings of entries that occurred before `at`."""
    params: dict[str, Any] = {"at": at}
    row = (await conn.execute(text(
        f"""SELECT coalesce(sum(p.amount) FILTER (WHERE p.amount > 0), 0)::numeric AS d,
                   coalesce(-sum(p.amount) FILTER (WHERE p.amount < 0), 0)::numeric AS c
              FROM postings p JOIN journal_entries j ON j.lane = p.lane AND j.id = p.entry_id
             WHERE {_scope(account, params)} AND j.occurred_at < :at"""), params)).one()
    return int(row.d), int(row.c)


async def statement_page(conn: AsyncConnection, account: AccountRef, start: datetime | None,
                         end: datetime | None, snapshot: str, after: Position | None,
                         limit: int) -> Statement:
    """The statement of `account` over [start, end) as of `snapshot`: its balances and the
    page of up to `limit` postings after `after`, each with the running balance."""
    params: dict[str, Any] = {"snapshot": snapshot, "limit": limit}
    scope = _scope(account, params)
    before_start = "j.occurred_at < :start" if start is not None else "false"
    in_range = [c for c, v in (("j.occurred_at >= :start", start), ("j.occurred_at < :end", end)) if v is not None]
    params.update(start=start, end=end)
    if after is not None:
        params.update(after_at=after[0], after_entry=after[1], after_posting=after[2])
    behind = "(j.occurred_at, j.id, p.id) <= (:after_at, :after_entry, :after_posting)" if after else "false"
    period = " AND ".join(in_range) or "true"
    sums = (await conn.execute(text(
        f"""SELECT coalesce(sum(p.amount) FILTER (WHERE {before_start}), 0)::numeric AS opening,
                   coalesce(sum(p.amount) FILTER (WHERE {period} AND p.amount > 0), 0)::numeric AS d,
                   coalesce(-sum(p.amount) FILTER (WHERE {period} AND p.amount < 0), 0)::numeric AS c,
                   coalesce(sum(p.amount) FILTER (WHERE {period} AND {behind}), 0)::numeric AS read
              FROM postings p JOIN journal_entries j ON j.lane = p.lane AND j.id = p.entry_id
             WHERE {scope} AND {_VISIBLE} {'AND j.occurred_at < :end' if end is not None else ''}"""),
        params)).one()
    opening = int(sums.opening)
    rows = (await conn.execute(text(
        f"""SELECT j.occurred_at, j.id AS entry_id, p.id AS posting_id, j.kind, j.customer_id, p.stripe, p.amount
              FROM postings p JOIN journal_entries j ON j.lane = p.lane AND j.id = p.entry_id
             WHERE {scope} AND {_VISIBLE} AND {period}
               {'AND (j.occurred_at, j.id, p.id) > (:after_at, :after_entry, :after_posting)' if after else ''}
             ORDER BY j.occurred_at, j.id, p.id LIMIT :limit"""), params)).all()
    running = opening + int(sums.read)
    lines = []
    for r in rows:
        running += r.amount
        lines.append(StatementLine(r.occurred_at, r.entry_id, r.posting_id, r.kind, r.customer_id, r.stripe,
                                   r.amount, running))
    return Statement(account, opening, int(sums.d), int(sums.c), tuple(lines))


async def trial_balance_at(conn: AsyncConnection, at: datetime, asset: str | None = None,
                           customers: tuple[str, ...] | None = None) -> TrialBalance:
    """Every account's debits and credits over the postings of entries that occurred before
    `at`: the accounts that existed then or had postings by then. With `customers`, only theirs."""
    rows = (await conn.execute(text(
        """SELECT a.code, a.asset, coalesce(s.d, 0)::numeric AS d, coalesce(s.c, 0)::numeric AS c
             FROM accounts a
             LEFT JOIN (SELECT p.account_id,
                               sum(p.amount) FILTER (WHERE p.amount > 0) AS d,
                               -sum(p.amount) FILTER (WHERE p.amount < 0) AS c
                          FROM postings p JOIN journal_entries j ON j.lane = p.lane AND j.id = p.entry_id
                         WHERE j.occurred_at < :at GROUP BY p.account_id) s ON s.account_id = a.id
            WHERE (a.created_at < :at OR s.account_id IS NOT NULL)
              AND (CAST(:asset AS text) IS NULL OR a.asset = :asset)
              AND (CAST(:customers AS text[]) IS NULL OR a.customer_id = ANY(CAST(:customers AS text[])))
            ORDER BY a.asset, a.code"""),
        {"at": at, "asset": asset, "customers": None if customers is None else list(customers)})).all()
    return tally(TrialBalanceLine(r.code, r.asset, int(r.d), int(r.c)) for r in rows)

"""Changing a customer after creation, and the change log auditors read (migration 0041).

A change runs under its customer's lane writer lock and its customer lock, as a wallet batch
does: a reserve racing a change of the overdraft limit sees the old limit or the new one, never
half. The change, its log row, the alert flags and events it calls for (a limit lowered below
what is owed blocks the wallet: `wallet.blocked`) commit in one transaction."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.db import Database
from wallets import store
from wallets.core import customers as rules
from wallets.core.alerts import alerts
from wallets.core.decision import CustomerFlagged, OutboxEvent
from wallets.core.idempotency import OK, IdemKey
from wallets.core.state import State
from wallets.engine import Engine, customer_lock, lane_lock
from wallets.errors import NotFoundError, WalletValidationError
from wallets.model import Customer
from wallets.periods import period_of


@dataclass(frozen=True, slots=True)
class CustomerChange:
    """One change as the log keeps it: field -> {"old", "new"} (money as decimal strings)."""

    customer_id: str
    seq: int
    changed_at: datetime
    changed_by: str  # the API key's id
    changes: Mapping[str, Mapping[str, Any]]
    receivable: int  # what the customer owed at the change (its receivable, holds on credit included)


async def change_customer(db: Database, engine: Engine, clock: Callable[[], datetime], customer_id: str,
                          asked: Mapping[str, Any], changed_by: str, idem: IdemKey | None,
                          view: Callable[[AsyncConnection], Any],
                          allowed: Callable[[AsyncConnection], Awaitable[None]] | None = None) -> Any:
    """Make the `asked` changes (rules.change) and log them; `view` reads the customer as the
    answer shows it, after the change, in the same transaction. `allowed`: the caller's own check
    of the change (a key limited to customers may move one only to a book it may read), run first
    in the unit of work, so after the Idempotency-Key is read: a change kept before the check
    refused it is answered as kept; another body under the key is refused by it (422) before it is
    told it conflicts."""
    from wallets.service import run_once  # wallets.service calls this module

    rules.refuse_immutable(asked)
    lane = await engine.lane_of(customer_id)

    async def work(conn: AsyncConnection) -> Any:
        if allowed is not None:
            await allowed(conn)
        token = store.LANE.set(lane)
        try:
            await _change(conn, clock(), lane, customer_id, asked, changed_by)
        finally:
            store.LANE.reset(token)
        return await view(conn)

    result = await run_once(db, idem, work, [lane_lock(lane), customer_lock(customer_id)], lambda _: OK)
    if "price_book" in asked:
        engine.books.forget(customer_id)
    return result


async def _change(conn: AsyncConnection, now: datetime, lane: int, customer_id: str, asked: Mapping[str, Any],
                  changed_by: str) -> None:
    loaded = await store.load(conn, [customer_id], now=now)
    w = loaded.wallets.get(customer_id)
    if w is None:
        raise NotFoundError(f"no customer {customer_id}", customer_id=customer_id)
    changes = rules.change(w.customer, asked)
    if not changes:
        return
    if "price_book" in changes:
        await _check_book(conn, changes["price_book"][1], w.customer.currency)
        await _check_volume_move(conn, lane, w.customer, changes["price_book"])
    w.customer = rules.changed(w.customer, changes)
    flagged, rows = w.customer, []  # the alerts the new settings call for (blocked, unblocked)
    for effect in alerts(State(customer_id, w), w, now):
        if isinstance(effect, CustomerFlagged):
            flagged.low_balance_alerted, flagged.blocked = effect.low_balance_alerted, effect.blocked
        elif isinstance(effect, OutboxEvent):
            rows.append({"topic": effect.topic, "customer_id": effect.customer_id, "dedup_key": effect.dedup_key,
                         "payload": dict(effect.payload)})
    c = w.customer
    await conn.exec_driver_sql(
        """UPDATE customers SET name = %s, price_book = %s, overdraft_limit = %s, low_balance_alerted = %s,
                                blocked = %s
            WHERE lane = %s AND id = %s""",
        (c.name, c.price_book, c.overdraft_limit, c.low_balance_alerted, c.blocked, lane, customer_id))
    await conn.exec_driver_sql(
        """INSERT INTO customer_changes (lane, customer_id, seq, changed_at, changed_by, changes, receivable)
           SELECT %s, %s, coalesce(max(seq), 0) + 1, %s, %s, %s::jsonb, %s
             FROM customer_changes WHERE lane = %s AND customer_id = %s""",
        (lane, customer_id, now, changed_by, store.dumps(rules.on_record(changes, c.currency)), w.receivable,
         lane, customer_id))
    if rows:
        await store.write(conn, {"outbox": rows})


async def _check_book(conn: AsyncConnection, book_id: str, currency: str) -> None:
    """A customer moves only to a price book that exists, in its currency (creation refuses a
    book in another currency likewise; it takes one not created yet)."""
    found = (await conn.exec_driver_sql("SELECT currency FROM price_books WHERE id = %s", (book_id,))).scalar()
    if found is None:
        raise WalletValidationError("price_book", f"no price book {book_id}")
    if found != currency:
        raise WalletValidationError("price_book", f"price book {book_id} is in {found}")


async def _check_volume_move(conn: AsyncConnection, lane: int, customer: Customer,
                             books: tuple[str | None, str]) -> None:
    """A volume-tiered book trues up a period's usage at its close, by rule, with the book the
    customer is on then: a move from or to such a book while the open period holds usage would
    true up one book's usage at the other's tiers (or drop its true-up). Refused until that period
    closes; a move between books without volume tiers, or before any usage, is not."""
    volume = (await conn.exec_driver_sql(
        """SELECT EXISTS (SELECT 1 FROM price_book_versions v
                           CROSS JOIN LATERAL jsonb_array_elements(v.rules) AS r(rule)
                           WHERE v.book_id = ANY(%s) AND r.rule ->> 'tier_mode' = 'volume')""",
        ([b for b in books if b is not None],))).scalar()
    if not volume:
        return
    start = customer.open_period_start
    label = period_of(start, customer.cycle).label if start is not None else ""
    used = (await conn.exec_driver_sql(
        "SELECT EXISTS (SELECT 1 FROM charges WHERE lane = %s AND customer_id = %s AND period >= %s)",
        (lane, customer.id, label))).scalar()
    if used:
        raise WalletValidationError("price_book", "volume tiers true up the open period's usage at its close by the "
                                    "customer's book: move a customer from or to a volume-tiered book once the "
                                    "period with usage has closed")


async def changes_of(db: Database, lane: int, customer_id: str) -> list[CustomerChange]:
    """The customer's changes, oldest first."""
    rows = await db.read(lambda conn: conn.exec_driver_sql(
        """SELECT customer_id, seq, changed_at, changed_by, changes, receivable::text FROM customer_changes
            WHERE lane = %s AND customer_id = %s ORDER BY seq""", (lane, customer_id)))
    return [CustomerChange(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows.all()]


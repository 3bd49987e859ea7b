"""Budgets as the API manages them: create, read (with the current window's usage), change and
delete. A budget belongs to one customer and lives in its lane, so a reserve that checks it stays
a one-lane transaction; writes take the lane's writer lock and the customer's, as a wallet batch
does, so they queue beside the batches that read budgets instead of failing them with 40001."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.db import Database
from wallets import store
from wallets.budget_seeding import alert, count_before
from wallets.core import budgets as rules
from wallets.core.budget_seeds import ahead_alerts
from wallets.core.budgets import BudgetView
from wallets.core.idempotency import CREATED, OK, IdemKey, Replayed
from wallets.core.state import State
from wallets.engine import Engine, customer_lock, lane_lock
from wallets.errors import NotFoundError
from wallets.model import Budget, new_id

OWNERS_KEPT = 100_000  # budgets whose customer is kept (then forgotten all at once)
MAX_PER_CUSTOMER = 100  # live budgets of one customer by each setter (TOKENTILL_MAX_BUDGETS_PER_CUSTOMER)


def page_query(customers: list[str] | None, after: tuple[str, str] | None,
               limit: int | None) -> tuple[str, dict[str, object]]:
    """The statement (and its parameters) reading the ids of a page of `BudgetService.list`, one
    row past `limit` (to tell whether there are more). Only the conditions that apply are in it,
    so each is an index condition of budgets_list (customer_id, id, live only) even in a generic
    plan: a page reads its rows from where the last one ended, in index order, never sorting every
    live budget."""
    where = ["deleted_at IS NULL"]
    if customers is not None:
        where.append("customer_id = ANY(%(customers)s::text[])")
    if after is not None:
        where.append("(customer_id, id) > (%(customer)s, %(id)s)")
    return (f"SELECT customer_id, id FROM budgets WHERE {' AND '.join(where)} "
            "ORDER BY customer_id, id LIMIT %(limit)s",
            {"customers": customers, "customer": after and after[0], "id": after and after[1],
             "limit": None if limit is None else limit + 1})


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    customer_id: str
    window: str
    metric: str
    limit: int
    mode: str = "hard"
    name: str = ""
    api_key: str | None = None
    model: str | None = None
    dimensions: dict[str, str] = field(default_factory=dict)
    thresholds: tuple[int, ...] = ()
    time_zone: str | None = None
    set_by: str = "operator"  # or "customer": made with the customer's own key, which may change it


@dataclass(frozen=True, slots=True)
class BudgetChange:
    """What PATCH may change (None: unchanged). Scope, window and metric never change."""

    name: str | None = None
    limit: int | None = None
    mode: str | None = None
    thresholds: tuple[int, ...] | None = None


def valid(spec: BudgetSpec) -> None:
    """Refuse a budget that cannot mean anything, naming the field (422): run once its key is read
    (acadff6), and before its customer is found missing (422 before 404)."""
    rules.check_key(spec.api_key, spec.dimensions)
    rules.validate(spec.window, spec.metric, spec.mode, spec.limit, spec.thresholds, spec.time_zone, spec.model)


class BudgetService:
    def __init__(self, db: Database, engine: Engine, clock: Callable[[], datetime], *,
                 max_per_customer: int = MAX_PER_CUSTOMER) -> None:
        self.db, self.engine, self.clock, self.max_per_customer = db, engine, clock, max_per_customer
        self._owners: dict[str, str] = {}  # budget -> its customer, which never changes

    async def create(self, spec: BudgetSpec, idem: IdemKey | None = None) -> BudgetView | Replayed:
        from wallets.service import run_once  # imported here: wallets.service imports this module

        budget_id = new_id("bud")
        lane = await self.engine.lane_of(spec.customer_id)

        async def work(conn: AsyncConnection) -> BudgetView:  # under the customer's lock: counted, then added
            live = await conn.exec_driver_sql(
                "SELECT count(*) FROM budgets WHERE lane = %s AND customer_id = %s AND set_by = %s "
                "AND deleted_at IS NULL", (lane, spec.customer_id, spec.set_by))
            rules.ensure_room(spec.customer_id, spec.set_by, live.scalar_one(), self.max_per_customer)
            # made soft, then hard once its window holds what was held before it: the database refuses
            # a hard budget's hold past its limit, and those holds were taken when nothing limited them
            await conn.exec_driver_sql(
                """INSERT INTO budgets (lane, id, customer_id, name, api_key, model, dimensions, window_kind, metric,
                                        limit_units, mode, thresholds, time_zone, set_by)
                   SELECT c.lane, %s, c.id, %s, %s, %s, %s::jsonb, %s, %s, %s, 'soft', %s, %s, %s
                     FROM customers c WHERE c.id = %s""",
                (budget_id, spec.name, spec.api_key, spec.model, store.dumps(spec.dimensions), spec.window,
                 spec.metric, spec.limit, list(spec.thresholds), spec.time_zone, spec.set_by, spec.customer_id))
            now = self.clock()
            made, currency = await self._live(conn, spec.customer_id, budget_id, now)
            await count_before(conn, lane, made, now)
            if spec.mode != "soft":
                await conn.exec_driver_sql("UPDATE budgets SET mode = %s WHERE lane = %s AND id = %s",
                                           (spec.mode, lane, budget_id))
            b, _ = await self._live(conn, spec.customer_id, budget_id, now)
            state = State(spec.customer_id, None)
            await alert(conn, spec.customer_id, rules.on_change(state, replace(b, thresholds=()), b, currency, now)
                        + ahead_alerts(state, b, currency, now))
            return rules.budget_view(b, currency, now)

        return await run_once(self.db, idem, work, await self._locks(spec.customer_id), lambda _: CREATED,
                              rules=lambda: valid(spec))  # after the key: the answer kept for this body first

    async def get(self, budget_id: str) -> BudgetView:
        customer_id = await self.owner(budget_id)
        return await self.db.read(lambda conn: self._view(conn, customer_id, budget_id))

    async def list(self, customers: list[str] | None, *, after: tuple[str, str] | None = None,
                   limit: int | None = None) -> tuple[list[BudgetView], tuple[str, str] | None]:
        """The live budgets of `customers` (None: of every customer), by customer then id: the
        first `limit` (None: all) after the position `after` (a customer and a budget id), and
        the position to go on from (None: no more). One snapshot reads the page and its windows."""
        now = self.clock()

        async def page(conn: AsyncConnection) -> tuple[list[BudgetView], tuple[str, str] | None]:
            rows = (await conn.exec_driver_sql(*page_query(customers, after, limit))).all()
            more = limit is not None and len(rows) > limit
            rows = rows[:limit] if more else rows
            wanted: dict[str, list[str]] = {}  # by customer, in order
            for customer_id, budget_id in rows:
                wanted.setdefault(customer_id, []).append(budget_id)
            views: list[BudgetView] = []
            for customer_id, ids in wanted.items():  # a load reads one lane: one customer at a time
                w = (await store.load(conn, [customer_id], now=now)).wallets[customer_id]
                views += [rules.budget_view(w.budgets[i], w.customer.currency, now) for i in ids]
            return views, (rows[-1][0], rows[-1][1]) if more else None

        return await self.db.read(page)

    async def change(self, budget_id: str, decide: Callable[[Budget], BudgetChange],
                     idem: IdemKey | None = None) -> BudgetView | Replayed:
        """The change `decide` makes of the budget (it may refuse, raising: the caller's authorization,
        the limit's type by metric) applied to the budget as read by the unit of work that writes it:
        one read, so nothing about the budget changes between the check and the write. With `idem`,
        its answer is kept, and a replay answers it."""
        from wallets.service import run_once  # imported here: wallets.service imports this module

        customer_id = await self.owner(budget_id)

        async def work(conn: AsyncConnection) -> BudgetView:
            now = self.clock()
            current, currency = await self._live(conn, customer_id, budget_id, now)
            change = decide(current)
            b = replace(current, name=current.name if change.name is None else change.name,
                        limit=current.limit if change.limit is None else change.limit,
                        mode=change.mode or current.mode,
                        thresholds=current.thresholds if change.thresholds is None else change.thresholds)
            rules.validate(b.window, b.metric, b.mode, b.limit, b.thresholds, None)
            await conn.exec_driver_sql(
                """UPDATE budgets SET name = %s, limit_units = %s, mode = %s, thresholds = %s, updated_at = now()
                    WHERE id = %s AND customer_id = %s AND deleted_at IS NULL""",
                (b.name, b.limit, b.mode, list(b.thresholds), budget_id, customer_id))
            await alert(conn, customer_id, rules.on_change(State(customer_id, None), current, b, currency, now))
            return rules.budget_view(b, currency, now)

        return await run_once(self.db, idem, work, await self._locks(customer_id), lambda _: OK)

    async def delete(self, budget_id: str, allow: Callable[[Budget], None] = lambda _: None,
                     idem: IdemKey | None = None) -> BudgetView | Replayed:
        """Stop counting new reservations against the budget; holds taken in it still return.
        `allow` (the caller's authorization) sees the budget as read by the unit of work that
        deletes it, and may refuse, raising. With `idem`, its answer is kept, and a replay answers it."""
        from wallets.service import run_once

        customer_id = await self.owner(budget_id)

        async def work(conn: AsyncConnection) -> BudgetView:
            now = self.clock()
            b, currency = await self._live(conn, customer_id, budget_id, now)
            allow(b)
            await conn.exec_driver_sql("UPDATE budgets SET deleted_at = now() WHERE id = %s AND customer_id = %s "
                                       "AND deleted_at IS NULL", (budget_id, customer_id))
            return rules.budget_view(b, currency, now)

        return await run_once(self.db, idem, work, await self._locks(customer_id), lambda _: OK)

    async def owner(self, budget_id: str) -> str:
        """The customer of a live budget, or not_found. A budget's customer never changes, so it
        is kept once found (a budget deleted since is found missing where it is read)."""
        if budget_id in self._owners:
            return self._owners[budget_id]
        found = await self.db.read(lambda conn: conn.exec_driver_sql(
            "SELECT customer_id FROM budgets WHERE id = %s AND deleted_at IS NULL", (budget_id,)))
        customer_id = found.scalar()
        if customer_id is None:
            raise NotFoundError(f"no budget {budget_id}", budget_id=budget_id)
        if len(self._owners) >= OWNERS_KEPT:
            self._owners.clear()
        self._owners[budget_id] = customer_id
        return customer_id

    async def _locks(self, customer_id: str) -> list[int]:
        """What a budget write locks: its customer's lane (whose batches count against budgets), then
        the customer (its budgets are counted before one is added)."""
        return [lane_lock(await self.engine.lane_of(customer_id)), customer_lock(customer_id)]

    async def _view(self, conn: AsyncConnection, customer_id: str, budget_id: str) -> BudgetView:
        now = self.clock()
        b, currency = await self._live(conn, customer_id, budget_id, now)
        return rules.budget_view(b, currency, now)

    async def _live(self, conn: AsyncConnection, customer_id: str, budget_id: str,
                    now: datetime) -> tuple[Budget, str]:
        """The live budget with its windows at `now`, and its customer's currency (one read)."""
        loaded = await store.load(conn, [customer_id], now=now)
        w = loaded.wallets.get(customer_id)
        if w is None:
            raise NotFoundError(f"no customer {customer_id}", customer_id=customer_id)
        if budget_id not in w.budgets:
            raise NotFoundError(f"no budget {budget_id}", budget_id=budget_id)
        return w.budgets[budget_id], w.customer.currency

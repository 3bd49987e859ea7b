"""The wallets' use cases, as the API calls them: customers, wallet reads, and commands run
through the engine. Services raise domain errors; they know nothing of HTTP."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.db import Database, lock_key
from ledger.errors import LedgerError
from pricing.errors import PricingError
from wallets import store
from wallets.accounts import open_customer_accounts
from wallets.budgets import MAX_PER_CUSTOMER as MAX_BUDGETS_PER_CUSTOMER
from wallets.budgets import BudgetService
from wallets.commands import Command, WalletView, wallet_view
from wallets.core import customers as customer_rules
from wallets.core import idempotency
from wallets.core.credits import whole_minor_units
from wallets.core.idempotency import CREATED, EXISTS, OK, IdemKey, Replayed
from wallets.core.refunds import refundable
from wallets.customer_changes import CustomerChange, change_customer, changes_of
from wallets.engine import ACCOUNTS_LOCK, Engine, customer_lock, lane_lock, utc_now
from wallets.errors import (
    BODY_REFUSALS,
    NO_ANSWER_KEPT,
    ConflictError,
    CustomerExistsError,
    NotFoundError,
    WalletValidationError,
)
from wallets.periods import DEFAULT_GRACE_S, DEFAULT_TERMS_DAYS, Cycle, close_due_at, new_zone, period_of
from wallets.price_overrides import AddedOverrides, add_version

T = TypeVar("T")
# The scope of the claims bulk calls take on their Idempotency-Keys (WalletService.claim): its own,
# so that a claim is never replayed as an answer. HTTP scopes (idempotency.http_scope) hold no "#".
CLAIM_SCOPE = "#claim"
RELEASED_SCOPE = "#released"  # a claimed call that ended without an answer (WalletService.release)
CLAIM_WAIT_S = 30.0  # how long a copy of a keyed bulk call waits for the first one's answer (see claim)


def _claim_rows(idem: IdemKey, generation: int) -> tuple[tuple[str, str], tuple[str, str]]:
    """The claim and released rows of `idem`'s `generation` (1: the first claim's, as before)."""
    suffix = "" if generation == 1 else f"#{generation}"
    return (idem.scope + CLAIM_SCOPE + suffix, idem.key), (idem.scope + RELEASED_SCOPE + suffix, idem.key)


@dataclass(frozen=True, slots=True)
class CustomerSpec:
    id: str
    name: str
    currency: str
    billing: str
    price_book: str | None
    overdraft_limit: int | None  # None: unlimited
    low_balance_threshold: int | None
    max_charge_per_request: int | None = None  # None: its price book's plausibility bound
    time_zone: str = "UTC"  # its billing periods: calendar months (or from the anchor day) in this zone
    billing_anchor_day: int | None = None  # None: the 1st of the month, as 1 is
    grace_seconds: int = DEFAULT_GRACE_S  # a period closes this long after its end
    payment_terms_days: int = DEFAULT_TERMS_DAYS  # an invoice is due this long after its period's end

    @property
    def cycle(self) -> Cycle:
        return Cycle(self.time_zone, self.billing_anchor_day)

    @property
    def anchor_day(self) -> int:
        """The day of the month its periods start on, as in force (no day given: the 1st)."""
        return self.billing_anchor_day or 1

    def same_as(self, other: CustomerSpec) -> bool:
        """The same definition: no anchor day given and the 1st spelt out are one cycle."""
        return replace(self, billing_anchor_day=self.anchor_day) == replace(other, billing_anchor_day=other.anchor_day)


@dataclass(frozen=True, slots=True)
class CustomerView:
    spec: CustomerSpec
    created_at: datetime
    open_period_start: datetime | None = None  # start of its first billing period not closed


_CUSTOMER = text("""SELECT id, name, currency, billing, price_book, overdraft_limit::text AS overdraft_limit,
                           low_balance_threshold::text AS low_balance_threshold, created_at,
                           max_charge_per_request::text AS max_charge_per_request, time_zone,
                           billing_anchor_day, grace_seconds, payment_terms_days, open_period_start
                      FROM customers WHERE id = :id""")


def _customer(row: Any) -> CustomerView:
    def opt(value: str | None) -> int | None:
        return int(value) if value is not None else None

    return CustomerView(CustomerSpec(row.id, row.name, row.currency, row.billing, row.price_book,
                                     opt(row.overdraft_limit), opt(row.low_balance_threshold),
                                     opt(row.max_charge_per_request), row.time_zone, row.billing_anchor_day,
                                     row.grace_seconds, row.payment_terms_days),
                        row.created_at, row.open_period_start)


async def run_once(db: Database, idem: IdemKey | None, work: Callable[[AsyncConnection], Awaitable[T]],
                   locks: list[int], code_of: Callable[[T], str] | None = None, *,
                   committed: bool = False, rules: Callable[[], None] | None = None) -> T | Replayed:
    """Run `work` in one transaction; with an idempotency key, keep its answer (its outcome code,
    `code_of` the result or the result's own, and body; refusals included) in the same
    transaction, and replay the kept answer instead of running again; a refusal of the request as
    sent (NOT_KEPT) is raised, nothing kept. `committed`: in a READ
    COMMITTED transaction (Database.committed: bookkeeping beside the ledger), `locks` taken
    inside it. `rules`: the body's own checks, run once the key is read and before `work`, their
    refusal not kept: the answer kept for this very body is replayed without them (a body kept
    before a rule refused it answers as kept), another body under the key is refused by them
    before it is told it conflicts (BODY_REFUSALS)."""
    refused: list[BaseException] = []

    async def unit(conn: AsyncConnection) -> T | Replayed | None:
        refused.clear()
        if idem is not None:
            loaded = await store.load(conn, (), idempotency=[(idem.scope, idem.key)])
            try:
                kept = idempotency.check_key(loaded.idempotency.get((idem.scope, idem.key)), idem)
            except ConflictError as conflict:
                if rules is not None:
                    rules()
                await _invalid_first(conn, work)
                raise conflict from None
            if kept is not None:
                return kept
        if rules is not None:
            rules()
        try:
            outcome: Any = await work(conn)
        except (LedgerError, PricingError) as exc:
            if idem is None or isinstance(exc, NO_ANSWER_KEPT):
                raise
            refused.append(exc)
            outcome = exc
        if idem is not None:
            code, body = idempotency.answer(outcome, None if refused or code_of is None else code_of(outcome))
            await store.write(conn, {"idempotency": [idempotency.row(idem.scope, idem.key, idem.request_hash,
                                                                     code, body)]})
        return None if refused else outcome

    async def locked(conn: AsyncConnection) -> T | Replayed | None:
        for key in sorted(locks):
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        return await unit(conn)

    result = await (db.committed(locked) if committed else db.run(unit, locks=locks))
    if refused:
        raise refused[0]
    return result  # type: ignore[return-value]


async def _invalid_first(conn: AsyncConnection, work: Callable[[AsyncConnection], Awaitable[Any]]) -> None:
    """Where the key holds another body: raise `work`'s refusal of this body itself (BODY_REFUSALS,
    checked where only the transaction can: an amount in the customer's currency, a price book's
    currency, the models of a customer's price overrides), as Batch.apply does for the commands a
    lane decides. Whatever `work` does is undone: the caller raises (a conflict when the body could
    be carried out), so the transaction rolls back."""
    try:
        await work(conn)
    except BODY_REFUSALS:
        raise
    except (LedgerError, PricingError):
        return


class WalletService:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utc_now, grouping: bool = True,
                 max_budgets_per_customer: int = MAX_BUDGETS_PER_CUSTOMER) -> None:
        self.db = db
        self.clock = clock
        self.engine = Engine(db, clock=clock, grouping=grouping)
        self.budgets = BudgetService(db, self.engine, clock, max_per_customer=max_budgets_per_customer)

    async def submit(self, command: Command) -> Any:
        return await self.engine.submit(command)

    async def submit_many(self, commands: Sequence[Command]) -> list[Any]:
        """Outcomes of a bulk call's commands, in order; domain errors are returned, not raised."""
        return await self.engine.submit_many(commands)

    async def claim(self, idem: IdemKey) -> Replayed | None:
        """Before a bulk call's effects: the answer kept under its key, if any, to replay (a
        conflict if the body differs); else the key is claimed for this body, so that a call with
        another body under the same key, even one sent at the same moment, is refused before it
        moves anything. The claim is kept apart from the answer (which `remember` keeps after
        the effects), under the same lock. A copy of the call (the same body) sent while the
        first is under way waits for the first's answer and replays it: going ahead beside it,
        the copy found the first's items done, and whichever kept its answer first gave it to
        all (a first-ever usage event answered as a duplicate). A claim CLAIM_WAIT_S old, whose
        call died before answering, holds its retries no longer: they go ahead, each item
        idempotent on its own, and the first answer kept is the key's."""
        async def work(conn: AsyncConnection) -> tuple[Replayed | None, float | None]:
            """The answer kept, and how long ago the claim was made when this call is a copy. A
            claim released (its call ended without an answer) is claimed again, by the next
            generation's row (records are immutable): this call goes ahead, its copies wait."""
            generation = 1
            while True:
                claims, released = _claim_rows(idem, generation)
                pairs = [claims, released] + ([(idem.scope, idem.key)] if generation == 1 else [])
                loaded = await store.load(conn, (), idempotency=pairs)
                if generation == 1:
                    kept = idempotency.check_key(loaded.idempotency.get((idem.scope, idem.key)), idem)
                    if kept is not None:
                        return kept, None
                claimed = idempotency.check_key(loaded.idempotency.get(claims), idem)
                if claimed is not None and released in loaded.idempotency:  # ended without an answer
                    generation += 1
                    continue
                if claimed is None:
                    at = self.clock().isoformat()
                    await store.write(conn, {"idempotency": [idempotency.row(*claims, idem.request_hash, OK,
                                                                             {"claimed_at": at})]})
                    return None, None
                at = claimed.body.get("claimed_at") if isinstance(claimed.body, dict) else None
                return None, (self.clock() - datetime.fromisoformat(at)).total_seconds() if at else CLAIM_WAIT_S

        lock, started, pause = [lock_key(f"idempotency:{idem.scope}:{idem.key}")], time.monotonic(), 0.02
        first_age: float | None = None
        while True:
            kept, age = await self.db.run(work, locks=lock)
            if kept is not None or age is None:
                return kept
            # the claim's age, by the service's clock or, where that clock stands still, by the
            # time waited here since its first look (counted once: not the two added up)
            first_age = age if first_age is None else first_age
            if max(age, first_age + time.monotonic() - started) >= CLAIM_WAIT_S:
                return kept
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def release(self, idem: IdemKey) -> None:
        """A claimed bulk call ends without an answer to keep (an item to send again, 503; an
        unexpected error): its copies and retries stop waiting for one (see claim) and go ahead."""
        async def work(conn: AsyncConnection) -> None:
            generation = 1
            while True:  # the last generation claimed: this call's
                _, released = _claim_rows(idem, generation)
                later, _ = _claim_rows(idem, generation + 1)
                loaded = await store.load(conn, (), idempotency=[released, later])
                if later in loaded.idempotency:
                    generation += 1
                    continue
                if released not in loaded.idempotency:
                    at = self.clock().isoformat()
                    await store.write(conn, {"idempotency": [idempotency.row(*released, idem.request_hash, OK,
                                                                             {"released_at": at})]})
                return

        await self.db.run(work, locks=[lock_key(f"idempotency:{idem.scope}:{idem.key}")])

    async def remember(self, idem: IdemKey, body: Any, code: str = OK) -> Any:
        """Keep the answer (`code`, `body`) of a call whose effects were idempotent each on their
        own (usage events): a replay then answers the same; the first answer kept wins."""

        async def work(conn: AsyncConnection) -> Any:
            return body

        return await run_once(self.db, idem, work, [lock_key(f"idempotency:{idem.scope}:{idem.key}")],
                              lambda _: code)

    async def owner_of(self, reservation_id: str) -> str:
        return await self.engine.owner_of(reservation_id)

    async def create_customer(self, spec: CustomerSpec, idem: IdemKey | None = None
                              ) -> tuple[CustomerView, bool] | Replayed:
        """Create a customer and its accounts. The same definition again answers with the
        customer (created=False); another definition under an existing id is a conflict."""

        async def work(conn: AsyncConnection) -> tuple[CustomerView, bool]:
            row = (await conn.execute(_CUSTOMER, {"id": spec.id})).first()
            existing = None if row is None else _customer(row)
            if existing is not None and existing.spec.same_as(spec):  # as made, whatever the rules say since
                return existing, False
            # the body's own refusals before the conflict with the customer kept (BODY_REFUSALS)
            new_zone(spec.time_zone)
            if spec.overdraft_limit is not None:
                whole_minor_units(spec.overdraft_limit, spec.currency, "overdraft_limit")
            book_currency = (await conn.execute(text("SELECT currency FROM price_books WHERE id = :id"),
                                                {"id": spec.price_book})).scalar()
            if book_currency is not None and book_currency != spec.currency:
                raise WalletValidationError("price_book", f"price book {spec.price_book} is in {book_currency}")
            if existing is not None:
                *others, last = customer_rules.CHANGEABLE
                raise CustomerExistsError(f"customer {spec.id} exists with other settings; its "
                                          f"{', '.join(customer_rules.IMMUTABLE)} never change; "
                                          f"{', '.join(others)} and {last} change by PATCH", customer_id=spec.id)
            await open_customer_accounts(conn, spec.id, spec.currency)
            period = period_of(self.clock(), spec.cycle)
            await conn.execute(text(
                """INSERT INTO customers (id, name, currency, billing, price_book, overdraft_limit,
                                          low_balance_threshold, max_charge_per_request, time_zone,
                                          billing_anchor_day, grace_seconds, payment_terms_days,
                                          open_period_start, next_close_at)
                   VALUES (:id, :name, :currency, :billing, :book, :limit, :low, :max_charge, :tz, :anchor,
                           :grace, :terms, :open, :close_at)"""),
                {"id": spec.id, "name": spec.name, "currency": spec.currency, "billing": spec.billing,
                 "book": spec.price_book, "limit": spec.overdraft_limit, "low": spec.low_balance_threshold,
                 "max_charge": spec.max_charge_per_request, "tz": spec.time_zone, "anchor": spec.billing_anchor_day,
                 "grace": spec.grace_seconds, "terms": spec.payment_terms_days, "open": period.start,
                 "close_at": close_due_at(period, spec.grace_seconds)})
            created = (await conn.execute(_CUSTOMER, {"id": spec.id})).one()
            return _customer(created), True

        # One creation at a time: they insert into the same index pages, and under SERIALIZABLE
        # concurrent ones would mostly fail and retry (creating customers is rare; queueing is cheap).
        # It opens accounts, so it queues with top-ups and grants too.
        return await run_once(self.db, idem, work, [customer_lock(spec.id), lock_key("customers:create"),
                                                    ACCOUNTS_LOCK],
                              lambda out: CREATED if out[1] else EXISTS)

    async def change_customer(self, customer_id: str, asked: dict[str, Any], changed_by: str,
                              idem: IdemKey | None = None,
                              allowed: Callable[[AsyncConnection], Awaitable[None]] | None = None
                              ) -> CustomerView | Replayed:
        """Change the customer's name, price book or overdraft limit (wallets.customer_changes),
        logged with `changed_by`, once `allowed` (the caller's check) lets it; answers the customer
        as it is after the change."""
        async def view(conn: AsyncConnection) -> CustomerView:
            return _customer((await conn.execute(_CUSTOMER, {"id": customer_id})).one())

        return await change_customer(self.db, self.engine, self.clock, customer_id, asked, changed_by, idem, view,
                                     allowed)

    async def add_overrides(self, customer_id: str, body: Mapping[str, Any], effective_from: datetime | None,
                            idem: IdemKey | None = None) -> AddedOverrides | Replayed:
        """Append a version of the customer's price overrides (wallets.price_overrides.add_version)
        under its lane's writer lock and its customer lock, as a move to another price book runs:
        without `effective_from` it takes effect at the time taken under those locks, so a call the
        lane charged before it was reserved before that time, and every later call sees it."""
        locks = [lane_lock(await self.engine.lane_of(customer_id)), customer_lock(customer_id)]
        return await run_once(self.db, idem,
                              lambda conn: add_version(conn, customer_id, body, effective_from, self.clock()),
                              locks, lambda added: CREATED if added.created else EXISTS)

    async def customer_changes(self, customer_id: str) -> list[CustomerChange]:
        """The customer's changes, oldest first (not_found for an unknown customer)."""
        await self.get_customer(customer_id)
        return await changes_of(self.db, await self.engine.lane_of(customer_id), customer_id)

    async def get_customer(self, customer_id: str) -> CustomerView:
        row = await self.db.read(lambda conn: _first(conn, _CUSTOMER, {"id": customer_id}))
        if row is None:
            raise NotFoundError(f"no customer {customer_id}", customer_id=customer_id)
        return _customer(row)

    async def wallet(self, customer_id: str) -> WalletView:
        now = self.clock()
        loaded = await self.db.read(lambda conn: store.load(conn, [customer_id], now=now))
        if customer_id not in loaded.wallets:
            raise NotFoundError(f"no customer {customer_id}", customer_id=customer_id)
        return wallet_view(loaded.wallets[customer_id], now)

    async def refundable(self, customer_id: str) -> tuple[str, int]:
        """The customer's currency, and what a cash refund of its overpaid credit may pay back now
        (wallets.core.refunds.refundable, read as the refund's command reads it)."""
        now = self.clock()

        async def read(conn: AsyncConnection) -> tuple[str, int]:
            loaded = await store.load(conn, [customer_id], now=now, credit_held_for=[customer_id])
            w = loaded.wallets.get(customer_id)
            if w is None:
                raise NotFoundError(f"no customer {customer_id}", customer_id=customer_id)
            await store.load_openers(conn, w, now)
            cash = (await store.load_cash(conn, [customer_id])).get(customer_id, 0)
            return w.customer.currency, refundable(w, cash, now)

        return await self.db.read(read)


async def _first(conn: AsyncConnection, statement: Any, params: dict[str, Any]) -> Any:
    return (await conn.execute(statement, params)).first()

"""Running wallet commands: each batch is one SERIALIZABLE transaction under its lane's writer
lock and its customers' advisory locks, and commands that arrive while one is in flight ride in
the next (group commit). A hot wallet then costs one lock, one load and one commit per batch,
not per call.

Every customer belongs to a lane (ledger.lanes), and every table a batch touches is partitioned
by lane, so batches of different lanes share no page and run at once, in one process (a flusher
per lane) or many; batches of one lane would collide under SERIALIZABLE, so they queue on the
lane's lock. No lock on the write path is cluster-wide.

A batch never holds two commands with the same conflict key (request id, reservation,
idempotency key), so each command sees the effects of the ones before it only through the
in-memory state. When a batch fails for any reason but a domain refusal, it is halved and
each half runs as a transaction of its own, recursively, so one bad command fails alone after
about 2*log2(n) transactions (not n); when the database is unavailable, every command fails at
once with that error (the database is down, not the input).
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Histogram
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.db import Database, Lead, RetriesExhaustedError, is_unavailable, lock_key
from ledger.errors import LedgerError
from ledger.lanes import lane_count, lane_of
from pricing.errors import PricingError
from wallets import store
from wallets.batch import Batch, billing_period
from wallets.books import BookCache
from wallets.budget_seeding import count_rerates
from wallets.commands import (
    ClosePeriod,
    Command,
    Grant,
    PayInvoice,
    RecordUsage,
    RefundCredit,
    Reserve,
    ReverseGrant,
    Settle,
    TopUp,
)
from wallets.core.commands import RerateCharges
from wallets.core.rerating import ChargeOnRecord, RerateInput
from wallets.errors import NotFoundError
from wallets.periods import Cycle, period_named, period_of
from wallets.price_overrides import OverrideCache, load_history

log = logging.getLogger(__name__)
BATCH_COMMANDS = Histogram("tokentill_wallet_batch_commands", "Wallet commands per transaction",
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128))
# Where a command's time goes: `queued` (per command, from submit until its batch is taken), then
# per batch `lock` (a pooled connection, the advisory locks, BEGIN and the load's read: one round
# trip; retries too), `load` (the load's row made values, and any other read), `rules` (the core,
# in Python), `post` (the entries' ids, ledger_post's call and the rows made ready; accounts
# opened), `write` (ledger_post and the rows: one statement) and `commit`.
BATCH_PHASE = Histogram("tokentill_wallet_batch_phase_seconds", "Wallet command and batch time, by phase",
                        ["phase"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
_MARKS: ContextVar[list[float] | None] = ContextVar("tokentill_batch_marks", default=None)  # when each phase ended
# A flusher's answers of its last batch, kept until the next batch's write statement is on its way
# (see Engine._flush): the function that delivers them, for that batch to call.
_DELIVER: ContextVar[Callable[[], None] | None] = ContextVar("tokentill_deliver", default=None)
LOCK_WAITED_S = 0.005  # a lock (+ load) round trip slower than this waited on another process: answer now
# A batch's load goes with its lock + BEGIN round trip, read at the time taken before the locks; its
# rules take theirs after. Within this, the load holds what they read at their time (the budgets'
# minute windows are loaded from 61 s back); past it (a lock another process held), it is read again.
LEAD_FRESH = timedelta(milliseconds=500)
_PHASES = {name: BATCH_PHASE.labels(name) for name in ("queued", "lock", "load", "rules", "post", "write", "commit")}
DOMAIN_ERRORS = (LedgerError, PricingError)
PAYOUTS = (ReverseGrant, RefundCredit)  # the commands paying cash out under a reference
# The most commands of a bulk call in one transaction: its Python work between statements stays
# well under the writer sessions' idle-in-transaction timeout on a loaded machine.
BULK_BATCH = 256
# Charges queued for the usage rollups in a lane (by this process) before a batch of the lane folds
# them (migration 0026): the fold's upserts, ~20 rows per customer, day and model, are shared by
# every charge folded together. A lane is folded sooner once one customer has FOLD_CUSTOMER_AFTER
# charges queued there: the usage report reads a customer's queued charges raw (~50 µs each, 4,000
# took ~200 ms on the loaded machine, against ~13 ms from the rollups), so that bounds its cost.
# The same limits count the period deltas (migration 0029: a row per batch, customer and period),
# folded with the charges: the invoice close, the upcoming invoice and graduated tiers read a
# customer's unfolded deltas besides its rollups and counters.
FOLD_AFTER = 4096
FOLD_CUSTOMER_AFTER = 256



def utc_now() -> datetime:
    return datetime.now(UTC)


def customer_lock(customer_id: str) -> int:
    return lock_key("customer:" + customer_id)


# The one lock left that spans lanes, taken only by what opens accounts (customer creation,
# top-ups and grants: each opens a lot account). `accounts` is not partitioned by lane, and two
# batches of different lanes that both insert accounts collide on its index pages under
# SERIALIZABLE (10 of 10 overlapping pairs of 16 top-ups failed); they queue here instead.
# Reserves, settles, releases, usage and expiry never take it.
ACCOUNTS_LOCK = lock_key("wallets:accounts")
OPENS_ACCOUNTS = (TopUp, Grant, ClosePeriod, RerateCharges)  # a close or re-rate may open a lot (money back)
_RATES_USAGE = (Settle, RecordUsage)  # rated by the book in force at their usage time (Engine._pinned_books)


def invoice_lock(issuer: str) -> int:
    """One close at a time per invoice issuer: numbers are gapless, each the last one plus one."""
    return lock_key(f"invoices:issuer:{issuer}")


def credit_note_lock(issuer: str) -> int:
    """One re-rate at a time per credit note issuer: numbers are gapless, as invoices' are."""
    return lock_key(f"credit_notes:issuer:{issuer}")


def lane_lock(lane: int) -> int:
    """The writer lock of a lane: one wallet batch of the lane at a time, in the whole cluster.
    Two batches of one lane read and insert on the same index pages of its partitions, and under
    SERIALIZABLE would fail with 40001; queued, they do not."""
    return lock_key(f"wallets:lane:{lane}")


class Engine:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utc_now, max_batch: int = 64,
                 flushers: int = 1, grouping: bool = True, in_flight: int | None = None) -> None:
        self.db = db
        self.clock = clock
        self.books = BookCache()
        self.overrides = OverrideCache()
        self.max_batch = max_batch if grouping else 1
        self._max_flushers = flushers  # per lane
        # Batches of this process in flight at once, over all lanes. More than the machine's
        # cores only makes each lane's batches smaller (64 clients over 16 lanes: ~4 commands a
        # batch) and every batch pays its fixed costs (locks, load, ledger_post, commit). A lane's
        # flusher takes its batch only once it holds a slot, so what queued meanwhile rides along.
        self._in_flight = in_flight or max(2, os.cpu_count() or 2)
        # The slots of each event loop that runs batches (see _slots)
        self._slots_of: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self._queues: dict[int | None, deque[tuple[Command, asyncio.Future[Any]]]] = {}
        self._flushers: set[asyncio.Task[None]] = set()
        self._running: dict[int | None, int] = {}  # lane -> flushers running
        self._lanes: int | None = None
        self._owners: OrderedDict[str, str] = OrderedDict()  # reservation id -> customer id
        self._queued_at: dict[asyncio.Future[Any], float] = {}  # a submitted command's future -> when
        # (lane, 0) -> charges, (lane, 1) -> period deltas this process queued there since it last
        # folded it, per customer
        self._unfolded: dict[tuple[int, int], Counter[str]] = {}

    @property
    def _slots(self) -> asyncio.Semaphore:
        """The in-flight slots of the running event loop, made on it: a Semaphore is bound to the
        loop that first waits on it, and one engine may run on another loop later (an app's second
        lifespan: a test client runs each on an event loop of its own)."""
        loop = asyncio.get_running_loop()
        slots = self._slots_of.get(loop)
        if slots is None:
            # A closed loop's slots go here: a Semaphore that was waited on holds its loop, so a
            # WeakKeyDictionary kept every such loop as long as the engine.
            for closed in [other for other in self._slots_of if other.is_closed()]:
                del self._slots_of[closed]
            slots = self._slots_of[loop] = asyncio.Semaphore(self._in_flight)
        return slots

    async def submit(self, command: Command) -> Any:
        """Run `command` once committed; returns its result or Replayed, raises its domain error."""
        if command.needs_book:  # parse its price book here, not in the batch under the writer lock
            await self.books.warm(self.db, command.customer_id)
        # Until the lane count is known (the first batch reads it), commands queue apart.
        lane = lane_of(command.customer_id, self._lanes) if self._lanes is not None else None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued_at[future] = time.perf_counter()
        self._queues.setdefault(lane, deque()).append((command, future))
        if self._running.get(lane, 0) < self._max_flushers:
            # counted here and uncounted in _flush: a done-callback would be too late
            self._running[lane] = self._running.get(lane, 0) + 1
            task = asyncio.create_task(self._flush(lane))
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)
        try:
            return await future
        finally:
            self._queued_at.pop(future, None)  # a command skipped as done (cancelled) leaves none behind

    async def submit_many(self, commands: Sequence[Command]) -> list[Any]:
        """Run a bulk call's commands (POST /v1/usage-events: up to 1,000): one outcome each, in
        order (a result, Replayed or its domain error, returned, not raised). The commands are
        grouped by lane, and each lane's run as one transaction (rounds, when two share a conflict
        key), the lanes at once as far as the in-flight slots allow: a 1,000-event call over 16
        lanes is ~16 transactions of ~60 entries, not ~250 of ~4 through the flushers' queues (at
        most BULK_BATCH commands a transaction).
        A batch that fails for another reason than a domain refusal is bisected as in a flush."""
        await self.books.warm_many(self.db, {c.customer_id for c in commands if c.needs_book})
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in commands]
        rounds: dict[int, list[list[tuple[Command, asyncio.Future[Any]]]]] = {}
        keys: dict[int, list[set[tuple[str, ...]]]] = {}
        lanes = self._lanes if self._lanes is not None else await self.lane_count()
        for command, future in zip(commands, futures, strict=True):
            lane = lane_of(command.customer_id, lanes)
            lane_rounds, lane_keys = rounds.setdefault(lane, []), keys.setdefault(lane, [])
            conflicts = command.conflict_keys()
            k = next((i for i, taken in enumerate(lane_keys)
                      if not conflicts & taken and len(lane_rounds[i]) < BULK_BATCH), len(lane_keys))
            if k == len(lane_keys):
                lane_rounds.append([])
                lane_keys.append(set())
            lane_rounds[k].append((command, future))
            lane_keys[k] |= conflicts

        async def lane(batches: list[list[tuple[Command, asyncio.Future[Any]]]]) -> None:
            for batch in batches:  # in order: a round's commands see the ones before them
                async with self._slots:
                    await self._run(batch)

        await asyncio.gather(*(lane(batches) for batches in rounds.values()))
        return [f.exception() or f.result() for f in futures]

    async def lane_of(self, customer_id: str) -> int:
        """The lane of a customer (the lane count is read from the database once)."""
        return lane_of(customer_id, self._lanes if self._lanes is not None else await self.lane_count())

    async def lane_count(self) -> int:
        if self._lanes is None:
            self._lanes = await self.db.read(lane_count)
        return self._lanes

    async def owner_of(self, reservation_id: str) -> str:
        """The customer of a reservation (it never changes, so it is cached)."""
        if reservation_id in self._owners:
            return self._owners[reservation_id]
        customer = await self.db.read(lambda conn: _scalar(
            conn, "SELECT customer_id FROM reservations WHERE id = %s", (reservation_id,)))
        if customer is None:
            raise NotFoundError(f"no reservation {reservation_id}", reservation_id=reservation_id)
        self._remember(reservation_id, customer)
        return customer

    def _remember(self, reservation_id: str, customer_id: str) -> None:
        self._owners[reservation_id] = customer_id
        if len(self._owners) > 100_000:
            self._owners.popitem(last=False)

    async def _flush(self, lane: int | None) -> None:
        """Run the lane's queue, batch after batch. When more commands are queued once a batch has
        committed, its answers are delivered while the next batch's write statement runs in
        PostgreSQL, not before that batch starts: answering wakes every caller of the batch, whose
        responses the event loop renders (and whose next requests it parses) before it gets back to
        the next batch's lock and load replies, on the one loop. Committed is committed; only the
        answers wait, for the next batch's lock, load and rules."""
        queue = self._queues[lane]
        pending: list[tuple[asyncio.Future[Any], Any]] = []

        def deliver() -> None:
            for future, outcome in pending:
                _answer(future, outcome)
            pending.clear()

        token = _DELIVER.set(deliver)
        try:
            while queue:
                if self._slots.locked():
                    deliver()  # not behind another lane's batch
                async with self._slots:
                    items = self._take(queue)
                    if items:
                        await self._run(items, pending)
                if not queue:
                    deliver()
        finally:
            deliver()
            _DELIVER.reset(token)
            self._running[lane] -= 1  # no await since the queue was last seen empty: nothing is stranded

    def _take(self, queue: deque[tuple[Command, asyncio.Future[Any]]]) -> list[tuple[Command, asyncio.Future[Any]]]:
        taken: list[tuple[Command, asyncio.Future[Any]]] = []
        skipped: list[tuple[Command, asyncio.Future[Any]]] = []
        keys: set[tuple[str, ...]] = set()
        customers: set[str] = set()
        closed: set[str] = set()  # customers with an exclusive command in this batch
        scanned = 0
        while queue and len(taken) < self.max_batch and scanned < 4 * self.max_batch:
            command, future = item = queue.popleft()
            scanned += 1
            if future.done():
                continue
            try:
                conflicts = command.conflict_keys()
            except Exception as exc:  # a bug in this command alone: it fails, the flusher serves the rest
                log.exception("a %s of customer %s could not be batched (its conflict keys): failed alone",
                              type(command).__name__, command.customer_id)
                future.set_exception(exc)
                continue
            cid = command.customer_id
            if conflicts & keys or cid in closed or (command.exclusive and cid in customers and not command.leads):
                skipped.append(item)
                continue
            if command.leads and cid in customers:  # before the customer's commands taken: as if alone
                taken.insert(next(i for i, (c, _) in enumerate(taken) if c.customer_id == cid), item)
            else:
                taken.append(item)
            keys |= conflicts
            customers.add(cid)
            if command.exclusive and not command.leads:
                closed.add(cid)
        queue.extendleft(reversed(skipped))
        return taken

    async def _run(self, items: list[tuple[Command, asyncio.Future[Any]]],
                   pending: list[tuple[asyncio.Future[Any], Any]] | None = None) -> None:
        """Run `items` as a batch and answer them; with `pending`, the answers go there instead,
        for the flusher to deliver (the previous batch's answers are delivered in any case)."""
        taken = time.perf_counter()
        for _, future in items:
            if (queued := self._queued_at.pop(future, None)) is not None:
                _PHASES["queued"].observe(taken - queued)
        try:
            lanes = self._lanes if self._lanes is not None else await self.lane_count()
        except Exception as exc:  # the database unavailable, most likely: every command fails with it
            await self._isolate(items, exc)
            return
        by_lane: dict[int, list[tuple[Command, asyncio.Future[Any]]]] = {}
        for item in items:  # one lane, but for the first batch, queued before the lane count was known
            by_lane.setdefault(lane_of(item[0].customer_id, lanes), []).append(item)
        for group in (by_lane[lane] for lane in sorted(by_lane)):
            # each lane its own transaction, bisected alone: what another lane committed is not run again
            await self._run_lane(group, pending)

    async def _run_lane(self, items: list[tuple[Command, asyncio.Future[Any]]],
                        pending: list[tuple[asyncio.Future[Any], Any]] | None) -> None:
        try:
            outcomes = await self.execute([command for command, _ in items])
        except Exception as exc:
            if (deliver := _DELIVER.get()) is not None:
                deliver()
            await self._isolate(items, exc)
            return
        if (deliver := _DELIVER.get()) is not None:
            deliver()  # a batch that wrote nothing, or ran outside this flusher's lane
        for (command, future), outcome in zip(items, outcomes, strict=True):
            if isinstance(command, Reserve) and hasattr(outcome, "reservation"):
                self._remember(outcome.reservation.id, command.customer_id)
            if pending is not None:
                pending.append((future, outcome))
            else:
                _answer(future, outcome)

    async def _isolate(self, items: list[tuple[Command, asyncio.Future[Any]]], exc: Exception) -> None:
        """After a batch failed with `exc` (not a domain refusal, which is an outcome): bisect, so
        that the commands that would commit do, and the bad one gets its own error."""
        if len(items) == 1 or is_unavailable(exc) or isinstance(exc, RetriesExhaustedError):
            # The database is down or too contended: smaller batches would only add load.
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        half = len(items) // 2
        await self._run(items[:half])
        await self._run(items[half:])

    async def execute(self, commands: Sequence[Command], *, now: datetime | None = None,
                      each: bool = False, written: datetime | None = None) -> list[Any]:
        """Run `commands` in one transaction per lane they fall in (one, from the flushers); one
        outcome each (a result, Replayed or an error). `now` overrides the clock (jobs catching
        up, tests); `written`, the time no entry is dated past (an early close's: Batch.written).
        With `each` (jobs: one broken item must not hold back the others), a lane's
        batch that fails for a reason other than a domain refusal is halved as the flushers do:
        the others commit and the bad command's outcome is its error (the database unavailable,
        or too contended, fails the lane).

        A lane that fails raises only while no lane has committed (nothing was written); once
        one has, each command of a failed lane has the lane's error as its outcome and the other
        lanes still run: a raise after a commit told the caller that work failed which had partly
        landed."""
        by_lane: dict[int, list[int]] = {}
        lanes = self._lanes if self._lanes is not None else await self.lane_count()
        for i, command in enumerate(commands):
            by_lane.setdefault(lane_of(command.customer_id, lanes), []).append(i)
        outcomes: list[Any] = [None] * len(commands)
        run = self._each_in_lane if each else self._execute_lane
        committed = False
        for lane, indexes in sorted(by_lane.items()):
            try:
                done = await run(lane, [commands[i] for i in indexes], now, written)
            except Exception as exc:
                if not committed:
                    raise
                done = [exc] * len(indexes)
            else:
                committed = True
            for i, outcome in zip(indexes, done, strict=True):
                outcomes[i] = outcome
        return outcomes

    async def _each_in_lane(self, lane: int, commands: Sequence[Command], now: datetime | None,
                            written: datetime | None = None) -> list[Any]:
        """The lane's commands, halved on a failure; raises (the database unavailable, or too
        contended) only while none of them has landed: once one of the first half has, the
        second half's commands have the error as their outcome."""
        try:
            return await self._execute_lane(lane, commands, now, written)
        except Exception as exc:
            if is_unavailable(exc) or isinstance(exc, RetriesExhaustedError):
                raise
            if len(commands) == 1:
                return [exc]
            half = len(commands) // 2
            first = await self._each_in_lane(lane, commands[:half], now, written)
            try:
                second = await self._each_in_lane(lane, commands[half:], now, written)
            except Exception as lost:
                if all(isinstance(outcome, BaseException) for outcome in first):
                    raise  # the first half wrote nothing either (refused, or failed, each)
                second = [lost] * (len(commands) - half)
            return [*first, *second]

    async def _execute_lane(self, lane: int, commands: Sequence[Command], now: datetime | None,
                            written: datetime | None = None) -> list[Any]:
        BATCH_COMMANDS.observe(len(commands))
        customers = sorted({c.customer_id for c in commands})

        marks = [time.perf_counter()]
        needs = _needs(commands)
        attempt: dict[str, Any] = {}  # each attempt's time (its load's and its rules') and load parameters

        def lead() -> Lead:
            attempt["now"] = now or self.clock()
            sent, attempt["params"] = store.load_lead(lane, customers, now=attempt["now"],
                                                      new_entries=len(commands), **needs)
            return sent

        async def work(conn: AsyncConnection, row: Any) -> list[Any]:
            token = store.LANE.set(lane)
            marks[1:] = [time.perf_counter()]
            if marks[1] - marks[0] > LOCK_WAITED_S and (deliver := _DELIVER.get()) is not None:
                deliver()  # the lane was another process's (or the load slow): the previous answers waited enough
            timed = _MARKS.set(marks)
            try:
                at = now or self.clock()  # the rules' time, taken once the locks are held, as the load's was
                # a lead read long before (the lock waited), or none (the role may not create its
                # function: Database.leads_refused): load now, at this time
                fresh = row is not None and at - attempt["now"] < LEAD_FRESH
                loaded = store.loaded_from(row, attempt["params"]) if fresh else None
                return await self._work(conn, commands, customers, at, loaded, written)
            finally:
                _MARKS.reset(timed)
                store.LANE.reset(token)

        opens = [ACCOUNTS_LOCK] if any(isinstance(c, OPENS_ACCOUNTS) for c in commands) else []
        opens += sorted({invoice_lock(c.issuer) for c in commands if isinstance(c, ClosePeriod)})
        opens += sorted({credit_note_lock(c.issuer) for c in commands if isinstance(c, RerateCharges)})
        outcomes = await self.db.run(work, locks=[lane_lock(lane), *opens, *(customer_lock(c) for c in customers)],
                                     lead=lead)
        marks.append(time.perf_counter())
        for name, start, end in zip(("lock", "load", "rules", "post", "write", "commit"), marks, marks[1:],
                                    strict=False):
            _PHASES[name].observe(end - start)
        return outcomes

    async def _work(self, conn: AsyncConnection, commands: Sequence[Command], customers: list[str],
                    now: datetime, loaded: store.Loaded | None = None, written: datetime | None = None) -> list[Any]:
        """The batch's work in its transaction; `loaded`: its load, when it came with the lock +
        BEGIN round trip (see _execute_lane); `written`: no entry is dated past it (Batch.written)."""
        marks = _MARKS.get()
        if marks is None:
            marks = []  # called outside _execute_lane: nothing times it
        if loaded is None:
            loaded = await store.load(conn, customers, now=now, new_entries=len(commands), **_needs(commands))
        rating = {c.customer_id for c in commands if c.needs_book}
        books: dict[str, Any] = {}
        found: dict[tuple[str | None, int], Any] = {}  # a batch's customers mostly share a book: got once
        for cid, w in loaded.wallets.items():
            if cid in rating:
                key = (w.customer.price_book, w.customer.book_versions)
                if key not in found:
                    found[key] = await self.books.get(conn, *key)
                books[cid] = found[key]
                if w.customer.override_versions:  # parsed once per count of versions (they are only added)
                    w.overrides = await self.overrides.get(conn, cid, w.customer.override_versions)
        batch = Batch(now, loaded, books, written=written)
        batch.pinned = await self._pinned_books(conn, loaded, commands)
        periods = set()
        for command in commands:
            book = batch.book_of(command)
            at = command.rating_time(loaded.wallets) if command.needs_book else None
            w = loaded.wallets.get(command.customer_id)
            if at is not None and w is not None and book is not None and (
                    self.books.tiered(book) or (w.overrides is not None and w.overrides.has_allowances)):
                periods.add((command.customer_id, billing_period(at, w.customer)))
        batch.period_usage = await store.load_period_usage(conn, periods)
        await _load_billing(conn, batch, commands, now)
        await _load_rerates(conn, batch, commands, now, self.books)
        await _load_refunds(conn, batch, commands, now)
        batch.topups.update(await store.load_topups(
            conn, [(c.customer_id, c.reference) for c in commands if isinstance(c, TopUp) and c.reference]))
        # a payout reference names one payout of either kind: each reads the other's under it too
        payouts = [(c.customer_id, c.reference) for c in commands if isinstance(c, PAYOUTS) and c.reference]
        batch.refunds.update(await store.load_refunds(conn, payouts))
        batch.reversals.update(await store.load_reversals(conn, payouts))
        marks.append(time.perf_counter())
        outcomes = [self._apply(batch, command) for command in commands]
        marks.append(time.perf_counter())
        await batch.flush(conn)
        marks.append(time.perf_counter())
        batch.keep_answers(commands, outcomes)
        if (deliver := _DELIVER.get()) is not None:
            deliver()  # the previous batch's answers: their callers run while this write does
        await batch.write(conn)
        await count_rerates(conn, commands, now)  # the money budgets that counted the charges a re-rate corrected
        await self._fold_if_due(conn, batch.rows)
        marks.append(time.perf_counter())
        return outcomes

    async def _pinned_books(self, conn: AsyncConnection, loaded: store.Loaded,
                            commands: Sequence[Command]) -> dict[int, Any]:
        """The books of usage from before its customer moved to another book (PATCH
        /v1/customers/{id}), by id() of its command: a settle of a reservation made before the move,
        a usage event that happened before it. Each is rated by the book in force at its usage time,
        as by the version in force then. Mostly none."""
        pinned: dict[int, Any] = {}
        for command in commands:
            w = loaded.wallets.get(command.customer_id)
            if type(command) not in _RATES_USAGE or w is None or not w.customer.book_changes:
                continue
            at = command.rating_time(loaded.wallets)
            book_id = w.customer.book_at(at) if at is not None else w.customer.price_book
            if book_id != w.customer.price_book:
                versions = await _scalar(conn, "SELECT count(*) FROM price_book_versions WHERE book_id = %s",
                                         (book_id,))
                pinned[id(command)] = await self.books.get(conn, book_id, int(versions or 0))
        return pinned

    async def _fold_if_due(self, conn: AsyncConnection, rows: dict[str, list[dict[str, Any]]]) -> None:
        """Fold the lane's queues (charges into the usage rollups, period deltas into the period
        rollups and usage counters) in this batch, once this process queued FOLD_AFTER charges or
        deltas there, or FOLD_CUSTOMER_AFTER charges or deltas of one customer (counts kept in
        memory: a retried batch may count twice, which only folds sooner). `rows`: the batch's."""
        lane = store.LANE.get()
        if lane is None:
            return
        due = False
        for i, table in enumerate(("charges", "period_deltas")):
            customers = [row["customer_id"] for row in rows.get(table, ())]
            if customers:
                queued = self._unfolded.setdefault((lane, i), Counter())
                queued.update(customers)
                due = due or queued.total() >= FOLD_AFTER or max(queued[c] for c in customers) >= FOLD_CUSTOMER_AFTER
        if due:
            await store.fold_usage(conn)
            self._unfolded.pop((lane, 0), None)
            self._unfolded.pop((lane, 1), None)

    @staticmethod
    def _apply(batch: Batch, command: Command) -> Any:
        try:
            return batch.apply(command)
        except DOMAIN_ERRORS as exc:
            return exc


def _needs(commands: Sequence[Command]) -> dict[str, list[Any]]:
    """What the batch's load reads for its commands (store.load's keyword arguments)."""
    needs: dict[str, list[Any]] = {}
    for command in commands:
        for name, values in command.needs().items():
            needs.setdefault(name, []).extend(values)
        if command.idem is not None:
            needs.setdefault("idempotency", []).append((command.idem.scope, command.idem.key))
    return needs


def _answer(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():  # its caller went away
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


async def _load_billing(conn: AsyncConnection, batch: Batch, commands: Sequence[Command], now: datetime) -> None:
    """What closes and payments decide on: the rollups of the customers' open periods, the
    issuers' last invoice numbers (under their locks), the invoices being paid (by a payment, or
    by a prepaid customer's top-up that pays what is owed: its open invoices)."""
    closes = [c for c in commands if isinstance(c, ClosePeriod)]
    if closes:
        since = [(c.customer_id, billing_period(w.customer.open_period_start, w.customer)) for c in closes
                 if (w := batch.loaded.wallets.get(c.customer_id)) is not None and w.customer.open_period_start]
        batch.rollups = await store.load_rollups(conn, since)
        batch.invoice_seqs = await store.last_seqs(conn, "invoices",
                                                   {(c.issuer, now.astimezone(UTC).year) for c in closes})
        # what prepaid customers' top-ups paid off the receivable before it was invoiced
        batch.unapplied = await store.load_unapplied(conn, [
            c.customer_id for c in closes
            if (w := batch.loaded.wallets.get(c.customer_id)) is not None and w.customer.billing == "prepaid"])
        # what credit notes billed in the closing periods gave back off the receivable, and the
        # customers' open invoices, which what a period does not owe of it pays
        batch.corrections = await store.load_corrections(conn, since)
        # what paid the charges each volume-tiered rule rated: a true-up's money back goes there
        for cid, label in since:
            if (w := batch.loaded.wallets.get(cid)) is not None:
                found = batch.rule_funding[(cid, label)] = await store.rule_funding(
                    conn, cid, period_named(label, w.customer.cycle))
                await store.load_payers(conn, w, {a for paid in found.values() for _, a, *_ in paid if a}, now)
                # the charges re-rates moved: the true-up counts them as re-rated
                batch.rerated[(cid, label)] = await store.rerated_charges(
                    conn, cid, period_named(label, w.customer.cycle))
        batch.invoices.update(await store.load_open_invoices(conn, [c.customer_id for c in closes]))
    paid = [c.invoice_id for c in commands if isinstance(c, PayInvoice)]
    if paid:
        batch.invoices.update(await store.load_invoices(conn, paid))
    # a prepaid top-up pays what is owed first, and with it the customer's open invoices
    owing = [c.customer_id for c in commands if isinstance(c, TopUp)
             and (w := batch.loaded.wallets.get(c.customer_id)) is not None and w.customer.billing == "prepaid"
             and w.receivable - (w.credit_held or 0) > 0]
    if owing:
        batch.invoices.update(await store.load_open_invoices(conn, owing))


async def _load_refunds(conn: AsyncConnection, batch: Batch, commands: Sequence[Command], now: datetime) -> None:
    """What cash refunds decide on: the customers' net cash in, and which entry opened each of
    their live lots (a correction's credit is what may be paid back)."""
    refunds = sorted({c.customer_id for c in commands if isinstance(c, RefundCredit)})
    if not refunds:
        return
    batch.cash.update(await store.load_cash(conn, refunds))
    for cid in refunds:
        if (w := batch.loaded.wallets.get(cid)) is not None:
            await store.load_openers(conn, w, now)


async def _load_rerates(conn: AsyncConnection, batch: Batch, commands: Sequence[Command], now: datetime,
                        books: BookCache) -> None:
    """What re-rates decide on: the corrected version, the charges of each customer's period (with
    their earlier re-rates), the lots that paid them, the period's invoice if finalized, and the
    credit note issuers' last numbers (under their locks)."""
    rerates = [c for c in commands if isinstance(c, RerateCharges)]
    if not rerates:
        return
    for cmd in rerates:
        w = batch.loaded.wallets.get(cmd.customer_id)
        for source in cmd.sources or (cmd.period,):  # the periods of the charges' usage times
            if w is None or (cmd.customer_id, source) in batch.rerates:
                continue
            data = await rerate_input(conn, books, replace(cmd, period=source), w.customer.cycle)
            if data is None:
                continue
            paid = {a for ch in data.charges for a, _ in ch.funding or ()}
            await store.load_payers(conn, w, paid, now, closed_with=True)
            batch.rerates[(cmd.customer_id, source)] = data
    batch.credit_note_seqs = await store.last_seqs(
        conn, "credit_notes", {(c.issuer, now.astimezone(UTC).year) for c in rerates})


async def rerate_input(conn: AsyncConnection, books: BookCache, cmd: RerateCharges, cycle: Cycle
                       ) -> RerateInput | None:
    """What re-rating `cmd`'s customer and period decides on (None: no such book version): the
    corrected version, the period's charges of the book (with their earlier re-rates; those after
    the range count for the free allowances they took), and the finalized invoices of the periods
    they were billed in. A preview reads the same."""
    versions = await _scalar(conn, "SELECT count(*) FROM price_book_versions WHERE book_id = %s", (cmd.book_id,))
    book = await books.get(conn, cmd.book_id, int(versions or 0))
    version = next((v for v in book.versions if v.version == cmd.version), None) if book else None
    if version is None:
        return None
    period = period_of(cmd.range_from, cycle)
    while period.label < cmd.period:
        period = period_of(period.end, cycle)
    overrides = await load_history(conn, cmd.customer_id)
    # the charges after the range matter for the free allowances they took and a closed period's
    # volume true-up (wallets.core.rerate_true_ups)
    rows = await store.load_rerate_charges(conn, cmd.customer_id, cmd.book_id, period.start, period.end)
    billed_in = sorted({r["billed_in"] for r in rows if r["billed_in"] is not None})
    invoices = await store.finalized_invoices(conn, cmd.customer_id, billed_in)
    noted = await store.noted_so_far(conn, [invoice_id for invoice_id, _ in invoices.values()])
    true_ups = await store.true_ups_posted(conn, cmd.customer_id, period.label) if period.label in invoices else {}
    left = await store.paid_left(conn, cmd.customer_id, period) if rows else {}
    kept = await store.true_up_given(conn, cmd.customer_id, period.label) if period.label in invoices else {}
    payers = await store.true_up_payers(conn, cmd.customer_id, period.label) if period.label in invoices else {}
    total, given = (await store.true_up_shares(conn, cmd.customer_id, period.label) if period.label in invoices
                    else (0, {}))
    # the period's usage of the other books: what it took of the free allowances, which the
    # charges re-rated do not take again, and the allowances' share of a closed period's true-up
    others = await store.load_rerate_charges(conn, cmd.customer_id, cmd.book_id, period.start, period.end, True)
    return RerateInput(version, tuple(_on_record(r) for r in rows), invoices, overrides, period.label, book, true_ups,
                       left, total, given, true_up_given=kept, true_up_payers=payers,
                       others=tuple(_on_record(r) for r in others), period_end=period.end, noted=noted)


def _on_record(r: dict[str, Any]) -> ChargeOnRecord:
    adjustments = r["adjustments"] or []
    current = ({(m, t): int(a) for m, t, a in adjustments[-1][1]} if adjustments else None)
    at = r["occurred_at"]
    return ChargeOnRecord(int(r["id"]), at, r["model"], r["dimensions"] or {}, r["usage"] or {},
                          tuple(r["lines"]), int(r["charged"]), int(r["from_receivable"]),
                          None if r["funding"] is None else tuple((a, int(x)) for a, x in r["funding"]),
                          current, frozenset((v, int(o)) for v, _, o, *_ in adjustments), int(r["seq"]),
                          _moves(moves for _, _, _, moves, _ in adjustments), r["billed_in"],
                          adjustments[-1][0] if adjustments else None, adjustments[-1][4] if adjustments else None)


def _moves(each: Any) -> dict[str, int]:
    """What a charge's re-rates moved of each free allowance, summed."""
    out: dict[str, int] = {}
    for moves in each:
        for allowance_id, units in (moves or {}).items():
            out[allowance_id] = out.get(allowance_id, 0) + int(units)
    return out


async def _scalar(conn: AsyncConnection, sql: str, params: tuple[Any, ...]) -> Any:
    return (await conn.exec_driver_sql(sql, params)).scalar()

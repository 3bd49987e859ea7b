"""Posting journal entries: in a caller's unit of work, or coalesced across concurrent callers.

`post_entries` sends a whole batch to the `ledger_post` SQL function in one round trip.
`GroupPoster` lets many concurrent tasks post standalone entries: entries that arrive while a
batch is in flight ride together in the next transaction (group commit), so one hot account does
not turn into a storm of serialization retries. Each caller still gets its own entry's outcome.
"""
from __future__ import annotations

import asyncio
import weakref
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import msgspec
from prometheus_client import Histogram
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.db import Database, lock_key
from ledger.errors import (
    AccountMismatchError,
    BelowBoundError,
    IdempotencyConflictError,
    UnknownAccountError,
)
from ledger.lanes import entry_lane, lane_count
from ledger.model import JournalEntry, iso_time

BATCH_SIZE = Histogram(
    "tokentill_ledger_batch_entries", "Entries per ledger_post round trip",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


class Outcome(StrEnum):
    POSTED = "posted"
    REPLAYED = "replayed"
    CONFLICT = "conflict"
    BELOW_BOUND = "below_bound"


@dataclass(frozen=True, slots=True)
class PostResult:
    key: str
    outcome: Outcome
    entry_id: int | None
    detail: str | None = None

    def raise_for_outcome(self) -> PostResult:
        """Return self when the entry is in the ledger (posted or replayed), else raise its error."""
        if self.outcome in (Outcome.POSTED, Outcome.REPLAYED):
            return self
        error = {Outcome.CONFLICT: IdempotencyConflictError, Outcome.BELOW_BOUND: BelowBoundError}[
            self.outcome]
        raise error(f"entry {self.key}: {self.outcome.value} {self.detail or ''}".strip(),
                    key=self.key, account=self.detail)


@dataclass(frozen=True, slots=True)
class AccountInfo:
    id: int
    asset: str
    customer_id: str | None
    stripes: int


# code -> AccountInfo, per engine. What is cached never changes (a database trigger forbids it).
_directories: weakref.WeakKeyDictionary[object, dict[str, AccountInfo]] = weakref.WeakKeyDictionary()


async def resolve_accounts(conn: AsyncConnection, codes: set[str]) -> dict[str, AccountInfo]:
    directory = _directories.setdefault(conn.sync_engine, {})
    missing = [c for c in codes if c not in directory]
    if missing:
        rows = await conn.exec_driver_sql(
            "SELECT code, id, asset, customer_id, stripes FROM accounts WHERE code = ANY(%s)", (missing,))
        for code, id_, asset, customer, stripes in rows:
            directory[code] = AccountInfo(id_, asset, customer, stripes)
    unknown = sorted(c for c in codes if c not in directory)
    if unknown:
        raise UnknownAccountError(f"no account {unknown[0]}", account=unknown[0])
    return directory


def stripe_of(entry: JournalEntry, info: AccountInfo, lanes: int) -> int:
    """The stripe of a striped account an entry posts to: the entry's lane (so a lane's batches
    share no row with another lane's), or for an entry without a customer one picked by its key."""
    if info.stripes == 1:
        return 0
    if entry.customer_id is not None:
        return entry_lane(entry.customer_id, lanes) % info.stripes
    return zlib.crc32(entry.key.encode()) % info.stripes


def _wire(entry: JournalEntry, accounts: dict[str, AccountInfo], lanes: int, entry_id: int | None = None
          ) -> tuple[dict, set[tuple[int, int, int]]]:
    """An entry as `ledger_post` reads it, and the balance rows it moves (lane, account id,
    stripe). Stripes and lanes as `stripe_of` and SQL `ledger_balance_lane` give them, the entry's lane
    found once: an account of its own customer, or of none, lives in that lane or lane 0."""
    legs, deltas = [], defaultdict(int)
    customer = entry.customer_id
    own_lane = entry_lane(customer, lanes)
    for p in entry.postings:
        info = accounts[p.account]
        if info.asset != p.asset:
            raise AccountMismatchError(f"account {p.account} holds {info.asset}, not {p.asset}",
                                       account=p.account)
        if info.customer_id is not None and info.customer_id != customer:
            raise AccountMismatchError(f"account {p.account} belongs to another customer",
                                       account=p.account)
        if info.stripes == 1:
            stripe, lane = 0, own_lane if info.customer_id is not None else 0
        else:
            stripe = stripe_of(entry, info, lanes)
            lane = stripe % lanes
        legs.append([info.id, stripe, p.amount])
        deltas[(lane, info.id, stripe)] += p.amount
    wire = {"k": entry.key, "h": entry.request_hash().hex(), "kind": entry.kind,
            "c": customer, "at": iso_time(entry.occurred_at), "m": entry.metadata,
            "p": legs, "d": [[a, s, d, lane] for (lane, a, s), d in deltas.items() if d]}
    if entry_id is not None:
        wire["i"] = entry_id
    return wire, set(deltas)


_POST = ("SELECT idx, status, entry_id, detail FROM ledger_post(%s::jsonb, %s::smallint[], %s::bigint[], "
         "%s::smallint[])")


def array_text(values: Iterable[int]) -> str:
    """Integers as a PostgreSQL array literal, `{1,2,3}`, for a parameter cast to an integer array:
    psycopg dumps a list element by element in Python (~2.7 us an ingested event for the three
    lock lists of `ledger_post`, against ~0.3 as text)."""
    return "{" + ",".join(map(str, values)) + "}"


@dataclass(frozen=True, slots=True)
class PreparedPost:
    """One `ledger_post` call, ready to run: alone, or inside a wallet batch's write statement."""
    entries: list[JournalEntry]
    accounts: dict[str, AccountInfo]
    sql: str
    params: tuple

    def results(self, rows: list) -> list[PostResult]:
        """One outcome per entry, in order, from the rows `ledger_post` returned."""
        BATCH_SIZE.observe(len(self.entries))
        by_index = {row[0]: row for row in rows}
        results = []
        for i, entry in enumerate(self.entries, start=1):
            _, status, entry_id, detail = by_index[i]
            if detail is not None and detail.isdigit():  # below_bound names the account by id
                detail = next((p.account for p in entry.postings if self.accounts[p.account].id == int(detail)),
                              detail)
            results.append(PostResult(entry.key, Outcome(status), entry_id, detail))
        return results


async def prepare_post(conn: AsyncConnection, entries: list[JournalEntry],
                       ids: list[int] | None = None) -> PreparedPost:
    """The `ledger_post` call for `entries` (with the entry ids `ids` when given: ids the caller
    allocated from `journal_entries_id_seq`, one per entry). Raises for what is wrong with the
    request itself (unknown account, mismatched asset or customer)."""
    accounts = await resolve_accounts(conn, {p.account for e in entries for p in e.postings})
    lanes = await lane_count(conn)
    wires, touched = [], set()
    for i, entry in enumerate(entries):
        wire, keys = _wire(entry, accounts, lanes, ids[i] if ids is not None else None)
        wires.append(wire)
        touched |= keys
    order = sorted(touched)
    return PreparedPost(entries, accounts, _POST, (
        msgspec.json.encode(wires).decode(), array_text(lane for lane, _, _ in order),
        array_text(a for _, a, _ in order), array_text(s for _, _, s in order)))


async def post_entries(conn: AsyncConnection, entries: list[JournalEntry]) -> list[PostResult]:
    """Post `entries` in the caller's transaction; one outcome per entry, in order.

    Raises for what is wrong with the request itself (unknown account, mismatched asset or
    customer); returns refusals that depend on the ledger's state (bounds, key conflicts).
    """
    if not entries:
        return []
    prepared = await prepare_post(conn, entries)
    rows = (await conn.exec_driver_sql(prepared.sql, prepared.params)).all()
    return prepared.results(rows)


async def account_locks(db: Database, entries: list[JournalEntry]) -> list[int]:
    """Advisory lock keys for the single-row accounts of `entries` (striped ones need none)."""
    codes = {p.account for e in entries for p in e.postings}
    known = _directories.get(db.engine.sync_engine, {})
    if not codes <= known.keys():
        known = await db.read(lambda conn: resolve_accounts(conn, codes))
    return [lock_key(code) for code in codes if known[code].stripes == 1]


async def post_now(db: Database, entry: JournalEntry) -> PostResult:
    """Post one standalone entry in a transaction of its own; raises if it is refused."""
    locks = await account_locks(db, [entry])
    return await db.run(lambda conn: post(conn, entry), locks=locks)


async def post(conn: AsyncConnection, entry: JournalEntry) -> PostResult:
    """Post one entry in the caller's transaction; raises the entry's error if it is refused."""
    return (await post_entries(conn, [entry]))[0].raise_for_outcome()


class GroupPoster:
    """Coalesces concurrent standalone posts into shared SERIALIZABLE transactions."""

    def __init__(self, db: Database, *, max_batch: int = 256, flushers: int = 2) -> None:
        self._db = db
        self._max_batch = max_batch
        self._max_flushers = flushers  # >1 overlaps one batch's commit with the next batch
        self._queue: list[tuple[JournalEntry, asyncio.Future[PostResult]]] = []
        self._active = 0  # flushers running; changed only synchronously (no await in between)
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until they finish

    async def post(self, entry: JournalEntry) -> PostResult:
        """Post `entry` once it is committed; returns its outcome (refusals included, not raised)."""
        future: asyncio.Future[PostResult] = asyncio.get_running_loop().create_future()
        self._queue.append((entry, future))
        if self._active < self._max_flushers:
            self._active += 1
            task = asyncio.create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _flush(self) -> None:
        try:
            await self._drain()
        finally:
            # Leaving the loop and giving up the slot happen with no await in between, so an
            # entry queued after the queue was seen empty always finds a free slot.
            self._active -= 1

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch:]
            entries = [entry for entry, _ in batch]
            if len(batch) > 1:
                try:
                    locks = await account_locks(self._db, entries)
                    results = await self._db.run(lambda conn, e=entries: post_entries(conn, e), locks=locks)
                except Exception:
                    for one in batch:
                        await self._post_alone(*one)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
            else:
                await self._post_alone(*batch[0])

    async def _post_alone(self, entry: JournalEntry, future: asyncio.Future[PostResult]) -> None:
        try:
            locks = await account_locks(self._db, [entry])
            result = await self._db.run(lambda conn: post_entries(conn, [entry]), locks=locks)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result[0])



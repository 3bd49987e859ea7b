"""Price books in the database: versions are stored as posted and never change. A process keeps
the versions it has parsed, by (book id, version), and the books assembled from them.

Parsing a big version takes milliseconds to a few tenths of a second, so it is kept out of the
wallet batches, which run under the cluster-wide writer lock: the engine warms the cache before
it queues a command (`BookCache.warm`: one lookup shared by the commands arriving meanwhile, and
the parse in a worker thread), and under the lock `get` finds the book ready. Only a version that
appeared between the two is parsed there, in a worker thread too (that lane waits, the others go
on). A book that a batch or a lookup found current less than `FRESH_SECONDS` ago is not looked up
again, so a busy engine pays no lookup per command.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.db import Database
from ledger.model import request_hash
from pricing.books import PriceBook, PriceVersion
from pricing.parse import parse_version
from wallets.errors import CurrencyMismatchError, NotFoundError, PriceVersionConflictError

log = logging.getLogger("tokentill.books")
# a version's optional fields, stored beside its rules (column `plausibility`, which they outgrew)
VERSION_FIELDS = ("max_charge_per_request", "context_window", "format", "unpriced")
FRESH_SECONDS = 1.0  # a version posted since is parsed under the writer lock (10,000 rules: ~0.1 s)
MAX_CUSTOMERS = 100_000  # customers whose book this process remembers


@dataclass(frozen=True, slots=True)
class StoredVersion:
    book_id: str
    currency: str
    version: str
    effective_from: datetime
    rules: list[Any]
    created_at: datetime
    plausibility: dict[str, Any] = field(default_factory=dict)  # the optional fields, as posted
    rule_count: int | None = None  # how many rules it has, where `rules` was not read (None)

    @property
    def rules_in_it(self) -> int:
        return len(self.rules) if self.rules is not None else self.rule_count or 0


@dataclass(frozen=True, slots=True)
class AddedVersion:
    version: StoredVersion
    created: bool  # False: the very same version was posted before


# `known`: versions this process has parsed; their rules are not sent again.
_VERSIONS = text("""
SELECT b.id, b.currency, v.version, v.effective_from, v.created_at, v.plausibility,
       CASE WHEN v.version = ANY(CAST(:known AS text[])) THEN NULL ELSE v.rules END AS rules
  FROM price_books b JOIN price_book_versions v ON v.book_id = b.id
 WHERE b.id = :id ORDER BY v.effective_from
""")


def _stored(r: Any) -> StoredVersion:
    return StoredVersion(r.id, r.currency, r.version, r.effective_from, r.rules, r.created_at, r.plausibility or {})


async def stored_versions(conn: AsyncConnection, book_id: str, known: Sequence[str] = ()) -> list[StoredVersion]:
    """A book's versions, oldest first; those named in `known` come without their rules (None)."""
    rows = await conn.execute(_VERSIONS, {"id": book_id, "known": list(known)})
    return [_stored(r) for r in rows]


def plausibility_of(body: dict[str, Any]) -> dict[str, Any]:
    """The optional fields of a posted version (plausibility bounds, format 2's), as posted."""
    return {name: body[name] for name in VERSION_FIELDS if body.get(name) is not None}


def parse_stored(v: StoredVersion) -> PriceVersion:
    """A stored version, parsed as it was accepted (the limits on new versions do not apply)."""
    return parse_version({"id": v.book_id, "currency": v.currency, "effective_from": v.effective_from.isoformat(),
                          "rules": v.rules, **v.plausibility}, version=v.version, limits=False)


_INSERT = text("""
INSERT INTO price_book_versions (book_id, version, effective_from, rules, body_hash, plausibility)
VALUES (:b, :v, :at, CAST(:rules AS jsonb), :h, CAST(:bounds AS jsonb)) RETURNING created_at
""")
_DRAFT = text("INSERT INTO price_book_version_drafts (rules) VALUES (CAST(:rules AS jsonb)) RETURNING id")
_FROM_DRAFT = text("""
WITH d AS (DELETE FROM price_book_version_drafts WHERE id = :draft RETURNING rules)
INSERT INTO price_book_versions (book_id, version, effective_from, rules, body_hash, plausibility)
SELECT :b, :v, :at, d.rules, :h, CAST(:bounds AS jsonb) FROM d RETURNING created_at
""")


_AHEAD = text("""SELECT max(occurred_at) FROM charges
                  WHERE price_book = :b AND occurred_at > created_at AND occurred_at >= :at""")


async def add_version(conn: AsyncConnection, body: dict[str, Any], version: PriceVersion | None = None, *,
                      now: Callable[[], Awaitable[datetime]] | None = None) -> AddedVersion:
    """Store a version (creating the book on first use). `version` is the body parsed and
    validated before the transaction; without it the body is parsed here. Posting the same
    version again is a no-op; another version at the same time conflicts with what is stored
    (409). A version in another currency than its book, or a new book in another currency than
    a customer that names it already, is `currency_mismatch` (422).

    With `now`, the version takes effect "now", whatever the body's `effective_from`: at the time
    `now` answers, awaited once the book is checked and just before the version is written (it
    fences the lanes: `wallets.fence.lanes_fenced`), or just after the latest usage charged under
    the book ahead of that time (an event timed ahead of the clock), and its label, where the body
    names none, is that time to the second. Its rules are stored as a draft before it (parsed into jsonb and
    compressed there) and copied behind it, so that the fence holds the lanes for milliseconds."""
    version = version if version is not None else parse_version(body)
    bounds = plausibility_of(body)
    rules = json.dumps(body.get("rules"))
    await _checked_book(conn, version)
    at, label, draft = version.effective_from, version.version, None
    if now is not None:  # the rules stored before the fence, copied behind it (migration 0047)
        draft = (await conn.execute(_DRAFT, {"rules": rules})).scalar_one()
        at = (await now()).astimezone(UTC)
        # a usage event timed ahead of the clock and charged already was rated without this version:
        # it takes effect after the latest (migration 0050's index holds them)
        ahead = (await conn.execute(_AHEAD, {"b": version.book_id, "at": at})).scalar()
        if ahead is not None:
            at = ahead.astimezone(UTC) + timedelta(microseconds=1)
        label = str(body.get("version") or at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    digest = request_hash({"rules": body.get("rules"), "effective_from": at.isoformat(),
                           "version": label, **({"plausibility": bounds} if bounds else {})})
    same = (await conn.execute(text(
        """SELECT version, effective_from, body_hash FROM price_book_versions
            WHERE book_id = :b AND (effective_from = :at OR version = :v) ORDER BY effective_from"""),
        {"b": version.book_id, "at": at, "v": label})).first()
    if same is not None:
        if bytes(same.body_hash) == digest:
            return AddedVersion(await get_version(conn, version.book_id, same.version), created=False)
        if same.effective_from != at:  # another time, under the same label
            raise PriceVersionConflictError(
                f"version {same.version} of {version.book_id} is the one in force from "
                f"{same.effective_from.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}; versions never change: "
                "give this one another version (by default its effective_from)", field="version")
        raise PriceVersionConflictError(f"version {same.version} of {version.book_id} already takes effect then; "
                                        "versions never change, post another effective_from", field="effective_from")
    values = {"b": version.book_id, "v": label, "at": at, "h": digest, "bounds": json.dumps(bounds)}
    if draft is None:
        row = (await conn.execute(_INSERT, {**values, "rules": rules})).one()
    else:
        row = (await conn.execute(_FROM_DRAFT, {**values, "draft": draft})).one()
    return AddedVersion(StoredVersion(version.book_id, version.currency, label, at, list(body.get("rules") or []),
                                      row.created_at, bounds), created=True)


async def _checked_book(conn: AsyncConnection, version: PriceVersion) -> None:
    """The version's book, created on first use, in the version's currency (else currency_mismatch)."""
    created = (await conn.execute(text(
        "INSERT INTO price_books (id, currency) VALUES (:id, :cur) ON CONFLICT DO NOTHING RETURNING id"),
        {"id": version.book_id, "cur": version.currency})).first()
    if created is not None:  # customers may name a book before it exists: it must be in their currency
        other = (await conn.execute(text(
            "SELECT id, currency FROM customers WHERE price_book = :id AND currency <> :cur ORDER BY id LIMIT 1"),
            {"id": version.book_id, "cur": version.currency})).first()
        if other is not None:
            raise CurrencyMismatchError(f"customer {other.id} prices its usage with book {version.book_id} in "
                                        f"{other.currency}, not {version.currency}", field="currency",
                                        customer_id=other.id)
    currency = (await conn.execute(text("SELECT currency FROM price_books WHERE id = :id"),
                                   {"id": version.book_id})).scalar_one()
    if currency != version.currency:
        raise CurrencyMismatchError(f"book {version.book_id} is priced in {currency}, not {version.currency}",
                                    field="currency")


@dataclass(frozen=True, slots=True)
class BookPage:
    """A book as its readers see it: the version in force at a time, with its rules, and a page
    of its versions, oldest first (with their rules only when asked)."""

    book_id: str
    currency: str
    current: StoredVersion | None  # None: no version in force yet at that time
    versions: list[StoredVersion]
    more: datetime | None  # the last listed version's effective_from, when more follow


_COLUMNS = "v.version, v.effective_from, v.created_at, v.plausibility, jsonb_array_length(v.rules) AS rule_count"
_IN_FORCE = text(f"""
SELECT {_COLUMNS}, v.rules FROM price_book_versions v
 WHERE v.book_id = :id AND v.effective_from <= :at ORDER BY v.effective_from DESC LIMIT 1
""")
_PAGE = text(f"""
SELECT {_COLUMNS}, NULL AS rules FROM price_book_versions v
 WHERE v.book_id = :id AND v.effective_from > :after ORDER BY v.effective_from LIMIT :limit
""")
_RULES_OF = text("SELECT version, rules FROM price_book_versions WHERE book_id = :id AND version = ANY(:versions)")
RULES_PER_PAGE = 10_000  # a page of versions with their rules stops before it would pass this many
_ONE = text(f"SELECT {_COLUMNS}, v.rules FROM price_book_versions v WHERE v.book_id = :id AND v.version = :v")


def _row(book_id: str, currency: str, r: Any) -> StoredVersion:
    return StoredVersion(book_id, currency, r.version, r.effective_from, r.rules, r.created_at, r.plausibility or {},
                         r.rule_count)


async def _currency(conn: AsyncConnection, book_id: str) -> str:
    currency = (await conn.execute(text("SELECT currency FROM price_books WHERE id = :id"), {"id": book_id})).scalar()
    if currency is None:
        raise NotFoundError(f"no price book {book_id}", book=book_id)
    return str(currency)


async def book_page(conn: AsyncConnection, book_id: str, *, at: datetime, after: datetime | None, limit: int,
                    rules: bool) -> BookPage:
    """The version in force at `at` and up to `limit` versions taking effect after `after`
    (None: from the first), without their rules unless `rules`: then the page ends before the
    version that would bring it past RULES_PER_PAGE rules (it holds one version at least).
    404 for an unknown book."""
    currency = await _currency(conn, book_id)
    row = (await conn.execute(_IN_FORCE, {"id": book_id, "at": at})).first()
    rows = list(await conn.execute(_PAGE, {"id": book_id, "after": after or datetime.min.replace(tzinfo=UTC),
                                           "limit": limit + 1}))
    listed = [_row(book_id, currency, r) for r in rows[:limit]]
    if rules:
        listed = await _with_rules(conn, book_id, _within(listed, RULES_PER_PAGE))
    return BookPage(book_id, currency, None if row is None else _row(book_id, currency, row), listed,
                    listed[-1].effective_from if len(listed) < len(rows) else None)


def _within(versions: list[StoredVersion], most: int) -> list[StoredVersion]:
    """The first versions whose rules add up to `most` at most (the first one whatever its size)."""
    taken, total = [], 0
    for v in versions:
        total += v.rules_in_it
        if taken and total > most:
            break
        taken.append(v)
    return taken


async def _with_rules(conn: AsyncConnection, book_id: str, versions: list[StoredVersion]) -> list[StoredVersion]:
    found = dict((await conn.execute(_RULES_OF, {"id": book_id, "versions": [v.version for v in versions]})).all())
    return [replace(v, rules=found[v.version]) for v in versions]


async def get_version(conn: AsyncConnection, book_id: str, version: str) -> StoredVersion:
    """One version of a book, with its rules; 404 for an unknown book or version."""
    currency = await _currency(conn, book_id)
    row = (await conn.execute(_ONE, {"id": book_id, "v": version})).first()
    if row is None:
        raise NotFoundError(f"price book {book_id} has no version {version}", book=book_id, version=version)
    return _row(book_id, currency, row)


_BOOKS_OF = text("""
SELECT c.id AS customer_id, c.price_book AS book_id, count(v.version) AS versions
  FROM customers c JOIN price_book_versions v ON v.book_id = c.price_book
 WHERE c.id = ANY(CAST(:ids AS text[])) GROUP BY c.id, c.price_book
""")


@dataclass(slots=True)
class _Assembled:
    versions: int  # how many versions the book had when assembled (versions are only ever added)
    book: PriceBook
    tiered: bool  # has graduated or volume tiers


class BookCache:
    """Parsed versions by (book id, version) and the books assembled from them, both bounded."""

    def __init__(self, *, max_versions: int = 256, max_books: int = 128) -> None:
        self._versions: OrderedDict[tuple[str, str], PriceVersion] = OrderedDict()
        self._books: OrderedDict[str, _Assembled] = OrderedDict()
        self._max_versions, self._max_books = max_versions, max_books
        self._waiting: list[tuple[str, asyncio.Future[None]]] = []
        self._warmer: asyncio.Task[None] | None = None
        self._parsing: dict[str, asyncio.Task[None]] = {}  # book id -> its parse in flight
        # (book id, versions) -> their parse in flight for batches that found them new (`get`)
        self._parsing_new: dict[tuple[str, tuple[str, ...]], asyncio.Future[dict[str, PriceVersion]]] = {}
        self._book_of: OrderedDict[str, str] = OrderedDict()  # customer id -> its book id
        self._current_at: dict[str, float] = {}  # book id -> when it was last found current

    def tiered(self, book: PriceBook) -> bool:
        cached = self._books.get(book.id)
        if cached is not None and cached.book is book:
            return cached.tiered
        return _has_tiers(book)

    async def get(self, conn: AsyncConnection, book_id: str | None, versions: int) -> PriceBook | None:
        """The book with `versions` versions; a cache hit when the engine warmed it."""
        if not book_id or versions == 0:
            return None
        cached = self._books.get(book_id)
        if cached is not None and cached.versions == versions:
            self._books.move_to_end(book_id)
            self._current_at[book_id] = time.monotonic()
            return cached.book
        known = self._known(book_id)
        stored = await stored_versions(conn, book_id, list(known))
        return self._assemble(book_id, stored, known, await self._parsed_off_loop(book_id, stored)) if stored else None

    async def _parsed_off_loop(self, book_id: str, stored: list[StoredVersion]) -> dict[str, PriceVersion]:
        """The versions that came with their rules, parsed in a worker thread: a batch that finds
        a new version under its lane's lock waits for the parse, the process's other lanes and
        requests do not (on the event loop, a 3,000-rule version stopped them all for 0.15 s).
        Batches that find the same new versions at once share one parse."""
        if all(v.rules is None for v in stored):
            return {}
        key = (book_id, tuple(v.version for v in stored if v.rules is not None))
        task = self._parsing_new.get(key)
        if task is None:
            task = self._parsing_new[key] = asyncio.ensure_future(asyncio.to_thread(_parse_all, stored))
            task.add_done_callback(lambda t: self._parsing_new.pop(key, None) if self._parsing_new.get(key) is t
                                   else None)
        return await asyncio.shield(task)

    async def warm(self, db: Database, customer_id: str) -> None:
        """Parse the customer's book as stored now, if this process has not: called before a
        command is queued, outside any lock. Commands arriving while a lookup runs share the next
        one; a book is parsed once (in a worker thread) however many wait for it, and a slow parse
        delays only the commands that need that book. Best effort: on any error `get` does it."""
        book_id = self._book_of.get(customer_id)
        if book_id is not None and time.monotonic() - self._current_at.get(book_id, -math.inf) < FRESH_SECONDS:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((customer_id, waiter))
        if self._warmer is None or self._warmer.done():
            self._warmer = asyncio.create_task(self._look_up_waiting(db))
        await waiter

    async def warm_many(self, db: Database, customer_ids: Iterable[str]) -> None:
        """`warm` for each of `customer_ids` at once (a bulk call's): the customers whose book
        was found current in the last FRESH_SECONDS are skipped here, without a task each, and
        the others share one lookup."""
        now, loop = time.monotonic(), asyncio.get_running_loop()
        waiters: list[asyncio.Future[None]] = []
        for customer_id in customer_ids:
            book_id = self._book_of.get(customer_id)
            if book_id is not None and now - self._current_at.get(book_id, -math.inf) < FRESH_SECONDS:
                continue
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiting.append((customer_id, waiter))
            waiters.append(waiter)
        if not waiters:
            return
        if self._warmer is None or self._warmer.done():
            self._warmer = asyncio.create_task(self._look_up_waiting(db))
        for waiter in waiters:
            await waiter

    async def _look_up_waiting(self, db: Database) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            books: dict[str, str] = {}  # customer id -> a book it needs parsed
            try:
                ids = sorted({cid for cid, _ in batch})
                rows = await db.lookup(partial(_all, statement=_BOOKS_OF, params={"ids": ids}))
                for row in rows:
                    self._remember(row.customer_id, row.book_id)
                    cached = self._books.get(row.book_id)
                    if cached is None or cached.versions != row.versions:
                        books[row.customer_id] = row.book_id
                    else:
                        self._current_at[row.book_id] = time.monotonic()
            except Exception:  # the command itself meets (and reports) the fault, if it lasts
                log.warning("looking up price books to warm failed", exc_info=True)
            for cid, waiter in batch:
                if cid in books:
                    self._parse_later(db, books[cid]).add_done_callback(lambda _, w=waiter: _wake(w))
                else:
                    _wake(waiter)

    def forget(self, customer_id: str) -> None:
        """The customer moved to another book: the next `warm` looks its book up again."""
        self._book_of.pop(customer_id, None)

    def _remember(self, customer_id: str, book_id: str) -> None:
        self._book_of[customer_id] = book_id
        self._book_of.move_to_end(customer_id)
        if len(self._book_of) > MAX_CUSTOMERS:
            self._book_of.popitem(last=False)

    def _parse_later(self, db: Database, book_id: str) -> asyncio.Task[None]:
        task = self._parsing.get(book_id)
        if task is None or task.done():
            task = self._parsing[book_id] = asyncio.create_task(self._parse(db, book_id))
            task.add_done_callback(lambda t: self._parsing.pop(book_id, None) if self._parsing.get(book_id) is t
                                   else None)
        return task

    async def _parse(self, db: Database, book_id: str) -> None:
        known = self._known(book_id)
        try:
            stored = await db.read(lambda conn: stored_versions(conn, book_id, list(known)))
            if stored:
                self._assemble(book_id, stored, known, await asyncio.to_thread(_parse_all, stored))
        except Exception:
            log.warning("parsing price book %s ahead of its commands failed", book_id, exc_info=True)

    def _known(self, book_id: str) -> dict[str, PriceVersion]:
        return {v: parsed for (b, v), parsed in self._versions.items() if b == book_id}

    def _assemble(self, book_id: str, stored: list[StoredVersion], known: dict[str, PriceVersion],
                  parsed: dict[str, PriceVersion]) -> PriceBook:
        versions = tuple(known[v.version] if v.rules is None else parsed[v.version] for v in stored)
        book = PriceBook(book_id, stored[0].currency, versions)
        for v in versions:
            self._versions[(book_id, v.version)] = v
            self._versions.move_to_end((book_id, v.version))
        while len(self._versions) > self._max_versions:
            self._versions.popitem(last=False)
        self._books[book_id] = _Assembled(len(versions), book, _has_tiers(book))
        self._books.move_to_end(book_id)
        self._current_at[book_id] = time.monotonic()
        while len(self._books) > self._max_books:
            self._current_at.pop(self._books.popitem(last=False)[0], None)
        return book


def _parse_all(stored: list[StoredVersion]) -> dict[str, PriceVersion]:
    """The versions that came with their rules, parsed (in a worker thread when warming)."""
    return {v.version: parse_stored(v) for v in stored if v.rules is not None}


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _has_tiers(book: PriceBook) -> bool:
    return any(rule.tiers for version in book.versions for rule in version.rules)


async def _all(conn: AsyncConnection, statement: Any, params: dict[str, Any]) -> list[Any]:
    return list(await conn.execute(statement, params))

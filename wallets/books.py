"""Price books in the database: versions are stored as posted and never change; a process
keeps each book it has parsed, and reloads it when the number of versions changes."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.model import request_hash
from pricing.books import PriceBook, PriceVersion
from pricing.parse import parse_version
from wallets.errors import ConflictError, NotFoundError


@dataclass(frozen=True, slots=True)
class StoredVersion:
    book_id: str
    currency: str
    version: str
    effective_from: datetime
    rules: list[Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AddedVersion:
    version: StoredVersion
    created: bool  # False: the very same version was posted before


_VERSIONS = text("""
SELECT b.id, b.currency, v.version, v.effective_from, v.rules, v.created_at
  FROM price_books b JOIN price_book_versions v ON v.book_id = b.id
 WHERE b.id = :id ORDER BY v.effective_from
""")


async def stored_versions(conn: AsyncConnection, book_id: str) -> list[StoredVersion]:
    rows = await conn.execute(_VERSIONS, {"id": book_id})
    return [StoredVersion(r.id, r.currency, r.version, r.effective_from, r.rules, r.created_at) for r in rows]


def _book(versions: list[StoredVersion]) -> PriceBook:
    first = versions[0]
    parsed = [parse_version({"id": v.book_id, "currency": v.currency,
                             "effective_from": v.effective_from.isoformat(), "rules": v.rules},
                            version=v.version) for v in versions]
    return PriceBook(first.book_id, first.currency, tuple(parsed))


async def add_version(conn: AsyncConnection, body: dict[str, Any]) -> AddedVersion:
    """Validate and store a version (creating the book on first use). Posting the same version
    again is a no-op; another version at the same time (or in another currency) conflicts with
    what is stored (409); one that makes the book invalid is a validation error listing fields."""
    version: PriceVersion = parse_version(body)
    digest = request_hash({"rules": body.get("rules"), "effective_from": version.effective_from.isoformat(),
                           "version": version.version})
    await conn.execute(text("INSERT INTO price_books (id, currency) VALUES (:id, :cur) ON CONFLICT DO NOTHING"),
                       {"id": version.book_id, "cur": version.currency})
    existing = await stored_versions(conn, version.book_id)
    currency = (await conn.execute(text("SELECT currency FROM price_books WHERE id = :id"),
                                   {"id": version.book_id})).scalar_one()
    if currency != version.currency:
        raise ConflictError(f"book {version.book_id} is priced in {currency}", field="currency")
    for v in existing:
        if v.effective_from == version.effective_from or v.version == version.version:
            same = (await conn.execute(text(
                "SELECT body_hash FROM price_book_versions WHERE book_id = :b AND version = :v"),
                {"b": v.book_id, "v": v.version})).scalar_one()
            if bytes(same) == digest:
                return AddedVersion(v, created=False)
            raise ConflictError(f"version {v.version} of {v.book_id} already takes effect then; versions "
                                "never change, post another effective_from", field="effective_from")
    if existing:
        _book(existing).with_version(version)  # the book as a whole must stay valid
    row = (await conn.execute(text(
        """INSERT INTO price_book_versions (book_id, version, effective_from, rules, body_hash)
           VALUES (:b, :v, :at, CAST(:rules AS jsonb), :h) RETURNING created_at"""),
        {"b": version.book_id, "v": version.version, "at": version.effective_from,
         "rules": json.dumps(body.get("rules")), "h": digest})).one()
    return AddedVersion(StoredVersion(version.book_id, version.currency, version.version,
                                      version.effective_from, list(body.get("rules") or []),
                                      row.created_at), created=True)


async def get_versions(conn: AsyncConnection, book_id: str) -> list[StoredVersion]:
    versions = await stored_versions(conn, book_id)
    if not versions:
        raise NotFoundError(f"no price book {book_id}", book=book_id)
    return versions


class BookCache:
    """Parsed books per process; a book is reloaded when its version count changes."""

    def __init__(self) -> None:
        self._books: dict[str, tuple[int, PriceBook]] = {}
        self._tiered: dict[int, bool] = {}  # id(book) -> has graduated or volume tiers

    def tiered(self, book: PriceBook) -> bool:
        if id(book) not in self._tiered:
            self._tiered[id(book)] = any(rule.tiers for version in book.versions for rule in version.rules)
        return self._tiered[id(book)]

    async def get(self, conn: AsyncConnection, book_id: str | None, versions: int) -> PriceBook | None:
        if not book_id or versions == 0:
            return None
        cached = self._books.get(book_id)
        if cached is not None and cached[0] == versions:
            return cached[1]
        stored = await stored_versions(conn, book_id)
        if not stored:
            return None
        book = _book(stored)
        if cached is not None:
            self._tiered.pop(id(cached[1]), None)
        self._books[book_id] = (len(stored), book)
        return book

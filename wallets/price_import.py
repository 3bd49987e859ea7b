"""Import price books from genai-prices' bundled snapshot: create a book, or version it.

A book that does not exist yet gets every dated version of the snapshot. For a book that does,
the import compares, at ``effective_from`` and at each later date the snapshot changes prices,
the prices it would have in force (the rules of the models imported replaced, the others kept)
with those stored; only a difference posts a version, effective from that time. A stored version
later than ``effective_from`` is compared too: one with other prices is a conflict (it would
bring the old prices back from its time on). Rules are
compared without their ``source_date``, so importing unchanged prices again creates nothing.
Versions are never changed: a stored version at the very time of a needed one is reported as
a conflict, and nothing of that book is written; so is a new book (in US dollars) that customers
in another currency already name, a book stored in another currency, and kept rules that make an
invalid version with the imported ones. The other books go ahead.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.db import Database, lock_key
from pricing.books import PriceVersion
from pricing.errors import PriceBookValidationError, wire_time
from pricing.genai import ProviderBook
from pricing.parse import parse_version
from wallets.books import StoredVersion, add_version, stored_versions
from wallets.engine import utc_now
from wallets.errors import ConflictError, CurrencyMismatchError
from wallets.fence import lanes_fenced

CURRENCY = "USD"  # genai-prices prices in US dollars


@dataclass(slots=True)
class ImportReport:
    book_id: str
    models: int
    rules: int  # rules of the version in force at effective_from
    created: list[str] = field(default_factory=list)  # effective_from of each version posted (UTC, Z: wire_time)
    conflicts: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"book": self.book_id, "models": self.models, "rules": self.rules, "created": self.created,
                "unchanged": not self.created and not self.conflicts, "conflicts": self.conflicts,
                "not_expressed": self.skipped}


def _key(rules: list[dict[str, Any]]) -> str:
    return json.dumps(sorted(({k: v for k, v in r.items() if k != "source_date"} for r in rules),
                             key=lambda r: r["id"]), sort_keys=True)


def _in_force(versions: list[tuple[datetime, list[dict[str, Any]]]], at: datetime) -> list[dict[str, Any]] | None:
    found = [rules for start, rules in versions if start <= at]
    return found[-1] if found else None


def _body(book_id: str, at: datetime, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": book_id, "currency": CURRENCY, "effective_from": at.isoformat(), "rules": rules,
            "format": 2, "unpriced": "zero"}


def plan_versions(plan: ProviderBook, stored: list[StoredVersion], effective_from: datetime
                  ) -> tuple[list[tuple[datetime, list[dict[str, Any]]]], list[str]]:
    """The versions to post (pure), and the conflicts that forbid posting any."""
    if not stored:
        return list(plan.versions), []
    # the imported models' rules are replaced; a model it cannot express now keeps what it had
    names = {r["model"] for _, rules in plan.versions for r in rules}
    current = [(v.effective_from, list(v.rules)) for v in stored]
    wanted: list[tuple[datetime, list[dict[str, Any]]]] = []
    conflicts: list[str] = []
    # each later time prices may change at: the snapshot's dates, and the stored versions' (one
    # that would bring back prices this import changes is a conflict, not a silent revert)
    times = sorted({effective_from, *[at for at, _ in (*plan.versions, *current) if at > effective_from]})
    for at in times:
        before = _in_force(current, at) or []
        rules = [r for r in before if r.get("model") not in names] + (_in_force(plan.versions, at) or [])
        if _key(rules) == _key(before):
            continue
        if any(start == at for start, _ in current):
            conflicts.append(f"a stored version takes effect at {wire_time(at)} with other prices")
            continue
        wanted.append((at, rules))
        current = sorted([*current, (at, rules)], key=lambda v: v[0])
    return ([] if conflicts else wanted), conflicts


async def import_book(db: Database, plan: ProviderBook, effective_from: datetime | None,
                      clock: Callable[[], datetime] = utc_now) -> ImportReport:
    """Create or version one provider's book, in one transaction under the book's lock. The
    versions are parsed first, in a worker thread (a big provider's take seconds: on the event
    loop every other request would wait, in the transaction its idle timeout could end it); the
    transaction plans again, and parses again only what a version posted meanwhile changed.

    `effective_from` None: "now". The plan compares prices at the time taken under the book's
    lock, and the version taking effect then is written last, behind a fence of every lane
    (`wallets.fence`): it takes effect at the time taken there, so that no call is charged
    between that time and its commit without it."""
    stored = await db.read(lambda conn: stored_versions(conn, plan.book_id))
    first = effective_from or clock()
    planned = plan_versions(plan, stored, first)

    async def work(conn: AsyncConnection) -> ImportReport:
        at = effective_from or clock()
        stored = await stored_versions(conn, plan.book_id)
        versions, conflicts = plan_versions(plan, stored, at)
        same = (_shape(versions, at), conflicts) == (_shape(planned[0], first), planned[1])
        ready = parsed if same else _parsed(plan.book_id, versions)
        report = ImportReport(plan.book_id, plan.models, len(_in_force(plan.versions, at) or []),
                              conflicts=conflicts, skipped=dict(plan.skipped))
        start = first if same else at
        for body, version in ready:  # the versions taking effect later: they have their time
            if version.effective_from != start:
                report.created.append(wire_time((await add_version(conn, body, version)).version.effective_from))
        for body, version in ready:  # the one in force from `at` on, written last (behind the fence, for now)
            if version.effective_from == start:
                others = [v.effective_from for v in stored] + [t for t, _ in plan.versions] + [t for t, _ in versions]
                now = None if effective_from is not None else partial(_fenced, conn, clock, at, others)
                added = await add_version(conn, body, version, now=now)
                report.created.insert(0, wire_time(added.version.effective_from))
        return report

    try:
        parsed = await asyncio.to_thread(_parsed, plan.book_id, planned[0])
        return await db.run(work, locks=[lock_key("price-book:" + plan.book_id)])
    except (CurrencyMismatchError, ConflictError, PriceBookValidationError) as exc:
        # customers name the book in another currency, the book is in another, or the rules kept
        # and the imported ones make no valid version: nothing of this book written, the others go on
        why = str(exc) if not isinstance(exc, PriceBookValidationError) else f"the rules kept and imported: {exc}"
        return ImportReport(plan.book_id, plan.models, len(_in_force(plan.versions, first) or []),
                            conflicts=[why], skipped=dict(plan.skipped))


def _shape(versions: list[tuple[datetime, list[dict[str, Any]]]], at: datetime
           ) -> list[tuple[datetime | None, list[dict[str, Any]]]]:
    """A plan with the time it was planned at left out (None): what "now" posts, whenever now is."""
    return [(None if start == at else start, rules) for start, rules in versions]


async def _fenced(conn: AsyncConnection, clock: Callable[[], datetime], planned_at: datetime,
                  others: list[datetime]) -> datetime:
    """The lanes fenced, and the time the version planned at `planned_at` takes effect: now. A
    version stored or imported that takes effect between the two (they are milliseconds apart)
    would make the plan wrong: that is a conflict, reported (import again)."""
    now = await lanes_fenced(conn, clock)
    if any(planned_at < t <= now for t in others):
        raise ConflictError(f"a version takes effect between {wire_time(planned_at)} and {wire_time(now)}, "
                            "while the import's was written: import again")
    return now


def _parsed(book_id: str, versions: list[tuple[datetime, list[dict[str, Any]]]]
            ) -> list[tuple[dict[str, Any], PriceVersion]]:
    """Each version to post, as posted and parsed."""
    bodies = [_body(book_id, at, rules) for at, rules in versions]
    return [(body, parse_version(body)) for body in bodies]


async def import_genai_prices(db: Database, provider: str | None, model: str | None,
                              effective_from: datetime | None, taken_on: str,
                              clock: Callable[[], datetime] = utc_now) -> list[ImportReport]:
    """Import the snapshot's books (one provider's, or one model's), each in its own transaction;
    `effective_from` None: "now" (see import_book). Building the books from the snapshot takes
    seconds: it runs in a worker thread."""
    from pricing.genai import provider_books

    plans = await asyncio.to_thread(provider_books, provider, model, taken_on=taken_on)
    if model is not None:
        plans = [p for p in plans if p.models]
    return [await import_book(db, plan, effective_from, clock) for plan in plans]

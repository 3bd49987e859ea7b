"""An import without `effective_from` versions a book "now": at the time taken behind the fence
of every lane (wallets.fence), the last thing before the version is written."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ledger.db import Database
from pricing.genai import ProviderBook
from wallets import books, price_import

T = datetime(2031, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)


def rules(m: str, k: str | None = None) -> list[dict[str, str]]:
    """Model m's input at `m`, and model k's at `k` (when given)."""
    found = [{"id": "m:input", "model": "m", "token_type": "input", "price": m}]
    return found + ([{"id": "k:input", "model": "k", "token_type": "input", "price": k}] if k else [])


def prices(version: books.StoredVersion) -> dict[str, str]:
    return {r["model"]: r["price"] for r in version.rules}


def clock_of(*times: datetime) -> Callable[[], datetime]:
    """A clock answering `times` one after the other, then the last for ever."""
    left = list(times)
    return lambda: left.pop(0) if len(left) > 1 else left[0]


async def _book(db: Database) -> str:
    """A book pricing models m and k at 1 from 2000 on, and stored for T + 5 s: m at 3 (what the
    imports below bring), k at 2 (a model they keep)."""
    book = f"fence-{uuid.uuid4().hex[:8]}"
    plan = ProviderBook("p", book, None, versions=[(datetime(2000, 1, 1, tzinfo=UTC), rules("1", "1"))], models=2)
    first = await price_import.import_book(db, plan, None, clock_of(T))
    assert first.created == ["2000-01-01T00:00:00Z"], first
    later = {"id": book, "currency": "USD", "effective_from": (T + timedelta(seconds=5)).isoformat(),
             "rules": rules("3", "2"), "format": 2, "unpriced": "zero"}
    await db.run(lambda conn: books.add_version(conn, later))
    return book


IMPORT_M = [(datetime(2000, 1, 1, tzinfo=UTC), rules("3"))]  # model m at 3


async def test_now_is_the_time_taken_behind_the_fence_not_when_the_import_began(db: Database):
    book = await _book(db)
    plan = ProviderBook("p", book, None, versions=IMPORT_M, models=1)
    # the import began at T, planned at T + 1 s under the book's lock, fenced the lanes at T + 2 s
    report = await price_import.import_book(db, plan, None, clock_of(T, T + timedelta(seconds=1),
                                                                        T + timedelta(seconds=2)))
    assert (report.created, report.conflicts) == (["2031-03-04T05:06:09.890000Z"], []), report  # T + 2 s
    stored = await db.read(lambda conn: books.stored_versions(conn, book))
    assert [(v.version, v.effective_from, prices(v)) for v in stored[1:]] == [
        ("2031-03-04T05:06:09Z", T + timedelta(seconds=2), {"m": "3", "k": "1"}),
        (stored[2].version, T + timedelta(seconds=5), {"m": "3", "k": "2"})]


async def test_a_version_taking_effect_between_the_plan_and_the_fence_is_a_conflict(db: Database):
    """Planned at T, the version stored for T + 5 s was not in force yet (the import plans none
    there: it brings m's price of that version). Fenced at T + 10 s, the version planned for T
    would take effect after it with k's price of before it, 1, and bring that back: refused,
    nothing written."""
    book = await _book(db)
    plan = ProviderBook("p", book, None, versions=IMPORT_M, models=1)
    before = await db.read(lambda conn: books.stored_versions(conn, book))
    report = await price_import.import_book(db, plan, None, clock_of(T, T, T + timedelta(seconds=10)))
    assert report.created == [] and len(report.conflicts) == 1 and "import again" in report.conflicts[0], report
    assert await db.read(lambda conn: books.stored_versions(conn, book)) == before

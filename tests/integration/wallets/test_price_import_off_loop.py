"""An import of genai-prices' books parses what it posts off the event loop: a big provider's
versions take seconds to parse (openrouter's ten of about 3,000 rules: 1.5 s), and on the loop
every other request of the process waited for them.

Each test imports a provider's book no other test of the suite imports (groq, x-ai): the
database is shared by every test file a worker runs, and a book another file stored there
(genai-mistral by test_book_version_races, genai-cohere by test_price_import) made the first
import here conflict with it, creating nothing."""
from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from ledger.db import Database
from wallets import price_import

pytest.importorskip("genai_prices")


async def test_an_import_parses_its_versions_while_the_event_loop_runs(db: Database, monkeypatch):
    ticks: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:  # stands for the other requests: it runs only while the loop is free
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.005)

    progressed: list[bool] = []
    parse = price_import.parse_version

    def parse_watching_the_loop(data: dict[str, Any], **kw: Any) -> Any:
        """The first parse waits (up to 2 s) for three ticks of the loop."""
        if not progressed:
            before, deadline = len(ticks), time.monotonic() + 2
            while len(ticks) < before + 3 and time.monotonic() < deadline:
                time.sleep(0.005)
            progressed.append(len(ticks) >= before + 3)
        return parse(data, **kw)

    monkeypatch.setattr(price_import, "parse_version", parse_watching_the_loop)
    running = asyncio.create_task(ticker())
    try:
        (report,) = await price_import.import_genai_prices(db, "groq", None, datetime.now(UTC), "2026-12-03")
    finally:
        stop.set()
        await running
    assert report.book_id == "genai-groq" and report.created and not report.conflicts
    assert progressed == [True], "the event loop stood still while the import parsed its versions"


async def test_an_import_plans_again_in_its_transaction_what_changed_since_it_parsed(db: Database, monkeypatch):
    """The versions are planned and parsed before the transaction; one stored meanwhile (here: the
    whole book, which the first read did not see) is planned against in the transaction."""
    at = datetime.now(UTC)
    (first,) = await price_import.import_genai_prices(db, "x-ai", None, at, "2026-12-03")
    assert first.created
    stored = price_import.stored_versions
    reads: list[int] = []

    async def first_read_sees_no_book(conn: Any, book_id: str, known: Any = ()) -> Any:
        reads.append(1)
        return [] if len(reads) == 1 else await stored(conn, book_id, known)

    monkeypatch.setattr(price_import, "stored_versions", first_read_sees_no_book)
    (again,) = await price_import.import_genai_prices(db, "x-ai", None, at, "2026-12-03")
    assert len(reads) == 2
    assert (again.created, again.conflicts) == ([], [])  # the book as stored: nothing to post

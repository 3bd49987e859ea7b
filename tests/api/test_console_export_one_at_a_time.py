"""A server process writes one journal export at a time. Each export holds a database session of
its own (a REPEATABLE READ snapshot, outside the request pool) for as long as it is written, and
nothing bounded them: an auditor who pressed Download ten times opened ten sessions beyond the
connections `tokentill serve` counts at start (README, Several processes), and under load the
pool's requests met "too many clients". Now a second export asked of a process while one is being
written is refused beside the form (429, nothing downloaded), and once the first has ended the
next is written."""

from __future__ import annotations

import asyncio
import threading

from api.console import export
from tests.api.apps import api_client
from tests.api.test_console_export_disconnect import (
    SETTLE_S,
    StalledBrowser,
    _open_exports,
    _settle,
    _writers,
    download_scope,
    twenty_customers,
)

ADMIN = "export-one-at-a-time-admin"
DOWNLOAD = "/console/audit/export/download?format=jsonl"


async def test_a_second_export_while_one_is_written_is_refused_and_the_next_is_written(scratch_url, monkeypatch):
    # every write its own chunk: the first export's writer fills the queue (8 chunks) and waits,
    # its session open, while the browser reads nothing more (as in test_console_export_disconnect)
    monkeypatch.setattr(export, "CHUNK", 1)
    async with api_client(scratch_url, admin=ADMIN, signed_in=True) as console:
        await twenty_customers(console, ADMIN, "one-at-a-time")
        before = set(threading.enumerate())
        browser = StalledBrowser()
        first = asyncio.create_task(console.app(download_scope(console), browser.receive, browser.send))
        await asyncio.wait_for(browser.stalled.wait(), SETTLE_S)
        assert len(_writers(before)) == 1 and len(_open_exports(scratch_url)) == 1

        second = await console.get(DOWNLOAD)
        assert second.status_code == 429, second.text
        assert "Nothing exported: another journal export is being written by this server" in second.text
        assert "content-disposition" not in second.headers
        assert len(_open_exports(scratch_url)) == 1, "the refused export opened a session"

        browser.leave.set()
        await asyncio.wait_for(first, SETTLE_S)
        await asyncio.to_thread(_settle, before, scratch_url)
        assert not _writers(before) and _open_exports(scratch_url) == []

        monkeypatch.setattr(export, "CHUNK", 65_536)
        third = await console.get(DOWNLOAD)
        assert third.status_code == 200, third.text
        lines = third.text.splitlines()
        # a header, then (at least) the 20 customers' openings: nothing else in this ledger
        assert sum('"one-at-a-time-' in line for line in lines) >= 20

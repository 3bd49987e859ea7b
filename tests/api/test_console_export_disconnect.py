"""A journal export the browser leaves stops: its writer thread ends and its REPEATABLE READ
transaction with it. The stop relied on `_Download.__del__`: a browser that went away while a
chunk was being sent (the send cancelled, no chunk asked for again) left the writer waiting on a
full queue, its transaction open, for as long as something still held the download."""
from __future__ import annotations

import asyncio
import gc
import threading
import time

import psycopg

from api.console import export
from ledger.export import APPLICATION
from tests.api.apps import api_client, bearer

ADMIN = "export-disconnect-admin"
SETTLE_S = 60.0  # a bound on waiting for the writer to notice (it looks once a second), not a timing


def download_scope(console) -> dict:
    """The ASGI scope of the signed-in console's GET of its JSON Lines export download, to call the
    app with directly (the test decides what the browser receives and when it leaves)."""
    cookie = "; ".join(f"{name}={value}" for name, value in console.cookies.items())
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "GET", "scheme": "https", "path": "/console/audit/export/download",
            "raw_path": b"/console/audit/export/download", "query_string": b"format=jsonl", "root_path": "",
            "headers": [(b"host", b"console.test"), (b"cookie", cookie.encode())],
            "client": ("127.0.0.1", 50000), "server": ("console.test", 443), "state": {}}


class StalledBrowser:
    """A browser's side of a download, to call the app with: it reads the first chunk and nothing
    more (the next send never completes, `stalled`), and goes away once `leave` is set."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.begun, self.stalled, self.leave = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def receive(self) -> dict:
        if not self.sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.begun.wait()  # the browser read the first chunk, then went away
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body":
            if self.begun.is_set():  # the browser reads nothing more: this send never completes
                self.stalled.set()
                await asyncio.Event().wait()
            self.begun.set()


async def twenty_customers(console, admin: str, prefix: str) -> None:
    """Twenty customers, `prefix`-0 to -19: their accounts' lines are more than the queue's 8 chunks
    of one write each (export.CHUNK = 1)."""
    for n in range(20):
        made = await console.post("/v1/customers", headers=bearer(admin), json={"id": f"{prefix}-{n}"})
        assert made.status_code == 201, made.text


def _open_exports(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT state, coalesce(backend_xid::text, '') FROM pg_stat_activity "
                            "WHERE application_name = %s AND datname = current_database()",
                            (APPLICATION,)).fetchall()


def _writers(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "console-export" and t not in before and t.is_alive()]


def _settle(before: set[threading.Thread], url: str) -> None:
    """Until the writer has ended and its session has gone, for SETTLE_S at most."""
    deadline = time.monotonic() + SETTLE_S
    while (_writers(before) or _open_exports(url)) and time.monotonic() < deadline:
        time.sleep(0.1)


async def test_a_download_the_browser_leaves_stops_its_writer_and_ends_its_transaction(scratch_url, monkeypatch):
    # every write its own chunk: the queue (8 chunks) is full long before the export's end, so the
    # writer is still waiting on it when the browser leaves (a fresh ledger's jsonl export writes
    # its header and one line an entry: the 20 customers' openings below are more than 9 writes)
    monkeypatch.setattr(export, "CHUNK", 1)
    async with api_client(scratch_url, admin=ADMIN, signed_in=True) as console:
        await twenty_customers(console, ADMIN, "leaver")
        before = set(threading.enumerate())
        browser = StalledBrowser()
        browser.leave = browser.stalled  # it leaves once its second chunk's send hangs

        scope = download_scope(console)
        gc.disable()  # nothing collected behind the test's back: the stop must not wait for a collection
        try:
            await asyncio.wait_for(console.app(scope, browser.receive, browser.send), SETTLE_S)
            start = browser.sent[0]
            assert start["type"] == "http.response.start" and start["status"] == 200, start
            assert browser.stalled.is_set()
            await asyncio.to_thread(_settle, before, scratch_url)
            assert not _writers(before), "the export's writer still runs after the browser left"
            assert _open_exports(scratch_url) == [], "the export's transaction is still open"
        finally:
            gc.enable()

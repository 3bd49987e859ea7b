"""A price book version that takes effect "now" (an import without `effective_from`) against calls
charged while it is written: every call is rated by the version in force at its usage time, as
the book then reads. Over real HTTP (the `live` server): the test client runs one request at a time."""
from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from ledger.db import lock_key
from tests.advisory_locks import waiting_on_a_lock
from tests.api.test_sdk_durability import ADMIN

pytest.importorskip("genai_prices")

BOOK, MODEL = "genai-mistral", "mistral-small-latest"  # no other test imports mistral
USAGE = {"input_tokens": 1000, "output_tokens": 1000}


def in_force(versions: list[dict[str, Any]], at: datetime) -> str | None:
    """The label of the version in force at `at` (the latest that took effect at or before it)."""
    found = [v for v in versions if datetime.fromisoformat(v["effective_from"]) <= at]
    return max(found, key=lambda v: datetime.fromisoformat(v["effective_from"]))["version"] if found else None


async def _customer_on_book_with_other_prices(client: httpx.AsyncClient, cid: str) -> None:
    """The book with prices of its own for MODEL, in force from now on (after any version stored
    before): an import of the snapshot's prices then changes them, "now". A second after any
    import before, whose label (its time to the second) the next one's must not be. Then customer
    `cid` on the book, topped up $100.00."""
    await asyncio.sleep(1.0)
    at = datetime.now(UTC).isoformat()
    posted = await client.post("/v1/price-books", json={
        "id": BOOK, "currency": "USD", "effective_from": at, "version": f"own-{uuid.uuid4().hex[:8]}",
        "format": 2, "unpriced": "zero",
        "rules": [{"id": f"{MODEL}:input", "model": MODEL, "token_type": "input", "price": "9"},
                  {"id": f"{MODEL}:output", "model": MODEL, "token_type": "output", "price": "9"}]})
    assert posted.status_code == 201, posted.text
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": BOOK})).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "100.00"})).status_code == 201


async def test_an_import_taking_effect_now_never_takes_effect_before_a_call_charged_without_it(
        live: tuple[str, str], tag: str, database_url: str):
    """An import without `effective_from` versions the book "now". Here its transaction waits
    (another session holds the book's lock) while a call is reserved and settled on the book:
    the call is rated by the old version (the new one is not written yet), so the new version
    must take effect after the call's reservation. Before, "now" was taken when the import
    arrived, before the call: the audit named the old version while the book said the new one
    was in force at the call's time, and nothing told a re-rate was due."""
    url, _ = live
    cid = f"now-{tag}"
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60) as client:
        await _customer_on_book_with_other_prices(client, cid)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other:
            book_lock = lock_key("price-book:" + BOOK)
            await other.execute("SELECT pg_advisory_lock(%s)", (book_lock,))
            imported = asyncio.create_task(client.post("/v1/price-books/import", json={
                "source": "genai-prices", "provider": "mistral", "model": MODEL}))
            await waiting_on_a_lock(other)
            reserved = await client.post("/v1/reservations", json={
                "customer_id": cid, "request_id": "r1", "model": MODEL, "amount": "1.00"})
            assert reserved.status_code == 201, reserved.text
            settled = await client.post(f"/v1/reservations/{reserved.json()['id']}/settle", json={"usage": USAGE})
            assert settled.status_code == 200, settled.text
            await other.execute("SELECT pg_advisory_unlock(%s)", (book_lock,))
            answered = await asyncio.wait_for(imported, 60)
        assert answered.status_code == 200, answered.text
        assert answered.json()["books"][0]["created"], answered.text
        reserved_at = datetime.fromisoformat(
            (await client.get(f"/v1/reservations/{reserved.json()['id']}")).json()["created_at"])
        versions = (await client.get(f"/v1/price-books/{BOOK}", params={"limit": 1000})).json()["versions"]
        trace = (await client.get("/v1/audit/charges/r1", params={"customer_id": cid})).json()
    rated_by = {line["price_version"] for charge in trace["charges"] for line in charge["lines"]}
    assert rated_by == {in_force(versions, reserved_at)}, (reserved_at, versions[-2:], rated_by)


async def _blocked_or_done(conn: psycopg.AsyncConnection, task: asyncio.Task[Any], locktype: str) -> None:
    """Until `task` is done or some session waits for a lock of `locktype` (asked every 5 ms, up to 30 s)."""
    for _ in range(6_000):
        waiting = await (await conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = %s AND NOT granted", (locktype,))).fetchone()
        if task.done() or waiting[0]:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"neither done nor waiting for a {locktype} lock")


async def _reserve_and_settle(client: httpx.AsyncClient, cid: str) -> httpx.Response:
    """A call reserved and settled (charged), one after the other; the reservation's answer."""
    reserved = await client.post("/v1/reservations", json={
        "customer_id": cid, "request_id": "r1", "model": MODEL, "amount": "1.00"})
    assert reserved.status_code == 201, reserved.text
    settled = await client.post(f"/v1/reservations/{reserved.json()['id']}/settle", json={"usage": USAGE})
    assert settled.status_code == 200, settled.text
    return reserved


async def test_a_call_charged_while_a_version_taking_effect_now_commits_is_rated_as_the_book_then_says(
        live: tuple[str, str], tag: str, database_url: str):
    """The window between the time a "now" version takes and its commit: here its INSERT waits
    (another session holds the book's row FOR UPDATE, which the version's foreign key needs to
    share) once it has its time, and a call is reserved and settled then. The call must wait for
    the version (the lanes are fenced from before the time is taken until the commit) and be
    rated by it, or else have been reserved before that time and be rated by the old one. Before,
    the call went through at once, rated by the old version, while the version took effect from
    before it (and so it would with the time taken under the book's lock: the window is the
    version's own transaction)."""
    url, _ = live
    cid = f"fence-{tag}"
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60) as client:
        await _customer_on_book_with_other_prices(client, cid)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as watch, \
                await psycopg.AsyncConnection.connect(database_url) as holder:
            await holder.execute("SELECT 1 FROM price_books WHERE id = %s FOR UPDATE", (BOOK,))
            imported = asyncio.create_task(client.post("/v1/price-books/import", json={
                "source": "genai-prices", "provider": "mistral", "model": MODEL}))
            await _blocked_or_done(watch, imported, "transactionid")
            assert not imported.done(), imported.result().text
            charging = asyncio.create_task(_reserve_and_settle(client, cid))
            await _blocked_or_done(watch, charging, "advisory")
            await holder.rollback()
            answered = await asyncio.wait_for(imported, 60)
            reserved = await asyncio.wait_for(charging, 60)
            drafts = await (await watch.execute("SELECT count(*) FROM price_book_version_drafts")).fetchone()
        assert drafts == (0,), "a draft is copied and deleted in the version's own transaction"
        assert answered.status_code == 200 and answered.json()["books"][0]["created"], answered.text
        reserved_at = datetime.fromisoformat(
            (await client.get(f"/v1/reservations/{reserved.json()['id']}")).json()["created_at"])
        versions = (await client.get(f"/v1/price-books/{BOOK}", params={"limit": 1000})).json()["versions"]
        trace = (await client.get("/v1/audit/charges/r1", params={"customer_id": cid})).json()
    rated_by = {line["price_version"] for charge in trace["charges"] for line in charge["lines"]}
    assert rated_by == {in_force(versions, reserved_at)}, (reserved_at, versions[-2:], rated_by)


async def test_a_version_taking_effect_now_takes_effect_after_a_usage_event_timed_ahead_and_charged_before_it(
        live: tuple[str, str], tag: str):
    """An event may be timed up to 300 s ahead of the server's clock. Charged before a version
    that takes effect "now", it is rated by the version in force before; so "now" is then just
    after the event's time, and the book says what rated it. Before, the version took effect at
    the server's clock, 120 s before the event: the audit named the old version while the book
    said the new one was in force at the event's time."""
    url, _ = live
    cid = f"ahead-{tag}"
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60) as client:
        await _customer_on_book_with_other_prices(client, cid)
        ahead = datetime.now(UTC) + timedelta(seconds=120)
        sent = await client.post("/v1/usage-events", json=[{
            "event_id": "e1", "customer_id": cid, "model": MODEL, "timestamp": ahead.isoformat(), "usage": USAGE}])
        assert sent.status_code == 200 and sent.json()["accepted"] == 1, sent.text
        imported = await client.post("/v1/price-books/import", json={
            "source": "genai-prices", "provider": "mistral", "model": MODEL})
        assert imported.status_code == 200 and imported.json()["books"][0]["created"], imported.text
        versions = (await client.get(f"/v1/price-books/{BOOK}", params={"limit": 1000})).json()["versions"]
        trace = (await client.get("/v1/audit/charges/e1", params={"customer_id": cid})).json()
    rated_by = {line["price_version"] for charge in trace["charges"] for line in charge["lines"]}
    assert rated_by == {versions[-2]["version"]} == {in_force(versions, ahead)}, (ahead, versions[-2:], rated_by)
    assert datetime.fromisoformat(versions[-1]["effective_from"]) == ahead + timedelta(microseconds=1), versions[-1]

"""Acceptance 1 of issue 13: journal pages under concurrent writes.

Four writers commit 106,000 entries in batches while two readers page through `GET /v1/journal`
(an auditor, and a `customer:<id>` key). A straggler transaction takes its entry ids and times
before the first page is read (both below those of entries committed before it) and commits
only after page 3: a watermark of the newest id or time seen would let it in. Every
writer transaction is classified by wall-clock: committed before the first page was requested
(must be listed), COMMIT sent after the first page answered (must not be), or in between (either,
but all of it or none). The pages must be disjoint, in time order, and together exactly that set;
the customer's pages exactly its own part of it.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from litestar.testing import AsyncTestClient

from api.app import create_app
from api.settings import Settings
from ledger.accounts import ensure_asset, open_account
from ledger.db import connect
from ledger.model import AccountSpec, AccountType, JournalEntry, Posting
from ledger.posting import post_entries

ADMIN = {"Authorization": "Bearer pages-admin"}
BOOK = {"id": "pages", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
        "rules": [{"id": "call", "token_type": "request", "price": "0.01"}]}
CUSTOMERS = ["pg-cust-a", "pg-cust-b", "pg-cust-c"]
BOOKS = ("pages0", "pages1", "pages2", "pages3", "straggler")  # each writer's accounts, and the straggler's
PREFILL, WRITERS, BATCH, WRITTEN = 6_000, 4, 500, 106_000
STEP = WRITTEN // 30  # writes awaited between two pages: the writers finish by page 31


def _entry(key: str, customer: str | None, book: str) -> JournalEntry:
    """An entry of `customer` (or of none) on the accounts of `book`: each writer has its own, and
    so has the straggler, so that the rows one locks never make another wait."""
    other = f"liability:customer:{customer}:{book}" if customer else f"equity:{book}"
    return JournalEntry(key, "test", (Posting(f"asset:platform:{book}", 7, "USD"), Posting(other, -7, "USD")),
                        customer, datetime.now(UTC))


def _owner(i: int) -> str | None:
    return [*CUSTOMERS, None][i % 4]


@dataclass
class Log:
    """What the writers committed: (ids with their customers, COMMIT sent at, COMMIT done at)."""

    txns: list[tuple[dict[int, str | None], float, float]] = field(default_factory=list)
    written: int = 0
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, count: int) -> None:
        async with self.progress:
            await self.progress.wait_for(lambda: self.written >= count)


async def _commit_batch(engine, keys: list[tuple[str, str | None]], book: str, log: Log | None):
    """Post one batch in a transaction of its own, logging the moments around its COMMIT."""
    async with engine.connect() as conn:
        # READ COMMITTED: concurrent writers wait on the stripes' row locks instead of failing
        await conn.execution_options(isolation_level="READ COMMITTED")
        trans = await conn.begin()
        results = await post_entries(conn, [_entry(k, c, book) for k, c in keys])
        ids = {r.entry_id: c for r, (_, c) in zip(results, keys, strict=True)}
        sent = time.monotonic()
        await trans.commit()
        done = time.monotonic()
    if log is not None:
        async with log.progress:
            log.txns.append((ids, sent, done))
            log.written += len(ids)
            log.progress.notify_all()
    return ids


async def _writer(engine, n: int, log: Log) -> None:
    for start in range(n * (WRITTEN // WRITERS), (n + 1) * (WRITTEN // WRITERS), BATCH):
        await _commit_batch(engine, [(f"w{i}", _owner(i)) for i in range(start, start + BATCH)], f"pages{n}", log)


async def _read_all(client, headers, limit: int, log: Log, start_after: int, on_page):
    """Page through the journal, paced so that the writers keep committing until the last page
    (which must come at page 31 or later). Returns (pages of ids, entries, t0, t1, t_last):
    before and after the first page, and when the last page was requested."""
    await log.wait_for(start_after)
    pages, rows, cursor, t0, t1 = [], [], None, 0.0, 0.0
    while True:
        if pages:
            await log.wait_for(min(WRITTEN, start_after + len(pages) * STEP))
        sent = time.monotonic()
        response = await client.get("/v1/journal", params={"limit": limit, **({"cursor": cursor} if cursor else {})},
                                    headers=headers)
        if not pages:
            t0, t1 = sent, time.monotonic()
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([e["id"] for e in body["entries"]])
        rows += body["entries"]
        await on_page(len(pages))
        cursor = body["next_cursor"]
        if cursor is None:
            return pages, rows, t0, t1, sent


def _expected(log: Log, prefill: dict[int, str | None], t0: float, t1: float):
    """(ids that must be listed, ids that must not be, ambiguous transactions' id sets)."""
    must, must_not, either = dict(prefill), {}, []
    for ids, sent, done in log.txns:
        if done < t0:
            must.update(ids)
        elif sent > t1:
            must_not.update(ids)
        else:
            either.append(ids)
    return must, must_not, either


def _check(read, log: Log, prefill, straggled, customer: str | None = None) -> tuple[int, int]:
    """Checks one reader's pages; returns (entries listed, entries written while it paged)."""
    pages, _, t0, t1, t_last = read
    listed = [i for page in pages for i in page]
    assert len(listed) == len(set(listed)), "pages overlap"
    order = [(datetime.fromisoformat(e["occurred_at"]), e["id"]) for e in read[1]]
    assert [i for _, i in order] == listed and order == sorted(order), "not in time order"
    must, must_not, either = _expected(log, prefill, t0, t1)
    keep = (lambda ids: {i for i, c in ids.items() if c == customer}) if customer else (lambda ids: set(ids))
    got = set(listed)
    assert keep(must) <= got, f"missing {sorted(keep(must) - got)[:5]}"
    late = keep(must_not) & got
    assert not late, f"listed entries committed after the first page: {sorted(late)[:5]}"
    assert not keep(straggled) & got, "the straggler's entries slipped in"
    for ids in either:
        assert keep(ids) <= got or not keep(ids) & got, "a transaction listed in part"
    allowed = keep(must) | {i for ids in either for i in keep(ids)}
    assert got <= allowed, f"listed what was never committed before: {sorted(got - allowed)[:5]}"
    written_while_paging = sum(len(ids) for ids, sent, done in log.txns if sent > t1 and done < t_last)
    return len(got), written_while_paging


async def test_pages_are_exactly_what_committed_before_the_first_page_under_100k_concurrent_writes(scratch_url):
    db = connect(scratch_url, pool_size=8)
    app = create_app(Settings(admin_key="pages-admin", scheduler=False), scratch_url)
    async with AsyncTestClient(app=app, timeout=60) as client:
        assert (await client.post("/v1/price-books", json=BOOK, headers=ADMIN)).status_code == 201
        for c in CUSTOMERS:
            assert (await client.post("/v1/customers", json={"id": c, "currency": "USD", "price_book": "pages"},
                                      headers=ADMIN)).status_code == 201
        created = await client.post("/v1/api-keys", json={"scope": f"customer:{CUSTOMERS[0]}"}, headers=ADMIN)
        own_key = {"Authorization": f"Bearer {created.json()['key']}"}

        async def accounts(conn):
            await ensure_asset(conn, "USD", 9)
            for book in BOOKS:
                await open_account(conn, AccountSpec(f"asset:platform:{book}", AccountType.ASSET, "USD", stripes=16))
                await open_account(conn, AccountSpec(f"equity:{book}", AccountType.EQUITY, "USD"))
                for c in CUSTOMERS:
                    await open_account(conn, AccountSpec(f"liability:customer:{c}:{book}", AccountType.LIABILITY,
                                                         "USD", c))

        await db.run(accounts)
        engine = db.engine
        prefill: dict[int, str | None] = {}
        for start in range(0, PREFILL, 500):
            prefill.update(await _commit_batch(
                engine, [(f"p{i}", _owner(i)) for i in range(start, start + 500)], "pages0", None))

        # The straggler: ids allocated now, below every writer's; committed once readers are past page 3.
        straggler = await engine.connect()
        await straggler.execution_options(isolation_level="READ COMMITTED")
        straggle = await straggler.begin()
        straggled = {r.entry_id: _owner(i) for i, r in enumerate(await post_entries(
            straggler, [_entry(f"s{i}", _owner(i), "straggler") for i in range(40)]))}
        pages_read: dict[str, int] = {"auditor": 0, "customer": 0}
        released = asyncio.Event()

        async def seen(reader: str, n: int) -> None:
            pages_read[reader] = n
            if min(pages_read.values()) >= 3 and not released.is_set():
                released.set()
                await straggle.commit()
                await straggler.close()

        log = Log()
        writers = [asyncio.create_task(_writer(engine, n, log)) for n in range(WRITERS)]
        auditor, customer = await asyncio.gather(
            _read_all(client, ADMIN, 200, log, 2_000, lambda n: seen("auditor", n)),
            _read_all(client, own_key, 50, log, 4_000, lambda n: seen("customer", n)))
        await asyncio.gather(*writers)
    await db.dispose()

    assert released.is_set() and log.written == WRITTEN
    listed, during = _check(auditor, log, prefill, straggled)
    print(f"\nauditor: {listed} entries in {len(auditor[0])} pages; {during} written while it paged")
    own_listed, own_during = _check(customer, log, prefill, straggled, CUSTOMERS[0])
    print(f"customer key: {own_listed} entries in {len(customer[0])} pages; {own_during} written while it paged")
    assert during >= 100_000 and own_during >= 100_000
    assert {e["customer_id"] for e in customer[1]} == {CUSTOMERS[0]}
    assert all(p["account"].startswith(("asset:platform:", f"liability:customer:{CUSTOMERS[0]}:"))
               for e in customer[1] for p in e["postings"])

"""A big stored price book is parsed outside the writer lock (issue 9, item 6): the first time a
process uses a 3,000-rule book, other customers' reserves keep completing meanwhile."""
from __future__ import annotations

import asyncio
import time
from itertools import pairwise
from typing import Any

from wallet_kit import Kit, usd

from ledger.db import Database
from pricing.parse import parse_version
from wallets import books
from wallets.service import CustomerSpec

BIG = 3_000


def big_book(book_id: str) -> dict[str, Any]:
    """model-x at the kit's prices ($1.00 / $2.00 per 1,000 tokens), among 3,000 rules."""
    rules: list[dict[str, Any]] = [
        {"id": "x-in", "model": "model-x", "token_type": "input", "price": "1000"},
        {"id": "x-out", "model": "model-x", "token_type": "output", "price": "2000"},
    ]
    i = 0
    while len(rules) < BIG:
        for token_type in ("input", "output", "cached_input"):
            rules.append({"id": f"m{i}-{token_type}", "model": f"model-{i:05d}", "token_type": token_type,
                          "price": "1.5"})
        if i % 10 == 0:
            rules.append({"id": f"m{i}-eu", "model": f"model-{i:05d}", "token_type": "input", "price": "2",
                          "match": {"region": "eu"}})
        i += 1
    return {"id": book_id, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": rules[:BIG]}


async def setup(db: Database, tag: str) -> tuple[Kit, str, str]:
    """A process that has not seen the big book yet (a new engine), customer b warmed up on the
    kit's small book, customer a on the big one."""
    big = f"big-{tag}"
    await db.run(lambda conn: books.add_version(conn, big_book(big)))
    kit = Kit(db, tag)
    await kit.setup_book()
    b = await kit.customer("b")
    await kit.top_up(b, "100.00")
    a = f"a-{tag}"
    await kit.service.create_customer(CustomerSpec(a, "a", "USD", "prepaid", big, 0, None))
    await kit.top_up(a, "10.00")
    await kit.reserve(b, "warm", input_tokens=10, max_output_tokens=10)
    return kit, a, b


class Reserves:
    """Customer b's reserves, one after another, with the time each completed."""

    def __init__(self, kit: Kit, customer: str) -> None:
        self.kit, self.customer = kit, customer
        self.done: list[float] = []
        self.stop = False

    async def run(self) -> None:
        i = 0
        while not self.stop:
            await self.kit.reserve(self.customer, f"b-{i}", input_tokens=10, max_output_tokens=10)
            self.done.append(time.perf_counter())
            i += 1
            await asyncio.sleep(0)


async def reserve_while_parsing(kit: Kit, a: str, others: Reserves, book_id: str, request_id: str,
                                patience_s: float, monkeypatch: Any) -> tuple[Any, bool]:
    """a's reserve while b's reserves run, the first parse of `book_id` waiting (up to
    `patience_s`) until b completed three more reserves: they can only if the parse holds neither
    the event loop nor the lock b's batches need. The reserve, and whether b's went on."""
    waited: list[bool] = []
    parse = books.parse_version

    def parse_watching_others(data: dict[str, Any], **kw: Any) -> Any:
        if data.get("id") == book_id and not waited:
            before, deadline = len(others.done), time.monotonic() + patience_s
            while len(others.done) < before + 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            waited.append(len(others.done) >= before + 3)
        return parse(data, **kw)

    monkeypatch.setattr(books, "parse_version", parse_watching_others)
    loop = asyncio.create_task(others.run())
    try:
        await asyncio.sleep(0.05)
        reserved = await kit.reserve(a, request_id, input_tokens=1_000, max_output_tokens=500)
    finally:
        others.stop = True
        await loop
    assert len(waited) == 1, f"the book was parsed {len(waited)} times"
    return reserved, waited[0]


async def test_other_customers_reserves_complete_while_a_big_book_is_parsed(db, tag, monkeypatch):
    kit, a, b = await setup(db, tag)
    first, went_on = await reserve_while_parsing(kit, a, Reserves(kit, b), f"big-{tag}", "a-first", 5, monkeypatch)
    assert went_on, "b's reserves stalled while a's price book was parsed"
    # a's hold is priced by the big book: 1,000 x $1/1,000 + 500 x $2/1,000
    assert first.reservation.amount == usd("2.00")


async def test_the_longest_pause_of_other_reserves_during_a_first_use_is_printed(db, tag):
    kit, a, b = await setup(db, tag)
    started = time.perf_counter()
    parse_version(big_book(f"big-{tag}"))
    parse_seconds = time.perf_counter() - started
    others = Reserves(kit, b)
    loop = asyncio.create_task(others.run())
    try:
        await asyncio.sleep(0.2)
        began = time.perf_counter()
        first = await kit.reserve(a, "a-first", input_tokens=1_000, max_output_tokens=500)
        ended = time.perf_counter()
        await asyncio.sleep(0.2)
    finally:
        others.stop = True
        await loop
    during = [t for t in others.done if began <= t <= ended + 0.2]
    times = [began, *during]
    gap = max((b2 - b1 for b1, b2 in pairwise(times)), default=ended - began)
    print(f"\n{BIG}-rule book: parse {parse_seconds * 1000:.0f} ms; a's first reserve {(ended - began) * 1000:.0f} ms;"
          f" b completed {len(during)} reserves meanwhile, longest pause {gap * 1000:.0f} ms")
    assert first.reservation.amount == usd("2.00") and others.done


class CountingDatabase(Database):
    """The session database, counting the hot-path lookups made through it."""

    __slots__ = ("lookups",)

    async def lookup(self, work):  # type: ignore[no-untyped-def]
        self.lookups = getattr(self, "lookups", 0) + 1
        return await super().lookup(work)


async def test_a_book_found_current_is_not_looked_up_again_and_a_new_version_still_prices_at_once(db, tag):
    counting = CountingDatabase(db.engine)
    kit = Kit(counting, tag)
    await kit.setup_book()
    cid = await kit.customer("c")
    await kit.top_up(cid, "10.00")
    first = await kit.reserve(cid, "r1", input_tokens=1_000, max_output_tokens=0)
    again = await kit.reserve(cid, "r2", input_tokens=1_000, max_output_tokens=0)
    assert counting.lookups == 1  # the second found the book current (its batch had just used it)
    assert first.reservation.amount == again.reservation.amount == usd("1.00")
    doubled = {"id": kit.book, "currency": "USD", "effective_from": "2026-06-01T00:00:00Z", "rules": [
        {"id": "x-in", "model": "model-x", "token_type": "input", "price": "2000"},
        {"id": "x-out", "model": "model-x", "token_type": "output", "price": "4000"}]}
    await counting.run(lambda conn: books.add_version(conn, doubled))
    later = await kit.reserve(cid, "r3", input_tokens=1_000, max_output_tokens=0)
    assert later.reservation.amount == usd("2.00")  # parsed under the lock: the version is that new
    assert counting.lookups == 1


async def test_other_lanes_reserves_complete_while_a_new_version_of_a_big_book_is_parsed_under_a_batch(
        db, tag, monkeypatch):
    """A new version of a book in use (here: posted right after a's batch found the book current,
    so the next batch finds it under its lane's lock) is parsed there, where the batch needs it;
    in a worker thread, so that the process's other lanes go on. Before, the parse ran on the event
    loop: a 3,000-rule version (0.15 s for genai-prices' openrouter book) stopped every request of
    the process, on every lane and book, each time a version of a big book in use appeared."""
    kit, a, b = await setup(db, tag)
    lane_a = await kit.service.engine.lane_of(a)
    n = 0
    while await kit.service.engine.lane_of(b) == lane_a:  # b in another lane: a's batch holds a's lane
        n += 1
        b = await kit.customer(f"b{n}")
        await kit.top_up(b, "100.00")
        await kit.reserve(b, "warm", input_tokens=10, max_output_tokens=10)
    await kit.reserve(a, "a-warm", input_tokens=10, max_output_tokens=10)  # the book, parsed and current
    doubled = big_book(f"big-{tag}")
    doubled["effective_from"] = "2026-02-01T00:00:00Z"
    doubled["rules"][:2] = [{"id": "x-in", "model": "model-x", "token_type": "input", "price": "2000"},
                            {"id": "x-out", "model": "model-x", "token_type": "output", "price": "4000"}]
    await db.run(lambda conn: books.add_version(conn, doubled))
    # patience 2 s: b's batch, stopped with the loop, must not reach its 5 s idle timeout
    later, went_on = await reserve_while_parsing(kit, a, Reserves(kit, b), f"big-{tag}", "a-later", 2, monkeypatch)
    assert went_on, "b's reserves, in another lane, stalled while a's new version was parsed"
    assert later.reservation.amount == usd("4.00")  # the new version prices it at once

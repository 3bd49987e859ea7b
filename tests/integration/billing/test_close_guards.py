"""What PostgreSQL guards about invoices itself, against raw SQL: a finalized invoice never
changes, numbers leave no gap, the content hash is the content's, payments stay within the
amount due, and a customer's billing cycle never changes. And two processes closing at once
close each period once, numbered without gap or duplicate."""
from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

import pytest
from billing_kit import BillingKit
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ledger.audit import verify
from ledger.db import sqlstate_of
from wallets.audit import WALLET_CHECKS

DEC_1_GRACE_OVER = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)


async def _refused(bk: BillingKit, sql: str, params: dict | None = None) -> str | None:
    async def work(conn):
        await conn.execute(text(sql), params or {})

    with pytest.raises(DBAPIError) as caught:
        await bk.db.run(work)
    return sqlstate_of(caught.value)


@pytest.fixture
async def closed(bk: BillingKit) -> str:
    cid = await bk.customer("guarded", billing_mode="postpaid")
    await bk.event(cid, "model-a", 1000, 500)
    [invoice] = await bk.close(DEC_1_GRACE_OVER)
    return invoice.invoice_id


async def test_a_finalized_invoice_cannot_be_changed_or_deleted(bk: BillingKit, closed: str) -> None:
    assert await _refused(bk, "UPDATE invoices SET total = 0 WHERE id = :i", {"i": closed}) == "23001"
    assert await _refused(bk, "UPDATE invoices SET content = content || '{\"total\": \"0\"}' WHERE id = :i",
                          {"i": closed}) == "23001"
    assert await _refused(bk, "DELETE FROM invoices WHERE id = :i", {"i": closed}) == "23001"
    assert await _refused(bk, "TRUNCATE invoices CASCADE") == "23001"


async def test_an_invoice_number_that_leaves_a_gap_or_repeats_is_refused(bk: BillingKit, closed: str) -> None:
    copy = """INSERT INTO invoices (id, lane, customer_id, period, period_start, period_end, issuer, year, seq, number,
                  currency, total, amount_due, due_at, content, content_hash, finalized_at)
              SELECT 'forged', lane, customer_id, '2026-12', period_start + interval '1 month',
                     period_end + interval '1 month', issuer, year, :seq,
                     issuer || '-' || year || '-' || lpad(:s, 6, '0'),
                     currency, total, amount_due, due_at, jsonb_set(jsonb_set(content, '{id}', '"forged"'),
                     '{number}', to_jsonb(issuer || '-' || year || '-' || lpad(:s, 6, '0'))),
                     sha256(convert_to(jsonb_set(jsonb_set(content, '{id}', '"forged"'), '{number}',
                         to_jsonb(issuer || '-' || year || '-' || lpad(:s, 6, '0')))::text, 'UTF8')), finalized_at
                FROM invoices WHERE id = :i"""
    assert await _refused(bk, copy, {"seq": 3, "s": "3", "i": closed}) == "23514"  # a gap: 2 is missing
    assert await _refused(bk, copy, {"seq": 1, "s": "1", "i": closed}) in ("23514", "23505")  # a repeat


async def test_a_content_hash_that_is_not_the_contents_is_refused(bk: BillingKit, closed: str) -> None:
    forged = """INSERT INTO invoices (id, lane, customer_id, period, period_start, period_end, issuer, year, seq,
                    number, currency, total, amount_due, due_at, content, content_hash, finalized_at)
                SELECT 'forged', lane, customer_id, '2026-12', period_start, period_end, issuer, year, 2,
                       issuer || '-' || year || '-000002', currency, total, amount_due, due_at,
                       jsonb_set(jsonb_set(content, '{id}', '"forged"'), '{number}',
                                 to_jsonb(issuer || '-' || year || '-000002')),
                       content_hash, finalized_at
                  FROM invoices WHERE id = :i"""
    assert await _refused(bk, forged, {"i": closed}) == "23514"


async def test_payments_beyond_the_amount_due_are_refused(bk: BillingKit, closed: str) -> None:
    assert await _refused(bk, """INSERT INTO invoice_payments (id, lane, invoice_id, customer_id, amount, reference,
                                     entry_id, created_at)
                                 SELECT 'p', lane, id, customer_id, amount_due + 1, 'raw', 0, now()
                                   FROM invoices WHERE id = :i""", {"i": closed}) == "23514"


async def test_a_customers_billing_cycle_never_changes(bk: BillingKit, closed: str) -> None:
    assert await _refused(bk, "UPDATE customers SET time_zone = 'Asia/Tokyo' WHERE id = 'guarded'") == "23001"
    assert await _refused(bk, "UPDATE customers SET billing_anchor_day = 5 WHERE id = 'guarded'") == "23001"
    assert await _refused(bk, "UPDATE customers SET open_period_start = open_period_start - interval '1 month' "
                              "WHERE id = 'guarded'") == "23001"


CLOSER = """
import asyncio, sys
from datetime import datetime
from ledger.db import connect
from wallets.billing import close_due

async def main():
    db = connect(sys.argv[1], pool_size=2)
    try:
        closed = await close_due(db, datetime.fromisoformat(sys.argv[2]))
        print(len(closed))
    finally:
        await db.dispose()

asyncio.run(main())
"""


async def test_two_processes_closing_at_once_close_each_period_once_without_gaps(bk: BillingKit, scratch_url) -> None:
    customers = [await bk.customer(f"c{i:02d}", billing_mode="postpaid" if i % 2 else "prepaid") for i in range(24)]
    for i, cid in enumerate(customers):
        if i % 2 == 0:
            await bk.top_up(cid, "1.00")
        await bk.event(cid, "model-a", 1000 * (i + 1), 500)
    until = "2027-02-01T01:00:00+00:00"  # November, December and January are due: 72 periods
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", CLOSER, scratch_url, until,
                                                  stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
             for _ in range(2)]
    outputs = [await p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), [err.decode()[-2000:] for _, err in outputs]
    counts = [int(out.decode().strip()) for out, _ in outputs]
    assert sum(counts) == 72  # between them: each period closed by exactly one of the two

    async def read(conn):
        rows = await conn.execute(text("SELECT customer_id, period, year, seq FROM invoices ORDER BY year, seq"))
        return [tuple(r) for r in rows]

    rows = await bk.db.read(read)
    assert len({(c, p) for c, p, _, _ in rows}) == len(rows) == 72
    by_year: dict[int, list[int]] = {}
    for _, _, year, seq in rows:
        by_year.setdefault(year, []).append(seq)
    assert by_year == {2027: list(range(1, 73))}  # numbered in the year they were issued, no gap, no repeat
    assert {p for _, p, _, _ in rows} == {"2026-11", "2026-12", "2027-01"}
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]

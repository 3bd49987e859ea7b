"""A synthetic ledger of any size, written in bulk by SQL (no HTTP, no per-entry round trip), for
the export bench and the tests that need many entries: customers' top-ups, holds and settles,
sealed as the seal job seals them."""
from __future__ import annotations

import time
from datetime import UTC, datetime

from ledger import audit
from ledger.accounts import ensure_asset, open_account
from ledger.db import Database
from ledger.seal import seal_once
from wallets import chart

CURRENCY = "USD"
START = datetime(2026, 1, 1, tzinfo=UTC)
CHUNK = 20_000  # entries per statement and transaction


# Entry n belongs to customer n // 3 % customers and cycles top-up, hold, settle (so no bounded
# account goes below 0). One statement writes a chunk of entries and their postings; the
# database's triggers check and count them as they would any other posting.
_CHUNK_SQL = """
WITH g AS (
    SELECT n, n / 3 AS cycle, n %% 3 AS step, 'cust-' || (n / 3 %% %(customers)s) AS cid
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) n),
e AS (
    INSERT INTO journal_entries (lane, key, request_hash, kind, customer_id, occurred_at, metadata)
    SELECT ledger_entry_lane(cid), 'syn:' || n, sha256(convert_to('syn:' || n, 'UTF8')),
           (ARRAY['topup', 'reserve', 'settle'])[step + 1], cid, %(start)s + n * interval '1 second',
           CASE step WHEN 0 THEN jsonb_build_object('lot_id', 'main', 'reference', 'pay-' || cycle)
                     ELSE jsonb_build_object('request_id', 'req-' || cycle, 'model', 'model-a') END
      FROM g ORDER BY n
    RETURNING id, lane, kind, customer_id)
INSERT INTO postings (lane, entry_id, account_id, stripe, amount)
SELECT e.lane, e.id, a.id, CASE WHEN a.stripes > 1 THEN e.lane %% a.stripes ELSE 0 END, l.amount
  FROM e
  JOIN (VALUES ('topup', 1, %(cash)s, 1000000000), ('topup', 2, %(lot)s, -1000000000),
               ('reserve', 1, %(lot)s, 600000000), ('reserve', 2, %(reserved)s, -600000000),
               ('settle', 1, %(reserved)s, 600000000), ('settle', 2, %(revenue)s, -123456789),
               ('settle', 3, %(lot)s, -476543211)) l (kind, leg, code, amount) ON l.kind = e.kind
  JOIN accounts a ON a.code = replace(l.code, '{cid}', e.customer_id)
 ORDER BY e.id, l.leg
"""


# What the posting triggers would have done, for a load that ran without them: every cached
# balance set to its postings' sums. Only the ledger's triggers may write balances (migration
# 0023), so this too runs with them off (after REPLICA_ROLE: a superuser's session only).
REPLICA_ROLE = "SET LOCAL session_replication_role = replica"
REBUILD_BALANCES = """
UPDATE account_balances b SET debits = s.d, credits = s.c
  FROM (SELECT ledger_balance_lane(a.customer_id, a.stripes, p.stripe) AS lane, p.account_id, p.stripe,
               coalesce(sum(p.amount) FILTER (WHERE p.amount > 0), 0) AS d,
               coalesce(-sum(p.amount) FILTER (WHERE p.amount < 0), 0) AS c
          FROM postings p JOIN accounts a ON a.id = p.account_id
         GROUP BY 1, p.account_id, p.stripe) s
 WHERE b.lane = s.lane AND b.account_id = s.account_id AND b.stripe = s.stripe
"""


async def build_ledger(db: Database, entries: int, *, customers: int = 1000, first: int = 0,
                       chunk: int = CHUNK, seal_every: int = 50_000, seal: bool = True,
                       without_triggers: bool = False, progress=None) -> float:
    """Write entries first..first+entries-1 in statements of `chunk`, sealing every `seal_every`
    entries (so no seal grows past that) and at the end, unless `seal` is false; returns the
    seconds it took. `without_triggers` (a superuser's session only) skips the posting triggers
    and sets the cached balances once at the end: a bulk load for benchmarks, which must then
    prove the ledger whole with `verify`."""
    t0 = time.perf_counter()

    async def setup(conn):
        await ensure_asset(conn, CURRENCY, chart.ASSET_SCALE)
        for spec in chart.platform_specs(CURRENCY):
            await open_account(conn, spec)
        for i in range(min(customers, (first + entries + 2) // 3)):
            cid = f"cust-{i}"
            for spec in (*chart.customer_specs(cid, CURRENCY), chart.lot_spec(cid, "main", CURRENCY)):
                await open_account(conn, spec)

    async def seal_all():
        while await db.run(seal_once):
            pass

    await db.run(setup)
    codes = {"cash": chart.cash_account(CURRENCY), "revenue": chart.revenue_account(CURRENCY),
             "lot": chart.lot_account("{cid}", "main"), "reserved": chart.reserved_account("{cid}")}
    since_seal, analyzed = 0, first
    for lo in range(first, first + entries, chunk):
        hi = min(lo + chunk, first + entries)
        params = {"customers": customers, "lo": lo, "hi": hi, "start": START, **codes}
        await db.run(lambda conn, p=params: _write_chunk(conn, p, without_triggers))
        if hi >= 2 * analyzed:  # fresh statistics, or the per-entry checks plan scans of whole tables
            await db.run(lambda conn: conn.exec_driver_sql("ANALYZE journal_entries, postings"))
            analyzed = hi
        since_seal += hi - lo
        if seal and since_seal >= seal_every:
            await seal_all()
            since_seal = 0
        if progress:
            progress(hi - first, entries)
    if without_triggers:
        async def rebuild(conn):
            await conn.exec_driver_sql(REPLICA_ROLE)
            await conn.exec_driver_sql(REBUILD_BALANCES)

        await db.run(rebuild)
    if seal:
        await seal_all()
    return time.perf_counter() - t0


async def ledger_checks(conn) -> dict[str, bool]:
    """`verify`'s ledger checks that prove a load made without the triggers whole: every entry
    balances, the cached balances equal the postings, no bound is crossed, the trial balance is zero."""
    return {c.name: c.ok for c in [await check(conn) for check in (
        audit.entries_balanced, audit.balances_match_postings, audit.bounds_hold, audit.trial_balance_zero)]}


async def _write_chunk(conn, params: dict, without_triggers: bool) -> None:
    if without_triggers:
        await conn.exec_driver_sql(REPLICA_ROLE)
    await conn.exec_driver_sql(_CHUNK_SQL, params)

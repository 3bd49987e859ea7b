"""`tokentill bench invoices`: closing the billing periods of many customers holding many usage
charges, and reading the busiest customer's usage report and upcoming invoice (issue 11: all
10,000 customers' periods, 1,000,000 charges, closed in under 60 s; the two reads of a customer
with 100,000 charges in the period answer with p99 under 50 ms).

A fresh database on the cluster and one `tokentill serve`. Every customer (postpaid) sends one
usage event through `POST /v1/usage-events` (the real path: rated, posted, counted, rolled up);
then each charge is copied in bulk SQL to the customer's share of `--charges` (the first customer,
`--big` of them): one INSERT ... SELECT per table and chunk, two chunks at a time, without the
triggers (a superuser's session), after which the cached balances are set from the postings and
`verify`'s ledger checks must prove the ledger whole (as `bench export` does); the period's
rollups and usage counters are multiplied to match (every copy is the same charge, so that is
exact). The reads are timed over HTTP, one at a time, before the close (after it the period is
no longer the open one); then one `POST /v1/billing/close` closes every period, and the invoices
are counted and summed against the charges (each charge is $0.004: 1,000 input tokens at $1/M,
500 output at $4/M, $0.001 a call).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import create_engine, text

from api.bench.common import ratio
from api.bench.lifecycle_bench import KEY, pct, scratch_server, wait_ready
from api.bench.synthetic import REBUILD_BALANCES, REPLICA_ROLE, ledger_checks
from api.runtime import sync_url
from api.settings import Settings
from ledger.db import connect
from wallets.core.billing import money
from wallets.periods import Cycle, period_of

CLOSE_GOAL_S = 60.0
READ_GOAL_MS = 50.0
CHARGE_UNITS = 4_000_000  # $0.004 at 10^-9
BOOK = {"id": "bench-invoices", "currency": "USD", "effective_from": "2020-01-01T00:00:00Z", "rules": [
    {"id": "in", "token_type": "input", "price": "1.00"},
    {"id": "out", "token_type": "output", "price": "4.00"},
    {"id": "call", "token_type": "request", "price": "0.001"}]}
ADMIN = {"Authorization": f"Bearer {KEY}"}
COPIES_PER_STATEMENT = 50_000
COPY_CONNECTIONS = 2  # the machine's cores
CLIENTS = 32  # concurrent customer creations
EVENT_CLIENTS, EVENTS_PER_REQUEST = 4, 250


def shares(customers: int, charges: int, big: int) -> list[int]:
    """Charges of each customer: the first `big`, the rest spread evenly (the first ones one more)."""
    rest, others = charges - big, customers - 1
    return [big] + [rest // others + (1 if i < rest % others else 0) for i in range(others)]


async def seed(client: httpx.AsyncClient, ids: list[str], at: datetime) -> dict[str, float]:
    """The customers, created through the API by concurrent clients, then one usage event each
    (a thousand a request); the seconds of each part."""
    began = time.perf_counter()
    (await client.post("/v1/price-books", headers=ADMIN, json=BOOK)).raise_for_status()
    queue = list(ids)

    async def create() -> None:
        while queue:
            cid = queue.pop()
            answer = await client.post("/v1/customers", headers=ADMIN, json={
                "id": cid, "price_book": BOOK["id"], "billing": "postpaid"})
            if answer.status_code != 201:
                raise SystemExit(f"creating {cid}: {answer.status_code} {answer.text[:300]}")

    await asyncio.gather(*(create() for _ in range(CLIENTS)))
    created = time.perf_counter()
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    batches = [ids[i:i + EVENTS_PER_REQUEST] for i in range(0, len(ids), EVENTS_PER_REQUEST)]

    async def send() -> None:
        while batches:
            batch = [{"event_id": f"e-{cid}", "customer_id": cid, "model": "model-x", "timestamp": stamp,
                      "usage": {"input_tokens": 1000, "output_tokens": 500}} for cid in batches.pop()]
            answer = await client.post("/v1/usage-events", headers=ADMIN, json=batch, timeout=600)
            if answer.status_code != 200 or answer.json()["accepted"] != len(batch):
                raise SystemExit(f"seeding failed: {answer.status_code} {answer.text[:300]}")

    await asyncio.gather(*(send() for _ in range(EVENT_CLIENTS)))
    return {"customers_s": round(created - began, 2), "events_s": round(time.perf_counter() - created, 2)}


def _columns(conn, table: str, without: set[str]) -> list[str]:
    rows = conn.execute(text("SELECT column_name FROM information_schema.columns WHERE table_name = :t "
                             "AND table_schema = current_schema() ORDER BY ordinal_position"), {"t": table})
    return [r[0] for r in rows if r[0] not in without]


def copy_charges(url: str, ids: list[str], copies: list[int]) -> dict:
    """Each customer's one charge copied `copies` times (entry, postings, usage event, charge),
    its rollups (period and usage, every charge folded first) and counters multiplied to match.
    A bulk load: the copies are
    written without the triggers (a superuser's session), two chunks at a time, then the cached
    balances are set from the postings and `verify`'s ledger checks must prove the ledger whole.
    Returns the seconds of each step and the checks."""
    engine = create_engine(sync_url(url), pool_size=COPY_CONNECTIONS)
    began = time.perf_counter()
    try:
        with engine.connect() as conn:
            entry = _columns(conn, "journal_entries", {"id", "key", "recorded_at", "txid"})
            event = _columns(conn, "usage_events", {"event_id", "entry_id", "created_at"})
            charge = _columns(conn, "charges", {"id", "event_id", "request_id", "entry_id", "created_at"})
        # Every copy gets its entry id up front (the entries' own sequence), so each table is one
        # INSERT ... SELECT joined on ids, with no lookup of what another statement returned.
        sql = f"""
WITH k AS (SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:copies AS int[])) k (cid, copies)),
g AS MATERIALIZED (
    SELECT c.id AS charge, c.lane, c.customer_id, c.event_id, c.request_id, c.entry_id, n,
           nextval(pg_get_serial_sequence('journal_entries', 'id')) AS copy
      FROM k JOIN charges c ON c.customer_id = k.cid, generate_series(1, k.copies) n),
je AS (INSERT INTO journal_entries (id, key, {", ".join(entry)})
       SELECT g.copy, j.key || '~' || g.n, {", ".join("j." + c for c in entry)}
         FROM g JOIN journal_entries j ON j.lane = g.lane AND j.id = g.entry_id),
ue AS (INSERT INTO usage_events (event_id, entry_id, {", ".join(event)})
       SELECT g.event_id || '~' || g.n, g.copy, {", ".join("u." + c for c in event)}
         FROM g JOIN usage_events u ON u.lane = g.lane AND u.customer_id = g.customer_id
                                   AND u.event_id = g.event_id),
po AS (INSERT INTO postings (lane, entry_id, account_id, stripe, amount)
       SELECT g.lane, g.copy, p.account_id, p.stripe, p.amount
         FROM g JOIN postings p ON p.lane = g.lane AND p.entry_id = g.entry_id)
INSERT INTO charges (event_id, request_id, entry_id, {", ".join(charge)})
SELECT g.event_id || '~' || g.n, g.request_id || '~' || g.n, g.copy, {", ".join("c." + c for c in charge)}
  FROM g JOIN charges c ON c.lane = g.lane AND c.id = g.charge"""
        multiply = """
UPDATE {table} r SET quantity = r.quantity * (k.copies + 1){amount}
  FROM unnest(CAST(:ids AS text[]), CAST(:copies AS int[])) k (cid, copies) WHERE r.customer_id = k.cid"""
        chunks: list[dict[str, list]] = []
        chunk: list[tuple[str, int]] = []
        work = [(cid, n) for cid, n in zip(ids, copies, strict=True) if n > 0]
        for i, pair in enumerate(work):
            chunk.append(pair)
            if sum(n for _, n in chunk) >= COPIES_PER_STATEMENT or i == len(work) - 1:
                chunks.append({"ids": [c for c, _ in chunk], "copies": [n for _, n in chunk]})
                chunk = []

        def load(params: dict[str, list]) -> None:
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL session_replication_role = replica"))
                conn.execute(text(sql), params)
                conn.execute(text(multiply.format(table="period_rollups",
                                                  amount=", amount = r.amount * (k.copies + 1)")), params)
                conn.execute(text(multiply.format(table="usage_counters", amount="")), params)
                conn.execute(text(multiply.format(table="usage_rollups", amount=(
                    ", amount = r.amount * (k.copies + 1), charges = r.charges * (k.copies + 1)"))), params)

        with engine.begin() as conn:  # the charges and deltas copied are in the rollups, none still queued
            conn.execute(text("SELECT wallets_fold_usage(lane) FROM (SELECT lane FROM usage_unfolded "
                              "UNION SELECT lane FROM period_deltas) l"))
        with ThreadPoolExecutor(COPY_CONNECTIONS) as pool:
            list(pool.map(load, chunks))
        loaded = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text(REPLICA_ROLE))
            conn.execute(text(REBUILD_BALANCES))
        rebuilt = time.perf_counter()
        analyze(engine)
        analyzed = time.perf_counter()
        checks = asyncio.run(_checks(url))
    finally:
        engine.dispose()
    done = time.perf_counter()
    return {"load_s": round(loaded - began, 2), "balances_s": round(rebuilt - loaded, 2),
            "analyze_s": round(analyzed - rebuilt, 2), "verify_s": round(done - analyzed, 2), "checks": checks}


def analyze(engine) -> None:
    """Fresh statistics for every table, as one `ANALYZE` would give, two tables at a time: the
    plain tables and partitions first, then the partitioned parents (ONLY their own statistics
    from PostgreSQL 18 on; before it, ANALYZE of a parent samples its partitions again)."""
    with engine.connect() as conn:
        tables = conn.execute(text("""SELECT format('%I.%I', n.nspname, c.relname), c.relkind = 'p'
                                        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                       WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()""")).all()
        only = "ONLY " if int(conn.execute(text("SHOW server_version_num")).scalar()) >= 180000 else ""

    def run(statement: str) -> None:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(statement))

    with ThreadPoolExecutor(COPY_CONNECTIONS) as pool:
        list(pool.map(run, [f"ANALYZE {name}" for name, parent in tables if not parent]))
        list(pool.map(run, [f"ANALYZE {only}{name}" for name, parent in tables if parent]))


async def _checks(url: str) -> dict[str, bool]:
    db = connect(url, pool_size=1)
    try:
        return await db.read(ledger_checks)
    finally:
        await db.dispose()


async def timed(client: httpx.AsyncClient, path: str, params: dict, requests: int) -> dict:
    times = []
    for n in range(requests + 5):
        began = time.perf_counter()
        answer = await client.get(path, headers=ADMIN, params=params)
        elapsed = (time.perf_counter() - began) * 1000
        if answer.status_code != 200:
            raise SystemExit(f"{path}: {answer.status_code} {answer.text[:300]}")
        if n >= 5:  # the first few warm the caches and the pool
            times.append(elapsed)
    return {"p50_ms": pct(times, 50), "p99_ms": pct(times, 99), "max_ms": round(max(times), 2),
            "p99_ratio_to_goal": ratio(pct(times, 99), READ_GOAL_MS), "last": answer.json()}


def invoices_of(url: str) -> tuple[int, int]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            count, total = conn.execute(text("SELECT count(*), coalesce(sum(total), 0) FROM invoices")).one()
            return int(count), int(total)
    finally:
        engine.dispose()


async def measure(base: str, url: str, server: subprocess.Popen, args: argparse.Namespace) -> dict:
    customers, charges = args.customers, args.total_charges
    big = min(args.big, charges - (customers - 1))
    ids = [f"c{n:05d}" for n in range(customers)]
    per_customer = shares(customers, charges, big)
    now = datetime.now(UTC)
    period = period_of(now, Cycle("UTC", None))
    at = max(period.start, now - timedelta(minutes=1))
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        await wait_ready(client, server)
        began = time.perf_counter()
        seeded = await seed(client, ids, at)
        seeded_s = time.perf_counter() - began
        began = time.perf_counter()
        copied = await asyncio.to_thread(copy_charges, url, ids, [n - 1 for n in per_customer])
        copied_s = time.perf_counter() - began
        if not all(copied["checks"].values()):
            raise SystemExit(f"the bulk-loaded ledger is not whole: {copied['checks']}")
        window = {"from": period.start.isoformat(), "to": period.end.isoformat(), "group_by": "model,token_type"}
        usage = await timed(client, f"/v1/customers/{ids[0]}/usage", window, args.requests)
        upcoming = await timed(client, f"/v1/customers/{ids[0]}/invoices/upcoming", {}, args.requests)
        until = period.end + timedelta(hours=1, seconds=1)
        began = time.perf_counter()
        answer = await client.post("/v1/billing/close", headers=ADMIN, json={"until": until.isoformat(), "early": True},
                                   timeout=3600)
        close_s = time.perf_counter() - began
        if answer.status_code != 200:
            raise SystemExit(f"close: {answer.status_code} {answer.text[:300]}")
    invoices, total = invoices_of(url)
    upcoming_total = upcoming.pop("last")["total"]
    usage_rows = usage.pop("last")["rows"]
    expected = {"invoices": customers, "total_units": charges * CHARGE_UNITS,
                "big_upcoming_total": money(big * CHARGE_UNITS, "USD")}
    found = {"invoices": invoices, "total_units": total, "big_upcoming_total": upcoming_total}
    return {"customers": customers, "charges": charges, "big_customer_charges": big,
            "seed_s": round(seeded_s, 2), "seed": seeded, "copy_s": round(copied_s, 2), "copy": copied,
            "close_s": round(close_s, 2), "close_ratio_to_goal": ratio(close_s, CLOSE_GOAL_S),
            "closed_per_s": round(invoices / close_s, 1) if close_s else 0.0,
            "usage_report": usage, "usage_report_rows": usage_rows, "upcoming_invoice": upcoming,
            "expected": expected, "found": found, "exact": expected == found,
            "load": os.getloadavg(), "cores": os.cpu_count(),
            "goals_met": close_s < CLOSE_GOAL_S and usage["p99_ms"] < READ_GOAL_MS
            and upcoming["p99_ms"] < READ_GOAL_MS}


def main(args: argparse.Namespace, settings: Settings) -> int:
    if args.customers < 2 or args.total_charges < args.customers:
        raise SystemExit("--customers must be at least 2 and --total-charges at least --customers")
    with scratch_server(settings, f"tokentill_invoices_{os.getpid()}") as (url, port, server):
        report = asyncio.run(measure(f"http://127.0.0.1:{port}", url, server, args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"invoices: {report['customers']:,} postpaid customers, {report['charges']:,} usage charges "
              f"(the busiest {report['big_customer_charges']:,}); seeded in {report['seed_s']} s "
              f"(customers {report['seed']['customers_s']} s, events {report['seed']['events_s']} s), "
              f"copied in {report['copy_s']} s; load {report['load'][0]:.2f} on {report['cores']} cores")
        c = report["copy"]
        print(f"  bulk copy: loaded {c['load_s']} s, balances set {c['balances_s']} s, analyzed {c['analyze_s']} s, "
              f"ledger verified "
              f"{c['verify_s']} s ({', '.join(c['checks'])}: all ok)")
        print(f"  close every period      {report['close_s']:>9.2f} s  ({report['closed_per_s']:,} invoices/s)"
              f"  ratio to {CLOSE_GOAL_S:.0f} s goal {report['close_ratio_to_goal']:.3f}")
        for name in ("usage_report", "upcoming_invoice"):
            f = report[name]
            print(f"  {name.replace('_', ' '):<22} p50 {f['p50_ms']:>8.2f} ms  p99 {f['p99_ms']:>8.2f} ms  "
                  f"max {f['max_ms']:>8.2f} ms  p99/goal {f['p99_ratio_to_goal']:.3f}")
        print(f"  invoices {report['found']['invoices']:,} of {report['customers']:,}, sum "
              f"{'equals' if report['exact'] else 'DIFFERS from'} the charges "
              f"(found {report['found']}, expected {report['expected']})")
        print(f"goals (close < {CLOSE_GOAL_S:.0f} s, reads p99 < {READ_GOAL_MS:.0f} ms): "
              f"{'met' if report['goals_met'] else 'NOT met'}")
    return 0 if report["exact"] else 1

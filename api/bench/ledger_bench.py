"""`tokentill bench ledger`: two-leg entries through the ledger's own API, against pgbench.

Case "spread": N concurrent tasks post between random pairs of many accounts.
Case "hot": the same, but every entry credits one single-row account.
Both go through GroupPoster, the ledger's API for standalone posts. Then pgbench's tpcb-like
runs on the same cluster, and the report gives entries/s, tps and their ratios.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import time

from api.bench.common import pgbench_tps, ratio, scratch_database
from api.runtime import open_database, sync_url
from api.settings import Settings
from ledger.accounts import ensure_asset, open_account
from ledger.db import RETRIES, connect
from ledger.model import AccountSpec, AccountType, JournalEntry, Posting
from ledger.posting import GroupPoster, Outcome, resolve_accounts
from migrations import runner

HOT = "liability:bench:hot"


async def _setup(db, accounts: int) -> list[str]:
    codes = [f"asset:bench:{i}" for i in range(accounts)]

    async def work(conn):
        await ensure_asset(conn, "USD", 9)
        await open_account(conn, AccountSpec(HOT, AccountType.LIABILITY, "USD"))
        await conn.exec_driver_sql(
            "INSERT INTO accounts (code, type, asset) SELECT 'asset:bench:' || g, 'asset', 'USD' "
            "FROM generate_series(0, %s) g ON CONFLICT DO NOTHING", (accounts - 1,))

    await db.run(work)
    # Warm the process's account directory (code -> id), as a running service has it.
    await db.read(lambda conn: resolve_accounts(conn, {*codes, HOT}))
    return codes


async def _case(poster: GroupPoster, codes: list[str], *, hot: bool, workers: int,
                seconds: float, tag: str) -> tuple[int, float]:
    counter = itertools.count()
    deadline = time.perf_counter() + seconds
    posted = 0

    async def worker() -> None:
        nonlocal posted
        rng = random.Random()
        while time.perf_counter() < deadline:
            debit = rng.choice(codes)
            credit = HOT if hot else rng.choice(codes)
            if credit == debit:
                continue
            amount = rng.randint(1, 1_000_000)
            entry = JournalEntry(f"{tag}-{next(counter)}", "bench", (
                Posting(debit, amount, "USD"), Posting(credit, -amount, "USD")))
            result = await poster.post(entry)
            if result.outcome is Outcome.POSTED:
                posted += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return posted, time.perf_counter() - start


async def _run_ledger(url: str, args: argparse.Namespace) -> dict:
    db = connect(url, pool_size=4)
    try:
        codes = await _setup(db, args.accounts)
        poster = GroupPoster(db)
        retries_before = sum(s.value for m in RETRIES.collect() for s in m.samples
                             if s.name.endswith("_total"))
        spread = await _case(poster, codes, hot=False, workers=args.workers, seconds=args.seconds,
                             tag="spread")
        hot = await _case(poster, codes, hot=True, workers=args.workers, seconds=args.seconds,
                          tag="hot")
        retries = sum(s.value for m in RETRIES.collect() for s in m.samples
                      if s.name.endswith("_total")) - retries_before
        return {"spread": spread, "hot": hot, "retries": int(retries)}
    finally:
        await db.dispose()


def main(args: argparse.Namespace, settings: Settings) -> int:
    handle = open_database(settings, migrate=False)
    suffix = os.getpid()
    try:
        with scratch_database(handle.url, f"tokentill_bench_{suffix}") as url:
            runner.upgrade(sync_url(url))
            figures = asyncio.run(_run_ledger(url, args))
        with scratch_database(handle.url, f"tokentill_pgbench_{suffix}") as url:
            tps = pgbench_tps(url, seconds=args.seconds, clients=args.pgbench_clients)
    finally:
        handle.close()
    spread_n, spread_s = figures["spread"]
    hot_n, hot_s = figures["hot"]
    report = {
        "workers": args.workers, "accounts": args.accounts, "seconds_per_case": args.seconds,
        "spread_entries_per_s": round(spread_n / spread_s, 1),
        "hot_entries_per_s": round(hot_n / hot_s, 1),
        "pgbench_tpcb_like_tps": round(tps, 1), "pgbench_clients": args.pgbench_clients,
        "serialization_retries": figures["retries"],
    }
    report["spread_ratio"] = ratio(report["spread_entries_per_s"], tps)
    report["hot_ratio"] = ratio(report["hot_entries_per_s"], tps)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"ledger, {args.accounts} accounts, {args.workers} workers: "
              f"{report['spread_entries_per_s']:>9.1f} entries/s  ratio {report['spread_ratio']:.2f} (goal >= 0.8)")
        print(f"ledger, one hot account,  {args.workers} workers: "
              f"{report['hot_entries_per_s']:>9.1f} entries/s  ratio {report['hot_ratio']:.2f} (goal >= 0.3)")
        print(f"pgbench tpcb-like, {args.pgbench_clients} clients:      {tps:>9.1f} tps")
        print(f"serialization retries: {figures['retries']}")
    return 0

"""`tokentill bench budgets`: the two designs of issue 12 for a quota in the reserve path,
measured side by side on one fresh database (one lane), in-process, batch by batch.

Each round posts a batch of 64 reserves (64 customers, each with three budgets: a month of
money, a TPM and an RPM) three ways, interleaved so that the machine's load drifts alike:
  base      the wallet's reserve entries alone (lot -> reserved, 2 postings each);
  ledger    the prototype of budgets as ledger accounts of a non-money asset: each entry also
            moves each budget's allowance to its held account (6 more postings; the allowance
            is a bounded account, so the database refuses a hold past a hard limit);
  counters  the design built: the same entries, plus the budget windows' upsert and the
            reservations' budget rows (tokentill's own write statement and triggers).
It prints the median milliseconds per batch of each and what budgets add per reserve.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from datetime import UTC, datetime

from api.bench.common import scratch_database
from api.runtime import open_database, sync_url
from api.settings import Settings
from ledger.accounts import ensure_asset, open_account
from ledger.db import Database, connect
from ledger.model import AccountSpec, AccountType, JournalEntry, Posting
from ledger.posting import post_entries
from migrations import runner
from wallets import chart, store
from wallets.budgets import BudgetSpec
from wallets.commands import TopUp
from wallets.core.budgets import window_start
from wallets.service import CustomerSpec, WalletService

UNITS = "BUDGETUNIT"  # the non-money asset of the ledger prototype
ISSUER = f"equity:platform:budget-allowance:{UNITS}"
KINDS = (("month", "money"), ("minute", "tokens"), ("minute", "requests"))


def _budget_account(cid: str, k: int, part: str) -> str:
    return f"liability:customer:{cid}:budget:{k}:{part}"


async def _prepare(db: Database, service: WalletService, customers: int) -> tuple[list[str], dict[str, list]]:
    """Funded customers with three budgets each (counters), and the prototype's accounts with
    an allowance granted (ledger)."""
    ids = [f"design-{i}" for i in range(customers)]
    await db.run(lambda conn: ensure_asset(conn, UNITS, 0))
    await db.run(lambda conn: open_account(conn, AccountSpec(ISSUER, AccountType.EQUITY, UNITS, stripes=16)))
    budgets: dict[str, list] = {}
    lots: dict[str, str] = {}
    for cid in ids:
        await service.create_customer(CustomerSpec(cid, cid, "USD", "prepaid", None, 0, None))
        top_up = await service.submit(TopUp(customer_id=cid, amount=10**15))
        lots[cid] = chart.lot_account(cid, top_up.grant.id)
        budgets[cid] = [(await service.budgets.create(BudgetSpec(cid, window, metric, 10**15))).budget
                        for window, metric in KINDS]

        async def accounts(conn, cid=cid) -> None:
            for k in range(len(KINDS)):
                for part in ("allowance", "held"):
                    await open_account(conn, AccountSpec(_budget_account(cid, k, part), AccountType.LIABILITY,
                                                         UNITS, cid, 0))

        await db.run(accounts)
        grant = JournalEntry(f"allowance:{cid}", "budget_allowance", (
            Posting(ISSUER, 3 * 10**15, UNITS),
            *(Posting(_budget_account(cid, k, "allowance"), -(10**15), UNITS) for k in range(len(KINDS)))),
            customer_id=cid)
        await db.run(lambda conn, e=grant: post_entries(conn, [e]))
    return ids, {"lots": [lots[c] for c in ids], "budgets": [budgets[c] for c in ids]}


def _entries(ids: list[str], lots: list[str], tag: str, with_budgets: bool) -> list[JournalEntry]:
    entries = []
    for cid, lot in zip(ids, lots, strict=True):
        legs = [Posting(lot, 1000, "USD"), Posting(chart.reserved_account(cid), -1000, "USD")]
        if with_budgets:
            for k, q in enumerate((1000, 700, 1)):
                legs += [Posting(_budget_account(cid, k, "allowance"), q, UNITS),
                         Posting(_budget_account(cid, k, "held"), -q, UNITS)]
        entries.append(JournalEntry(f"{tag}:{cid}", "reserve", tuple(legs), customer_id=cid))
    return entries


def _counter_rows(ids: list[str], budgets: list[list], tag: str, now: datetime) -> dict[str, list[dict]]:
    windows, holds = [], []
    for cid, own in zip(ids, budgets, strict=True):
        for b, q in zip(own, (1000, 700, 1), strict=True):
            start = window_start(b, now)
            windows.append({"budget_id": b.id, "window_start": start, "used": 0, "held": q})
            holds.append({"reservation_id": f"{tag}:{cid}", "budget_id": b.id, "window_start": start,
                          "metric": b.metric, "held": q, "used": 0})
    return {"budget_windows": windows, "reservation_budgets": holds}


async def _timed(db: Database, ids: list[str], parts: dict[str, list], design: str, tag: str) -> float:
    async def work(conn) -> None:
        token = store.LANE.set(0)
        try:
            await post_entries(conn, _entries(ids, parts["lots"], tag, design == "ledger"))
            if design == "counters":
                await store.write(conn, _counter_rows(ids, parts["budgets"], tag, datetime.now(UTC)))
        finally:
            store.LANE.reset(token)

    t0 = time.perf_counter()
    await db.run(work)
    return (time.perf_counter() - t0) * 1000


async def measure(url: str, rounds: int, customers: int = 64) -> dict[str, float]:
    db = connect(url, pool_size=4)
    try:
        ids, parts = await _prepare(db, WalletService(db), customers)
        times: dict[str, list[float]] = {"base": [], "ledger": [], "counters": []}
        for r in range(rounds):
            for design in (("base", "ledger", "counters") if r % 2 else ("counters", "ledger", "base")):
                times[design].append(await _timed(db, ids, parts, design, f"{design}-{r}"))
        return {design: round(statistics.median(values), 2) for design, values in times.items()}
    finally:
        await db.dispose()


def main(args: argparse.Namespace, settings: Settings) -> int:
    handle = open_database(settings, migrate=False)
    try:
        with scratch_database(handle.url, f"tokentill_budget_design_{os.getpid()}") as url:
            runner.upgrade(sync_url(url), lanes=1)
            figures = measure_sync(url, max(6, int(args.seconds * 3)))
    finally:
        handle.close()
    base = figures["base"]
    print(f"64 reserves a batch, each matching 3 budgets; median ms per batch ({os.getloadavg()[0]:.1f} load):")
    for design in ("base", "ledger", "counters"):
        extra = (figures[design] - base) / 64 * 1000
        print(f"  {design:<9} {figures[design]:8.2f} ms  (+{extra:6.0f} us per reserve over base)")
    return 0


def measure_sync(url: str, rounds: int) -> dict[str, float]:
    return asyncio.run(measure(url, rounds))


# `tokentill bench lifecycle --budgets`: three budgets that match every lifecycle of a wallet
# (issue 12's acceptance 6), with limits no run reaches: every reserve checks and counts all three.
LIFECYCLE_BUDGETS = (
    {"name": "customer month", "window": "month", "metric": "money", "limit": "1000000.00"},
    {"name": "key TPM", "window": "minute", "metric": "tokens", "limit": 10**15, "api_key": "bench"},
    {"name": "model RPM", "window": "minute", "metric": "requests", "limit": 10**12, "model": "any-*"},
)


async def add_lifecycle_budgets(client, wallets: list[str], workers: int) -> None:
    """The three budgets on every wallet of the spread case, through POST /v1/budgets."""
    queue = [(cid, budget) for cid in wallets for budget in LIFECYCLE_BUDGETS]

    async def worker() -> None:
        while queue:
            cid, budget = queue.pop()
            (await client.post("/v1/budgets", json={"customer_id": cid, **budget})).raise_for_status()

    await asyncio.gather(*(worker() for _ in range(min(workers, 16))))

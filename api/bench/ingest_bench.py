"""`tokentill bench ingest`: post-hoc usage through `POST /v1/usage-events` against a real
`tokentill serve`, in batches of 1,000 events, each event rated and posted.

A server runs on a scratch database of the cluster. `--workers` (at most 8) clients send batches
of fresh events, spread over `--wallets` customers, for `--seconds`; the report gives events/s
and the ratio to the goal (20,000 events/s on the 2-core development machine). Then every batch
is sent again, as a client that lost its answers would, and the postings are counted before
and after: a replay must add none.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from api.bench.lifecycle_bench import KEY, Connection, pct, scratch_server, wait_ready
from api.bench.profile import CpuMeter, SpyProfile
from api.runtime import sync_url
from api.settings import Settings
from pricing.errors import wire_time

GOAL = 20_000  # events/s
BATCH = 1000
BOOK = {"id": "ingest", "currency": "USD", "effective_from": "2020-01-01T00:00:00Z", "rules": [
    {"id": "in", "token_type": "input", "price": "1.00"},
    {"id": "out", "token_type": "output", "price": "4.00"},
    {"id": "call", "token_type": "request", "price": "0.001"},
]}


@dataclass
class Sent:
    batches: list[list[dict]] = field(default_factory=list)
    batch_ms: list[float] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: int = 0
    seconds: float = 0.0

    @property
    def events(self) -> int:
        return sum(len(batch) for batch in self.batches)

    def summary(self) -> dict:
        return {"events": self.events, "accepted": self.accepted, "duplicates": self.duplicates,
                "rejected": self.rejected, "errors": self.errors, "seconds": round(self.seconds, 2),
                "events_per_s": round(self.accepted / self.seconds, 1) if self.seconds else 0.0,
                "batch_p50_ms": pct(self.batch_ms, 50), "batch_p99_ms": pct(self.batch_ms, 99)}


def batch_of(start: int, customers: list[str], at: str) -> list[dict]:
    return [{"event_id": f"ev-{n}", "customer_id": customers[n % len(customers)], "model": "any-model",
             "timestamp": at, "usage": {"input_tokens": 100 + n % 900, "output_tokens": n % 500}}
            for n in range(start, start + BATCH)]


async def send(conn: Connection, batch: list[dict], sent: Sent) -> None:
    t0 = time.perf_counter()
    status, body = await conn.post("/v1/usage-events", batch)  # type: ignore[arg-type]
    sent.batch_ms.append((time.perf_counter() - t0) * 1000)
    if status != 200:
        sent.errors += len(batch)
        return
    sent.accepted += body["accepted"]
    sent.duplicates += body["duplicates"]
    sent.rejected += len(body["rejected"])


async def ingest(address: tuple[str, int, str], customers: list[str], *, workers: int, seconds: float) -> Sent:
    """Fresh batches from `workers` clients until `seconds` have passed."""
    sent, counter = Sent(), itertools.count()
    at = wire_time(datetime.now(UTC))
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        conn = Connection(*address)
        try:
            while time.perf_counter() < deadline:
                batch = batch_of(next(counter) * BATCH, customers, at)
                sent.batches.append(batch)
                await send(conn, batch, sent)
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    sent.seconds = time.perf_counter() - start
    return sent


async def replay(address: tuple[str, int, str], batches: list[list[dict]], *, workers: int) -> Sent:
    """The same batches again, as a client that lost its answers would send them."""
    sent, queue = Sent(batches=list(batches)), list(reversed(batches))

    async def worker() -> None:
        conn = Connection(*address)
        try:
            while queue:
                await send(conn, queue.pop(), sent)
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    sent.seconds = time.perf_counter() - start
    return sent


def postmaster(url: str) -> int | None:
    """The pid of the PostgreSQL cluster's postmaster when it runs on this machine (the parent of
    this connection's backend), else None."""
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            backend = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        parent = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return parent if "postgres" in Path(f"/proc/{parent}/comm").read_text() else None
    except OSError:  # the server runs elsewhere
        return None
    finally:
        engine.dispose()


def postings(url: str) -> int:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM postings")).scalar_one())
    finally:
        engine.dispose()


async def setup(client: httpx.AsyncClient, wallets: int) -> tuple[list[str], str]:
    """Postpaid customers on the bench's book, and an inference key's secret."""
    (await client.post("/v1/price-books", json=BOOK)).raise_for_status()
    key = await client.post("/v1/api-keys", json={"scope": "inference", "name": "ingest bench"})
    key.raise_for_status()
    ids = [f"i{n}" for n in range(wallets)]
    queue = list(ids)

    async def worker() -> None:
        while queue:
            (await client.post("/v1/customers", json={"id": queue.pop(), "price_book": BOOK["id"],
                                                      "billing": "postpaid"})).raise_for_status()

    await asyncio.gather(*(worker() for _ in range(8)))
    return ids, key.json()["key"]


async def run_cases(url: str, port: int, server: subprocess.Popen, args: argparse.Namespace) -> dict:
    workers = max(1, min(args.workers, 8))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {KEY}"},
                                 timeout=600) as client:
        await wait_ready(client, server)
        customers, token = await setup(client, args.wallets)
        address = ("127.0.0.1", port, token)
        load_before = os.getloadavg()[0]
        spy = SpyProfile(server.pid, args.seconds, Path(args.profile) / "serve-ingest.txt") if args.profile else None
        try:
            with CpuMeter([server.pid], await asyncio.to_thread(postmaster, url)) as cpu:
                first = await ingest(address, customers, workers=workers, seconds=args.seconds)
            if spy is not None:
                spy.wait()
        finally:
            if spy is not None:
                spy.kill()
        before = await asyncio.to_thread(postings, url)
        again = await replay(address, first.batches, workers=workers)
        after = await asyncio.to_thread(postings, url)
        verify = (await client.post("/v1/audit/verify")).json()
    return {"first": first, "replay": again, "postings_before_replay": before, "postings_after_replay": after,
            "clients": workers, "cpu": cpu.cores, "verify_ok": verify["ok"],
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "profile": spy.summary() if spy is not None else None}


def main(args: argparse.Namespace, settings: Settings) -> int:
    with scratch_server(settings, f"tokentill_ingest_{os.getpid()}") as (url, port, server):
        figures = asyncio.run(run_cases(url, port, server, args))
    report = report_of(figures, args)
    print(json.dumps(report, indent=2) if args.json else text_report(report))
    ok = report["verify_ok"] and report["replay_added_postings"] == 0 and report["replay"]["accepted"] == 0
    return 0 if ok else 1


def report_of(figures: dict, args: argparse.Namespace) -> dict:
    first, again = figures["first"].summary(), figures["replay"].summary()
    return {
        "wallets": args.wallets, "clients": figures["clients"], "batch": BATCH, "seconds": args.seconds,
        "ingest": first, "goal_events_per_s": GOAL, "ratio_to_goal": round(first["events_per_s"] / GOAL, 3),
        "replay": again, "postings_before_replay": figures["postings_before_replay"],
        "postings_after_replay": figures["postings_after_replay"],
        "replay_added_postings": figures["postings_after_replay"] - figures["postings_before_replay"],
        "verify_ok": figures["verify_ok"], "cpu_cores": figures["cpu"], "server_profile": figures["profile"],
        "load_average": figures["load_average"], "server_cpu_us_per_event": server_cpu_per_event(figures),
        "postgres_cpu_us_per_event": server_cpu_per_event(figures, "postgres_cluster"),
    }


def server_cpu_per_event(figures: dict, who: str = "servers") -> float | None:
    """The server's (or PostgreSQL's) CPU time per accepted event while ingesting (its cores ×
    seconds / events), in µs."""
    first, cores = figures["first"], figures["cpu"]
    if not cores or who not in cores or not first.accepted:
        return None
    return round(cores[who] * first.seconds / first.accepted * 1e6, 1)


def text_report(r: dict) -> str:
    from api.bench.lifecycle_bench import profile_lines

    first, again = r["ingest"], r["replay"]
    return "\n".join([
        f"usage events over HTTP, batches of {r['batch']}, {r['clients']} clients, {r['wallets']} customers, "
        f"{r['seconds']}s",
        f"  ingest: {first['events_per_s']:>9.1f} events/s  ratio {r['ratio_to_goal']:.2f} to the goal of "
        f"{r['goal_events_per_s']:,}/s  ({first['accepted']:,} accepted, {first['rejected']} rejected, "
        f"{first['errors']} in failed calls; batch p50 {first['batch_p50_ms']} p99 {first['batch_p99_ms']} ms)",
        f"  replay of the same {again['events']:,} events: {again['accepted']} accepted, "
        f"{again['duplicates']:,} duplicates, in {again['seconds']} s",
        f"  postings: {r['postings_before_replay']:,} before the replay, {r['postings_after_replay']:,} after "
        f"({r['replay_added_postings']} added); audit verify {'ok' if r['verify_ok'] else 'FAILED'}",
        *(["CPU (cores): " + ", ".join(f"{k} {v}" for k, v in r["cpu_cores"].items())] if r["cpu_cores"] else []),
        *([f"  server CPU per event: {r['server_cpu_us_per_event']} µs"] if r["server_cpu_us_per_event"] else []),
        *([f"  PostgreSQL CPU per event: {r['postgres_cpu_us_per_event']} µs (the whole cluster)"]
          if r.get("postgres_cpu_us_per_event") else []),
        f"  load average (1 min): {r['load_average'][0]} at the start, {r['load_average'][1]} at the end",
        *profile_lines(r["server_profile"]),
    ])

"""`tokentill bench console`: how fast the console's customer pages answer for a customer with
many charges this month (issue 16: p95 under 100 ms at 100,000 charges).

A fresh database on the cluster, one `tokentill serve`, a customer whose charges are posted as
usage events (the real path: rated, posted, counted) spread over this month's days so far; then
the admin signs in to the console and each page is fetched `--requests` times, one at a time.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta

import httpx

from api.bench.lifecycle_bench import KEY, pct, scratch_server, wait_ready
from api.settings import Settings

GOAL_MS = 100.0
CUSTOMER = "bench-console"
PAGES = ["/console/customers/{c}", "/console/customers/{c}/usage", "/console/customers/{c}/reservations",
         "/console/customers/{c}/invoices/upcoming"]


async def seed(client: httpx.AsyncClient, charges: int, workers: int) -> float:
    """`charges` usage events for CUSTOMER this month; returns the events per second it took."""
    admin = {"Authorization": f"Bearer {KEY}"}
    await client.post("/v1/price-books", headers=admin, json={
        "id": "bench-console", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
            {"id": f"{m}-{t}", "model": m, "token_type": t, "price": p}
            for m, t, p in (("model-a", "input", "10"), ("model-a", "output", "30"),
                            ("model-b", "input", "2"), ("model-b", "output", "6"))]})
    await client.post("/v1/customers", headers=admin, json={"id": CUSTOMER, "price_book": "bench-console"})
    await client.post(f"/v1/customers/{CUSTOMER}/topups", headers=admin, json={"amount": "1000000.00"})
    now = datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    span = max(1.0, (now - start).total_seconds() - 60)
    batches = [[{"event_id": f"e{n}", "customer_id": CUSTOMER, "model": "model-a" if n % 3 else "model-b",
                 "timestamp": (start + timedelta(seconds=span * n / charges)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "usage": {"input_tokens": 500 + n % 700, "output_tokens": 100 + n % 300}}
                for n in range(i, min(i + 1000, charges))] for i in range(0, charges, 1000)]
    queue = list(reversed(batches))
    began = time.perf_counter()

    async def worker() -> None:
        while queue:
            batch = queue.pop()
            answer = await client.post("/v1/usage-events", headers=admin, json=batch, timeout=600)
            if answer.status_code != 200 or answer.json()["rejected"]:
                raise SystemExit(f"seeding failed: {answer.status_code} {answer.text[:300]}")

    await asyncio.gather(*(worker() for _ in range(workers)))
    return charges / (time.perf_counter() - began)


async def signed_in_cookie(client: httpx.AsyncClient) -> str:
    """The console's session cookies, sent by hand: they are Secure, and this is plain HTTP."""
    form = await client.get("/console/sign-in")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', form.text).group(1)
    visitor = form.cookies.get("tokentill_console")  # the session the token is bound to
    answer = await client.post("/console/sign-in", data={"key": KEY, "_csrf_token": token},
                               headers={"Cookie": f"tokentill_console={visitor}"}, follow_redirects=False)
    if answer.status_code != 303:
        raise SystemExit(f"sign-in failed: {answer.status_code}")
    return f"tokentill_console={answer.cookies.get('tokentill_console')}"


async def measure(base: str, server: subprocess.Popen, args: argparse.Namespace) -> dict:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        await wait_ready(client, server)
        rate = await seed(client, args.charges, args.workers)
        usage = (await client.get(f"/v1/customers/{CUSTOMER}/usage", params={"group_by": "token_type"},
                                  headers={"Authorization": f"Bearer {KEY}"})).json()["rows"]
        # every event has input tokens: the input row counts every charge
        charged = next((r["charges"] for r in usage if r["token_type"] == "input"), 0)
        cookie = await signed_in_cookie(client)
        pages = {}
        for page in PAGES:
            path = page.format(c=CUSTOMER)
            times = []
            for n in range(args.requests + 5):
                began = time.perf_counter()
                answer = await client.get(path, headers={"Cookie": cookie})
                elapsed = (time.perf_counter() - began) * 1000
                if answer.status_code != 200:
                    raise SystemExit(f"{path}: {answer.status_code}")
                if n >= 5:  # the first few warm the caches and the pool
                    times.append(elapsed)
            pages[path] = {"p50_ms": pct(times, 50), "p95_ms": pct(times, 95), "p99_ms": pct(times, 99),
                           "max_ms": round(max(times), 2),
                           "p95_ratio_to_goal": round(pct(times, 95) / GOAL_MS, 3)}
        return {"charges": args.charges, "charges_posted": charged, "seed_events_per_s": round(rate),
                "requests_per_page": args.requests,
                "goal_p95_ms": GOAL_MS, "pages": pages, "load": os.getloadavg(),
                "goal_met": charged == args.charges and all(p["p95_ms"] < GOAL_MS for p in pages.values())}


def main(args: argparse.Namespace, settings: Settings) -> int:
    with scratch_server(settings, f"tokentill_console_{os.getpid()}") as (_, port, server):
        report = asyncio.run(measure(f"http://127.0.0.1:{port}", server, args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"console pages, a customer with {report['charges_posted']:,} charges this month "
              f"(seeded at {report['seed_events_per_s']:,} events/s), {report['requests_per_page']} requests each, "
              f"load {report['load'][0]:.2f}:")
        for path, f in report["pages"].items():
            print(f"  {path:<48} p50 {f['p50_ms']:>8.2f} ms  p95 {f['p95_ms']:>8.2f} ms  p99 {f['p99_ms']:>8.2f} ms"
                  f"  max {f['max_ms']:>8.2f} ms"
                  f"  p95/goal {f['p95_ratio_to_goal']:.3f}")
        print(f"goal p95 < {GOAL_MS:.0f} ms: {'met' if report['goal_met'] else 'NOT met'}")
    return 0 if report["goal_met"] else 1

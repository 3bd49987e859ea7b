"""`tokentill bench faults`: SDK lifecycles through injected faults, then an exact reckoning.

Two `tokentill serve` processes share one embedded PostgreSQL in a throwaway data dir (so the
service's own supervisor is what brings a killed postmaster back). Clients run reserve -> settle
lifecycles through the SDK, each with usage known in advance, while the driver:

1. kills a server with SIGKILL and restarts it on the same port;
2. kills the embedded postmaster with SIGKILL;
3. stops the other server with SIGSTOP for 20 s, then continues it.

It prints the outage of each fault for each server: from the fault to the first success after
the first failure of a probe that writes through the wallet engine every 50 ms (1 s timeout).
Then it checks every lifecycle whose reservation was granted: charged
exactly its expected amount, exactly one final charge, nothing left open; and `verify` is ok.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from api.bench.common import free_port
from api.client import AsyncClient, SettlementSpooled, TokentillError

KEY = "faults-admin-key"
ADMIN = {"Authorization": f"Bearer {KEY}"}
# $1 per million input tokens, $4 per million output tokens, $0.001 per request; at scale 9
# (nano-dollars) a token costs exactly 1,000 and 4,000 atomic units.
BOOK = {"id": "faults", "currency": "USD", "effective_from": "2020-01-01T00:00:00Z", "rules": [
    {"id": "in", "token_type": "input", "price": "1.00"},
    {"id": "out", "token_type": "output", "price": "4.00"},
    {"id": "call", "token_type": "request", "price": "0.001"},
]}
CUSTOMERS = 20
INPUT_UNITS, OUTPUT_UNITS, CALL_UNITS = 1_000, 4_000, 1_000_000


def expected_units(input_tokens: int, output_tokens: int) -> int:
    return input_tokens * INPUT_UNITS + output_tokens * OUTPUT_UNITS + CALL_UNITS


def usage_of(n: int) -> tuple[int, int]:
    """The usage lifecycle n reports: varied, and always under its hold (400 in, 300 out)."""
    return 100 + (n * 37) % 300, 1 + (n * 53) % 300


@dataclass
class Lifecycle:
    customer: str
    request_id: str
    expected: int
    outcome: str = "running"  # settled | failed (reserve|settle): <error>


@dataclass
class Probe:
    """Request outcomes over time for one server: (monotonic time, ok)."""

    name: str
    port: int
    seen: list[tuple[float, bool]] = field(default_factory=list)

    def outage_after(self, t0: float) -> float | None:
        """Seconds from t0 to the first success after the first failure (0 when none failed)."""
        failed_at = next((t for t, ok in self.seen if t >= t0 and not ok), None)
        if failed_at is None:
            return 0.0
        back = next((t for t, ok in self.seen if t > failed_at and ok), None)
        return None if back is None else round(back - t0, 2)


class Cluster:
    """The servers of the run, all on one embedded data dir."""

    def __init__(self, data_dir: Path, servers: int) -> None:
        self.data_dir = data_dir
        self.ports = [free_port() for _ in range(servers)]
        self.procs: list[subprocess.Popen] = [self._start(i) for i in range(servers)]

    def _start(self, i: int) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "TOKENTILL_DATABASE_URL"}
        env.update(TOKENTILL_DATA_DIR=str(self.data_dir), TOKENTILL_ADMIN_KEY=KEY, TOKENTILL_LOG_LEVEL="WARNING",
                   TOKENTILL_SCHEDULER="on" if i == 0 else "off")
        log = open(self.data_dir / f"server-{i}.log", "ab")  # lives as long as the process
        return subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1",
                                 "--port", str(self.ports[i])], env=env, stdout=log, stderr=log)

    def restart(self, i: int) -> None:
        self.procs[i] = self._start(i)

    def base(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def postmaster_pid(self) -> int:
        return int((self.data_dir / "pg" / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_tail(self, i: int) -> str:
        return (self.data_dir / f"server-{i}.log").read_bytes().decode(errors="replace")[-2000:]


async def wait_ready(cluster: Cluster, i: int) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=cluster.base(i), timeout=2) as http:
        while time.monotonic() < deadline:
            if cluster.procs[i].poll() is not None:
                raise SystemExit(f"server {i} exited:\n{cluster.log_tail(i)}")
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"server {i} did not become ready:\n{cluster.log_tail(i)}")


async def setup(base: str) -> str:
    """The price book, the customers (each topped up), and an inference key's secret."""
    async with httpx.AsyncClient(base_url=base, headers=ADMIN, timeout=30) as http:
        (await http.post("/v1/price-books", json=BOOK)).raise_for_status()
        for c in range(CUSTOMERS):
            (await http.post("/v1/customers", json={"id": f"f{c}", "currency": "USD", "price_book": "faults"})
             ).raise_for_status()
            (await http.post(f"/v1/customers/f{c}/topups", json={"amount": "1000.00"})).raise_for_status()
        (await http.post("/v1/customers", json={"id": "probe", "currency": "USD"})).raise_for_status()
        key = await http.post("/v1/api-keys", json={"scope": "inference", "name": "faults"})
        key.raise_for_status()
        return key.json()["key"]


async def probe(p: Probe, stop: asyncio.Event) -> None:
    """A write through the wallet engine (a top-up of one cent to a customer of its own),
    every 50 ms, on fresh connections: it needs the server, the database and the writer."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{p.port}", headers=ADMIN, timeout=1.0,
                                 limits=httpx.Limits(max_keepalive_connections=0)) as http:
        for n in itertools.count():
            if stop.is_set():
                return
            started = time.monotonic()
            try:
                ok = (await http.post("/v1/customers/probe/topups", json={"amount": "0.01"},
                                      headers={"Idempotency-Key": f"probe-{p.name}-{n}"})).status_code == 201
            except httpx.HTTPError:
                ok = False
            p.seen.append((started, ok))
            await asyncio.sleep(max(0.0, 0.05 - (time.monotonic() - started)))


async def lifecycle(tt: AsyncClient, n: int, done: list[Lifecycle]) -> None:
    """One call: reserve (asked again, same request id, until answered), then settle on leaving
    the block. A settle is the SDK's to deliver: any error from it is a failure of the run."""
    customer = f"f{n % CUSTOMERS}"
    input_tokens, output_tokens = usage_of(n)
    life = Lifecycle(customer, f"fault-{n}", expected_units(input_tokens, output_tokens))
    done.append(life)
    deadline = time.monotonic() + 120
    while True:
        entered = False
        try:
            async with tt.reserve(customer, "model-a", request_id=life.request_id, input_tokens=400,
                                  max_output_tokens=300, ttl_seconds=30) as r:
                entered = True
                r.record(input_tokens=input_tokens, output_tokens=output_tokens)
            life.outcome = "settled"
            return
        except SettlementSpooled as exc:  # the SDK gave up on the settle: a failure of the run
            life.outcome = f"failed (settle): {exc}"
            return
        except (TokentillError, httpx.HTTPError) as exc:
            retry = not entered and (isinstance(exc, httpx.HTTPError) or exc.status >= 500)
            if not retry or time.monotonic() > deadline:
                life.outcome = f"failed ({'settle' if entered else 'reserve'}): {type(exc).__name__}: {exc}"
                return
        await asyncio.sleep(0.2)


async def load(bases: list[str], key: str, workers: int, stop: asyncio.Event, done: list[Lifecycle],
               spool: Path) -> None:
    counter = itertools.count()
    clients = [AsyncClient(base, key, spool_dir=spool) for base in bases]

    async def worker(tt: AsyncClient) -> None:
        while not stop.is_set():
            await lifecycle(tt, next(counter), done)

    try:
        await asyncio.gather(*(worker(clients[w % len(clients)]) for w in range(workers)))
    finally:
        for tt in clients:
            await tt.aclose()


async def reckon(base: str, done: list[Lifecycle]) -> dict:
    """Every lifecycle that ran charged exactly its expected amount in one final charge; one whose
    reserve was never answered charged nothing; verify ok."""
    problems: list[str] = []
    async with httpx.AsyncClient(base_url=base, headers=ADMIN, timeout=60) as http:
        for life in done:
            ran = not life.outcome.startswith("failed (reserve)")
            trace = await http.get(f"/v1/audit/charges/{life.request_id}", params={"customer_id": life.customer})
            if trace.status_code == 404 and not ran:
                continue  # never reserved: nothing ran, nothing to bill
            if trace.status_code != 200:
                problems.append(f"{life.request_id}: trace {trace.status_code} {trace.text[:200]}")
                continue
            charges = trace.json()["charges"]
            finals = sum(1 for c in charges if c["final"])
            charged = sum(_units(c["charged"]) for c in charges)
            expected = (life.expected, 1) if ran else (0, 0)
            if (charged, finals) != expected or life.outcome.startswith("failed"):
                problems.append(f"{life.request_id} ({life.outcome}): charged {charged} units in {len(charges)} "
                                f"charge(s), {finals} final; expected {expected[0]} in {expected[1]}")
        verify = await http.post("/v1/audit/verify")
    if verify.status_code != 200:
        return {"problems": problems, "verify_ok": False,
                "failed_checks": [f"verify answered {verify.status_code}: {verify.text[:200]}"]}
    return {"problems": problems, "verify_ok": verify.json()["ok"],
            "failed_checks": [c["name"] for c in verify.json()["checks"] if not c["ok"]]}


def _units(amount: str) -> int:
    whole, _, frac = amount.partition(".")
    return int(whole) * 10**9 + int((frac + "0" * 9)[:9]) if not whole.startswith("-") else -_units(amount[1:])


async def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="tokentill-faults-") as tmp:
        cluster = Cluster(Path(tmp), servers=2)
        try:
            for i in range(2):
                await wait_ready(cluster, i)
            key = await setup(cluster.base(0))
            return await _inject(cluster, key, args)
        finally:
            cluster.stop()


async def _inject(cluster: Cluster, key: str, args: argparse.Namespace) -> dict:
    stop_load, stop_probe = asyncio.Event(), asyncio.Event()
    probes = [Probe(f"server-{i}", port) for i, port in enumerate(cluster.ports)]
    probing = [asyncio.create_task(probe(p, stop_probe)) for p in probes]
    done: list[Lifecycle] = []
    loading = asyncio.create_task(load([cluster.base(0), cluster.base(1)], key, args.workers, stop_load, done,
                                       cluster.data_dir / "spool"))
    settle = args.settle_seconds
    faults: list[dict] = []

    async def settle_then_measure(name: str, t0: float, watch: list[Probe]) -> None:
        await _until_back(watch, t0)
        await asyncio.sleep(settle)
        faults.append({"fault": name, **{f"outage_{p.name}_s": p.outage_after(t0) for p in watch}})

    await asyncio.sleep(settle)
    t0 = time.monotonic()
    cluster.procs[0].kill()
    cluster.procs[0].wait()
    cluster.restart(0)
    await settle_then_measure("server kill -9, restarted at once", t0, [probes[0]])

    t0 = time.monotonic()
    os.kill(cluster.postmaster_pid(), signal.SIGKILL)
    await settle_then_measure("embedded postmaster kill -9", t0, probes)

    t0 = time.monotonic()
    os.kill(cluster.procs[1].pid, signal.SIGSTOP)
    await asyncio.sleep(args.stop_seconds)
    os.kill(cluster.procs[1].pid, signal.SIGCONT)
    await settle_then_measure(f"server SIGSTOP for {args.stop_seconds:g} s", t0, probes)

    stop_load.set()
    await loading
    stop_probe.set()
    await asyncio.gather(*probing)
    reckoning = await reckon(cluster.base(0), done)
    granted = [life for life in done if life.outcome == "settled"]
    return {"lifecycles": len(done), "settled": len(granted),
            "failures": sorted({life.outcome for life in done if life.outcome != "settled"})[:10],
            "faults": faults, **reckoning}


async def _until_back(watch: list[Probe], t0: float) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if all(p.outage_after(t0) is not None and any(t > t0 and ok for t, ok in p.seen) for p in watch):
            return
        await asyncio.sleep(0.1)


def ok(report: dict) -> bool:
    return not report["problems"] and report["verify_ok"] and report["settled"] > 0 and all(
        value is not None for f in report["faults"] for value in f.values())


def text_report(report: dict) -> str:
    lines = [f"lifecycles: {report['lifecycles']} started, {report['settled']} settled through the SDK"]
    for f in report["faults"]:
        outages = ", ".join(f"{k.removeprefix('outage_').removesuffix('_s')} {v} s" for k, v in f.items()
                            if k != "fault")
        lines.append(f"  fault: {f['fault']:<38} outage: {outages}")
    lines.append(f"charged exactly once with the expected amount: "
                 f"{'all' if not report['problems'] else str(len(report['problems'])) + ' FAILED'}")
    lines.extend(f"  {p}" for p in report["problems"][:20])
    if report["failures"]:
        lines.append("lifecycles that ended in an error: " + "; ".join(report["failures"]))
    postmaster = next((f for f in report["faults"] if "postmaster" in f["fault"]), None)
    if postmaster is not None:
        worst = max((v for k, v in postmaster.items() if k != "fault" and v is not None), default=None)
        lines.append(f"postmaster outage (goal under 5 s): {worst} s")
    lines.append(f"verify: {'ok' if report['verify_ok'] else 'FAILED ' + ', '.join(report['failed_checks'])}")
    lines.append("result: " + ("ok" if ok(report) else "FAILED"))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    report = asyncio.run(run(args))
    print(json.dumps(report, indent=2) if args.json else text_report(report))
    return 0 if ok(report) else 1

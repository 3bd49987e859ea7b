"""`tokentill bench lifecycle`: reserve -> settle over HTTP against a real `tokentill serve`.

A server process runs on a scratch database of the cluster. Case "spread": `--workers` clients
run lifecycles on random wallets among `--wallets`. Case "hot": the same clients on one wallet.
Case "half load": an open-loop arrival rate of half the spread peak, where the reserve p99 is
measured. Then pgbench's tpcb-like runs on the same cluster, and the report gives lifecycles/s,
latencies and the ratios to pgbench's tps. After the setup and a 2 s warm-up the database is
analyzed (`analyze`), as pgbench's own tables are.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from sqlalchemy import create_engine, text

from api.background import PATH as SETTLEMENTS_PATH
from api.background import BackgroundSettler
from api.bench.budget_bench import add_lifecycle_budgets
from api.bench.common import at_a_fixed_rate, free_port, pgbench_tps, ratio, scratch_database
from api.bench.profile import CpuMeter, SpyProfile, require_py_spy
from api.delivery import DURABLE_RETRY, RetryPolicy
from api.runtime import connections_limit, largest_pool, open_database, sync_url
from api.settings import Settings
from api.spool import Spool, SpoolRecord
from migrations import runner

KEY = "bench-admin-key"  # sets up the run; lifecycles use an inference key, as inference services do
BOOK = {"id": "bench", "currency": "USD", "effective_from": "2020-01-01T00:00:00Z", "rules": [
    {"id": "in", "token_type": "input", "price": "1.00"},
    {"id": "out", "token_type": "output", "price": "4.00"},
]}


@dataclass
class Samples:
    reserve_ms: list[float] = field(default_factory=list)
    settle_ms: list[float] = field(default_factory=list)
    lifecycles: int = 0
    refused: int = 0
    errors: int = 0
    seconds: float = 0.0

    def rate(self) -> float:
        return round(self.lifecycles / self.seconds, 1) if self.seconds else 0.0

    def summary(self) -> dict[str, float]:
        return {"lifecycles_per_s": self.rate(), "lifecycles": self.lifecycles, "refused": self.refused,
                "errors": self.errors, "reserve_p50_ms": pct(self.reserve_ms, 50),
                "reserve_p99_ms": pct(self.reserve_ms, 99), "settle_p50_ms": pct(self.settle_ms, 50),
                "settle_p99_ms": pct(self.settle_ms, 99)}


class Connection:
    """A minimal keep-alive HTTP/1.1 JSON client, one per simulated caller. httpx's connection
    pool costs more CPU than the server under test once it holds dozens of connections (about
    220 requests/s at 64 connections here), so the load is generated with this instead."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict) -> tuple[int, dict]:
        reused = self._writer is not None
        try:
            return await self._post(path, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            if not reused:
                raise
            self._writer = None  # the server closed an idle keep-alive connection: send it again
            return await self._post(path, body)

    async def _post(self, path: str, body: dict) -> tuple[int, dict]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        payload = json.dumps(body, separators=(",", ":")).encode()
        self._writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
        assert self._reader is not None
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
        return status, json.loads(await self._reader.readexactly(length)) if length else {}

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def pct(values: list[float], p: int) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, (len(ordered) * p) // 100)], 2)


def servers_pool(url: str, settings: Settings, *, servers: int, workers: int) -> int:
    """The TOKENTILL_POOL_SIZE of `servers` servers of `workers` processes each on `url`'s database:
    the one asked, or the largest with which all of them fit together in the connections the
    database allows (each `serve` checks its own processes only, and the embedded cluster's 97 take
    one `serve --workers 4` at the default pool of 10 no more: README, Several processes)."""
    limit, reserved = connections_limit(url)
    return max(1, min(settings.pool_size, largest_pool(limit - reserved, settings, processes=servers * workers)))


def start_server(url: str, port: int, workers: int = 1, command: tuple[str, ...] = ("serve",),
                 pool_size: int | None = None) -> subprocess.Popen:
    """`tokentill serve` (or `command`) on `port`; with `workers` > 1, one `serve --workers` (api/workers.py);
    `pool_size`: its TOKENTILL_POOL_SIZE (else the environment's)."""
    env = {**os.environ, "TOKENTILL_DATABASE_URL": url, "TOKENTILL_ADMIN_KEY": KEY,
           "TOKENTILL_LOG_LEVEL": "WARNING", "TOKENTILL_SCHEDULER": "off"}
    if pool_size is not None:
        env["TOKENTILL_POOL_SIZE"] = str(pool_size)
    env.pop("TOKENTILL_WORKERS", None)
    log = tempfile.TemporaryFile()  # a pipe nobody reads would fill up and stall the server
    server = subprocess.Popen([sys.executable, "-m", "api.cli", *command, "--host", "127.0.0.1", "--port",
                               str(port), "--workers", str(workers)], env=env, stdout=subprocess.DEVNULL,
                              stderr=log)
    server.log = log  # type: ignore[attr-defined]
    return server


def server_log(server: subprocess.Popen) -> str:
    log = server.log  # type: ignore[attr-defined]
    log.seek(0)
    return log.read().decode(errors="replace")[-3000:]


@contextmanager
def scratch_server(settings: Settings, name: str) -> Iterator[tuple[str, int, subprocess.Popen]]:
    """A fresh, migrated scratch database `name` on the settings' cluster and one `tokentill serve`
    on it: (database URL, port, server). On a failure the server's log tail goes to stderr; the
    server is stopped and the database dropped afterwards."""
    handle = open_database(settings, migrate=False)
    try:
        with scratch_database(handle.url, name) as url:
            runner.upgrade(sync_url(url))
            port = free_port()
            with running(start_server(url, port), "serve") as server:
                yield url, port, server
    finally:
        handle.close()


@contextmanager
def running(server: subprocess.Popen, name: str) -> Iterator[subprocess.Popen]:
    """`server` until the block ends, then stopped (SIGTERM, killed after 30 s); on a failure in
    the block, its log tail goes to stderr first."""
    try:
        yield server
    except BaseException:
        print(f"--- tokentill {name} log (tail):\n{server_log(server)}", file=sys.stderr)
        raise
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


async def wait_ready(client: httpx.AsyncClient, server: subprocess.Popen, base: str = "") -> None:
    for _ in range(600):
        if server.poll() is not None:
            raise SystemExit(f"tokentill serve exited: {server_log(server)}")
        try:
            if (await client.get(f"{base}/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("tokentill serve did not become ready")


async def setup(client: httpx.AsyncClient, wallets: int, workers: int) -> tuple[list[str], str]:
    """The wallets, and the secret of the inference key the lifecycles authenticate with."""
    (await client.post("/v1/price-books", json=BOOK)).raise_for_status()
    key = await client.post("/v1/api-keys", json={"scope": "inference", "name": "bench"})
    key.raise_for_status()
    ids = [f"w{i}" for i in range(wallets)] + ["hot"]
    queue = list(ids)

    async def worker() -> None:
        while queue:
            cid = queue.pop()
            (await client.post("/v1/customers", json={"id": cid, "price_book": "bench"})).raise_for_status()
            amount = "1000000.00" if cid == "hot" else "10000.00"
            (await client.post(f"/v1/customers/{cid}/topups", json={"amount": amount})).raise_for_status()

    await asyncio.gather(*(worker() for _ in range(min(workers, 32))))
    return ids[:-1], key.json()["key"]


async def reserve(conn: Connection, cid: str, request_id: str, samples: Samples, rng: random.Random) -> str | None:
    """A reserve, timed; the reservation's id, or None when refused (counted)."""
    t0 = time.perf_counter()
    status, body = await conn.post("/v1/reservations", {
        "customer_id": cid, "request_id": request_id, "model": "any-model", "dimensions": {"api_key": "bench"},
        "estimate": {"input_tokens": rng.randint(100, 4000), "max_output_tokens": 1000}})
    if status == 402:
        samples.refused += 1
        return None
    if status != 201:
        samples.errors += 1
        return None
    samples.reserve_ms.append((time.perf_counter() - t0) * 1000)
    return body["id"]


def settle_body(rng: random.Random) -> dict:
    return {"usage": {"input_tokens": rng.randint(100, 4000), "output_tokens": rng.randint(0, 1000)}}


async def lifecycle(conn: Connection, cid: str, request_id: str, samples: Samples) -> None:
    rng = random.Random()
    reservation_id = await reserve(conn, cid, request_id, samples, rng)
    if reservation_id is None:
        return
    t1 = time.perf_counter()
    status, _ = await conn.post(f"/v1/reservations/{reservation_id}/settle", settle_body(rng))
    samples.settle_ms.append((time.perf_counter() - t1) * 1000)
    if status == 200:
        samples.lifecycles += 1
    else:
        samples.errors += 1


async def closed_loop(addresses: list[tuple[str, int, str]], wallets: list[str], *, workers: int, seconds: float,
                      tag: str) -> Samples:
    samples, counter = Samples(), itertools.count()
    deadline = time.perf_counter() + seconds

    async def worker(address: tuple[str, int]) -> None:
        conn = Connection(*address)
        try:
            while time.perf_counter() < deadline:
                await lifecycle(conn, random.choice(wallets), f"{tag}-{next(counter)}", samples)
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(addresses[i % len(addresses)]) for i in range(workers)))
    samples.seconds = time.perf_counter() - start
    return samples


async def background_loop(addresses: list[tuple[str, int, str]], wallets: list[str], *, workers: int,
                          seconds: float, tag: str) -> Samples:
    """The spread case with background settles, as `AsyncClient(background_settle=True)` makes
    them: the reserve waits for its answer; the settle is queued in a spool (fsynced) and sent in
    bulk through POST /v1/settlements. A lifecycle counts once its settle is answered, and the case
    lasts until the queue is (settle_ms: the time a block's exit waits, for the queue's fsync)."""
    samples, counter = Samples(), itertools.count()
    host, port, token = addresses[0]
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", headers={"Authorization": f"Bearer {token}"},
                                 timeout=60) as http:
        async def send(items: list[dict]) -> httpx.Response:
            response = await http.post(SETTLEMENTS_PATH, json=items)
            for result in response.json()["results"] if response.status_code == 200 else ():
                samples.lifecycles += result["status"] == 200
                samples.errors += result["status"] >= 300 and result["status"] not in DURABLE_RETRY
            return response

        with tempfile.TemporaryDirectory(prefix="tokentill-bench-spool-") as spool_dir:
            settler = BackgroundSettler(Spool(Path(spool_dir) / "bench.jsonl"), send, RetryPolicy())
            deadline = time.perf_counter() + seconds

            async def worker(address: tuple[str, int, str]) -> None:
                conn, rng = Connection(*address), random.Random()
                try:
                    while time.perf_counter() < deadline:
                        reservation_id = await reserve(conn, random.choice(wallets), f"{tag}-{next(counter)}",
                                                       samples, rng)
                        if reservation_id is not None:
                            path = f"/v1/reservations/{reservation_id}/settle"
                            t1 = time.perf_counter()
                            await settler.put(SpoolRecord("POST", path, {**settle_body(rng), "final": True},
                                                          f"{reservation_id}:settle:0", reservation_id, ""))
                            samples.settle_ms.append((time.perf_counter() - t1) * 1000)
                finally:
                    await conn.close()

            start = time.perf_counter()
            await asyncio.gather(*(worker(addresses[i % len(addresses)]) for i in range(workers)))
            samples.errors += await settler.drain(120.0)
            samples.seconds = time.perf_counter() - start
    return samples


async def open_loop(addresses: list[tuple[str, int, str]], wallets: list[str], *, rate: float, seconds: float,
                    tag: str) -> Samples:
    """Lifecycles started at a fixed arrival rate, whatever the latency (no coordinated omission);
    each in flight uses an idle connection, or opens one."""
    samples = Samples()
    idle: dict[tuple[str, int, str], list[Connection]] = {address: [] for address in addresses}

    async def one(n: int) -> None:
        address = addresses[n % len(addresses)]
        conn = idle[address].pop() if idle[address] else Connection(*address)
        await lifecycle(conn, random.choice(wallets), f"{tag}-{n}", samples)
        idle[address].append(conn)

    samples.seconds = await at_a_fixed_rate(one, rate=rate, seconds=seconds)
    for conns in idle.values():
        for conn in conns:
            await conn.close()
    return samples


async def server_counter(client: httpx.AsyncClient, name: str, ports: list[int]) -> float:
    """`name` summed over the servers (each sums its own workers')."""
    total = 0.0
    for port in ports:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        total += sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith(name) and not line.startswith("#"))
    return total


async def batch_phases(client: httpx.AsyncClient, ports: list[int]) -> dict[str, tuple[float, float]]:
    """tokentill_wallet_batch_phase_seconds summed over the servers: phase -> (sum s, count)."""
    found: dict[str, list[float]] = {}
    for port in ports:
        for line in (await client.get(f"http://127.0.0.1:{port}/metrics")).text.splitlines():
            for part in ("_sum", "_count"):
                if line.startswith(f"tokentill_wallet_batch_phase_seconds{part}{{"):
                    phase = line.split('phase="', 1)[1].split('"', 1)[0]
                    found.setdefault(phase, [0.0, 0.0])[part == "_count"] += float(line.rsplit(" ", 1)[1])
    return {phase: (total, count) for phase, (total, count) in found.items()}


def phase_means(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean ms per phase between two readings (queued: per command; the others: per batch)."""
    means = {}
    for phase, (total, count) in after.items():
        total0, count0 = before.get(phase, (0.0, 0.0))
        if count > count0:
            means[phase] = round((total - total0) / (count - count0) * 1000, 2)
    return means


def serving_pids(servers: list[subprocess.Popen]) -> list[int]:
    """The processes that serve: each server's workers under `serve --workers`, else itself."""
    pids = []
    for server in servers:
        workers = [child.pid for child in psutil.Process(server.pid).children()
                   if "spawn_main" in " ".join(child.cmdline())]
        pids.extend(workers or [server.pid])
    return pids


def analyze(url: str) -> None:
    """ANALYZE the bench's database, as autovacuum would within its first minute in service (and
    as `pgbench -i` does for the tables it is compared with). Without statistics PostgreSQL takes a
    lane's rows for 0.5 % of its partition, and the generic plans the servers cache then read
    whole lanes: the per-statement entry check read every posting of the lane, twice a batch
    (auto_explain, PostgreSQL 15); ANALYZE replaces those plans."""
    engine = create_engine(sync_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()


async def run_cases(ports: list[int], args: argparse.Namespace, servers: list[subprocess.Popen],
                    url: str | None = None) -> dict:
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}", headers={"Authorization": f"Bearer {KEY}"},
                                 limits=limits, timeout=60) as client:
        for port, server in zip(ports, servers, strict=True):
            await wait_ready(client, server, f"http://127.0.0.1:{port}")
        wallets, token = await setup(client, args.wallets, args.workers)
        address = [("127.0.0.1", port, token) for port in ports]
        await closed_loop(address, wallets, workers=args.workers, seconds=min(2.0, args.seconds), tag="warm")
        if url is not None:  # every table has rows now: reservations, charges, answers kept
            await asyncio.to_thread(analyze, url)
        retries0 = await server_counter(client, "tokentill_transaction_retries_total", ports)
        pids = serving_pids(servers)
        spy = SpyProfile(pids[0], args.seconds, Path(args.profile) / "serve-spread.txt") if args.profile else None
        try:
            with CpuMeter(pids) as spread_cpu:
                spread = await closed_loop(address, wallets, workers=args.workers, seconds=args.seconds,
                                           tag="spread")
            if spy is not None:
                spy.wait()
        finally:
            if spy is not None:
                spy.kill()  # a case that failed leaves no profiler behind
        budgeted = None
        if getattr(args, "budgets", False):  # the same case again, each lifecycle matching three budgets
            await add_lifecycle_budgets(client, wallets, args.workers)
            budgeted = await closed_loop(address, wallets, workers=args.workers, seconds=args.seconds,
                                         tag="budgets")
        with CpuMeter(pids) as background_cpu:
            background = await background_loop(address, wallets, workers=args.workers, seconds=args.seconds,
                                               tag="background")
        with CpuMeter(pids) as hot_cpu:
            hot = await closed_loop(address, ["hot"], workers=args.workers, seconds=args.seconds, tag="hot")
        phases0 = await batch_phases(client, ports)
        half = await open_loop(address, wallets, rate=max(1.0, spread.rate() / 2), seconds=args.seconds,
                               tag="half")
        half_phases = phase_means(phases0, await batch_phases(client, ports))
        retries = await server_counter(client, "tokentill_transaction_retries_total", ports) - retries0
        verify = (await client.post("/v1/audit/verify", timeout=600)).json()
    return {"spread": spread, "hot": hot, "half": half, "background": background, "retries": int(retries),
            "verify_ok": verify["ok"],
            "cpu": {"spread": spread_cpu.cores, "background": background_cpu.cores, "hot": hot_cpu.cores},
            "server_cpu_us": {"spread": per_lifecycle_us(spread_cpu, spread), "hot": per_lifecycle_us(hot_cpu, hot)},
            "profile": spy.summary() if spy is not None else None, "budgets": budgeted,
            "half_phases": half_phases}


def per_lifecycle_us(cpu: CpuMeter, samples: Samples) -> float:
    """The servers' CPU time per lifecycle answered (reserve and settle), in microseconds."""
    return round(cpu.server_seconds / samples.lifecycles * 1e6) if samples.lifecycles else 0.0


def main(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "profile", None):
        require_py_spy()  # before the cluster, the servers and the wallets, not at the spread case
    if getattr(args, "scaling", False):
        return scaling(args, settings)
    handle = open_database(settings, migrate=False)
    try:
        figures = _cases_on_fresh_database(handle.url, args, getattr(args, "lanes", None), args.servers)
        with scratch_database(handle.url, f"tokentill_pgbench_{os.getpid()}") as url:
            tps = pgbench_tps(url, seconds=args.seconds, clients=args.pgbench_clients)
    finally:
        handle.close()
    report = report_of(figures, tps, args)
    print(json.dumps(report, indent=2) if args.json else text_report(report))
    return 0 if report["verify_ok"] else 1


def _cases_on_fresh_database(server_url: str, args: argparse.Namespace, lanes: int | None, servers: int) -> dict:
    """Every case against `servers` fresh servers on a fresh database of `lanes` lanes."""
    with scratch_database(server_url, f"tokentill_lifecycle_{os.getpid()}") as url:
        runner.upgrade(sync_url(url), lanes=lanes)
        ports = [free_port() for _ in range(max(1, servers))]
        workers = max(1, args.workers_per_server)
        pool = servers_pool(url, Settings.from_env(), servers=len(ports), workers=workers)
        procs = [start_server(url, port, workers, pool_size=pool) for port in ports]
        try:
            return asyncio.run(run_cases(ports, args, procs, url))
        except BaseException:
            for proc in procs:
                print(f"--- tokentill serve log (tail):\n{server_log(proc)}", file=sys.stderr)
            raise
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


SCALING_LANES, SCALING_SERVERS = (1, 2, 4, 16), (1, 2)


def scaling(args: argparse.Namespace, settings: Settings) -> int:
    """`--scaling`: every case for lanes 1/2/4/16 x servers 1/2, each on a fresh database, then
    pgbench once; one row per pair (the ratios share that pgbench figure)."""
    handle = open_database(settings, migrate=False)
    rows = []
    try:
        for lanes in SCALING_LANES:
            for servers in SCALING_SERVERS:
                rows.append((lanes, servers, _cases_on_fresh_database(handle.url, args, lanes, servers)))
        with scratch_database(handle.url, f"tokentill_pgbench_{os.getpid()}") as url:
            tps = pgbench_tps(url, seconds=args.seconds, clients=args.pgbench_clients)
    finally:
        handle.close()
    table = [{**{k: v for k, v in report_of(figures, tps, args).items()
                 if k not in ("cpu_cores", "server_cpu_us_per_lifecycle", "server_profile")},
              "lanes": lanes, "servers": servers} for lanes, servers, figures in rows]
    if args.json:
        print(json.dumps({"pgbench_tpcb_like_tps": round(tps, 1), "rows": table}, indent=2))
    else:
        print(f"lifecycles over HTTP, {args.workers} clients, {args.seconds}s per case; "
              f"pgbench tpcb-like {tps:.0f} tps (8 clients)")
        print(f"lanes servers | {args.wallets} wallets/s (x pgbench) | hot wallet/s (x pgbench) | reserve p50/p99 ms "
              "| half-load reserve p99 ms | retries")
        for r in table:
            s, h = r["spread"], r["hot"]
            print(f"{r['lanes']:>5} {r['servers']:>7} | {s['lifecycles_per_s']:>9.1f} ({r['spread_ratio']:.2f}) "
                  f"| {h['lifecycles_per_s']:>9.1f} ({r['hot_ratio']:.2f}) "
                  f"| {s['reserve_p50_ms']:.1f}/{s['reserve_p99_ms']:.1f} | {r['half_load_reserve_p99_ms']:.1f} "
                  f"| {r['serialization_retries']}")
    return 0 if all(r["verify_ok"] for r in table) else 1


def report_of(figures: dict, tps: float, args: argparse.Namespace) -> dict:
    spread, hot, half = figures["spread"], figures["hot"], figures["half"]
    return {
        "wallets": args.wallets, "clients": args.workers, "servers": args.servers,
        "workers_per_server": args.workers_per_server,
        "seconds_per_case": args.seconds,
        "spread": spread.summary(), "hot": hot.summary(), "half_load": half.summary(),
        "pgbench_tpcb_like_tps": round(tps, 1), "pgbench_clients": args.pgbench_clients,
        "spread_ratio": ratio(spread.rate(), tps), "hot_ratio": ratio(hot.rate(), tps),
        "background_settles": figures["background"].summary(),
        "background_ratio": ratio(figures["background"].rate(), tps),
        "half_load_reserve_p99_ms": pct(half.reserve_ms, 99),
        "half_load_phases_ms": figures.get("half_phases", {}),
        "serialization_retries": figures["retries"], "verify_ok": figures["verify_ok"],
        "cpu_cores": figures["cpu"], "server_cpu_us_per_lifecycle": figures.get("server_cpu_us", {}),
        "server_profile": figures["profile"],
        **({"budgets": figures["budgets"].summary(),
            "budgets_ratio_to_without": ratio(figures["budgets"].rate(), spread.rate())}
           if figures.get("budgets") else {}),
    }


def text_report(r: dict) -> str:
    s, h, half, b = r["spread"], r["hot"], r["half_load"], r["background_settles"]
    return "\n".join([
        f"lifecycles over HTTP (reserve -> settle), {r['clients']} clients, {r['servers']} server(s) "
        f"of {r['workers_per_server']} process(es), "
        f"{r['seconds_per_case']}s per case",
        f"  {r['wallets']} wallets: {s['lifecycles_per_s']:>8.1f}/s  ratio {r['spread_ratio']:.2f} (goal >= 0.5)"
        f"  reserve p50 {s['reserve_p50_ms']} p99 {s['reserve_p99_ms']} ms"
        f"  settle p50 {s['settle_p50_ms']} p99 {s['settle_p99_ms']} ms",
        f"  {r['wallets']} wallets, settles in the background (POST /v1/settlements): "
        f"{b['lifecycles_per_s']:.1f}/s  ratio {r['background_ratio']:.2f}"
        f"  reserve p50 {b['reserve_p50_ms']} p99 {b['reserve_p99_ms']} ms"
        f"  exit waits p50 {b['settle_p50_ms']} p99 {b['settle_p99_ms']} ms",
        f"  one hot wallet: {h['lifecycles_per_s']:>6.1f}/s  ratio {r['hot_ratio']:.2f} (goal >= 0.25)"
        f"  reserve p50 {h['reserve_p50_ms']} p99 {h['reserve_p99_ms']} ms"
        f"  settle p50 {h['settle_p50_ms']} p99 {h['settle_p99_ms']} ms",
        f"  half load ({half['lifecycles_per_s']}/s offered): reserve p99 {r['half_load_reserve_p99_ms']} ms"
        " (goal <= 20)",
        *phase_lines(r.get("half_load_phases_ms")),
        f"pgbench tpcb-like, {r['pgbench_clients']} clients: {r['pgbench_tpcb_like_tps']:.1f} tps",
        f"serialization retries: {r['serialization_retries']}; refused {s['refused'] + h['refused']}, "
        f"errors {s['errors'] + h['errors'] + half['errors'] + b['errors']}; audit verify "
        f"{'ok' if r['verify_ok'] else 'FAILED'}",
        *(f"server CPU per lifecycle, {case} case: {us:.0f} us"
          for case, us in r["server_cpu_us_per_lifecycle"].items()),
        *(f"CPU, {case} case (cores): " + ", ".join(f"{k} {v}" for k, v in cores.items())
          for case, cores in r["cpu_cores"].items() if cores),
        *budget_lines(r),
        *profile_lines(r["server_profile"]),
    ])


def phase_lines(phases: dict | None) -> list[str]:
    if not phases:
        return []
    return ["  half load, where the time goes (mean ms; queued: per command, from submit to its batch; the rest "
            "per batch): " + ", ".join(f"{k} {v}" for k, v in phases.items())]


def budget_lines(r: dict) -> list[str]:
    if "budgets" not in r:
        return []
    b = r["budgets"]
    return [f"  {r['wallets']} wallets, 3 matching budgets each (customer month, key TPM, model RPM): "
            f"{b['lifecycles_per_s']:.1f}/s against {r['spread']['lifecycles_per_s']:.1f}/s without: "
            f"{r['budgets_ratio_to_without']:.2f} (goal >= 0.8)  reserve p50 {b['reserve_p50_ms']} "
            f"p99 {b['reserve_p99_ms']} ms; refused {b['refused']}, errors {b['errors']}"]


def profile_lines(profile: dict | None) -> list[str]:
    if not profile:
        return []
    return [f"server profile, spread case ({profile['samples']} py-spy samples, raw stacks in {profile['file']}):",
            *(f"  {share:5.1f}%  {layer}" for layer, share in profile["percent_by_layer"].items()),
            "  most own time:", *(f"  {share:5.1f}%  {name}" for name, share in profile["top_own_time"])]

"""`tokentill bench gateway`: the metering gateway's added latency against a zero-latency upstream.

A fake OpenAI upstream (api.bench.fake_upstream, a process of its own) and a real `tokentill
gateway` on a scratch database. Case "peak": `--workers` clients call non-streamed chat
completions through the gateway in a closed loop. Then, at half of that rate (open loop, so a
slow answer never delays the next call): the same calls straight to the upstream and through the
gateway, whose difference per percentile is the added latency; the gateway's Server-Timing
header splits out the ledger's part (the reserve before the call; the settle after it: spooled
and waited for, or with TOKENTILL_GATEWAY_SETTLE=background spooled only). Last,
streamed calls at the same rate: the time to the first streamed byte, straight and through the
gateway, against the reserve. Every charge is checked against the price book, from its trace
once its settle has landed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal

import httpx

from api.bench import fake_upstream as fake
from api.bench.common import at_a_fixed_rate, free_port, scratch_database
from api.bench.lifecycle_bench import KEY, batch_phases, pct, phase_means, running, start_server, wait_ready
from api.bench.profile import CpuMeter
from api.runtime import open_database, sync_url
from api.settings import Settings
from migrations import runner

BOOK = {"id": "bench-gw", "currency": "USD", "effective_from": "2020-01-01T00:00:00Z", "rules": [
    {"id": "in", "token_type": "input", "price": "1.00"}, {"id": "out", "token_type": "output", "price": "4.00"}]}
# The fake's usage: 1,000 prompt tokens (200 cached, priced as input here) and 40 output tokens.
CHARGE = (Decimal(fake.CHAT_USAGE["prompt_tokens"]) * 1 + fake.OUTPUT_TOKENS * 4) / 1_000_000
CUSTOMERS = 64
PATH = "/chat/completions"
GOALS = {"added_p50_ms": 2.0, "added_p99_ms": 10.0}
CASES = ("peak", "direct", "through", "direct_stream", "through_stream")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    first_byte_s: float
    total_s: float

    def timing(self, name: str) -> float:
        """A Server-Timing duration, in ms (0 when absent)."""
        for part in self.headers.get("server-timing", "").split(","):
            metric, _, dur = part.strip().partition(";dur=")
            if metric == name:
                return float(dur)  # a duration for the report, never money
        return 0.0


class Caller:
    """A keep-alive HTTP/1.1 client (httpx's pool costs more CPU than what is measured here) that
    times the first byte of the body as well as the whole answer, chunked streams included."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: bytes, extra: str = "") -> Answer:
        reused = self.writer is not None
        try:
            return await self._post(path, payload, extra)
        except (asyncio.IncompleteReadError, ConnectionError):
            if not reused:
                raise
            self.writer = None  # the server closed an idle keep-alive connection: send it again
            return await self._post(path, payload, extra)

    async def _post(self, path: str, payload: bytes, extra: str) -> Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        started = time.perf_counter()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.head}{extra}Content-Type: "
                          f"application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        first = await self._body(headers)
        return Answer(int(lines[0].split(" ", 2)[1]), headers, (first or time.perf_counter()) - started,
                      time.perf_counter() - started)

    async def _body(self, headers: dict[str, str]) -> float | None:
        assert self.reader is not None
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
            return None
        first = None
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            await self.reader.readexactly(size + 2)
            if size == 0:
                return first
            first = first or time.perf_counter()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Run:
    answers: list[Answer] = field(default_factory=list)
    failed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)  # of the failed calls
    seconds: float = 0.0

    def add(self, answer: Answer) -> None:
        if answer.status == 200:
            self.answers.append(answer)
        else:
            self.failed += 1
            self.statuses[answer.status] = self.statuses.get(answer.status, 0) + 1

    def rate(self) -> float:
        return round(len(self.answers) / self.seconds, 1) if self.seconds else 0.0


def call_body(stream: bool) -> bytes:
    body = {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}
    return json.dumps({**body, "stream": True} if stream else body).encode()


async def closed_loop(port: int, headers: dict[str, str], path: str, *, workers: int, seconds: float) -> Run:
    run, deadline, body = Run(), time.perf_counter() + seconds, call_body(False)

    async def client(n: int) -> None:
        caller = Caller(port, headers)
        try:
            while time.perf_counter() < deadline:
                run.add(await caller.post(path, body, f"x-tokentill-customer: c{n % CUSTOMERS}\r\n"))
        finally:
            await caller.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(workers)))
    run.seconds = time.perf_counter() - start
    return run


async def open_loop(port: int, headers: dict[str, str], path: str, *, rate: float, seconds: float,
                    stream: bool) -> Run:
    """Calls started at a fixed rate whatever the latency; each takes an idle connection or opens one."""
    run, idle, body = Run(), [], call_body(stream)

    async def one(n: int) -> None:
        caller = idle.pop() if idle else Caller(port, headers)
        run.add(await caller.post(path, body, f"x-tokentill-customer: c{n % CUSTOMERS}\r\n"))
        idle.append(caller)

    run.seconds = await at_a_fixed_rate(one, rate=rate, seconds=seconds)
    for caller in idle:
        await caller.close()
    return run


async def batch_sizes(client: httpx.AsyncClient, port: int) -> tuple[float, float]:
    """tokentill_wallet_batch_commands of the gateway: (commands, batches) so far."""
    found = [0.0, 0.0]
    for line in (await client.get(f"http://127.0.0.1:{port}/metrics")).text.splitlines():
        for i, part in enumerate(("_sum ", "_count ")):
            if line.startswith("tokentill_wallet_batch_commands" + part):
                found[i] += float(line.rsplit(" ", 1)[1])
    return found[0], found[1]


def ms(values: list[float]) -> dict[str, float]:
    return {"p50": pct(values, 50), "p99": pct(values, 99)}


async def setup(client: httpx.AsyncClient) -> str:
    (await client.post("/v1/price-books", json=BOOK)).raise_for_status()
    for i in range(CUSTOMERS):
        (await client.post("/v1/customers", json={"id": f"c{i}", "price_book": BOOK["id"]})).raise_for_status()
        (await client.post(f"/v1/customers/c{i}/topups", json={"amount": "1000000.00"})).raise_for_status()
    key = await client.post("/v1/api-keys", json={"scope": "inference", "name": "bench gateway"})
    key.raise_for_status()
    return key.json()["key"]


async def run_cases(gw_port: int, up_port: int, gateway: subprocess.Popen, args: argparse.Namespace) -> dict:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw_port}", timeout=60,
                                 headers={"Authorization": f"Bearer {KEY}"}) as client:
        await wait_ready(client, gateway)
        token = await setup(client)
        via = {"Authorization": f"Bearer {token}"}
        gw_path, up_path = "/openai/v1" + PATH, "/v1" + PATH
        await closed_loop(gw_port, via, gw_path, workers=args.workers, seconds=min(2.0, args.seconds))
        peak = await closed_loop(gw_port, via, gw_path, workers=args.workers, seconds=args.seconds)
        rate = max(1.0, peak.rate() / 2)
        direct = await open_loop(up_port, {}, up_path, rate=rate, seconds=args.seconds, stream=False)
        phases0, sizes0 = await batch_phases(client, [gw_port]), await batch_sizes(client, gw_port)
        with CpuMeter([gateway.pid]) as cpu:
            through = await open_loop(gw_port, via, gw_path, rate=rate, seconds=args.seconds, stream=False)
        phases = phase_means(phases0, await batch_phases(client, [gw_port]))
        sizes = [a - b for a, b in zip(await batch_sizes(client, gw_port), sizes0, strict=True)]
        per_batch = round(sizes[0] / sizes[1], 2) if sizes[1] else 0.0
        direct_stream = await open_loop(up_port, {}, up_path, rate=rate, seconds=args.seconds, stream=True)
        through_stream = await open_loop(gw_port, via, gw_path, rate=rate, seconds=args.seconds, stream=True)
        exact = await charges_exact(client, [a.headers.get("x-tokentill-request-id", "")
                                             for a in through.answers + peak.answers])
        verify = (await client.post("/v1/audit/verify", timeout=600)).json()
    return {"peak": peak, "rate": rate, "direct": direct, "through": through, "direct_stream": direct_stream,
            "through_stream": through_stream, "verify_ok": verify["ok"], "cpu": cpu.cores, "charges": exact,
            "phases": phases, "per_batch": per_batch}


async def charges_exact(client: httpx.AsyncClient, request_ids: list[str], wait_s: float = 60) -> list[bool]:
    """Whether each call's charge is the price book's, from its trace, once its settle has landed
    (the gateway answers first and settles in the background)."""
    lookups, deadline = asyncio.Semaphore(8), time.monotonic() + wait_s

    async def exact(request_id: str) -> bool:
        async with lookups:
            while True:
                trace = (await client.get(f"/v1/audit/charges/{request_id}")).json()
                if trace.get("reservation", {}).get("status") == "settled" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        return sum((Decimal(c["charged"]) for c in trace.get("charges", [])), Decimal(0)) == CHARGE

    return list(await asyncio.gather(*(exact(rid) for rid in request_ids)))


def main(args: argparse.Namespace, settings: Settings) -> int:
    handle = open_database(settings, migrate=False)
    up_port, gw_port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "api.bench.fake_upstream", str(up_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with scratch_database(handle.url, f"tokentill_gateway_{os.getpid()}") as url:
            runner.upgrade(sync_url(url))
            up = f"http://127.0.0.1:{up_port}"
            gateway = start_server(url, gw_port, command=("gateway", "--upstream-openai", f"{up}/v1",
                                                          "--upstream-anthropic", up))
            with running(gateway, "gateway"):
                figures = asyncio.run(run_cases(gw_port, up_port, gateway, args))
    finally:
        upstream.kill()
        upstream.wait()
        handle.close()
    report = report_of(figures, args)
    print(json.dumps(report, indent=2) if args.json else text_report(report))
    return 0 if report["verify_ok"] and report["charges_exact"] else 1  # a 503 under load is reported, not fatal


def _added(through: list[float], direct: list[float]) -> dict[str, float]:
    a, d = ms(through), ms(direct)
    return {"p50": round(a["p50"] - d["p50"], 2), "p99": round(a["p99"] - d["p99"], 2)}


def report_of(f: dict, args: argparse.Namespace) -> dict:
    through, direct = f["through"].answers, f["direct"].answers
    total = [a.total_s * 1000 for a in through]
    ledger = [a.timing("reserve") + a.timing("settle") for a in through]
    stream_ttfb = [a.first_byte_s * 1000 for a in f["through_stream"].answers]
    load = os.getloadavg()
    return {
        "peak_calls_per_s": f["peak"].rate(), "clients": args.workers, "half_rate": f["rate"],
        "settle_mode": os.environ.get("TOKENTILL_GATEWAY_SETTLE") or "wait",
        "direct_ms": ms([a.total_s * 1000 for a in direct]), "through_ms": ms(total),
        "added_ms": _added(total, [a.total_s * 1000 for a in direct]),
        "reserve_ms": ms([a.timing("reserve") for a in through]),
        "settle_ms": ms([a.timing("settle") for a in through]),
        "admit_ms": ms([a.timing("admit") for a in through]),
        "upstream_ms": ms([a.timing("upstream") for a in through]),
        "added_without_ledger_ms": _added([t - x for t, x in zip(total, ledger, strict=True)],
                                          [a.total_s * 1000 for a in direct]),
        "first_byte_direct_ms": ms([a.first_byte_s * 1000 for a in f["direct_stream"].answers]),
        "first_byte_through_ms": ms(stream_ttfb),
        "stream_reserve_ms": ms([a.timing("reserve") for a in f["through_stream"].answers]),
        "first_byte_after_reserve_ms": ms([t - a.timing("reserve") for t, a in
                                           zip(stream_ttfb, f["through_stream"].answers, strict=True)]),
        "gateway_cpu_ms_per_call": round(f["cpu"].get("servers", 0) * f["through"].seconds * 1000
                                         / max(1, len(through)), 2),
        "batch_phases_ms": f["phases"], "commands_per_batch": f["per_batch"],
        "calls_checked": len(f["charges"]), "charges_exact": all(f["charges"]),
        "failed": sum(f[k].failed for k in CASES),
        "failed_statuses": {str(status): sum(f[k].statuses.get(status, 0) for k in CASES)
                            for status in sorted({s for k in CASES for s in f[k].statuses})},
        "verify_ok": f["verify_ok"], "goals": GOALS, "load_average": [round(x, 2) for x in load],
        "cores": os.cpu_count()}


def text_report(r: dict) -> str:
    def row(name: str, v: dict[str, float]) -> str:
        return f"  {name:<40} p50 {v['p50']:>8.2f} ms   p99 {v['p99']:>8.2f} ms"

    return "\n".join([
        f"gateway peak: {r['peak_calls_per_s']} non-streamed chat calls/s ({r['clients']} clients; "
        f"settles: {r['settle_mode']}, TOKENTILL_GATEWAY_SETTLE)",
        f"at half of peak ({r['half_rate']} calls/s offered, open loop):",
        row("straight to the upstream", r["direct_ms"]), row("through the gateway", r["through_ms"]),
        row("added (goal p50 <= 2, p99 <= 10)", r["added_ms"]),
        row("  of it: the reserve", r["reserve_ms"]), row(f"  of it: the settle ({r['settle_mode']})", r["settle_ms"]),
        row("  the call read, its key and tokens", r["admit_ms"]),
        row("  the upstream, as the gateway saw it", r["upstream_ms"]),
        row("added, less reserve and settle", r["added_without_ledger_ms"]),
        f"  the gateway process's CPU per call: {r['gateway_cpu_ms_per_call']} ms (its wallet engine included)",
        "  its wallet batches (reserves and settles), mean ms: "
        + ", ".join(f"{k} {v}" for k, v in r["batch_phases_ms"].items())
        + f" (queued: per command, until its batch is taken; the others per batch of {r['commands_per_batch']})",
        "streamed, at the same rate, time to the first byte:",
        row("straight to the upstream", r["first_byte_direct_ms"]),
        row("through the gateway", r["first_byte_through_ms"]), row("  the reserve", r["stream_reserve_ms"]),
        row("through the gateway, less its reserve", r["first_byte_after_reserve_ms"]),
        f"charges: {r['calls_checked']} calls, each ${CHARGE} as the price book says: "
        f"{'exact' if r['charges_exact'] else 'NOT EXACT'}; failed calls: {r['failed']} {r['failed_statuses']}; "
        f"verify: {'ok' if r['verify_ok'] else 'FAILED'}",
        f"machine: {r['cores']} cores, load average {r['load_average']} (a shared machine: others' work runs too)",
    ])

"""`tokentill bench export`: a synthetic ledger of N entries (default 1,000,000) on a scratch
database, exported to Beancount and to JSON lines by `tokentill audit export` in a process of its
own: its rate (entries over the time the command itself reports, from connecting to the last
line; the interpreter's start-up is shown apart) and peak RSS are the figures (goals: >= 50,000
entries/s, < 200 MB). The jsonl export is then verified offline, and with `--bean-check` the
Beancount file goes through bean-check and bean-query, whose balances must equal the trial
balance.

The ledger is bulk-loaded without the posting triggers (a superuser's session; the cached
balances are set once at the end) and sealed by the seal job's own code; `verify`'s ledger
checks then prove it whole before anything is measured.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import psutil
import psycopg

from api.bench.common import scratch_database
from api.bench.synthetic import build_ledger, ledger_checks
from api.runtime import open_database, sync_url
from api.settings import Settings
from ledger import audit
from ledger import export as exporting
from ledger.db import connect
from migrations import runner

GOAL_RATE = 50_000  # entries/s
GOAL_RSS_MB = 200


def _run(argv: list[str], env: dict, url: str | None = None) -> dict:
    """Run a command: its wall seconds and peak RSS, and with `url` the CPU seconds of its
    PostgreSQL session (found by the export's application_name; the leader only, not the
    parallel workers a sort may start). The peak is VmHWM, read from /proc while it runs (the
    mm's own high-water mark; wait4's ru_maxrss would also count the bench process the child was
    forked from)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, text=True)
        backend, peak_kb, backend_cpu, polls = None, 0, 0.0, 0
        while proc.poll() is None:
            peak_kb = max(peak_kb, _hwm_kb(proc.pid))
            polls += 1
            if url and polls % 10 == 0:
                with contextlib.suppress(psutil.Error):
                    backend = backend or _backend(url)
                    backend_cpu = sum(backend.cpu_times()[:2]) if backend else 0.0
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak_kb / 1024, 1),
                "backend_cpu_s": round(backend_cpu, 1), "returncode": proc.returncode, "stdout": out.read(),
                "stderr": err.read()}


def _backend(url: str) -> psutil.Process | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND backend_type = "
                           "'client backend'", (exporting.APPLICATION,)).fetchone()
    return psutil.Process(row[0]) if row else None


def _hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
    except OSError:  # it has just exited
        return 0


async def _build(url: str, entries: int, quiet: bool) -> dict:
    db = connect(url, pool_size=1)

    def progress(done: int, total: int) -> None:
        if not quiet and (done == total or done % 100_000 == 0):
            print(f"  built {done:,}/{total:,} entries", file=sys.stderr, flush=True)

    try:
        seconds = await build_ledger(db, entries, without_triggers=True, progress=progress)
        checks = await db.read(ledger_checks)
    finally:
        await db.dispose()
    return {"seconds": round(seconds, 1), "checks": checks}


def _bean_check(url: str, path: Path, env: dict) -> dict:
    """bean-check the file, and compare bean-query's balance of every account with the trial balance."""
    try:
        import beanquery
    except ImportError:
        raise SystemExit("--bean-check needs beancount and beanquery: pip install 'beancount>=3' 'beanquery>=0.2'") \
            from None
    checked = _run(["bean-check", str(path)], env)
    with exporting.connect(url) as conn:
        book = {a.name: a for a in exporting.accounts(conn).values()}

    async def trial():
        db = connect(url, pool_size=1)
        try:
            return await db.read(audit.trial_balance)
        finally:
            await db.dispose()

    expected = {line.account: line.balance for line in asyncio.run(trial()).lines}
    rows = beanquery.connect(f"beancount:{path}").execute("SELECT account, sum(number) GROUP BY account").fetchall()
    found = {book[name].code: int(Decimal(total).scaleb(book[name].scale)) for name, total in rows}
    differ = sorted(code for code in expected.keys() | found.keys() if expected.get(code, 0) != found.get(code, 0))
    return {"bean_check_ok": checked["returncode"] == 0 and not checked["stdout"] and not checked["stderr"],
            "bean_check_s": checked["seconds"], "bean_check_output": (checked["stdout"] + checked["stderr"])[:2000],
            "accounts": len(expected), "balances_equal_trial_balance": not differ, "accounts_that_differ": differ[:20]}


def main(args: argparse.Namespace, settings: Settings) -> int:
    handle = open_database(settings, migrate=False)
    report: dict = {"entries": args.entries, "load_average": list(os.getloadavg()), "cores": os.cpu_count()}
    try:
        with scratch_database(handle.url, f"tokentill_export_{os.getpid()}") as url, \
                tempfile.TemporaryDirectory(prefix="tokentill-export-bench-") as tmp:
            runner.upgrade(sync_url(url))
            report["build"] = asyncio.run(_build(url, args.entries, args.json))
            env = {**os.environ, "TOKENTILL_DATABASE_URL": url}
            for fmt in ("beancount", "jsonl"):
                path = Path(tmp) / f"journal.{fmt}"
                run = _run([sys.executable, "-m", "api.cli", "audit", "export", "--format", fmt, "--out", str(path)],
                           env, url)
                if run["returncode"]:
                    raise SystemExit(f"export {fmt} failed:\n{run['stderr'][-2000:]}")
                said = re.search(r" in ([0-9.]+)s \(([0-9.]+)s of CPU\)", run["stderr"])
                streaming, streaming_cpu = float(said.group(1)), float(said.group(2))  # type: ignore[union-attr]
                cpu = streaming_cpu + run["backend_cpu_s"]
                report[fmt] = {"entries_per_s": round(args.entries / streaming), "streaming_s": streaming,
                               "process_s": run["seconds"], "peak_rss_mb": run["peak_rss_mb"],
                               "export_cpu_s": streaming_cpu, "postgres_cpu_s": run["backend_cpu_s"],
                               "entries_per_cpu_s": round(args.entries / cpu) if cpu else None,
                               "mb_written": round(path.stat().st_size / 2**20, 1)}
            verified = _run([sys.executable, "-m", "ledger.offline",
                             str(Path(tmp) / "journal.jsonl")], {k: v for k, v in env.items()
                                                                 if k != "TOKENTILL_DATABASE_URL"})
            report["offline_verify"] = {"ok": verified["returncode"] == 0, "seconds": verified["seconds"],
                                        "peak_rss_mb": verified["peak_rss_mb"],
                                        "output": verified["stdout"].splitlines()[:3]}
            if args.bean_check:
                report["bean_check"] = _bean_check(url, Path(tmp) / "journal.beancount", env)
    finally:
        handle.close()
    report["load_average_after"] = list(os.getloadavg())
    _print(report, args.json)
    ok = report["offline_verify"]["ok"] and all(report["build"]["checks"].values()) and (
        not args.bean_check or (report["bean_check"]["bean_check_ok"]
                                and report["bean_check"]["balances_equal_trial_balance"]))
    return 0 if ok else 1


def _print(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print(f"export bench: {report['entries']:,} entries, built and sealed in {report['build']['seconds']}s, "
          f"ledger checks {'ok' if all(report['build']['checks'].values()) else report['build']['checks']}")
    for fmt in ("beancount", "jsonl"):
        r = report[fmt]
        print(f"  {fmt:<9} {r['entries_per_s']:>9,} entries/s ({r['entries_per_s'] / GOAL_RATE:.2f} x the goal of "
              f"{GOAL_RATE:,})  peak RSS {r['peak_rss_mb']:>6} MB (goal < {GOAL_RSS_MB})  streamed in "
              f"{r['streaming_s']}s, {r['process_s']}s with start-up, {r['mb_written']} MB written")
        print(f"  {'':<9} CPU while streaming: export {r['export_cpu_s']}s, its PostgreSQL session "
              f"{r['postgres_cpu_s']}s: {r['entries_per_cpu_s'] or 0:,} entries per CPU-second")
    v = report["offline_verify"]
    print(f"  offline verify of the jsonl: {'ok' if v['ok'] else 'FAILED'} in {v['seconds']}s, "
          f"peak RSS {v['peak_rss_mb']} MB")
    if "bean_check" in report:
        b = report["bean_check"]
        print(f"  bean-check: {'ok' if b['bean_check_ok'] else 'FAILED ' + b['bean_check_output']} in "
              f"{b['bean_check_s']}s; bean-query balances of {b['accounts']:,} accounts "
              f"{'equal' if b['balances_equal_trial_balance'] else 'DIFFER from'} the trial balance")
    print(f"  load average {report['load_average'][0]:.1f} before, {report['load_average_after'][0]:.1f} after, "
          f"on {report['cores']} cores (a shared machine: other work runs beside the bench)")

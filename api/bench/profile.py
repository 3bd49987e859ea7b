"""Where a benchmark case spends the machine: CPU per process, and where the server spends its own.

`CpuMeter` reads /proc (Linux): the CPU seconds the server processes, the benchmark's own
process (the load generator) and everything else on the machine (PostgreSQL, mostly; py-spy
too when profiling) used during a case, as cores. `SpyProfile` runs py-spy (`pip install
py-spy`, optional) on a server process for the case and sums its samples by layer, so that what
limits a figure is shown, not guessed.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _cluster_seconds(postmaster: int) -> float:
    """CPU seconds of a PostgreSQL cluster: the postmaster, its live children (backends, background
    workers) and the children it has reaped (cutime + cstime)."""
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(v) for v in fields[11:15]) / _TICKS
    for child in _children(postmaster):
        try:
            total += _process_seconds(child)
        except OSError:  # exited meanwhile: counted in cutime once reaped
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _machine_seconds() -> float:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    busy = sum(int(v) for v in fields) - int(fields[3]) - int(fields[4])  # all but idle and iowait
    return busy / _TICKS


class CpuMeter:
    """Cores used by `servers`, by this process, and by the rest of the machine, over a case; with
    `postgres` (a postmaster's pid), also by that PostgreSQL cluster (all its databases)."""

    def __init__(self, servers: list[int], postgres: int | None = None) -> None:
        self.servers = servers
        self.postgres = postgres
        self.available = Path("/proc/stat").exists()
        self.cores: dict[str, float] = {}
        self.server_seconds = 0.0  # CPU seconds the servers used over the case

    def __enter__(self) -> CpuMeter:
        if self.available:
            self._start = (time.perf_counter(), self._sample())
        return self

    def __exit__(self, *_: object) -> None:
        if self.available:
            wall = time.perf_counter() - self._start[0]
            end, start = self._sample(), self._start[1]
            self.server_seconds = end[0] - start[0]
            server, client, machine, cluster = (round((e - s) / wall, 2) for e, s in zip(end, start, strict=True))
            self.cores = {"servers": server, "load_generator": client,
                          "postgres_and_other": round(machine - server - client, 2),
                          **({"postgres_cluster": cluster} if self.postgres is not None else {}),
                          "machine": machine, "machine_cores": os.cpu_count() or 0}

    def _sample(self) -> tuple[float, float, float, float]:
        return (sum(_process_seconds(pid) for pid in self.servers), _process_seconds(os.getpid()),
                _machine_seconds(), _cluster_seconds(self.postgres) if self.postgres is not None else 0.0)


# Layers of the server's stack, by file (py-spy runs with --full-filenames); for each sample the
# innermost frame that belongs to a layer decides.
LAYERS: list[tuple[str, re.Pattern[str]]] = [
    ("wallet rules and pricing", re.compile(r"/(?:wallets/(?:core/|commands|model|requests)|pricing/)")),
    ("unit of work: batch, SQL parameters, results",
     re.compile(r"/(?:wallets/(?:engine|store|batch|service)|ledger/)")),
    ("database driver (psycopg, SQLAlchemy)", re.compile(r"/site-packages/(?:psycopg|sqlalchemy)")),
    ("HTTP: uvicorn, Litestar, routes", re.compile(r"/site-packages/(?:uvicorn|litestar|httptools|h11|msgspec)|/api/")),
    ("metrics (prometheus_client)", re.compile(r"/site-packages/prometheus_client")),
]
OTHER = "event loop and other"
# Frames under every stack of the server (the command line, uvicorn starting the loop): no layer.
BOOTSTRAP = re.compile(r"/api/cli\.py|\bserve \(\S*/api/server\.py|/site-packages/uvicorn/(?:main|server|_compat)\.py"
                       r"|<frozen runpy>")


def require_py_spy() -> str:
    """py-spy's path, or SystemExit saying it is needed: asked before a bench starts anything."""
    exe = shutil.which("py-spy")
    if exe is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return exe


class SpyProfile:
    """py-spy on one process for a fixed time; `summary()` gives the share of samples per layer."""

    def __init__(self, pid: int, seconds: float, out: Path) -> None:
        self.out = out
        exe = require_py_spy()
        out.parent.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--full-filenames", "--nonblocking", "--rate", "200",
             "--duration", str(max(1, math.ceil(seconds))), "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def wait(self) -> None:
        _, err = self._proc.communicate(timeout=120)
        if self._proc.returncode != 0 or not self.out.exists():
            raise SystemExit(f"py-spy failed: {err.decode(errors='replace')[-500:]}")

    def summary(self, top: int = 12) -> dict:
        return summarize(self.out, top)


def summarize(raw: Path, top: int = 12) -> dict:
    """py-spy's raw (collapsed) stacks as the share of samples per layer (a sample counts for
    the innermost frame that belongs to a layer), and the functions with most samples of their own."""
    layers: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n, frames = int(count), stack.split(";")
        total += n
        layers[_layer_of(frames)] += n
        own[_short(frames[-1])] += n
    share = {name: round(100 * n / total, 1) for name, n in layers.most_common()} if total else {}
    return {"samples": total, "file": str(raw), "percent_by_layer": share,
            "top_own_time": [[name, round(100 * n / total, 1)] for name, n in own.most_common(top)]}


def _short(frame: str) -> str:
    """"func (/long/path/site-packages/pkg/mod.py:12)" -> "func (pkg/mod.py)"."""
    name, _, where = frame.partition(" (")
    path = re.sub(r":\d+\)$", "", where)
    for marker in ("/site-packages/", f"{ROOT}/"):
        path = path.split(marker)[-1]
    return f"{name} ({path})"


def _layer_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        if BOOTSTRAP.search(frame):
            continue
        for name, pattern in LAYERS:
            if pattern.search(frame):
                return name
    return OTHER

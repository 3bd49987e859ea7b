"""Shared parts of the benchmarks: a scratch database on the cluster, pgbench on it, and calls
started at a fixed rate."""
from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api.runtime import sync_url
from ledger import embedded


@contextmanager
def scratch_database(server_url: str, name: str, *, template: str | None = None) -> Iterator[str]:
    """A fresh database `name` on the server of `server_url` (a copy of database `template`, which
    no one may be connected to, where given); dropped afterwards. Yields its URL."""
    admin = create_engine(sync_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def pgbench_tps(url: str, *, seconds: float, clients: int, scale: int = 10) -> float:
    """Initialise pgbench at `scale` and run the built-in tpcb-like script; returns its tps."""
    exe = embedded.pgbench_path()
    if not exe:
        raise SystemExit("pgbench not found (it ships with the embedded PostgreSQL wheel)")
    subprocess.run([exe, "-i", "-q", "-s", str(scale), url], check=True, capture_output=True)
    out = subprocess.run(
        [exe, "-b", "tpcb-like", "-c", str(clients), "-j", str(min(clients, 2)), "-T",
         str(max(1, round(seconds))), url], check=True, capture_output=True, text=True).stdout
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    if not match:
        raise SystemExit(f"could not read pgbench output:\n{out}")
    return float(match.group(1))  # a rate for the report, never money


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ratio(value: float, base: float) -> float:
    return round(value / base, 3) if base else 0.0


async def at_a_fixed_rate(one: Callable[[int], Awaitable[None]], *, rate: float, seconds: float) -> float:
    """one(0), one(1), ... started `rate` a second for `seconds` (at least one), whatever their
    latency (no coordinated omission), then all awaited: the seconds from the first start to the
    last end."""
    tasks = []
    start = time.perf_counter()
    for n in range(max(1, int(rate * seconds))):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - start

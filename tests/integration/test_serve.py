"""The README's first command: `tokentill serve` on an embedded PostgreSQL, from nothing."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.bench.common import free_port


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir of the test's own, outside pytest's shared /tmp/pytest-of-<user> (which another
    pytest run on the machine may clean while these servers and their PostgreSQL use it)."""
    path = Path(tempfile.mkdtemp(prefix="tokentill-serve-"))
    yield path
    shutil.rmtree(path)


def _serve(data_dir: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TOKENTILL_DATABASE_URL"}
    env.update(TOKENTILL_DATA_DIR=str(data_dir), TOKENTILL_ADMIN_KEY="serve-test-admin")
    return subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 90) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server never became ready")


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def test_two_servers_started_at_once_on_a_fresh_data_dir_share_one_migrated_cluster(data_dir):
    ports = [free_port(), free_port()]
    procs = [_serve(data_dir, port) for port in ports]
    try:
        for port, proc in zip(ports, procs, strict=True):
            assert _wait_ready(port, proc).json()["status"] == "ready"
        headers = {"Authorization": "Bearer serve-test-admin"}
        tb = httpx.get(f"http://127.0.0.1:{ports[1]}/v1/audit/trial-balance", headers=headers).json()
        assert tb["total_debits"] == tb["total_credits"]
        assert "tokentill" in httpx.get(f"http://127.0.0.1:{ports[0]}/metrics").text
    finally:
        codes = [_stop(proc) for proc in procs]
    assert codes == [0, 0]
    assert (data_dir / "pg" / "PG_VERSION").exists()
    assert not (data_dir / "pg" / "postmaster.pid").exists(), "the last server out stops PostgreSQL"


def test_a_restarted_server_reuses_its_data_dir(data_dir):
    """What the first run wrote is there after a restart on the same data dir (it was checked by
    the restart's time, under 30 s: a load-sensitive stand-in that failed at load 9)."""
    port, headers = free_port(), {"Authorization": "Bearer serve-test-admin"}
    proc = _serve(data_dir, port)
    _wait_ready(port, proc)
    key = httpx.post(f"http://127.0.0.1:{port}/v1/api-keys", headers=headers, json={"scope": "auditor"}).json()
    assert _stop(proc) == 0
    proc = _serve(data_dir, port)
    try:
        _wait_ready(port, proc)
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/api-keys", headers=headers).json()
        assert key["id"] in [k["id"] for k in listed]
        kept = httpx.get(f"http://127.0.0.1:{port}/v1/audit/trial-balance",
                         headers={"Authorization": f"Bearer {key['key']}"})
        assert kept.status_code == 200, "the key made before the restart still works"
    finally:
        _stop(proc)


def test_serve_on_a_port_in_use_says_so_in_one_line_and_exits_1_not_3(database_url):
    """Exit 3 means the database could not be reached (README, Configuration); a port another
    process holds is a line of its own, as `serve --workers N` gives, before the database is opened."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "TOKENTILL_DATABASE_URL": database_url, "TOKENTILL_SCHEDULER": "off"}
        for workers in ("1", "2"):
            done = subprocess.run([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", workers],
                                  env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 1, (workers, done.returncode, done.stderr)
            assert done.stderr.strip().splitlines()[-1].startswith(f"cannot listen on 127.0.0.1:{port}: ")
            assert "Traceback" not in done.stderr


def test_serve_on_a_port_in_use_says_so_before_it_tries_the_database():
    """`serve --workers 2` opened (and migrated) the database before it bound the port: with the
    port held and the database down it said 'cannot reach the database', exit 3, where one
    process says 'cannot listen on', exit 1 (and on the embedded cluster it started PostgreSQL
    and migrated, only to stop)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "TOKENTILL_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}
        for workers in ("1", "2"):
            done = subprocess.run([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", workers],
                                  env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 1, (workers, done.returncode, done.stderr)
            assert done.stderr.strip().splitlines()[-1].startswith(f"cannot listen on 127.0.0.1:{port}: ")


@pytest.mark.parametrize("make, says", [
    (lambda pg: pg.write_text("not a directory"), "is not a directory"),
    (lambda pg: (pg.mkdir(), (pg / "notes.txt").write_text("mine")), "holds no PostgreSQL cluster (no PG_VERSION)"),
    (lambda pg: (pg.mkdir(), (pg / "PG_VERSION").write_text("18\n")),
     "PostgreSQL did not start: postgres: could not access the server configuration file"),
])
def test_an_embedded_data_dir_postgresql_cannot_use_stops_the_start_in_one_line(make, says):
    """A data dir whose `pg` is a file, a directory of other files (an initdb cut short, a wrong
    path), or a cluster PostgreSQL refuses to start: each ended in a traceback of the wheel's
    (FileExistsError, initdb's or pg_ctl's CalledProcessError), the reason buried in its log."""
    with tempfile.TemporaryDirectory(prefix="tokentill-datadir-") as tmp:
        make(Path(tmp) / "pg")
        env = {k: v for k, v in os.environ.items() if k != "TOKENTILL_DATABASE_URL"}
        done = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], env={**env, "TOKENTILL_DATA_DIR": tmp},
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"TOKENTILL_DATA_DIR: {Path(tmp).resolve() / 'pg'}") and says in last, last

"""The README's first command: `tokentill serve` on an embedded PostgreSQL, from nothing."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.bench.common import free_port
from tests.api.apps import wait_ready


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir of the test's own, outside pytest's shared /tmp/pytest-of-<user> (which another
    pytest run on the machine may clean while these servers and their PostgreSQL use it)."""
    path = Path(tempfile.mkdtemp(prefix="tokentill-serve-"))
    yield path
    shutil.rmtree(path)


def _serve(data_dir: Path, port: int, **more_env: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("TOKENTILL_DATABASE_URL", "PGSERVER_POSTGRES_VERSION")}
    env.update(TOKENTILL_DATA_DIR=str(data_dir), TOKENTILL_ADMIN_KEY="serve-test-admin", **more_env)
    return subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def test_two_servers_started_at_once_on_a_fresh_data_dir_share_one_migrated_cluster(data_dir):
    ports = [free_port(), free_port()]
    procs = [_serve(data_dir, port) for port in ports]
    try:
        for port, proc in zip(ports, procs, strict=True):
            wait_ready(f"http://127.0.0.1:{port}", proc)
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()["status"] == "ready"
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
    wait_ready(f"http://127.0.0.1:{port}", proc)
    key = httpx.post(f"http://127.0.0.1:{port}/v1/api-keys", headers=headers, json={"scope": "auditor"}).json()
    assert _stop(proc) == 0
    proc = _serve(data_dir, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/api-keys", headers=headers).json()
        assert key["id"] in [k["id"] for k in listed]
        kept = httpx.get(f"http://127.0.0.1:{port}/v1/audit/trial-balance",
                         headers={"Authorization": f"Bearer {key['key']}"})
        assert kept.status_code == 200, "the key made before the restart still works"
    finally:
        _stop(proc)


def test_a_data_dir_of_an_older_postgresql_is_upgraded_at_start_and_keeps_every_entry(data_dir):
    """README: the wheel "can pg_upgrade a data dir across PostgreSQL major versions, which a data
    dir that lives for years needs". A cluster made by PostgreSQL 16 (the wheel's other version,
    what its earlier releases made) with a customer's top-up, grant, settled calls and an open hold
    is upgraded by the next start on 18: the same wallet and trial balance, verify ok, the open hold
    still settles. Run as root (a container's usual user), the wheel's pg_upgrade could not write
    its working directory: the start failed with a traceback and every later start did too. A
    cluster whose schema predates 0046 cannot be upgraded (pg_upgrade restores its schema with an
    empty search_path): the start says so in one line, the cluster as it was."""
    env = {k: v for k, v in os.environ.items() if k not in ("TOKENTILL_DATABASE_URL", "PGSERVER_POSTGRES_VERSION")}
    env["TOKENTILL_DATA_DIR"] = str(data_dir)
    # a cluster whose schema is older than 0046 (lane functions a dump could not restore) cannot be
    # upgraded: the start says so in one line, and leaves the cluster as it was
    migrated = subprocess.run([sys.executable, "-m", "api.cli", "migrate", "--to", "0045"],
                              env={**env, "PGSERVER_POSTGRES_VERSION": "16"}, capture_output=True, text=True,
                              timeout=300)
    assert migrated.returncode == 0, migrated.stderr
    refused = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert "upgrading PostgreSQL 16 to 18 failed" in last and "the cluster is as it was" in last, last
    assert (data_dir / "pg" / "PG_VERSION").read_text().strip() == "16"
    assert list((data_dir / "pg.upgrade-logs").rglob("*.log")), "pg_upgrade's logs are kept"
    assert not list(data_dir.glob(".pgdata-tmp-*"))

    # started once on its own PostgreSQL, it is migrated to the head; then it upgrades
    port, headers = free_port(), {"Authorization": "Bearer serve-test-admin"}
    base = f"http://127.0.0.1:{port}"
    proc = _serve(data_dir, port, PGSERVER_POSTGRES_VERSION="16")
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            assert http.post("/v1/price-books", json={
                "id": "std", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "10"},
                          {"id": "out", "model": "model-a", "token_type": "output", "price": "20"}]}).status_code == 201
            assert http.post("/v1/customers", json={"id": "acme", "currency": "USD",
                                                    "price_book": "std"}).status_code == 201
            assert http.post("/v1/customers/acme/topups", json={"amount": "20.00"}).status_code == 201
            assert http.post("/v1/customers/acme/grants", json={
                "amount": "5.00", "priority": 10, "expires_at": "2099-01-01T00:00:00Z"}).status_code == 201
            held = []
            for n in range(3):
                r = http.post("/v1/reservations", json={
                    "customer_id": "acme", "request_id": f"old-{n}", "model": "model-a",
                    "estimate": {"input_tokens": 1000, "max_output_tokens": 500}})
                assert r.status_code == 201, r.text
                held.append(r.json()["id"])
            for rid in held[:2]:
                settled = http.post(f"/v1/reservations/{rid}/settle",
                                    json={"usage": {"input_tokens": 1000, "output_tokens": 400}, "final": True})
                assert settled.json()["charged"] == "0.018", settled.text
            wallet = http.get("/v1/customers/acme/wallet").json()
            trial = http.get("/v1/audit/trial-balance").json()
    finally:
        assert _stop(proc) == 0
    assert (data_dir / "pg" / "PG_VERSION").read_text().strip() == "16"
    assert wallet["available"] == "24.944" and wallet["reserved"] == "0.02"

    proc = _serve(data_dir, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        assert (data_dir / "pg" / "PG_VERSION").read_text().strip() == "18"
        with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
            assert http.get("/v1/customers/acme/wallet").json() == wallet
            assert http.get("/v1/audit/trial-balance").json() == trial
            verify = http.post("/v1/audit/verify").json()
            assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]
            settled = http.post(f"/v1/reservations/{held[2]}/settle",
                                json={"usage": {"input_tokens": 1000, "output_tokens": 400}, "final": True})
            assert settled.status_code == 200 and settled.json()["charged"] == "0.018", settled.text
            assert http.get("/v1/customers/acme/wallet").json()["available"] == "24.946"
    finally:
        assert _stop(proc) == 0
    assert not list(data_dir.glob(".pgdata-tmp-*")), "no half-made cluster is left beside the data dir"


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
    # data of a major version the wheel neither runs nor upgrades (another tool's cluster), of one it
    # upgrades but that cannot be (pg_controldata, the upgrade's first step, finds no pg_control), and
    # no version at all: the wheel's AssertionError, CalledProcessError and ValueError tracebacks
    (lambda pg: (pg.mkdir(), (pg / "PG_VERSION").write_text("15\n")), "holds PostgreSQL 15 data"),
    (lambda pg: (pg.mkdir(), (pg / "PG_VERSION").write_text("16\n")),
     "upgrading PostgreSQL 16 to 18 failed"),
    (lambda pg: (pg.mkdir(), (pg / "PG_VERSION").write_text("sixteen\n")), "PG_VERSION names no PostgreSQL version"),
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


@pytest.mark.parametrize("command", [("serve",), ("gateway",), ("serve", "--workers", "2")])
def test_a_spool_directory_the_gateway_cannot_use_stops_the_start_in_one_line(database_url, tmp_path, command):
    """TOKENTILL_SPOOL_DIR under a file (as one read-only or not the server's own: mkdir refused):
    the app's start-up failed inside uvicorn with a 60-line exception-group traceback and exit 3,
    the code of a database that cannot be reached. Now one line naming the variable, exit 1."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = {**os.environ, "TOKENTILL_DATABASE_URL": database_url, "TOKENTILL_SCHEDULER": "off",
           "TOKENTILL_SPOOL_DIR": str(blocker / "spool")}
    done = subprocess.run([sys.executable, "-m", "api.cli", *command, "--port", str(free_port())], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("TOKENTILL_SPOOL_DIR: ") and str(blocker) in last and "Not a directory" in last, last


def test_an_embedded_cluster_initdb_cannot_make_stops_the_start_with_initdbs_reason(tmp_path):
    """initdb failing (a locale the machine does not have, a full disk) left no server log, and
    the start's last line said only 'PostgreSQL did not start: no server log', initdb's reason
    buried in the wheel's 20-line dump above it."""
    env = {k: v for k, v in os.environ.items() if k not in ("TOKENTILL_DATABASE_URL", "PGSERVER_POSTGRES_VERSION")}
    env.update(TOKENTILL_DATA_DIR=str(tmp_path), LC_ALL="xx_XX.UTF-8")  # no such locale: initdb refuses it
    done = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, (done.returncode, done.stderr)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"TOKENTILL_DATA_DIR: {tmp_path.resolve() / 'pg'}: PostgreSQL did not start: initdb: "), last
    assert "locale" in last, last


LOG_LINE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (CRITICAL|ERROR|WARNING|INFO|DEBUG) [\w.]+ \[(\d+)\] \S.*"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_every_line_a_server_logs_has_its_time_level_logger_and_process(database_url, workers):
    """tokentill's own lines had a time, a level and a logger; uvicorn's (its start, its stop, the
    access log, a request's error) had `INFO:     ` and nothing else, so a night's log could not be
    put in order or filtered by logger, and under --workers no line said which process wrote it."""
    import re

    env = {**os.environ, "TOKENTILL_DATABASE_URL": database_url, "TOKENTILL_SCHEDULER": "off"}
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", workers,
                             "--access-log"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    finally:
        code = _stop(proc)
    lines = [line for line in proc.stdout.read().splitlines() if line.strip()]
    assert code == 0 and lines
    odd = [line for line in lines if not re.fullmatch(LOG_LINE, line)]
    assert not odd, "\n".join(lines)
    assert any("GET /healthz" in line and "uvicorn.access" in line for line in lines), "\n".join(lines)
    if workers == "2":  # a worker's lines say which process wrote them, not the parent's
        assert len({re.fullmatch(LOG_LINE, line).group(2) for line in lines}) >= 2, "\n".join(lines)


def test_a_cluster_that_will_not_start_says_this_starts_reason_in_one_line_without_its_server_log():
    """The wheel logged the whole server log (`pg/log`, appended to since the data dir was made:
    a long-lived one's years of checkpoints and errors) to stderr above the line that says why, and
    that line gave the log's last FATAL line, however old: here a crash's from before, where this
    start failed for want of its configuration file (a line PostgreSQL writes without FATAL)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TOKENTILL_DATABASE_URL", "PGSERVER_POSTGRES_VERSION")}
    with tempfile.TemporaryDirectory(prefix="tokentill-datadir-") as tmp:
        env["TOKENTILL_DATA_DIR"] = tmp
        made = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], env=env, capture_output=True, text=True,
                              timeout=120)
        assert made.returncode == 0, made.stderr
        pg = Path(tmp) / "pg"
        with (pg / "log").open("a") as log:  # the server's own file: appending keeps its owner
            log.write("2026-01-01 00:00:00.000 UTC [7] FATAL:  terminating connection due to unexpected postmaster "
                      "exit\n")
            log.writelines(f"2026-01-01 00:00:00.000 UTC [7] LOG:  checkpoint {n} complete\n" for n in range(10_000))
        (pg / "postgresql.conf").unlink()
        done = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], env=env, capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "checkpoint" not in done.stderr and "Traceback" not in done.stderr, done.stderr[:2000]
    lines = done.stderr.strip().splitlines()
    says = f"TOKENTILL_DATA_DIR: {pg.resolve()}: PostgreSQL did not start: "
    assert len(lines) <= 2 and lines[-1].startswith(says), lines
    assert "postgresql.conf" in lines[-1] and "unexpected postmaster exit" not in lines[-1], lines[-1]


def test_a_data_dir_of_a_newer_postgresql_than_the_one_run_stops_the_start_in_one_line_untouched():
    """PGSERVER_POSTGRES_VERSION=16 on a data dir PostgreSQL 18 made: the start tried to "upgrade"
    it from 18 to 16 with pg_upgrade, which cannot go back, printed pg_upgrade's dump and ended
    in a line naming only its exit status, and left pg.upgrade-logs behind."""
    env = {k: v for k, v in os.environ.items() if k != "TOKENTILL_DATABASE_URL"}
    with tempfile.TemporaryDirectory(prefix="tokentill-datadir-") as tmp:
        pg = Path(tmp) / "pg"
        pg.mkdir()
        (pg / "PG_VERSION").write_text("18\n")
        done = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], capture_output=True, text=True,
                              env={**env, "TOKENTILL_DATA_DIR": tmp, "PGSERVER_POSTGRES_VERSION": "16"}, timeout=120)
        left = sorted(p.name for p in Path(tmp).iterdir() if p.name != ".pg.lock")  # the start's own lock
        kept = sorted(p.name for p in pg.iterdir())
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"TOKENTILL_DATA_DIR: {pg.resolve()} holds PostgreSQL 18 data, newer than the PostgreSQL 16 this tokentill "
        "runs (PGSERVER_POSTGRES_VERSION), and PostgreSQL cannot go back a major version: run it with PostgreSQL 18 "
        "(PGSERVER_POSTGRES_VERSION unset)"], done.stderr
    assert (left, kept) == (["pg"], ["PG_VERSION"])


def test_a_data_dir_whose_lock_file_cannot_be_written_stops_the_start_in_one_line():
    """TOKENTILL_DATA_DIR on a file system mounted read-only (or, not as root, a directory of
    another user's): opening the cluster's lock file `.pg.lock` beside `pg` failed with an OSError
    traceback. Root writes anywhere, so here the lock file's name is taken by a directory."""
    env = {k: v for k, v in os.environ.items() if k != "TOKENTILL_DATABASE_URL"}
    with tempfile.TemporaryDirectory(prefix="tokentill-datadir-") as tmp:
        (Path(tmp) / ".pg.lock").mkdir()
        done = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], env={**env, "TOKENTILL_DATA_DIR": tmp},
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"TOKENTILL_DATA_DIR: cannot use {Path(tmp).resolve()}: cannot open its lock file .pg.lock: Is a directory"], \
        done.stderr


def test_an_upgrade_that_fails_says_the_programs_reason_in_one_line():
    """A data dir of PostgreSQL 16 that pg_upgrade's first step cannot read (no global/pg_control):
    the wheel's 15-line dump of the program's output, then a line giving only its exit status and
    naming pg_upgrade's logs in pg.upgrade-logs, which this failure never made."""
    env = {k: v for k, v in os.environ.items() if k not in ("TOKENTILL_DATABASE_URL", "PGSERVER_POSTGRES_VERSION")}
    with tempfile.TemporaryDirectory(prefix="tokentill-datadir-") as tmp:
        pg = Path(tmp) / "pg"
        pg.mkdir()
        (pg / "PG_VERSION").write_text("16\n")
        done = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], env={**env, "TOKENTILL_DATA_DIR": tmp},
                              capture_output=True, text=True, timeout=120)
        left = sorted(p.name for p in Path(tmp).iterdir() if p.name != ".pg.lock")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("upgrading the embedded PostgreSQL cluster in ") and len(lines) == 2, lines
    # the file is missing, or (run as root) in a directory the server's user may not enter
    assert lines[-1].startswith(f"TOKENTILL_DATA_DIR: {pg.resolve()}: upgrading PostgreSQL 16 to 18 failed: "
                                f"pg_controldata: error: could not open file \"{pg.resolve()}/global/pg_control\" "
                                "for reading: ") and lines[-1].endswith("; the cluster is as it was"), lines[-1]
    assert left == ["pg"]

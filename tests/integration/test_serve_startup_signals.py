"""SIGTERM or SIGINT while `tokentill serve` (or `gateway`, or `serve --workers N`) starts: the
process exits 0, as it does once it serves, and the embedded PostgreSQL it started is stopped.

The handler was installed only after the database opened: a SIGTERM while the embedded cluster
started or the migrations ran killed the process outright, and its postmaster ran on, an
orphan holding the data dir. Each wait below ends at its event (a line of the server's log, the
process's exit, the postmaster's); its ceiling only bounds a hang on a loaded machine."""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from api.bench.common import free_port

EMBEDDED = "starting the embedded PostgreSQL in"
MIGRATING = "migrating the database"
CEILING_S = 180.0


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Outside pytest's own temporary directory, as in test_serve.py."""
    path = Path(tempfile.mkdtemp(prefix="tokentill-startsig-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _ignore_hangup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as `nohup` starts a command


def _as_a_terminal_starts_it() -> None:
    """SIGINT and SIGHUP at their default dispositions, as a terminal's foreground command has
    them: a test run started in the background (`.ci/run &`) inherits SIGINT ignored, one started
    under `nohup` SIGHUP ignored, and a command keeps an ignored signal ignored (on purpose: see
    test_a_server_started_under_nohup_keeps_serving_through_a_hangup)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


class Server:
    """A `tokentill` command on the embedded cluster, its log read line by line as it comes."""

    def __init__(self, data_dir: Path, *args: str, session: bool = False, nohup: bool = False) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("TOKENTILL_DATABASE_URL", "TOKENTILL_WORKERS")}
        env.update(TOKENTILL_DATA_DIR=str(data_dir), TOKENTILL_ADMIN_KEY="startsig-admin", TOKENTILL_SCHEDULER="off",
                   TOKENTILL_LOG_LEVEL="INFO")
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "api.cli", *args, "--port", str(self.port)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=session,  # session: a process group a hangup reaches whole
                                     preexec_fn=_ignore_hangup if nohup else _as_a_terminal_starts_it)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + CEILING_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"exited ({self.proc.wait()}) before {text!r}:\n{''.join(self.log)}")
            self.log.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} within {CEILING_S:.0f} s:\n{''.join(self.log)}")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + CEILING_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "".join(self.log)
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("never ready")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=CEILING_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        while True:
            try:
                line = self.lines.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            self.log.append(line)
        return "".join(self.log)


def postmaster_of(pgdata: Path) -> int | None:
    """The pid postmaster.pid names, while that process runs (a zombie does not)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        return pid if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE else None
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


def postgres_of(pgdata: Path) -> list[int]:
    """Every running postgres process of the cluster in `pgdata` (its postmaster names it)."""
    return [p.pid for p in psutil.process_iter(["name", "cmdline", "status"])
            if p.info["name"] == "postgres" and p.info["status"] != psutil.STATUS_ZOMBIE
            and str(pgdata) in (p.info["cmdline"] or [])]


def assert_no_postgres(pgdata: Path, log: str) -> None:
    deadline = time.monotonic() + CEILING_S
    while postmaster_of(pgdata) is not None or postgres_of(pgdata):
        if time.monotonic() > deadline:
            left = postgres_of(pgdata)
            for pid in left:  # not left behind for the next test
                psutil.Process(pid).kill()
            raise AssertionError(f"PostgreSQL of {pgdata} still runs ({left}) after the server exited:\n{log}")
        time.sleep(0.05)


@pytest.mark.parametrize("command, sig, at", [
    (("serve",), signal.SIGTERM, EMBEDDED),
    (("serve",), signal.SIGINT, EMBEDDED),
    (("serve",), signal.SIGTERM, MIGRATING),
    (("gateway",), signal.SIGINT, MIGRATING),
    (("serve", "--workers", "2"), signal.SIGTERM, EMBEDDED),
], ids=["serve-sigterm-starting", "serve-sigint-starting", "serve-sigterm-migrating", "gateway-sigint-migrating",
        "workers-sigterm-starting"])
def test_a_signal_during_start_up_exits_0_and_stops_the_embedded_postgresql(data_dir, command, sig, at):
    pgdata = data_dir / "pg"
    server = Server(data_dir, *command)
    server.wait_for(at)
    started = time.monotonic()
    code = server.stop(sig)
    took = time.monotonic() - started
    log = server.output()
    print(f"\n{' '.join(command)}: {signal.Signals(sig).name} at {at!r} -> exit {code} after {took:.2f} s")
    assert code == 0, log
    assert "Traceback" not in log, log
    assert_no_postgres(pgdata, log)
    # Nothing half-done: the next start migrates what is left (a migration cut short rolled back).
    done = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], capture_output=True, text=True, timeout=300,
                          env={**{k: v for k, v in os.environ.items() if k != "TOKENTILL_DATABASE_URL"},
                               "TOKENTILL_DATA_DIR": str(data_dir)})
    assert done.returncode == 0 and done.stdout.startswith("migrated to "), done.stdout + done.stderr
    assert_no_postgres(pgdata, done.stderr)


def test_a_signal_during_start_up_leaves_a_postmaster_another_server_uses_running(data_dir):
    pgdata = data_dir / "pg"
    first = Server(data_dir, "serve")
    try:
        first.wait_ready()
        shared = postmaster_of(pgdata)
        assert shared is not None
        second = Server(data_dir, "serve")
        second.wait_for(EMBEDDED)
        assert second.stop() == 0, second.output()
        assert postmaster_of(pgdata) == shared, "the first server's PostgreSQL was stopped"
        assert httpx.get(f"http://127.0.0.1:{first.port}/readyz", timeout=10).status_code == 200
    finally:
        code = first.stop()
    assert code == 0, first.output()
    assert_no_postgres(pgdata, first.output())


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)],
                         ids=["sigterm", "sigint", "sighup"])
def test_a_signal_stops_a_one_shot_command_and_the_embedded_postgresql_it_started(data_dir, sig, code):
    """`migrate` (as `keys`, `billing close`, `audit verify`): SIGTERM (and SIGHUP, a closed
    terminal) killed it outright and the cluster it had started ran on; SIGINT printed a traceback.
    Now each ends it as an error does
    (128 + the signal, as a shell reports it), its cluster stopped, and the next run goes on."""
    pgdata = data_dir / "pg"
    env = {k: v for k, v in os.environ.items() if k != "TOKENTILL_DATABASE_URL"}
    env["TOKENTILL_DATA_DIR"] = str(data_dir)
    # (an ignored SIGINT or SIGHUP inherited would keep the command migrating on, exit 0)
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "migrate"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_as_a_terminal_starts_it)
    deadline = time.monotonic() + CEILING_S
    while postmaster_of(pgdata) is None:  # the cluster runs: the command migrates, or is about to
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the embedded PostgreSQL never started"
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=CEILING_S)
    assert proc.returncode == code, out + err
    assert "Traceback" not in err and not out.startswith("migrated to"), out + err
    assert_no_postgres(pgdata, err)
    done = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0 and done.stdout.startswith("migrated to "), done.stdout + done.stderr
    assert_no_postgres(pgdata, done.stderr)


@pytest.mark.parametrize("command, group", [(("serve",), False), (("gateway",), True),
                                            (("serve", "--workers", "2"), True)],
                         ids=["serve", "gateway-group", "workers-group"])
def test_a_hangup_stops_a_serving_server_as_sigterm_does(data_dir, command, group):
    """SIGHUP (the terminal or ssh session `tokentill serve` runs in closes: the kernel sends it to
    the whole process group) killed the server outright: requests in progress cut, and the
    embedded PostgreSQL it had started left running, holding the data dir. It stops now as on
    SIGTERM: exit 0, the cluster stopped; `group` sends it to the process group, as a hangup does."""
    pgdata = data_dir / "pg"
    server = Server(data_dir, *command, session=group)
    try:
        server.wait_ready()
        if group:
            os.killpg(server.proc.pid, signal.SIGHUP)
        else:
            server.proc.send_signal(signal.SIGHUP)
        code = server.proc.wait(timeout=60)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
    log = server.output()
    try:
        assert code == 0, log
        assert "Traceback" not in log, log
    finally:
        if code != 0:  # killed: its PostgreSQL is not left running for the next test
            for pid in postgres_of(pgdata):
                psutil.Process(pid).kill()
    assert_no_postgres(pgdata, log)


def test_a_server_started_under_nohup_keeps_serving_through_a_hangup(data_dir):
    """`nohup tokentill serve`: SIGHUP ignored from the start stays ignored (the handler above
    must not take it over), and SIGTERM still stops the server."""
    server = Server(data_dir, "serve", nohup=True)
    try:
        server.wait_ready()
        server.proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert server.proc.poll() is None, server.output()
        assert httpx.get(f"http://127.0.0.1:{server.port}/readyz", timeout=10).status_code == 200
    finally:
        code = server.stop()
    assert code == 0, server.output()
    assert_no_postgres(data_dir / "pg", server.output())

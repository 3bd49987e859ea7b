"""`tokentill serve --workers N`: N server processes on one port, under one supervisor.

The parent binds the port, opens the database once (starts or joins the embedded cluster,
migrates), listens, and starts N worker processes. Workers are spawned, not forked: fresh
interpreters that inherit the listening socket and nothing else (no pool, no event loop, no
embedded-cluster handle). Each worker joins the database as a process of its own (on the
embedded cluster: its pid in the wheel's handle file and a supervisor of the postmaster, as a
single `tokentill serve` has; several supervisors queue on the cluster's lock), builds the app
and serves on the inherited socket under the connection guard of api/server.py. Whichever worker
accepts first takes a new connection; connections that queue while a worker restarts are taken
by the others.

- A worker that exits (a crash, kill -9) is started again after a backoff: 0.5 s, doubling up
  to 8 s while it keeps dying within STABLE_S of its start; at the GIVE_UP-th such death in a
  row the parent stops the other workers and exits 1.
- SIGTERM, SIGINT or SIGHUP to the parent: the parent closes its copy of the listening socket (so the
  port refuses new connections once the workers close theirs), every worker shuts down
  gracefully (SIGTERM: the requests in progress end, or are cut after the shutdown grace; see
  api/server.py), killed KILL_AFTER_GRACE_S after that grace; then the
  parent leaves the embedded cluster, which stops when the parent was its last user.
- A worker whose parent died (kill -9) shuts itself down.
- Scheduled jobs run in worker 0 only. They are safe in several processes (each job takes its
  own lock), but one process runs them for less; a restarted worker 0 runs them again.
- Metrics: prometheus_client's multiprocess mode, in a directory of the parent's; /metrics on
  any worker sums all of them (counters of dead workers included; gauges of live ones only).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from api.settings import Settings
from ledger.embedded import stop_signals

log = logging.getLogger("tokentill.workers")

BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
STABLE_S = 30.0  # a worker that ran this long before it died starts the backoff afresh
GIVE_UP = 5  # deaths in a row, each within STABLE_S of its start
# A worker not gone this long after its shutdown grace (TOKENTILL_SHUTDOWN_GRACE_SECONDS) is
# killed: its server cuts what is left at the grace, then shuts the application down.
KILL_AFTER_GRACE_S = 15.0


@dataclass(slots=True)
class Restarts:
    """When a worker that died starts again, and when to give up (pure: the caller times)."""

    failures: int = 0  # deaths in a row, each within STABLE_S of its start

    def died(self, lived_s: float) -> float | None:
        """The delay before the next start, or None: give up."""
        self.failures = self.failures + 1 if lived_s < STABLE_S else 1
        if self.failures >= GIVE_UP:
            return None
        return min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (self.failures - 1))


@dataclass(slots=True)
class Slot:
    index: int
    process: BaseProcess | None = None
    started: float = 0.0  # monotonic
    due: float | None = None  # monotonic time of the next start
    restarts: Restarts = field(default_factory=Restarts)


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """The port, bound and listening in the parent, inherited by every worker."""
    sock = bound_socket(host, port)
    sock.listen(backlog)
    return sock


def bound_socket(host: str, port: int) -> socket.socket:
    """The port, bound (another process listening on it is said here) but not yet accepting."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {exc}") from None
    sock.set_inheritable(True)
    return sock


def serve_workers(settings: Settings, workers: int, *, host: str, port: int, access_log: bool) -> int:
    """Run `workers` server processes on host:port until SIGTERM or SIGINT; 0, or 1 when a worker
    kept dying."""
    from api.runtime import check_connection_budget, check_spool, log_to_stderr, open_database
    from api.server import ACCEPT_BURST, check_connection_room, open_file_limit

    check_connection_room(settings, open_file_limit())  # each worker's: they inherit the limit
    log_to_stderr(settings)
    exit_quietly_on_signals()  # until the supervisor runs: a signal during start-up ends it (see open_database)
    # The port first, as one process does: one line and exit 1 when another process holds it,
    # before the database is opened (and, on the embedded cluster, started and migrated); it
    # listens once that is done (a client meanwhile is refused, not left waiting in its queue).
    with bound_socket(host, port) as sock:
        handle = open_database(settings)
        metrics_dir = None
        try:
            check_spool(handle.url, settings)  # one line here, not a worker dying at each start
            sock.listen(ACCEPT_BURST)
            metrics_dir = Path(tempfile.mkdtemp(prefix="tokentill-metrics-"))
            # In the environment the workers start with: a spawned worker imports what unpickling its
            # arguments needs (api.settings, and through it prometheus_client) before its first line
            # runs, and prometheus_client picks where its values live once, at import.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
            check_connection_budget(handle.url, settings, processes=workers)
            bound = sock.getsockname()[1]  # --port 0: the one the system chose
            log.info("serving on http://%s:%d with %d worker processes", f"[{host}]" if ":" in host else host,
                     bound, workers)
            worker_settings = replace(settings, workers=workers, metrics_dir=metrics_dir)
            return Supervisor(worker_settings, workers, sock, host, port, access_log).run()
        finally:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            handle.close()
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)


class Supervisor:
    def __init__(self, settings: Settings, workers: int, sock: socket.socket, host: str, port: int,
                 access_log: bool) -> None:
        self.settings, self.sock = settings, sock
        self.options = (host, port, access_log)
        self.slots = [Slot(i) for i in range(workers)]
        self.context = multiprocessing.get_context("spawn")
        self.stopping = False

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in stop_signals()}
        previous_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        code = 0
        try:
            for slot in self.slots:
                self._start(slot)
            while not self.stopping:
                code = self._step(wake_r)
        finally:
            self._stop_all()
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()
        return code

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self.stopping = True  # the wake-up fd ends the wait at once

    def _step(self, wake: socket.socket) -> int:
        """Wait for a worker's exit, a restart that is due or a signal; deal with it."""
        now = time.monotonic()
        due = [slot.due - now for slot in self.slots if slot.due is not None]
        waitables: list = [slot.process.sentinel for slot in self.slots if slot.process is not None]
        wait([*waitables, wake], timeout=max(0.0, min(due)) if due else None)
        try:
            while wake.recv(512):
                pass
        except BlockingIOError:
            pass
        for slot in self.slots:
            process = slot.process
            if process is not None and process.exitcode is not None:
                lived, pid, exitcode = time.monotonic() - slot.started, process.pid, process.exitcode
                self._forget(slot)
                if self.stopping:
                    continue
                delay = slot.restarts.died(lived)
                if delay is None:
                    log.error("worker %d (pid %s) died %d times in a row, the last with exit code %s after "
                              "%.1f s; stopping", slot.index, pid, GIVE_UP, exitcode, lived)
                    self.stopping = True
                    return 1
                log.warning("worker %d (pid %s) exited with code %s after %.1f s; restarting it in %.1f s",
                            slot.index, pid, exitcode, lived, delay)
                slot.due = time.monotonic() + delay
            if not self.stopping and slot.due is not None and slot.due <= time.monotonic():
                self._start(slot)
        return 0

    def _start(self, slot: Slot) -> None:
        host, port, access_log = self.options
        process = self.context.Process(target=_worker, name=f"tokentill-worker-{slot.index}",
                                       args=(slot.index, self.settings, self.sock, host, port, access_log))
        process.start()
        slot.process, slot.started, slot.due = process, time.monotonic(), None

    def _forget(self, slot: Slot) -> None:
        """A worker has exited: drop its live gauges from the metrics."""
        from prometheus_client import multiprocess

        assert slot.process is not None
        multiprocess.mark_process_dead(slot.process.pid, str(self.settings.metrics_dir))
        slot.process.close()
        slot.process = None

    def _stop_all(self) -> None:
        # The parent's copy of the listening socket: open, it kept the port accepting after the
        # workers closed theirs, and new connections queued unanswered until it exited (then reset).
        self.sock.close()
        live = [slot for slot in self.slots if slot.process is not None]
        for slot in live:
            if slot.process.exitcode is None:  # type: ignore[union-attr]
                slot.process.terminate()  # type: ignore[union-attr]  # SIGTERM: uvicorn's graceful shutdown
        grace = self.settings.shutdown_grace_s + KILL_AFTER_GRACE_S
        deadline = time.monotonic() + grace
        for slot in live:
            process = slot.process
            assert process is not None
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.warning("worker %d (pid %s) still runs %.0f s after SIGTERM; killing it", slot.index,
                            process.pid, grace)
                process.kill()
                process.join()
            self._forget(slot)


def _worker(index: int, settings: Settings, sock: socket.socket, host: str, port: int, access_log: bool) -> None:
    """One worker process: join the database, build the app, serve on the inherited socket."""
    # Set by the parent already (see serve_workers); here too for a worker started otherwise.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(settings.metrics_dir)
    from api.app import create_app
    from api.runtime import open_database
    from api.server import server, tune_gc

    # uvicorn shuts down gracefully, then re-raises the signal it caught: make that an ordinary
    # exit, so that the finally below leaves the embedded cluster (as api/cli.py does).
    exit_quietly_on_signals()
    handle = open_database(settings, migrate=False)  # the parent migrated
    try:
        app = create_app(replace(settings, scheduler=settings.scheduler and index == 0), handle.url,
                         cluster=handle.cluster)
        worker = server(app, settings, host=host, port=port, log_level=settings.log_level.lower(),
                        access_log=access_log)
        parent = multiprocessing.parent_process()
        if parent is not None:
            threading.Thread(target=_exit_with, args=(parent, worker), daemon=True,
                             name="parent-watch").start()
        tune_gc()
        worker.run(sockets=[sock])
    finally:
        handle.close()


def exit_quietly_on_signals() -> None:
    """SIGTERM, SIGINT and SIGHUP (unless ignored: nohup) end the process as an ordinary exit,
    status 0 (SystemExit: `finally` blocks and the wheel's clean-up at exit run, so the embedded
    cluster is left as it should be)."""
    for sig in stop_signals():
        signal.signal(sig, _exit_quietly)


def _exit_quietly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _exit_with(parent: BaseProcess, worker) -> None:
    """Shut the worker down gracefully when its parent has died (killed with -9, say)."""
    wait([parent.sentinel])
    log.warning("the parent process died; worker pid %d shuts down", os.getpid())
    worker.should_exit = True

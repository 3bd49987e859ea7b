"""Slowloris (issue 9, acceptance 3): 2,000 idle or unfinished connections against a `tokentill
serve` whose open-file limit is 1,024, while normal requests, each on a fresh connection, must all
succeed. The attackers hold their 2,000 connections throughout: one the server closes is opened
again. The read timeouts are set long here, so that what keeps the server answering is the
connection limit and its eviction of idle connections, not the timeouts.

What is asserted is that every normal request is answered, not how fast: a request's deadline
scales with the slowest of the same requests on the same machine before the attack (a loaded CI
box is slow for both), and the first request that fails ends the run, so a server that stops
answering fails the test within one deadline."""
from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import time

import httpx
import pytest

from api.bench.common import free_port

ADMIN = "slowloris-test-admin"
ATTACKERS = 2000
NORMAL_REQUESTS = 200
NORMAL_CLIENTS = 4
BASELINE_REQUESTS = 40
DEADLINE_FLOOR_S = 10.0
DEADLINE_FACTOR = 50  # the p99 under attack stays near the slowest before it (47 ms and 60 ms, unloaded)
ATTACK = [  # what an attacker sends, then nothing more
    b"",
    b"GET /v1/customers/x HTTP/1.1\r\nHost: tokentill\r\nX-Slow: ",
    b"POST /v1/customers HTTP/1.1\r\nHost: tokentill\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n{\"id\": ",
]


def _server_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


@pytest.fixture
def server(database_url: str):
    port = free_port()
    env = {**os.environ, "TOKENTILL_DATABASE_URL": database_url, "TOKENTILL_ADMIN_KEY": ADMIN,
           "TOKENTILL_SCHEDULER": "off", "TOKENTILL_LOG_LEVEL": "WARNING",
           "TOKENTILL_HEADER_TIMEOUT_SECONDS": "120", "TOKENTILL_BODY_TIMEOUT_SECONDS": "120",
           "TOKENTILL_BODY_DEADLINE_SECONDS": "120", "TOKENTILL_KEEPALIVE_SECONDS": "120"}
    env.pop("TOKENTILL_MAX_CONNECTIONS", None)
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port)], env=env,
                            preexec_fn=_server_fd_limit, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.2)
        yield port
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


def _many_sockets() -> None:
    """The attacker process may hold its 2,000 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, ATTACKERS + 1024)), hard))


class Attack:
    """Attacker connections that each send their bit of a request and then nothing, and connect
    again when the server closes them."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.opened = 0
        self.waiting_first = count
        self.all_open = asyncio.Event()
        self.stop = asyncio.Event()

    async def run(self) -> None:
        await asyncio.gather(*(self._one(ATTACK[i % len(ATTACK)]) for i in range(self.count)))

    async def _one(self, payload: bytes) -> None:
        first = True
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            self.opened += 1
            if first:
                first = False
                self.waiting_first -= 1
                if not self.waiting_first:
                    self.all_open.set()
            try:
                writer.write(payload)
                read = asyncio.ensure_future(reader.read())  # until the server closes it
                stopped = asyncio.ensure_future(self.stop.wait())
                await asyncio.wait([read, stopped], return_when=asyncio.FIRST_COMPLETED)
                read.cancel()
                stopped.cancel()
            except OSError:
                pass
            finally:
                writer.close()


async def _request(port: int, path: str, headers: bytes, deadline_s: float) -> tuple[int, float]:
    """Status and seconds of one request on a fresh connection; status 0 when it failed."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(deadline_s):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"GET %s HTTP/1.1\r\nHost: tokentill\r\nConnection: close\r\n%s\r\n"
                             % (path.encode(), headers))
                response = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return 0, time.perf_counter() - started
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0
    return status, time.perf_counter() - started


async def _hold(port: int, count: int) -> None:
    """The attacker process: hold `count` connections until stdin closes; say READY once each has
    been opened, and at the end how many connections were opened in all."""
    attack = Attack(port, count)
    running = asyncio.create_task(attack.run())
    await attack.all_open.wait()
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    attack.stop.set()
    await running
    print(attack.opened, flush=True)


class _Failed(Exception):
    pass


async def _normal_requests(port: int, count: int, deadline_s: float) -> list[tuple[int, float]]:
    """`count` requests from NORMAL_CLIENTS clients, each on a fresh connection; the first that
    fails (status 0: no answer within `deadline_s`) ends the run."""
    results: list[tuple[int, float]] = []

    async def client(n: int) -> None:
        for i in range(n):
            if i % 2:
                results.append(await _request(port, "/readyz", b"", deadline_s))
            else:
                results.append(await _request(port, "/v1/customers/no-such-customer",
                                              b"Authorization: Bearer %s\r\n" % ADMIN.encode(), deadline_s))
            if results[-1][0] not in (200, 404):
                raise _Failed

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(NORMAL_CLIENTS):
                group.create_task(client(count // NORMAL_CLIENTS))
    except* _Failed:
        pass
    return results


def test_two_thousand_idle_connections_do_not_stop_normal_requests(server):
    baseline = asyncio.run(_normal_requests(server, BASELINE_REQUESTS, 60))
    assert [status for status, _ in baseline if status not in (200, 404)] == []
    deadline_s = max(DEADLINE_FLOOR_S, DEADLINE_FACTOR * max(seconds for _, seconds in baseline))
    # The attackers run in a process of their own, as they would: in this one, 2,000 busy tasks
    # would delay the normal requests' own bytes.
    attack = subprocess.Popen([sys.executable, __file__, str(server), str(ATTACKERS)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, preexec_fn=_many_sockets)
    try:
        assert attack.stdout.readline().strip() == "READY"
        time.sleep(1)
        results = asyncio.run(_normal_requests(server, NORMAL_REQUESTS, deadline_s))
    finally:
        attack.stdin.close()
        opened = int(attack.stdout.readline() or 0)
        attack.wait(timeout=30)
    ms = sorted(seconds * 1000 for _status, seconds in results)
    failed = [status for status, _ in results if status not in (200, 404)]
    print(f"\nslowloris: {ATTACKERS} attackers held their connections ({opened} opened in all); "
          f"{len(results) - len(failed)}/{len(results)} normal requests answered; "
          f"p50 {ms[len(ms) // 2]:.1f} ms, p99 {ms[min(len(ms) - 1, len(ms) * 99 // 100)]:.1f} ms; "
          f"deadline {deadline_s:.1f} s (slowest before the attack {max(s for _, s in baseline) * 1000:.1f} ms)")
    assert failed == [], f"{len(failed)} normal request(s) unanswered within {deadline_s:.1f} s or refused"
    assert len(results) == NORMAL_REQUESTS
    assert sorted({status for status, _ in results}) == [200, 404]
    metrics = httpx.get(f"http://127.0.0.1:{server}/metrics", timeout=5).text
    evicted = next(float(line.split()[1]) for line in metrics.splitlines()
                   if line.startswith("tokentill_connections_evicted_total "))
    assert evicted >= ATTACKERS - 1024, "the server kept within its open-file limit by evicting idle connections"


if __name__ == "__main__":
    asyncio.run(_hold(int(sys.argv[1]), int(sys.argv[2])))

"""A writer process stopped (SIGSTOP) while it holds lane k's lock stalls only lane k: another
lane's reserves go on at their usual pace (p99 within 2 x the unstopped p99), and lane k itself
is free again once the server ends the stopped session (the writer's idle timeout, seconds)."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time

from wallet_kit import Kit, usd

from ledger.lanes import lane_count, lane_of
from wallets.commands import Reserve
from wallets.engine import Engine

IDLE_MS = 2_000  # the stopped writer's idle-in-transaction timeout
PROBE_S = 3.0

# A writer in a process of its own: one batch on the customer's lane, held open after its writes
# until the parent has stopped the process.
WRITER = textwrap.dedent("""
    import asyncio, sys
    from ledger.db import connect
    from wallets.commands import Reserve
    from wallets.engine import Engine

    async def main(url, cid):
        db = connect(url, pool_size=1, writer_idle_ms=int(sys.argv[3]))
        engine = Engine(db)
        original = engine._work

        async def held(conn, *args, **kw):
            outcomes = await original(conn, *args, **kw)
            print("holding", flush=True)
            await asyncio.sleep(3600)  # stopped here
            return outcomes

        engine._work = held
        await engine.execute([Reserve(customer_id=cid, request_id="stopped", request_hash=b"s", model="model-x",
                                      ttl_seconds=300, amount=1)])

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def _reserve(cid: str, request_id: str) -> Reserve:
    return Reserve(customer_id=cid, request_id=request_id, request_hash=request_id.encode(), model="model-x",
                   ttl_seconds=300, amount=usd("0.001"))


async def _latencies(engine: Engine, cid: str, tag: str, seconds: float) -> list[float]:
    """Reserve latencies (ms) of 4 clients in a closed loop on `cid` for `seconds`."""
    found: list[float] = []
    end = time.monotonic() + seconds

    async def client(c: int) -> None:
        n = 0
        while time.monotonic() < end:
            t = time.monotonic()
            await engine.submit(_reserve(cid, f"{tag}-{c}-{n}"))
            found.append((time.monotonic() - t) * 1000)
            n += 1

    await asyncio.gather(*(client(c) for c in range(4)))
    return found


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def test_a_stopped_writer_stalls_only_its_own_lane_and_only_for_its_idle_timeout(kit: Kit, scratch_url: str):
    lanes = await kit.db.read(lane_count)
    names = iter(range(1000))
    stopped_lane = other_lane = None
    cids: dict[int, str] = {}
    while len(cids) < 2:
        name = f"f{next(names)}"
        lane = lane_of(f"{name}-{kit.tag}", lanes)
        if lane not in cids:
            cids[lane] = await kit.customer(name)
            await kit.top_up(cids[lane], "100")
    stopped_lane, other_lane = sorted(cids)
    engine = Engine(kit.db, clock=kit.clock)
    unstopped = await _latencies(engine, cids[other_lane], f"{kit.tag}-before", PROBE_S)

    writer = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, scratch_url, cids[stopped_lane],
                                                  str(IDLE_MS), stdout=asyncio.subprocess.PIPE)
    try:
        assert writer.stdout is not None and (await writer.stdout.readline()).strip() == b"holding"
        os.kill(writer.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        own = asyncio.create_task(engine.submit(_reserve(cids[stopped_lane], f"{kit.tag}-own")))
        during = await _latencies(engine, cids[other_lane], f"{kit.tag}-during", PROBE_S)
        await asyncio.wait_for(own, 30)
        own_stall = time.monotonic() - stopped_at
    finally:
        os.kill(writer.pid, signal.SIGCONT)
        writer.kill()
        await writer.wait()
    within = _p99(during) <= 2 * _p99(unstopped)
    print(f"\nlane {other_lane} reserve p99: {_p99(unstopped):.1f} ms unstopped ({len(unstopped)} reserves), "
          f"{_p99(during):.1f} ms while lane {stopped_lane}'s writer was stopped ({len(during)} reserves): "
          f"{'within' if within else 'NOT within'} 2x; lane {stopped_lane} stalled {own_stall:.2f} s "
          f"(idle timeout {IDLE_MS / 1000:.0f} s)")
    # The figures are printed, not asserted (timings on a shared machine); what is asserted is that
    # the other lane never waited on the stopped one: behind one cluster-wide lock, every reserve
    # of the probe would have waited out the stop (2 s or more), and few would have run.
    assert max(during) < IDLE_MS / 2, max(during)
    assert len(during) >= len(unstopped) / 4
    assert IDLE_MS / 1000 - 0.5 <= own_stall <= IDLE_MS / 1000 + 3
    stopped = await kit.db.read(lambda conn: _count(conn, cids[stopped_lane]))
    assert stopped == 0  # the stopped batch never committed


async def _count(conn, cid: str) -> int:  # type: ignore[no-untyped-def]
    return (await conn.exec_driver_sql(
        "SELECT count(*) FROM reservations WHERE customer_id = %s AND request_id = 'stopped'", (cid,))).scalar()

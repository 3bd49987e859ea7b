"""`at_a_fixed_rate`, the open loops of `tokentill bench gateway` and `bench lifecycle`: calls
started at a rate whatever their latency, each number once, all awaited before it returns."""
from __future__ import annotations

import asyncio

from api.bench.common import at_a_fixed_rate


async def test_every_call_is_started_once_by_its_number_and_awaited_before_it_returns() -> None:
    started, ended, last_started = [], [], asyncio.Event()

    async def one(n: int) -> None:
        started.append(n)
        if n == 9:
            last_started.set()
        else:
            await last_started.wait()  # ends only once the last has started: none waits for the one before
        ended.append(n)

    # 1000 a second for 0.01 s: 10 calls (a loop awaiting each call before the next would never end)
    await asyncio.wait_for(at_a_fixed_rate(one, rate=1000, seconds=0.01), 30)
    assert started == list(range(10))
    assert sorted(ended) == list(range(10))


async def test_a_rate_too_low_for_the_seconds_still_starts_one_call() -> None:
    started = []

    async def one(n: int) -> None:
        started.append(n)

    await at_a_fixed_rate(one, rate=1, seconds=0.5)  # 0.5 calls: at least one
    assert started == [0]

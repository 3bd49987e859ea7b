"""One AsyncClient used by one event loop after another: a worker that runs each job with
`asyncio.run` (Celery, a CLI, a notebook cell) and keeps its client between them. The pooled
connections belong to the loop that opened them; the next loop's call reused one and failed
with "RuntimeError: Event loop is closed", an odd exception no retry takes."""
from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

import httpx
import pytest

from api.client import AsyncClient
from tests.api.test_sdk_durability import ADMIN, ANSWER_CEILING_S, new_customer


async def block(tt: AsyncClient, customer: str) -> str:
    async with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
        r.record(input_tokens=1000, output_tokens=400)
    return r.settlement["charged"]


def test_an_async_client_serves_one_event_loop_after_another(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    tt = AsyncClient(url, ADMIN)
    charged = [asyncio.run(block(tt, customer)) for _ in range(3)]
    asyncio.run(tt.aclose())
    assert charged == ["0.028"] * 3
    wallet = httpx.get(f"{url}/v1/customers/{customer}/wallet", headers={"Authorization": f"Bearer {ADMIN}"},
                       timeout=ANSWER_CEILING_S).json()
    assert Decimal(wallet["available"]) == Decimal("10.00") - 3 * Decimal("0.028") and Decimal(wallet["reserved"]) == 0
    assert not list(spool_dir.glob("*.jsonl"))


def test_two_event_loops_at_once_are_refused_clearly(live, spool_dir):
    """Two loops running at once (two threads, each its own loop) cannot share one client: the
    second is told so, not handed the first loop's connections."""
    url, book = live
    customer = new_customer(url, book)
    tt = AsyncClient(url, ADMIN, flush_spool=False)
    entered, leave = threading.Event(), threading.Event()

    async def holding() -> None:
        await tt.get(f"/v1/customers/{customer}/wallet")
        entered.set()
        await asyncio.to_thread(leave.wait)
        await tt.aclose()

    other = threading.Thread(target=asyncio.run, args=(holding(),))
    other.start()
    try:
        assert entered.wait(ANSWER_CEILING_S)
        with pytest.raises(RuntimeError, match="one event loop at a time"):
            asyncio.run(block(tt, customer))
    finally:
        leave.set()
        other.join()

"""One client shared by many callers at once (README "Sharing and the environment"): an
AsyncClient by hundreds of tasks, a Client by many threads, against the live server. Each block
is charged exactly once, nothing is refused or lost on the way (no pool error), and the spool
holds nothing afterwards."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from api.client import AsyncClient, Client
from api.spool import Spool
from tests.api.test_sdk_durability import ADMIN, ANSWER_CEILING_S, new_customer

BLOCKS = 200  # 200 x $0.028 = $5.60 of the customer's $10.00


def wallet(url: str, customer: str) -> dict:
    return httpx.get(f"{url}/v1/customers/{customer}/wallet", headers={"Authorization": f"Bearer {ADMIN}"},
                     timeout=ANSWER_CEILING_S).json()


def assert_each_charged_once(url: str, customer: str, spool: Spool) -> None:
    state = wallet(url, customer)
    assert Decimal(state["available"]) == Decimal("10.00") - BLOCKS * Decimal("0.028")
    assert Decimal(state["reserved"]) == 0
    assert not spool.path.exists() or spool.records() == []


@pytest.mark.parametrize("background", [False, True], ids=["settle", "background_settle"])
async def test_one_async_client_shared_by_hundreds_of_tasks(live, spool_dir, background):
    url, book = live
    customer = new_customer(url, book)

    async def block(tt: AsyncClient) -> None:
        async with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
            r.stream_meter().add("partial output")
            r.record(input_tokens=1000, output_tokens=400)

    async with AsyncClient(url, ADMIN, background_settle=background) as tt:
        await asyncio.gather(*(block(tt) for _ in range(BLOCKS)))
    assert_each_charged_once(url, customer, tt.spool)


def test_one_client_shared_by_many_threads(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)

    def block(tt: Client) -> None:
        with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
            r.record(input_tokens=1000, output_tokens=400)

    with Client(url, ADMIN) as tt, ThreadPoolExecutor(64) as pool:
        list(pool.map(lambda _: block(tt), range(BLOCKS)))
    assert_each_charged_once(url, customer, tt.spool)

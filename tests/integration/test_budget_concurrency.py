"""Acceptance 1 of issue 12: 64 concurrent reservations against a hard budget, over HTTP, spread
over two `tokentill serve` processes on one database: never past the limit (holds counted), the
exact number admitted, every refusal a 429 naming the budget, and verify ok. Once against a
monthly money budget of $10 with $1,000 in the wallet, once against a tokens-per-minute budget
through the SDK, whose refusals raise BudgetExceeded with the budget's details."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest

from api.bench.common import free_port
from api.bench.lifecycle_bench import BOOK, KEY, server_log, start_server, wait_ready
from api.client import AsyncClient, BudgetExceeded

ADMIN = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
async def servers(database_url: str) -> AsyncIterator[list[str]]:
    ports = [free_port(), free_port()]
    procs = [start_server(database_url, port) for port in ports]
    try:
        async with httpx.AsyncClient(headers=ADMIN, timeout=30) as client:
            for port, proc in zip(ports, procs, strict=True):
                await wait_ready(client, proc, f"http://127.0.0.1:{port}")
            await client.post(f"http://127.0.0.1:{ports[0]}/v1/price-books", json=BOOK)
        yield [f"http://127.0.0.1:{port}" for port in ports]
    except BaseException:
        for proc in procs:
            print(server_log(proc))
        raise
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


async def _customer(client: httpx.AsyncClient, base: str, **budget) -> tuple[str, str]:
    cid = f"conc-{uuid.uuid4().hex[:10]}"
    assert (await client.post(f"{base}/v1/customers", json={"id": cid, "price_book": "bench"})).status_code == 201
    assert (await client.post(f"{base}/v1/customers/{cid}/topups", json={"amount": "1000.00"})).status_code == 201
    created = await client.post(f"{base}/v1/budgets", json={"customer_id": cid, "mode": "hard", **budget})
    assert created.status_code == 201, created.text
    return cid, created.json()["id"]


async def test_64_concurrent_holds_never_pass_a_hard_monthly_money_budget(servers: list[str]):
    async with httpx.AsyncClient(headers=ADMIN, timeout=60) as client:
        cid, budget_id = await _customer(client, servers[0], window="month", metric="money", limit="10.00",
                                         time_zone="America/New_York")

        async def reserve(i: int) -> httpx.Response:
            return await client.post(f"{servers[i % 2]}/v1/reservations", json={
                "customer_id": cid, "request_id": f"m{i}", "model": "any", "amount": "0.30"})

        answers = await asyncio.gather(*(reserve(i) for i in range(64)))
        statuses = [a.status_code for a in answers]
        # 33 holds of 0.30 make 9.90; a 34th would make 10.20
        assert statuses.count(201) == 33 and statuses.count(429) == 31, statuses
        refusals = [a.json() for a in answers if a.status_code == 429]
        assert {(r["code"], r["budget_id"], r["limit"]) for r in refusals} == {("budget_exceeded", budget_id, "10.00")}
        assert all((r["used"], r["held"], r["requested"]) == ("0.00", "9.90", "0.30") for r in refusals)
        budget = (await client.get(f"{servers[1]}/v1/budgets/{budget_id}")).json()
        assert (budget["used"], budget["held"], budget["remaining"]) == ("0.00", "9.90", "0.10")
        wallet = (await client.get(f"{servers[0]}/v1/customers/{cid}/wallet")).json()
        assert (wallet["available"], wallet["reserved"]) == ("990.10", "9.90")
        verify = (await client.post(f"{servers[0]}/v1/audit/verify", timeout=600)).json()
        assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]


async def test_64_concurrent_sdk_reserves_never_pass_a_tokens_per_minute_budget(servers: list[str]):
    async with httpx.AsyncClient(headers=ADMIN, timeout=60) as client:
        cid, budget_id = await _customer(client, servers[0], window="minute", metric="tokens", limit=10000,
                                         api_key="chat")
    sdks = [AsyncClient(url, ADMIN["Authorization"].removeprefix("Bearer "), flush_spool=False) for url in servers]
    admitted: list[object] = []
    refused: list[BudgetExceeded] = []

    async def reserve(i: int) -> None:
        try:
            admitted.append(await sdks[i % 2].reserve(cid, "any", input_tokens=500, max_output_tokens=200,
                                                      dimensions={"api_key": "chat"}).__aenter__())
        except BudgetExceeded as exc:
            refused.append(exc)

    try:
        await asyncio.gather(*(reserve(i) for i in range(64)))
    finally:
        for sdk in sdks:
            await sdk.aclose()
    assert len(admitted) == 14 and len(refused) == 50  # 14 x 700 = 9,800 of 10,000
    assert {(e.budget_id, e.limit, e.metric, e.window) for e in refused} == {(budget_id, 10000, "tokens", "minute")}
    assert all(e.used + e.held + e.requested > e.limit for e in refused)
    assert all(e.retry_after is not None and 1 <= e.retry_after <= 60 for e in refused)
    async with httpx.AsyncClient(headers=ADMIN, timeout=60) as client:
        budget = (await client.get(f"{servers[0]}/v1/budgets/{budget_id}")).json()
        assert (budget["used"], budget["held"]) == (0, 9800)


async def test_a_stream_cancelled_after_200_tokens_counts_4000_while_in_flight_and_200_after(servers: list[str]):
    """Acceptance 3, through the SDK's stream meter: the hold counts from the reserve, and the
    block's exit on cancellation settles the 200 tokens generated, in the window it was held in."""
    async with httpx.AsyncClient(headers=ADMIN, timeout=60) as client:
        cid, budget_id = await _customer(client, servers[0], window="month", metric="output_tokens", limit=100000)

        async def counted() -> tuple[int, int]:
            view = (await client.get(f"{servers[0]}/v1/budgets/{budget_id}")).json()
            return view["used"], view["held"]

        sdk = AsyncClient(servers[1], KEY, flush_spool=False)
        try:
            with pytest.raises(asyncio.CancelledError):
                async with sdk.reserve(cid, "gpt-4o", prompt="Tell me a long story.", max_output_tokens=4000) as r:
                    meter = r.stream_meter()
                    for i in range(200):
                        meter.add(" a")  # one token each
                        if i in (0, 199):
                            assert await counted() == (0, 4000)
                    raise asyncio.CancelledError  # the caller went away mid-stream
        finally:
            await sdk.aclose()
        assert meter.output_tokens == 200
        assert await counted() == (200, 0)


async def test_64_concurrent_holds_crossing_a_soft_budgets_thresholds_alert_each_once(
        servers: list[str], database_url: str):
    """Many parallel reserves over two processes take a soft budget past 50, 80 and 100 % at once:
    each threshold is one outbox event, written by the hold that crossed it, whatever the order."""
    async with httpx.AsyncClient(headers=ADMIN, timeout=60) as client:
        cid, budget_id = await _customer(client, servers[0], window="month", metric="money", limit="10.00",
                                         thresholds=[50, 80, 100])
        assert (await client.patch(f"{servers[0]}/v1/budgets/{budget_id}", json={"mode": "soft"})).status_code == 200

        async def reserve(i: int) -> httpx.Response:
            return await client.post(f"{servers[i % 2]}/v1/reservations", json={
                "customer_id": cid, "request_id": f"s{i}", "model": "any", "amount": "0.30"})

        answers = await asyncio.gather(*(reserve(i) for i in range(64)))
        assert [a.status_code for a in answers] == [201] * 64  # soft: nothing refused
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        rows = await (await conn.execute(
            "SELECT payload FROM outbox WHERE topic = 'budget.threshold_crossed' AND payload->>'budget_id' = %s",
            (budget_id,))).fetchall()
    # the 17th hold of 0.30 passes 5.00, the 27th 8.00, the 34th 10.00: it counts what it crossed with
    assert sorted((p["threshold"], p["held"]) for (p,) in rows) == [(50, "5.10"), (80, "8.10"), (100, "10.20")]

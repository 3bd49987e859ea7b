"""A database that cannot serve right now answers 503 service_unavailable with Retry-After,
never 500: stopped, its connections ended, its pool exhausted, its retry budget spent.

These tests damage a PostgreSQL on purpose, so they run on a throwaway embedded cluster of
their own, not the session's.
"""
from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from own_cluster import BOOK, own_cluster

from api.app import create_app
from api.settings import Settings
from ledger import embedded

ADMIN = {"Authorization": "Bearer faults-admin"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[embedded.EmbeddedPostgres]:
    """An embedded cluster of this module's own, migrated, with USD."""
    with tempfile.TemporaryDirectory(prefix="tokentill-faults-") as tmp, own_cluster(Path(tmp) / "pg") as own:
        yield own


def pg_ctl(cluster: embedded.EmbeddedPostgres, *args: str) -> None:
    subprocess.run([str(cluster.bin_dir / "pg_ctl"), "-D", str(cluster.pgdata), *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=cluster.system_user)


@asynccontextmanager
async def app_client(cluster: embedded.EmbeddedPostgres, **settings) -> AsyncIterator[AsyncTestClient]:
    app = create_app(Settings(admin_key="faults-admin", scheduler=False, **settings), cluster.url)
    async with AsyncTestClient(app=app) as client:
        client.headers.update(ADMIN)
        yield client


async def customer(client: AsyncTestClient) -> str:
    tag = uuid.uuid4().hex[:10]
    assert (await client.post("/v1/price-books", json={**BOOK, "id": f"book-{tag}"})).status_code == 201
    created = await client.post("/v1/customers", json={"id": f"c-{tag}", "name": "C", "price_book": f"book-{tag}"})
    assert created.status_code == 201, created.text
    return f"c-{tag}"


def assert_unavailable(response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"] == "1"
    assert response.json()["code"] == "service_unavailable"


async def warm_pool(client: AsyncTestClient, connections: int) -> None:
    """Leave `connections` open connections in the app's pool, as a busy server would."""
    engine = client.app.state.services.db.engine
    async with AsyncExitStack() as held:
        for _ in range(connections):
            await held.enter_async_context(engine.connect())


def end_other_sessions(cluster: embedded.EmbeddedPostgres) -> int:
    """pg_terminate_backend every other client session: what a failover or an operator does."""
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        return conn.execute("""SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                               WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'""").fetchone()[0]


async def test_a_stopped_database_answers_503_with_retry_after_until_it_is_back(cluster):
    async with app_client(cluster, pool_size=2) as client:
        cid = await customer(client)
        await warm_pool(client, 2)
        pg_ctl(cluster, "stop", "-m", "immediate")
        try:
            for _ in range(2):  # first on the pooled connections, then on refused new ones
                assert_unavailable(await client.get("/v1/audit/trial-balance"))
                assert_unavailable(await client.get(f"/v1/customers/{cid}/wallet"))
                assert_unavailable(await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"}))
                assert_unavailable(await client.post("/v1/customers", json={
                    "id": f"{cid}-2", "name": "C", "price_book": "any"}))
            # Commands sent together ride in shared wallet batches: a batch's error reaches each one.
            together = await asyncio.gather(*(client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"})
                                              for _ in range(8)))
            for response in together:
                assert_unavailable(response)
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
            # refused at once, not cut short after a wait for a connection (the pool timeout is 5 s)
            assert ready.json()["detail"] == "database unreachable: OperationalError", ready.text
        finally:
            cluster.ensure_running()
        assert (await client.get("/readyz")).status_code == 200
        topup = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"})
        assert topup.status_code == 201, topup.text
        assert topup.json()["wallet"]["available"] == "1.00"


async def test_connections_the_server_ended_cost_one_503_then_the_pool_is_renewed(cluster):
    async with app_client(cluster, pool_size=4) as client:
        cid = await customer(client)
        # Through the wallet engine (its statements bypass SQLAlchemy's error handling) ...
        await warm_pool(client, 4)
        assert end_other_sessions(cluster) >= 4
        assert_unavailable(await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"}))
        for _ in range(6):  # no stale connection is handed out again
            topup = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"})
            assert topup.status_code == 201, topup.text
        # ... and through SQLAlchemy (reads).
        await warm_pool(client, 4)
        assert end_other_sessions(cluster) >= 4
        assert_unavailable(await client.get(f"/v1/customers/{cid}/wallet"))
        for _ in range(6):
            wallet = await client.get(f"/v1/customers/{cid}/wallet")
            assert wallet.status_code == 200 and wallet.json()["available"] == "6.00"


async def test_readiness_is_not_refused_for_a_pooled_connection_the_server_ended(cluster):
    """A connection of the pool the server ended (a postmaster restarted before the supervisor
    renewed the pool, a failover, an operator) is not the database being down: readiness answered
    503 "database unreachable: OperationalError" on it (the suite's CI read it so right after a
    restarted postmaster's first top-up, test_supervisor), where the next connection works. It is
    asked again on a fresh connection, once: the pool is renewed by the failure."""
    async with app_client(cluster, pool_size=2) as client:
        await warm_pool(client, 2)
        assert end_other_sessions(cluster) >= 2
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert (await client.get("/readyz")).status_code == 200


async def test_an_exhausted_pool_answers_503_after_the_pool_timeout(cluster):
    async with app_client(cluster, pool_size=1, pool_timeout_s=0.5) as client:
        cid = await customer(client)
        engine = client.app.state.services.db.engine
        async with AsyncExitStack() as held:
            for _ in range(2):  # the pool's one connection and its one overflow
                await held.enter_async_context(engine.connect())
            started = time.monotonic()
            assert_unavailable(await client.get(f"/v1/customers/{cid}/wallet"))
            assert 0.4 < time.monotonic() - started < 3
            assert_unavailable(await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"}))
            started = time.monotonic()  # a full pool is load: readiness asks the database over a session of its own
            assert (await client.get("/readyz")).status_code == 200
            assert time.monotonic() - started < 3
        assert (await client.get(f"/v1/customers/{cid}/wallet")).status_code == 200


async def test_a_spent_retry_budget_answers_503_with_retry_after(cluster):
    """Every attempt fails with a real serialization failure (SQLSTATE 40001, raised by a
    trigger): the unit of work retries its 30 times, then gives up with 503."""
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute("""CREATE FUNCTION always_conflict() RETURNS trigger LANGUAGE plpgsql AS $$
                        BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$""")
        conn.execute("""CREATE TRIGGER always_conflict BEFORE INSERT ON customers
                        FOR EACH ROW EXECUTE FUNCTION always_conflict()""")
    try:
        async with app_client(cluster) as client:
            response = await client.post("/v1/customers", json={
                "id": f"c-{uuid.uuid4().hex[:10]}", "name": "C", "price_book": "any"})
            assert_unavailable(response)
            metrics = (await client.get("/metrics")).text
            assert "tokentill_transaction_retries_exhausted_total" in metrics
    finally:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER always_conflict ON customers; DROP FUNCTION always_conflict()")


@pytest.mark.parametrize("sqlstate", ["53100", "53000"], ids=["disk_full", "insufficient_resources"])
async def test_a_database_out_of_disk_answers_503_not_500(cluster, sqlstate):
    """PostgreSQL out of disk (53100 disk_full: 'could not extend file ... No space left on
    device') refused every write with a 500 internal_error and a traceback per request, which
    clients (the SDK) do not retry: a settle made then was given up, where a 503 is retried, or
    spooled, until the operator frees the disk. Raised here by a trigger, as a full disk raises it."""
    async with app_client(cluster) as client:
        cid = await customer(client)
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute(f"""CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
                             BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'
                                   USING ERRCODE = '{sqlstate}'; END $$""")
            for table in ("customers", "lots"):
                conn.execute(f"CREATE TRIGGER disk_full BEFORE INSERT ON {table} "
                             "FOR EACH ROW EXECUTE FUNCTION disk_full()")
        try:
            assert_unavailable(await client.post("/v1/customers", json={
                "id": f"c-{uuid.uuid4().hex[:10]}", "name": "C", "price_book": "any"}))
            assert_unavailable(await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"}))
        finally:
            with psycopg.connect(cluster.url, autocommit=True) as conn:
                conn.execute("DROP TRIGGER disk_full ON customers; DROP TRIGGER disk_full ON lots; "
                             "DROP FUNCTION disk_full()")
        assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"})).status_code == 201

"""Fixtures of the API tests: an app with an admin client (`app`, `client`: a file may define its own),
the SDK tests' live server (durability and background settles), and an httpx client of it for races."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.bench.common import free_port
from api.demo import _Server
from api.settings import Settings
from tests.api.test_sdk_durability import ADMIN, live_book, wait_ready


@pytest.fixture(scope="module")
def live(database_url) -> Iterator[tuple[str, str]]:
    """An in-process server and a price book of the demo's prices."""
    port = free_port()
    server = _Server(create_app(Settings(admin_key=ADMIN, scheduler=False), database_url), port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    yield url, live_book(url)
    server.stop()


@pytest.fixture
async def http(live: tuple[str, str]) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """An admin client of the live server and its price book: requests sent at once (asyncio.gather)
    are in flight together, which they never are through AsyncTestClient (each request blocks the
    test's event loop until the app has answered it)."""
    url, book = live
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=120,
                                 limits=httpx.Limits(max_connections=64)) as c:
        yield c, book


@pytest.fixture
def spool_dir(tmp_path, monkeypatch) -> Path:
    """Every client of the test spools here: never in the user's own data dir."""
    directory = tmp_path / "spool"
    monkeypatch.setenv("TOKENTILL_SPOOL_DIR", str(directory))
    return directory


@pytest.fixture
async def app(db, database_url) -> Litestar:
    """The API with the admin key `test-admin` and no scheduler, on the session's database."""
    return create_app(Settings(admin_key="test-admin", scheduler=False), database_url)


@pytest.fixture
async def client(app: Litestar):
    """A test client of `app` sending the admin key."""
    async with AsyncTestClient(app=app) as c:
        c.headers.update({"Authorization": "Bearer test-admin"})
        yield c

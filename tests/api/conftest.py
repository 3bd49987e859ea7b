"""Fixtures of the API tests: an app with an admin client (`app`, `client`: a file may define its own,
built with tests/api/apps.py as these are), the SDK tests' live server (durability and background
settles), and an httpx client of it for races."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from litestar import Litestar

from tests.api.apps import api_app, api_client, live_server
from tests.api.test_sdk_durability import ADMIN, live_book


@pytest.fixture(scope="module")
def live(database_url) -> Iterator[tuple[str, str]]:
    """An in-process server and a price book of the demo's prices."""
    with live_server(database_url, admin=ADMIN) as url:
        yield url, live_book(url)


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
    return api_app(database_url)


@pytest.fixture
async def client(app: Litestar):
    """A test client of `app` sending the admin key."""
    async with api_client(app=app, send_admin=True) as c:
        yield c

"""Fixtures of the API tests: an app with an admin client (`app`, `client`: a file may define its own),
and the SDK tests' live server (durability and background settles)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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

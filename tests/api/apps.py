"""The API tests' one way to an app on a database of their choosing and a client of it.

`api_client` is the in-process client (AsyncTestClient) and `live_server` a real server (uvicorn in
a thread) for what the in-process client cannot do: requests in flight together, the SDK, a gateway.
Both build the app with `api_app`: no scheduler, an admin key, and any other Settings as keywords.
Which database (the session's, a scratch one of the test's own) and which scope (test, module,
session) stay the caller's: the fixture that calls the factory decides, as it did before.
"""
from __future__ import annotations

import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.bench.common import free_port
from api.demo import _Server
from api.settings import Settings

ADMIN_KEY = "test-admin"
CONSOLE_URL = "https://console.test"  # the console's cookies are Secure: it is served over https only
START_CEILING_S = 300.0  # a server's start on a loaded machine, migrations and all


def api_app(database_url: str, admin: str = ADMIN_KEY, **settings: Any) -> Litestar:
    """The API on `database_url` with the admin key `admin` and no scheduler; `settings` set the rest."""
    return create_app(Settings(admin_key=admin, scheduler=False, **settings), database_url)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def currency_books(prices: dict[str, str], *token_types: str) -> list[dict]:
    """A price book `book-<currency>` for each currency in `prices`, in force since 2026-01-01:
    model-a at that price per 1M tokens of each of `token_types` (rules `in`, `out`)."""
    rule_ids = {"input": "in", "output": "out"}
    return [{"id": f"book-{currency}", "currency": currency, "effective_from": "2026-01-01T00:00:00Z",
             "rules": [{"id": rule_ids[t], "model": "model-a", "token_type": t, "price": price} for t in token_types]}
            for currency, price in prices.items()]


async def book_customer(client: AsyncTestClient, cid: str, *token_types: str, admin: str | None = None,
                        **customer: Any) -> str:
    """Customer `cid` (postpaid unless `customer` says otherwise) on a USD book of the same id in
    force since 2026-01-01: model-a at $10.00 per 1M input and $20.00 per 1M output tokens, of
    `token_types` (both when none is given). `admin`: the key to send, for a client that sends none."""
    prices = {"input": ("in", "10.00"), "output": ("out", "20.00")}
    book = {"id": cid, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
            "rules": [{"id": prices[t][0], "model": "model-a", "token_type": t, "price": prices[t][1]}
                      for t in token_types or ("input", "output")]}
    headers = {} if admin is None else bearer(admin)
    assert (await client.post("/v1/price-books", json=book, headers=headers)).status_code == 201
    made = await client.post("/v1/customers", json={"id": cid, "price_book": cid, "billing": "postpaid", **customer},
                             headers=headers)
    assert made.status_code == 201, made.text
    return cid


async def send_usage(client: AsyncTestClient, cid: str, events: Iterable[dict]) -> None:
    """`events` sent as usage of customer `cid` (of model-a unless an event names its model), each accepted."""
    items = [{"customer_id": cid, "model": "model-a", **e} for e in events]
    sent = await client.post("/v1/usage-events", json=items)
    assert sent.status_code == 200 and sent.json()["accepted"] == len(items), sent.text


async def sign_in(client: AsyncTestClient, key: str) -> str:
    """Sign the console client in with `key`; the CSRF token its forms send."""
    page = await client.get("/console/sign-in")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert token, page.text
    signed = await client.post("/console/sign-in", data={"key": key, "_csrf_token": token.group(1)},
                               follow_redirects=False)
    assert signed.status_code == 303, signed.text
    page = await client.get(signed.headers["location"])  # a sign-in begins a new session: its own token
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert token, page.text
    return token.group(1)


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = START_CEILING_S) -> None:
    """Until the server at `url` answers /readyz with 200 (`proc`, where given, must not exit first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc is None or proc.poll() is None, "the server exited"
        try:
            if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} never became ready")


@asynccontextmanager
async def api_client(database_url: str | None = None, *, admin: str = ADMIN_KEY, app: Litestar | None = None,
                     send_admin: bool = False, console: bool = False, signed_in: bool = False,
                     books: Iterable[dict] = (), **settings: Any) -> AsyncIterator[AsyncTestClient]:
    """An in-process client of `app` (or of `api_app(database_url, admin, **settings)`).

    send_admin: every request carries the admin key (a request may still send other headers);
    console: the console's https origin; signed_in: a console client signed in with the admin key;
    books: price books created first (each a 201) with the admin key."""
    if app is None:
        assert database_url is not None, "api_client wants a database_url or an app"
        app = api_app(database_url, admin, **settings)
    else:
        assert database_url is None and not settings, "an app comes with its own database and settings"
    extra = {"base_url": CONSOLE_URL} if console or signed_in else {}
    async with _running(app, extra) as client:
        if send_admin:
            client.headers.update(bearer(admin))
        for book in books:
            made = await client.post("/v1/price-books", headers=bearer(admin), json=book)
            assert made.status_code == 201, made.text
        if signed_in:
            await sign_in(client, admin)
        yield client


_RUNNING: dict[int, AsyncTestClient] = {}  # id(app) -> the client whose lifespan runs it


@asynccontextmanager
async def _running(app: Litestar, extra: dict[str, Any]) -> AsyncIterator[AsyncTestClient]:
    """A client of `app`: the first runs its lifespan on an event loop of its own (a blocking
    portal's); one made while it runs (a signed-in browser beside the API client) sends its requests
    through that loop and lifespan, as the app allows only one lifespan at a time."""
    host = _RUNNING.get(id(app))
    if host is None:
        async with AsyncTestClient(app=app, **extra) as client:
            _RUNNING[id(app)] = client
            try:
                yield client
            finally:
                del _RUNNING[id(app)]
        return
    client = AsyncTestClient(app=app, **extra)
    client.blocking_portal = host.blocking_portal
    try:
        yield client
    finally:
        del client.blocking_portal  # as AsyncTestClient's own exit does; its transport holds nothing


@contextmanager
def live_server(database_url: str | None = None, *, admin: str = ADMIN_KEY, app: Litestar | None = None,
                **settings: Any) -> Iterator[str]:
    """A real server of `app` (or of `api_app(database_url, admin, **settings)`) on a free port,
    ready; its base URL. It stops afterwards."""
    if app is None:
        assert database_url is not None, "live_server wants a database_url or an app"
        app = api_app(database_url, admin, **settings)
    port = free_port()
    server = _Server(app, port)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        yield url
    finally:
        server.stop()

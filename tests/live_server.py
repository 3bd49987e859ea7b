"""A real server (uvicorn on a free port, in a thread) on a database of the test's choosing."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from api.app import create_app
from api.bench.common import free_port
from api.client import Client
from api.demo import _Server, _wait_ready
from api.settings import Settings


@contextmanager
def serving(url: str, admin: str) -> Iterator[Client]:
    """A client with the admin key to a server on `url`, ready; the server stops afterwards."""
    port = free_port()
    server = _Server(create_app(Settings(admin_key=admin, scheduler=False), url), port)
    server.start()
    try:
        with Client(f"http://127.0.0.1:{port}", admin) as tt:
            _wait_ready(tt)
            yield tt
    finally:
        server.stop()

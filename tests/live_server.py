"""A real server (uvicorn on a free port, in a thread) on a database of the test's choosing."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from api.client import Client
from tests.api.apps import live_server


@contextmanager
def serving(url: str, admin: str) -> Iterator[Client]:
    """A client with the admin key to a server on `url`, ready; the server stops afterwards."""
    with live_server(url, admin=admin) as base, Client(base, admin) as tt:
        yield tt

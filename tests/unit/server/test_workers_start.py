"""`serve --workers N` at start: the port is taken (bound) before the database is opened, so that
another process holding it is said at once, but it accepts no connection until the workers can
answer: while the database is opened (and migrated, which may take minutes) a client is refused
and tries elsewhere, instead of waiting in the listen queue."""
from __future__ import annotations

import socket

import pytest

import api.runtime
from api.bench.common import free_port
from api.settings import Settings
from api.workers import serve_workers


def test_the_port_refuses_connections_while_the_database_is_opened(monkeypatch):
    port = free_port()
    seen = []

    def opening(settings, **_):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            seen.append("accepted")
        except ConnectionRefusedError:
            seen.append("refused")
        raise SystemExit("stopped here")

    monkeypatch.setattr(api.runtime, "open_database", opening)
    with pytest.raises(SystemExit, match="stopped here"):
        serve_workers(Settings(), 2, host="127.0.0.1", port=port, access_log=False)
    assert seen == ["refused"]
    with socket.socket() as again:  # and the port is let go
        again.bind(("127.0.0.1", port))

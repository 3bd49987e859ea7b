"""What the SDK takes from its environment and how it is shared, as the README says: a Client
goes through the HTTP(S)_PROXY the environment names (httpx's trust_env), bypassing the hosts
NO_PROXY lists, unless a `transport=` is given; one Client may be shared by threads."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from api.client import Client

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@contextmanager
def answering(who: str) -> Iterator[tuple[str, list[str]]]:
    """A server answering every GET with {"by": who, "path": ...}; its URL and the request lines it got."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.requestline)
            body = json.dumps({"by": who, "path": self.path}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_proxies(monkeypatch):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_the_environments_proxy_is_used_and_no_proxy_bypasses_it(no_proxies, tmp_path):
    with answering("server") as (url, _), answering("proxy") as (proxy, through_proxy):
        no_proxies.setenv("HTTP_PROXY", proxy)
        with Client(url, "secret", spool=False, flush_spool=False) as tt:
            assert tt.get("/v1/customers/acme")["by"] == "proxy"
        assert through_proxy == [f"GET {url}/v1/customers/acme HTTP/1.1"]  # the absolute form a proxy gets
        no_proxies.setenv("NO_PROXY", "127.0.0.1")
        with Client(url, "secret", spool=False, flush_spool=False) as tt:
            assert tt.get("/v1/customers/acme")["by"] == "server"
        no_proxies.delenv("NO_PROXY")
        with Client(url, "secret", spool=False, flush_spool=False, transport=httpx.HTTPTransport()) as tt:
            assert tt.get("/v1/customers/acme")["by"] == "server"  # a transport given is used as it is


def test_one_client_is_shared_by_many_threads(no_proxies):
    with answering("server") as (url, seen), Client(url, "secret", spool=False, flush_spool=False) as tt, \
            ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda i: tt.get(f"/v1/customers/c{i}")["path"], range(400)))
    assert answers == [f"/v1/customers/c{i}" for i in range(400)]  # each thread got its own answer
    assert len(seen) == 400

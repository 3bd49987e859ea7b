"""HTTP metrics for Prometheus: requests, errors, durations and requests in progress, by method,
route template and status. The same series Litestar's Prometheus plugin exports, from a plain
ASGI middleware: the plugin wrapped `send` with functools.wraps and copied state on every
request, 8 % of the server's CPU under `tokentill bench lifecycle`. Each series' child is looked
up once (`labels()` takes a lock and builds a key on every call) and kept here."""
from __future__ import annotations

import time

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Gauge, Histogram

APP = "tokentill"
LABELS = ["method", "path", "status_code", "app_name"]
REQUESTS = Counter("tokentill_requests", "Total requests", LABELS)
ERRORS = Counter("tokentill_requests_error", "Total errors in requests (5xx)", LABELS)
ITEM_ERRORS = Counter("tokentill_bulk_item_errors", "Items of bulk calls answered 5xx for a fault that is no "
                      "refusal (the call itself answered 200)", ["path", "code", "app_name"])
DURATION = Histogram("tokentill_request_duration_seconds", "Request duration, in seconds", LABELS)
IN_PROGRESS = Gauge("tokentill_requests_in_progress", "Total requests currently in progress",
                    ["method", "path", "app_name"], multiprocess_mode="livesum")
MAX_KEPT = 4096  # children kept per table (a path without a template would be its own series: bounded)

_progress: dict[tuple[str, str], object] = {}
_finished: dict[tuple[str, str, int], tuple[object, object, object | None]] = {}


def _progress_of(method: str, path: str):
    child = _progress.get((method, path))
    if child is None:
        if len(_progress) >= MAX_KEPT:
            _progress.clear()
        child = _progress[(method, path)] = IN_PROGRESS.labels(method, path, APP)
    return child


def _finished_of(method: str, path: str, status: int):
    children = _finished.get((method, path, status))
    if children is None:
        if len(_finished) >= MAX_KEPT:
            _finished.clear()
        labels = (method, path, str(status), APP)
        children = _finished[(method, path, status)] = (
            REQUESTS.labels(*labels), DURATION.labels(*labels), ERRORS.labels(*labels) if status >= 500 else None)
    return children


def _template(scope: Scope) -> str:
    """The route a request is counted under: its template; under a mount (the gateway's), whose
    scope holds the path under it and no template, the mount's, as `/openai/v1/{path}`: a path
    of its own for each would be a series anyone could add, without a key, without end."""
    template = scope.get("path_template")
    if template:
        return template
    handler = scope.get("route_handler")
    if handler is not None and getattr(handler, "is_mount", False):
        return min(handler.paths).rstrip("/") + "/{path}"
    return scope["path"]


def metrics_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await app(scope, receive, send)
            return
        method, path = scope["method"], _template(scope)
        status = 500  # unless a response starts
        start = time.perf_counter()

        async def send_and_see(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        progress = _progress_of(method, path)
        progress.inc()
        try:
            await app(scope, receive, send_and_see)
        finally:
            progress.dec()
            requests, duration, errors = _finished_of(method, path, status)
            requests.inc()
            duration.observe(time.perf_counter() - start)
            if errors is not None:
                errors.inc()

    return middleware

"""`create_app(settings, database_url)` wires everything; nothing happens at import time."""
from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from api import console
from api.auth import principal_for
from api.errors import EXCEPTION_HANDLERS
from api.gateway.mounts import MOUNTS
from api.gateway.mounts import routes as gateway_routes
from api.gateway.proxy import Gateway
from api.gateway.settles import spool_for
from api.keys import KeyCache
from api.metrics import metrics_middleware
from api.routes import audit, journal, keys, ops, webhooks
from api.routes.wallet_routes import ROUTES as WALLET_ROUTES
from api.routes.wire import WireRequest, guard_request
from api.runtime import Supervisor, log_to_stderr
from api.settings import Settings
from api.webhooks import Dispatcher, DispatchSettings
from ledger.db import Database, connect
from ledger.embedded import EmbeddedPostgres
from wallets.jobs import build_scheduler, jobs
from wallets.service import WalletService
from wallets.webhooks.rules import RetryPolicy

log = logging.getLogger("tokentill")


@dataclass(slots=True)
class Services:
    settings: Settings
    db: Database
    _scales: dict[str, int]
    keys: KeyCache
    wallets: WalletService | None = None
    gateway: Gateway | None = None
    database_url: str = ""  # libpq URL, for the synchronous readers (the console's export download)

    async def asset_scale(self, conn: AsyncConnection, asset: str) -> int | None:
        if asset not in self._scales:
            scale = (await conn.execute(text("SELECT scale FROM assets WHERE code = :c"),
                                        {"c": asset})).scalar()
            if scale is None:
                return None
            self._scales[asset] = int(scale)
        return self._scales[asset]


async def _complete_allow_header(message, scope) -> None:
    """Litestar's automatic OPTIONS answer lists only one handler's methods for a path served by
    several (GET and POST /v1/api-keys, say); list them all, as RFC 9110 asks. Wherever GET is
    allowed, so is HEAD (`_head_as_get`). Only an OPTIONS answer and a 405 carry Allow (Litestar
    sets it on nothing else): other answers pass untouched, unread. The gateway's mounts answer
    no HEAD (`_head_as_get` leaves them be): their Allow stays the one method each path takes."""
    if message["type"] != "http.response.start" or (message["status"] != 405 and scope.get("method") != "OPTIONS"):
        return
    if scope.get("method") == "OPTIONS" and "route_handler" in scope:  # none: a 404, which has no Allow
        methods = {"OPTIONS"}
        for path in scope["route_handler"].paths:
            methods |= set(scope["app"].route_handler_method_map.get(path, {}))
    else:
        given = next((v for k, v in message.get("headers", []) if k.lower() == b"allow"), None)
        if given is None:
            return
        methods = {m.strip() for m in given.decode("latin-1").split(",") if m.strip()}
    if "GET" in methods and not _on_the_gateway(scope):
        methods.add("HEAD")
    message["headers"] = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
    message["headers"].append((b"allow", ", ".join(sorted(methods)).encode()))


def _head_as_get(inner: ASGIApp) -> ASGIApp:
    """HEAD answered as the same GET without its content (RFC 9110 9.1 and 9.3.2: a
    general-purpose server supports both): the status and headers, Content-Length included, of
    what GET would answer. Not on the gateway's mounts, where each path takes one method (a 405 names it)."""
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or scope["path"].startswith(_GATEWAY):
            await inner(scope, receive, send)
            return

        async def headless(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await inner({**scope, "method": "GET"}, receive, headless)

    return app


_GATEWAY = tuple(prefix.rstrip("/") + "/" for prefix in MOUNTS.values())


def _on_the_gateway(scope: Scope) -> bool:
    """Whether the request is to a gateway mount (whose scope's `path` is the mount's remainder)."""
    return bytes(scope.get("raw_path") or b"").decode("latin-1").startswith(_GATEWAY)


def create_app(settings: Settings, database_url: str, *, cluster: EmbeddedPostgres | None = None,
               **overrides: Any) -> Litestar:
    """`cluster`: the embedded cluster `database_url` points at, if it is one: the app then
    supervises it (restarts a postmaster that died, and renews its pool)."""
    db = connect(database_url, pool_size=settings.pool_size, pool_timeout_s=settings.pool_timeout_s,
                 writer_idle_ms=round(settings.writer_idle_s * 1000))
    services = Services(settings, db, {}, KeyCache(db, database_url), database_url=database_url)
    services.wallets = WalletService(services.db, max_budgets_per_customer=settings.max_budgets_per_customer)
    services.gateway = Gateway(settings.gateway, services.wallets, lambda token: principal_for(services, token),
                               spool_for(database_url, settings.gateway.spool_dir))
    supervisor = Supervisor(cluster, db.engine.dispose) if cluster is not None else None
    dispatcher = _dispatcher(settings, database_url) if settings.webhooks else None
    # One lifespan at a time: a second one (a second test client of the app, on an event loop of its
    # own) would start the services again and stop them under the first.
    running = threading.Lock()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if not running.acquire(blocking=False):
            raise RuntimeError("this app is already running: one lifespan at a time")
        try:
            # Only where jobs run: its metrics' series (at 0 from the start) say this process runs them.
            scheduler = build_scheduler(services.db, jobs(settings.seal_interval_s)) if settings.scheduler else None
            if scheduler is not None:
                scheduler.start()  # here, not in on_startup: there it would start paused
            services.keys.start()
            await services.gateway.start()
            if supervisor is not None:
                supervisor.start()
            if dispatcher is not None:
                dispatcher.start()
            try:
                yield
            finally:
                if dispatcher is not None:
                    await dispatcher.stop()
                if supervisor is not None:
                    await supervisor.stop()
                if scheduler is not None:
                    scheduler.shutdown(wait=False)
                await services.gateway.stop()
                await services.keys.stop()
                await services.db.dispose()
        finally:
            running.release()

    app = Litestar(
        route_handlers=[ops.healthz, ops.readyz, ops.metrics, audit.get_trial_balance,
                        audit.post_verify, journal.get_journal, journal.get_statement,
                        journal.get_account_balance, keys.create_api_key, keys.list_api_keys, keys.revoke_api_key,
                        *WALLET_ROUTES, *webhooks.ROUTES, *gateway_routes(services.gateway),
                        *console.routers(settings.session_secret)],
        template_config=console.templates(),
        state=State({"services": services, "supervisor": supervisor}),
        lifespan=[lifespan],
        middleware=[metrics_middleware],
        exception_handlers={**EXCEPTION_HANDLERS, HTTPException: console.unrouted},
        before_send=[_complete_allow_header],
        before_request=guard_request,  # 415, JSON depth, NUL: before any body is decoded
        request_class=WireRequest,
        request_max_body_size=1_048_576,
        openapi_config=OpenAPIConfig(
            title="tokentill", version="0.1.0",
            description="Double-entry ledger for billing LLM usage.",
            components=Components(security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer")}),
        ),
        on_app_init=[_log_config(settings)],
        logging_config=None,  # Litestar's default would set the root logger to INFO
        **overrides,
    )
    app.asgi_handler = _head_as_get(app.asgi_handler)
    return app


def _dispatcher(settings: Settings, database_url: str) -> Dispatcher:
    """The webhook dispatcher, on a small pool of its own: a slow endpoint never holds one of
    the API's connections."""
    policy = RetryPolicy(settings.webhook_backoff_s, settings.webhook_backoff_cap_s, settings.webhook_retry_window_s)
    db = connect(database_url, pool_size=2, pool_timeout_s=settings.pool_timeout_s)
    return Dispatcher(db, DispatchSettings(settings.webhook_timeout_s, settings.webhook_poll_s, policy=policy,
                                           addresses=settings.webhook_addresses), listen_url=database_url)


def _log_config(settings: Settings):
    def hook(config: AppConfig) -> AppConfig:
        log_to_stderr(settings)
        return config

    return hook

"""A LISTEN held open on a connection of its own, opened again after whatever ends it: the key
cache's (api.keys) and the webhook dispatcher's (api.webhooks) listeners."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import psycopg


async def listen(url: str, channel: str, name: str, retry_s: float, log: logging.Logger, *,
                 up: Callable[[], None], serve: Callable[[psycopg.AsyncConnection], Awaitable[None]],
                 gone: Callable[[], None], back: str, down: Callable[[str], str]) -> None:
    """LISTEN on `channel` (application_name `name`), for ever (until cancelled): `up()` once it
    listens, then `serve(conn)` for as long as it does, `gone()` after every attempt however it
    ended (a connect or LISTEN that failed, before any `up()`, too), and `retry_s` later again; a
    cancellation ends it (after its `gone()`). An outage is said once, as `down(why)` (the
    driver's error on one line) at WARNING, its retries at DEBUG; its end once, as `back`: not a
    line per retry (3,600 an hour while the database is down)."""
    failed = False  # said so: the retries say nothing more until it listens again
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True, application_name=name) as conn:
                await conn.execute(f"LISTEN {channel}")
                up()
                if failed:
                    failed = False
                    log.warning(back)
                await serve(conn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever it was, keep trying: a dead listener is a slow service
            why = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            (log.debug if failed else log.warning)("%s", down(why))
            failed = True
        finally:
            gone()
        await asyncio.sleep(retry_s)

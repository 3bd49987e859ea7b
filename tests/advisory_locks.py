"""Waiting, in a test, until other sessions wait for an advisory lock: what the race tests hold a
lock for, then check that the writers they started queue behind it."""
from __future__ import annotations

import asyncio

import psycopg


async def waiting_on_a_lock(conn: psycopg.AsyncConnection, sessions: int = 1, seconds: float = 60) -> None:
    """Until `sessions` sessions wait for an advisory lock at once (PostgreSQL tells no one: asked
    every 5 ms, up to `seconds`)."""
    waiting = 0
    for _ in range(round(seconds / 0.005)):
        waiting = (await (await conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).fetchone())[0]
        if waiting >= sessions:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{waiting} sessions waited for an advisory lock at once, not {sessions}")

"""What a statement reads, from its plan's own figures (rows each scan of a table read, how many
times a table is scanned), never from a clock: for tests that a read under a lane's writer lock
reads the period it is about, not the customer's history.

The tables are analyzed first and sequential scans are off in the read (`enable_seqscan`), so each
scan is an index's: a test database is small enough that a scan of a lane's whole partition would
be the cheapest, which says nothing about a customer with 300,000 charges."""
from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from ledger.db import Database


class Explained:
    """A connection that runs each read (SELECT, WITH) once as EXPLAIN (ANALYZE, FORMAT JSON) first
    and keeps its plan; with `writes=False`, keeps each other statement's parameters in `skipped`
    instead of running it (what the code would have written, left out of a database others read)."""

    def __init__(self, conn: Any, *, writes: bool = True) -> None:
        self.conn, self.writes = conn, writes
        self.plans: list[dict[str, Any]] = []
        self.skipped: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    async def exec_driver_sql(self, sql: str, params: Any = None) -> Any:
        if not re.match(r"\s*(SELECT|WITH)\b", sql):
            if not self.writes:
                self.skipped.append((sql, params))
                return None
        elif "FROM ledger_settings" not in sql:
            plan = (await self.conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)).scalar_one()
            self.plans.append((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
        return await self.conn.exec_driver_sql(sql, params)


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan] + [n for child in plan.get("Plans", ()) for n in nodes(child)]


def rows_read(plans: list[dict[str, Any]], table: str) -> int:
    """Rows the plans' scans of `table` (or of its lane partitions, `<table>_l<n>`) read: those they
    returned and those their filters then dropped, over all their loops."""
    return int(sum((n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0)
                    + n.get("Rows Removed by Index Recheck", 0)) * n.get("Actual Loops", 1)
                   for plan in plans for n in nodes(plan)
                   if re.fullmatch(rf"{table}(_l\d+)?", n.get("Relation Name", ""))))


def scans(plans: list[dict[str, Any]], table: str) -> int:
    """How many scans of `table` (unpartitioned) the plans hold."""
    return sum(n.get("Relation Name") == table for plan in plans for n in nodes(plan))


async def explained(db: Database, read: Callable[[Explained], Awaitable[Any]], *, analyze: tuple[str, ...],
                    writes: bool = True) -> tuple[Any, Explained]:
    """`read`'s result on an Explained connection, and that connection (its plans), in one
    transaction with `analyze`'s tables analyzed and sequential scans off."""
    async def work(conn: Any) -> Any:
        for table in analyze:
            await conn.exec_driver_sql(f"ANALYZE {table}")
        await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        spy = Explained(conn, writes=writes)
        return await read(spy), spy

    return await db.read(work)


async def generic_load(db: Database, lane: int, customers: list[str], *, analyze: tuple[str, ...],
                       **needs: Any) -> tuple[Any, list[dict[str, Any]]]:
    """A wallet batch's load as its batch runs it, and its plan: the lane's load statement planned
    generically (a batch's function has plan_cache_mode = force_generic_plan: one plan a session,
    for any parameters), with `analyze`'s tables analyzed and sequential scans off. store.load
    plans the same text for its parameters, which can pick other indexes."""
    from wallets import store

    async def work(conn: Any) -> Any:
        for table in analyze:
            await conn.exec_driver_sql(f"ANALYZE {table}")
        await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        lead, params = store.load_lead(lane, customers, **needs)
        text, _, types = store.load_statement(lane)
        await conn.exec_driver_sql(f"PREPARE tokentill_generic_load ({', '.join(types)}) AS {text}")
        call = "EXECUTE tokentill_generic_load (" + ", ".join(f"%s::{t}" for t in types) + ")"
        raw = (await conn.get_raw_connection()).driver_connection
        async with psycopg.AsyncClientCursor(raw) as cur:  # EXECUTE's arguments as literals
            await cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + call, lead.args)
            plan = (await cur.fetchone())[0]
            await cur.execute(call, lead.args)
            row = await cur.fetchone()
        await conn.exec_driver_sql("DEALLOCATE tokentill_generic_load")
        return store.loaded_from(tuple(row), params), [(json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]]

    return await db.read(work)


class Generic(Explained):
    """An Explained connection whose reads are planned generically, as a statement psycopg has
    prepared is from its 6th run (`plan_cache_mode` = force_generic_plan, set by `generic`): each
    read (SELECT, WITH) is PREPAREd (its `%s` as `$n`, the types PostgreSQL infers) and EXPLAIN
    (ANALYZE) EXECUTEd with its parameters as literals first, its plan kept. A `SET LOCAL
    plan_cache_mode` the code under test sends itself governs the EXECUTE, as it would its own."""

    async def exec_driver_sql(self, sql: str, params: Any = None) -> Any:
        if not re.match(r"\s*(SELECT|WITH)\b", sql):
            return await super().exec_driver_sql(sql, params)
        counter = iter(range(1, 1000))
        numbered = re.sub("%s", lambda _: f"${next(counter)}", sql)
        await self.conn.exec_driver_sql("PREPARE tokentill_generic AS " + numbered)
        call = "EXECUTE tokentill_generic (" + ", ".join(["%s"] * len(params or ())) + ")"
        raw = (await self.conn.get_raw_connection()).driver_connection
        async with psycopg.AsyncClientCursor(raw) as cur:  # EXECUTE's arguments as literals
            await cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + call, params)
            plan = (await cur.fetchone())[0]
        await self.conn.exec_driver_sql("DEALLOCATE tokentill_generic")
        self.plans.append((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
        return await self.conn.exec_driver_sql(sql, params)


async def generic(db: Database, read: Callable[[Explained], Awaitable[Any]], *,
                  analyze: tuple[str, ...]) -> tuple[Any, Explained]:
    """`read`'s result on a Generic connection, and that connection (its plans), in one
    transaction with `analyze`'s tables analyzed, sequential scans off and every cached plan
    generic unless the read says otherwise."""
    async def work(conn: Any) -> Any:
        for table in analyze:
            await conn.exec_driver_sql(f"ANALYZE {table}")
        await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        spy = Generic(conn)
        return await read(spy), spy

    return await db.read(work)

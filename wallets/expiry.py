"""The expiry jobs' work: find what is due from the database, then run one idempotent command
per due item through the engine (under its customer's lock). Running them in several
processes at once, or again after downtime, expires each item exactly once."""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.db import Database
from wallets import chart
from wallets.commands import Command, ExpireLot, ExpireReservation
from wallets.engine import Engine, utc_now

log = logging.getLogger("tokentill.jobs")
PAGE = 500
BATCH = 32

DUE_RESERVATIONS = """
SELECT id, customer_id FROM reservations
 WHERE status = ANY(%s::text[]) AND expires_at <= %s AND id > %s
 ORDER BY id LIMIT %s
"""
DUE_LOTS = """
SELECT id, customer_id FROM lots
 WHERE expires_at IS NOT NULL AND expired_at IS NULL AND expires_at <= %s AND id > %s
 ORDER BY id LIMIT %s
"""


def _named(command: Command) -> str:
    if isinstance(command, ExpireLot):
        return f"grant {command.lot_id} of {command.customer_id}"
    return f"reservation {getattr(command, 'reservation_id', '?')} of {command.customer_id}"


async def _expire_due(db: Database, sql: str, make: Any, now: datetime | None, *lead: Any,
                      failures: list[str] | None = None) -> int:
    """How many expired. A command refused is logged, and named in `failures` when given; the
    others go on (the next run finds it due again)."""
    engine = Engine(db, grouping=False)  # no price books needed: a fresh one costs nothing
    at = now or utc_now()
    done, after = 0, ""
    while True:
        rows = await db.read(lambda conn, after=after: due(conn, sql, (*lead, at, after, PAGE)))
        if not rows:
            return done
        after = rows[-1][0]
        commands: list[Command] = [make(item_id, customer_id) for item_id, customer_id in rows]
        for i in range(0, len(commands), BATCH):
            chunk = commands[i:i + BATCH]
            for command, outcome in zip(chunk, await engine.execute(chunk, now=now, each=True), strict=True):
                if isinstance(outcome, BaseException):  # dropped without a word, the run counted ok
                    log.error("expiring the %s failed: %s", _named(command), outcome)
                    if failures is not None:
                        failures.append(f"{_named(command)}: {outcome}")
                elif outcome is not None:
                    done += 1
        if len(rows) < PAGE:
            return done


async def due(conn: AsyncConnection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """A page of what is due, planned for its `now` each time. psycopg prepares the statement from
    its 2nd run (ledger/db.py), and from the 6th PostgreSQL may plan it for any parameters: a plan
    that cannot know how few rows are due before `now` walked the id index over every lot (or
    reservation) past the page's last and filtered them, 20,004 lots read for 3 due (the test of
    tests/integration/wallets/test_expiry_reads.py), where the due index reads the 3."""
    await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
    return list((await conn.exec_driver_sql(sql, params)).all())


async def expire_reservations(db: Database, now: datetime | None = None, *,
                              failures: list[str] | None = None) -> int:
    """Give back the holds of reservations past their expiry; outbox reservation.expired."""
    return await _expire_due(db, DUE_RESERVATIONS,
                             lambda rid, cid: ExpireReservation(customer_id=cid, reservation_id=rid), now,
                             list(chart.OPEN_STATUSES), failures=failures)


async def expire_grants(db: Database, now: datetime | None = None, *, failures: list[str] | None = None) -> int:
    """Move the remainder of lots past their expiry to breakage revenue; outbox grant.expired."""
    return await _expire_due(db, DUE_LOTS, lambda lot, cid: ExpireLot(customer_id=cid, lot_id=lot), now,
                             failures=failures)

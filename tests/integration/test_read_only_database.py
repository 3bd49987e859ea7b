"""A database that takes no writes for now (a failover's standby, reached before DNS moved on;
`default_transaction_read_only`): SQLSTATE 25006. It was a 500 `internal_error` with a traceback
on every write and every job run, and the sessions already open stayed read-only for good (the
setting is read when a session starts, a standby stays one): the service wrote nothing again
until restarted, even once the database took writes. Now it is `unavailable` (503 with
Retry-After, one log line a job run), and the pool's sessions are replaced, so the next write
is made on a fresh session."""
from __future__ import annotations

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ledger.db import connect, is_unavailable


def _set_read_only(server_url: str, database: str, on: bool) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}").format(
            sql.Identifier(database), sql.SQL("on" if on else "off")))


async def test_a_read_only_database_is_unavailable_and_its_sessions_are_replaced(server_url, scratch_url):
    database = psycopg.conninfo.conninfo_to_dict(scratch_url)["dbname"]
    db = connect(scratch_url, pool_size=2)

    async def write(conn):  # a write, as the wallet writers' first one (an entry id)
        return (await conn.execute(text("SELECT nextval('journal_entries_id_seq')"))).scalar()

    try:
        _set_read_only(server_url, database, True)
        with pytest.raises(DBAPIError) as refused:
            await db.run(write)
        assert is_unavailable(refused.value), refused.value
        _set_read_only(server_url, database, False)  # the database takes writes again (the failover is over)
        assert await db.run(write) > 0  # on a new session: the read-only one was not kept
    finally:
        _set_read_only(server_url, database, False)
        await db.dispose()

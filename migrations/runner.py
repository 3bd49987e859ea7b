"""Apply the Alembic migrations under a session advisory lock, so that N processes may start at once."""
from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import DBAPIError

MIGRATION_LOCK = 7_402_211_901  # arbitrary, fixed: pg_advisory_lock key for schema changes
# The oldest PostgreSQL the migrations run on: 0009 and 0018 make NULLS NOT DISTINCT unique keys
# (PostgreSQL 15), 0046 SQL-standard function bodies (14), the journal's
# triggers read pg_current_xact_id (13).
MIN_SERVER_VERSION = 150000
HERE = Path(__file__).resolve().parent


# What PostgreSQL answers a new connection past a role's or a database's CONNECTION LIMIT (no
# SQLSTATE reaches the client: the server process refuses it as it starts).
LIMIT_REACHED = ("too many connections for role", "too many connections for database")
LIMIT_WAIT_S = 5.0
T = TypeVar("T")


def limit_reached(exc: BaseException) -> bool:
    """Whether `exc` is a connection refused for its role's (or database's) CONNECTION LIMIT."""
    return any(said in str(exc) for said in LIMIT_REACHED)


def when_free(connect: Callable[[], T], timeout_s: float = LIMIT_WAIT_S) -> T:
    """connect(), tried again for up to `timeout_s` while its role's connection limit is reached:
    a role limited to one connection (CONNECTION LIMIT 1) is refused its next for a moment after
    it closed its last (its server process, which the server counts, has not exited yet), and
    the migrations connect after the start's check closed its own."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return connect()
        except Exception as exc:
            if not limit_reached(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    return config


@functools.cache
def head_revision() -> str | None:
    """The newest migration; read once (loading the scripts takes ~10 ms, and /readyz asks)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


class UnknownRevision(Exception):
    """The database is at a revision these migrations do not have: a newer tokentill migrated it."""

    def __init__(self, revision: str) -> None:
        super().__init__(f"the database is at revision {revision}, which this tokentill does not know (it knows "
                         f"up to {head_revision()}): run a tokentill at least as new as the one that migrated it, or "
                         f"go back with that one's `tokentill migrate --to {head_revision()}`")


class ServerTooOld(Exception):
    """The server is older than the migrations need (MIN_SERVER_VERSION)."""

    def __init__(self, version: str) -> None:
        super().__init__(f"the database server runs PostgreSQL {version}; tokentill needs PostgreSQL "
                         f"{MIN_SERVER_VERSION // 10000} or later")


class TransactionIdsBehind(Exception):
    """The server's transaction ids are behind those the database's rows recorded: it was restored
    (pg_dump, pg_restore) into another PostgreSQL cluster, whose ids started afresh. Seal ranges,
    the journal's snapshots and the webhook fan-out's cursor all compare transaction ids: new
    entries would fall inside sealed ranges, the restored ones lie past every snapshot, and new
    events behind the cursor. Moving the cluster's epoch on (pg_resetwal) puts every new id past them."""

    def __init__(self, recorded: int, server: int) -> None:
        self.recorded, self.server = recorded, server
        super().__init__(self._what() + f"stop that PostgreSQL, run `pg_resetwal --epoch={self.epoch} -D DATADIR` "
                                        f"as its user, and start it again (README, Backups)")

    @property
    def epoch(self) -> int:
        """The epoch that puts the cluster's next transaction id past every recorded one."""
        return (self.recorded >> 32) + 1

    def _what(self) -> str:
        return (f"the database's transaction ids are behind its journal's (it recorded transaction {self.recorded}, "
                f"the server is at {self.server}): it was restored into another PostgreSQL cluster, where new entries "
                f"would fall inside sealed ranges, the journal would hide the restored ones and webhook events would "
                f"not be sent; ")

    def embedded(self, pgdata: Path, resetwal: Path, user: str | None) -> str:
        """The message for tokentill's embedded cluster in `pgdata`: a dump goes back with
        `tokentill restore`, which moves the ids on itself; else the wheel's own pg_resetwal (not on
        the PATH), run as the cluster's user, on this data dir."""
        as_user = f" as {user}" if user else ""
        return (self._what() + f"restore the dump with `tokentill restore DUMP` into a new TOKENTILL_DATA_DIR (it "
                f"moves the ids past the journal's itself), or stop every tokentill using {pgdata} and run "
                f"`{resetwal} --epoch={self.epoch} -D {pgdata}`{as_user} (README, Backups)")


# The transaction ids the database recorded, per table and column, and whether the server's next
# one must lie past it (a row's own id) or may equal it (a seal's end: the first id it does not cover).
_RECORDED = (("journal_entries", "txid", 1), ("outbox", "txid", 1), ("webhook_fan_out", "txid", 1),
             ("seals", "to_txid", 0))


def check_transaction_ids(conn: Connection) -> None:
    """TransactionIdsBehind when the server's next transaction id is not past every id the
    database recorded (each read by its index: milliseconds on any ledger)."""
    present = conn.execute(text(
        "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE c.oid = ANY (ARRAY[to_regclass('journal_entries'), to_regclass('outbox'), "
        "to_regclass('webhook_fan_out'), to_regclass('seals')]) AND NOT a.attisdropped")).all()
    # t.{column}: by the xid8 (a bare name would sort by the text the select list makes of it)
    recorded = [(f"(SELECT t.{column}::text FROM {table} t ORDER BY t.{column} DESC LIMIT 1)", past)
                for table, column, past in _RECORDED if (table, column) in {tuple(row) for row in present}]
    if not recorded:
        return
    row = conn.execute(text("SELECT pg_snapshot_xmax(pg_current_snapshot())::text, "
                            + ", ".join(query for query, _ in recorded))).one()
    conn.rollback()
    server = int(row[0])
    for value, (_, past) in zip(row[1:], recorded, strict=True):
        if value is not None and server < int(value) + past:
            raise TransactionIdsBehind(max(int(v) for v in row[1:] if v is not None), server)


def refused(exc: DBAPIError) -> bool:
    """Whether a downgrade's `exc` is its refusal: an integrity constraint violation (class 23:
    restrict_violation, as most downgrades raise, or unique_violation as 0007's, or a constraint
    the older schema puts back that the rows break), not a fault."""
    return str(getattr(exc.orig, "sqlstate", None) or "").startswith("23")


class DowngradeRefused(Exception):
    """A migration's downgrade refused (it would destroy data); nothing was moved."""

    def __init__(self, to: str, current: str, reason: str) -> None:
        super().__init__(f"cannot migrate the database down to {to}: {reason}; it is still at {current}")


def revisions() -> list[str]:
    """Every revision, oldest first (they are linear)."""
    return [script.revision for script in
            reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions()))]


def upgrade(sync_url: str, *, lanes: int | None = None, to: str | None = None) -> str | None:
    """Upgrade the database at `sync_url` to head, or move it to revision `to` (up or down);
    returns the revision it ends at. `lanes` is the lane count of a database created now
    (migration 0009; ignored once it has run)."""
    order = revisions()
    if to is not None and to not in order:
        raise ValueError(f"no migration {to!r}")
    with locked(sync_url) as conn:
        config = alembic_config()
        current = current_revision(conn)
        conn.commit()  # each migration in a transaction of its own, as before this look
        if current is not None and current not in order:
            raise UnknownRevision(current)
        config.attributes["connection"] = conn
        config.attributes["lanes"] = lanes
        if to is not None and current is not None and order.index(to) < order.index(current):
            config.attributes["one_transaction"] = True
            try:
                command.downgrade(config, to)
            except DBAPIError as exc:
                if not refused(exc):
                    raise
                conn.rollback()
                raise DowngradeRefused(to, current, str(exc.orig).splitlines()[0]) from None
        else:
            command.upgrade(config, to or "head")
        conn.commit()
        return current_revision(conn)


@contextmanager
def locked(sync_url: str) -> Iterator[Connection]:
    """A connection to `sync_url` holding the migration lock (waits for another migrating process)."""
    engine = create_engine(sync_url, poolclass=None)
    try:
        with when_free(engine.connect) as conn:
            version, number = conn.execute(text(
                "SELECT current_setting('server_version'), current_setting('server_version_num')::int")).one()
            if number < MIN_SERVER_VERSION:
                raise ServerTooOld(version.split()[0])
            check_transaction_ids(conn)
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            try:
                conn.commit()
                yield conn
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
                conn.commit()
    finally:
        engine.dispose()


@contextmanager
def configured_database() -> Iterator[Connection]:
    """For plain `alembic -c migrations/alembic.ini ...`: the database tokentill's settings name
    (TOKENTILL_DATABASE_URL, else the embedded cluster under TOKENTILL_DATA_DIR), locked as
    `tokentill migrate` locks it; what the command did is committed."""
    from api.cli import _unreachable
    from api.runtime import open_database, sync_url
    from api.settings import Settings

    handle = open_database(Settings.from_env(), migrate=False)
    try:
        with locked(sync_url(handle.url)) as conn:
            yield conn
            conn.commit()
    except TransactionIdsBehind as exc:
        from api.runtime import transaction_ids_behind

        raise SystemExit(f"error: {transaction_ids_behind(exc, handle.cluster)}") from None
    except (ServerTooOld, DowngradeRefused) as exc:
        raise SystemExit(f"error: {exc}") from None
    except DBAPIError as exc:
        if not refused(exc):
            raise
        raise SystemExit(f"error: cannot migrate the database down: {str(exc.orig).splitlines()[0]}; "
                         f"nothing was moved") from None
    except Exception as exc:
        reason = _unreachable(exc)
        if reason is None:
            raise
        raise SystemExit(f"error: cannot reach the database: {reason}") from None
    finally:
        handle.close()

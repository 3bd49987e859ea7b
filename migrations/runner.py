"""Apply the Alembic migrations under a session advisory lock, so that N processes may start at once."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, text

MIGRATION_LOCK = 7_402_211_901  # arbitrary, fixed: pg_advisory_lock key for schema changes
HERE = Path(__file__).resolve().parent


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _known_revisions(config: Config) -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


class UnknownRevision(Exception):
    """The database is at a revision these migrations do not have: a newer tokentill migrated it."""

    def __init__(self, revision: str) -> None:
        super().__init__(f"the database is at revision {revision}, which this tokentill does not know (it knows "
                         f"up to {head_revision()}): run a tokentill at least as new as the one that migrated it")


def upgrade(sync_url: str, *, lanes: int | None = None) -> str | None:
    """Upgrade the database at `sync_url` to head; returns the revision it ends at. `lanes` is
    the lane count of a database created now (migration 0009; ignored once it has run)."""
    engine = create_engine(sync_url, poolclass=None)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            try:
                conn.commit()
                config = alembic_config()
                current = current_revision(conn)
                conn.commit()  # each migration in a transaction of its own, as before this look
                if current is not None and current not in _known_revisions(config):
                    raise UnknownRevision(current)
                config.attributes["connection"] = conn
                config.attributes["lanes"] = lanes
                command.upgrade(config, "head")
                conn.commit()
                return current_revision(conn)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
                conn.commit()
    finally:
        engine.dispose()

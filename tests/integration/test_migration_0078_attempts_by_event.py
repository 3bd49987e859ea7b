"""Migration 0078 builds `webhook_attempts_event` with a plain CREATE INDEX: a SHARE lock on
webhook_attempts until it commits, so every dispatcher's record of an attempt waits (400,000 attempts:
2.7 s). The table is not partitioned, so an index built beforehand is not attached as 0077's
partitions' are: 0078's CREATE INDEX of the same name fails. The README's way around it (build it
CONCURRENTLY, then stamp 0078) must leave what 0078 builds, once."""
from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from alembic import command
from sqlalchemy import create_engine

from api.runtime import sync_url
from migrations import runner
from tests.integration.test_migration_0042_seal_hash_versions import _migrate

README = Path(__file__).parents[2] / "README.md"
INDEXES = """SELECT i.relname, pg_get_indexdef(x.indexrelid), x.indisvalid
               FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
              WHERE x.indrelid = 'webhook_attempts'::regclass AND i.relname LIKE '%event%' ORDER BY 1"""


def _readme(pattern: str) -> str:
    found = re.search(pattern, README.read_text())
    assert found, f"the README gives no {pattern}"
    return found.group(1)


def _stamp(url: str, revision: str) -> None:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            config = runner.alembic_config()
            config.attributes["connection"] = conn
            command.stamp(config, revision)
            conn.commit()
    finally:
        engine.dispose()


def test_the_index_the_readme_builds_beforehand_is_what_0078_builds_once_stamped(scratch_url):
    build = _readme(r"`(CREATE INDEX CONCURRENTLY webhook_attempts_event ON webhook_attempts \([^`]+\))`")
    # the command as written: alembic finds its config under migrations/ (no alembic.ini at the root)
    assert _readme(r"`alembic -c (migrations/alembic\.ini) stamp 0078`") == "migrations/alembic.ini"
    assert (README.parent / "migrations" / "alembic.ini").is_file()
    with psycopg.connect(scratch_url) as conn:
        built_by_0078 = conn.execute(INDEXES).fetchall()
    assert len(built_by_0078) == 1 and built_by_0078[0][0] == "webhook_attempts_event"
    _migrate(scratch_url, ("downgrade", "0077"))
    with psycopg.connect(scratch_url, autocommit=True) as conn:  # CONCURRENTLY: outside a transaction
        conn.execute(build)
    with pytest.raises(Exception, match="already exists"):  # why the README stamps: 0078 builds it again
        _migrate(scratch_url, ("upgrade", "0078"))
    _stamp(scratch_url, "0078")
    _migrate(scratch_url, ("upgrade", "head"))
    with psycopg.connect(scratch_url) as conn:
        assert conn.execute(INDEXES).fetchall() == built_by_0078  # the same one index, valid
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == runner.head_revision()

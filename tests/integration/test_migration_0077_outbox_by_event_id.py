"""Migration 0077 builds `outbox_event_id` on the partitioned outbox with a plain CREATE INDEX: a
SHARE lock on every lane's partition until it commits, so every write to the outbox waits (a
wallet batch that writes an event, under its lane's writer lock). The README's way around it, each
lane's partition's index built beforehand with CONCURRENTLY, must be what the migration then
attaches: no second index on any partition, none built under the lock."""
from __future__ import annotations

import re
from pathlib import Path

import psycopg

from tests.integration.test_migration_0042_seal_hash_versions import _migrate

README = Path(__file__).parents[2] / "README.md"


def _prebuild_statement() -> str:
    """The README's statement for lane 0's partition (Migrations), as written there."""
    found = re.search(r"`(CREATE INDEX CONCURRENTLY outbox_l0_event_id ON outbox_l0 \([^`]+\))`",
                      README.read_text())
    assert found, "the README gives no statement to build 0077's index beforehand"
    return found.group(1)


def test_the_partition_indexes_the_readme_builds_beforehand_are_what_0077_attaches(scratch_url):
    statement = _prebuild_statement()
    _migrate(scratch_url, ("downgrade", "0076"))
    with psycopg.connect(scratch_url, autocommit=True) as conn:  # CONCURRENTLY: outside a transaction
        lanes = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'outbox'::regclass ORDER BY 1")]
        assert len(lanes) == 16  # the tests' databases have 16 lanes (tests/conftest.py)
        for partition in lanes:
            conn.execute(statement.replace("outbox_l0", partition))
    _migrate(scratch_url, ("upgrade", "head"))
    with psycopg.connect(scratch_url) as conn:
        indexes = conn.execute(
            """SELECT t.relname, i.relname, x.indisvalid
                 FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
                WHERE t.relname LIKE 'outbox%' AND pg_get_indexdef(x.indexrelid) LIKE '%webhook_event_id%'
                ORDER BY 1, 2""").fetchall()
    # 1 + 16 = 17 indexes: the parent's, and on each partition only the one built beforehand
    assert indexes == [("outbox", "outbox_event_id", True)] + [(p, f"{p}_event_id", True) for p in lanes]

"""An index a migration builds on the partitioned journal with a plain CREATE INDEX (0084, 0086):
the README's way around its lock, each lane's partition's index built beforehand with
CONCURRENTLY, must be what the migration attaches, and the migration goes down and up again on a
journal holding entries."""
from __future__ import annotations

import re
from pathlib import Path

import psycopg

from tests.integration.test_migration_0042_seal_hash_versions import _migrate

README = Path(__file__).parents[2] / "README.md"


def indexes(url: str, columns: str) -> list[tuple[str, str, bool]]:
    """(table, index, valid) of the journal's partial volume_true_up indexes on `columns`."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            """SELECT t.relname, i.relname, x.indisvalid
                 FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
                WHERE t.relname LIKE 'journal_entries%%'
                  AND pg_get_indexdef(x.indexrelid) LIKE %s
                ORDER BY 1, 2""", (f"%({columns}) WHERE%volume_true_up%",)).fetchall()


def check_prebuilt_partition_indexes_attach(url: str, name: str, columns: str, below: str, migration: str) -> None:
    """The README's statement for lane 0's partition (`journal_entries_l0_{name}`, as written there),
    run for each lane's partition on a journal of 64 entries at revision `below`: the migration
    then attaches those, the parent's index and on each partition only the one built beforehand
    (1 + 16 = 17, all valid); down to `below` none is left; up again, it builds one valid index a
    partition itself."""
    found = re.search(rf"`(CREATE INDEX CONCURRENTLY journal_entries_l0_{name} ON journal_entries_l0 [^`]+)`",
                      README.read_text())
    assert found, f"the README gives no statement to build {migration}'s index beforehand"
    _migrate(url, ("downgrade", below))
    assert indexes(url, columns) == []
    with psycopg.connect(url, autocommit=True) as conn:  # CONCURRENTLY: outside a transaction
        lanes = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'journal_entries'::regclass ORDER BY 1")]
        assert len(lanes) == 16  # the tests' databases have 16 lanes (tests/conftest.py)
        conn.execute("SET session_replication_role = replica")  # entries without postings, here
        conn.execute("""INSERT INTO journal_entries (lane, key, request_hash, kind, customer_id, occurred_at)
                        SELECT ledger_entry_lane('c' || g), 'k' || g, '\\x00',
                               CASE WHEN g % 2 = 0 THEN 'rerate_adjustment' ELSE 'usage' END, 'c' || g, now()
                          FROM generate_series(1, 64) g""")
        for partition in lanes:
            conn.execute(found.group(1).replace("journal_entries_l0", partition))
    _migrate(url, ("upgrade", "head"))
    assert indexes(url, columns) == ([("journal_entries", f"journal_entries_{name}", True)]
                                     + [(p, f"{p}_{name}", True) for p in lanes])
    _migrate(url, ("downgrade", below))
    assert indexes(url, columns) == []
    _migrate(url, ("upgrade", "head"))
    built = indexes(url, columns)  # built by the migration this time: one valid index a partition
    assert ("journal_entries", f"journal_entries_{name}", True) in built
    assert sorted((table, valid) for table, _, valid in built if table != "journal_entries") == [
        (p, True) for p in lanes]

"""Migration 0086 builds `journal_entries_corrections_by_id` on the partitioned journal with a plain
CREATE INDEX, as 0084 builds its index by date (README, Migrations: the lock). The README's way
around it, each lane's partition's index built beforehand with CONCURRENTLY, must be what the
migration attaches: no second index on any partition; and 0086 goes down and up again on a journal
holding entries."""
from __future__ import annotations

import re
from pathlib import Path

import psycopg

from tests.integration.test_migration_0042_seal_hash_versions import _migrate

README = Path(__file__).parents[2] / "README.md"


def _indexes(url: str) -> list[tuple[str, str, bool]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            """SELECT t.relname, i.relname, x.indisvalid
                 FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
                WHERE t.relname LIKE 'journal_entries%'
                  AND pg_get_indexdef(x.indexrelid) LIKE '%(lane, customer_id, id) WHERE%volume_true_up%'
                ORDER BY 1, 2""").fetchall()


def test_the_partition_indexes_the_readme_builds_beforehand_are_what_0086_attaches(scratch_url):
    found = re.search(r"`(CREATE INDEX CONCURRENTLY journal_entries_l0_corrections_by_id ON journal_entries_l0 [^`]+)`",
                      README.read_text())
    assert found, "the README gives no statement to build 0086's index beforehand"
    _migrate(scratch_url, ("downgrade", "0085"))
    assert _indexes(scratch_url) == []
    with psycopg.connect(scratch_url, autocommit=True) as conn:  # CONCURRENTLY: outside a transaction
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
    _migrate(scratch_url, ("upgrade", "head"))
    # 1 + 16 = 17 indexes: the parent's, and on each partition only the one built beforehand
    assert _indexes(scratch_url) == ([("journal_entries", "journal_entries_corrections_by_id", True)]
                                     + [(p, f"{p}_corrections_by_id", True) for p in lanes])
    _migrate(scratch_url, ("downgrade", "0085"))
    assert _indexes(scratch_url) == []
    _migrate(scratch_url, ("upgrade", "head"))
    built = _indexes(scratch_url)  # built by the migration this time: one valid index a partition
    assert ("journal_entries", "journal_entries_corrections_by_id", True) in built
    assert sorted((table, valid) for table, _, valid in built if table != "journal_entries") == [
        (p, True) for p in lanes]


def test_the_readme_says_how_long_0086_s_build_stalls_journal_writes():
    """0086's plain CREATE INDEX holds a SHARE lock on every lane's journal partition while it reads
    every entry, as 0084's does; the README said its build was "not measured". Measured (rvorder,
    1,000,000 entries of which 50,000 corrections, 2 shared cores at load 9-10): 0.73-0.86 s, a
    journal insert begun once the build held its lock waited 0.56-0.71 s; 0084 on that journal
    0.80 s and 0.66 s. The README states the figures and the writes that wait."""
    text = README.read_text()
    start = text.index("Migration 0086 builds")
    paragraph = text[start:text.index("(`tests/integration/test_migration_0086_corrections_by_id.py`)", start)]
    assert "not measured" not in paragraph, paragraph
    assert "1,000,000 entries" in paragraph and "waited" in paragraph, paragraph
    assert "every write to the journal waits" in paragraph, paragraph

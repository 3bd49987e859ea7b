"""Migration 0086 builds `journal_entries_corrections_by_id` on the partitioned journal with a plain
CREATE INDEX, as 0084 builds its index by date (README, Migrations: the lock). The README's way
around it, each lane's partition's index built beforehand with CONCURRENTLY, must be what the
migration attaches: no second index on any partition; and 0086 goes down and up again on a journal
holding entries."""
from __future__ import annotations

from tests.integration.journal_index_builds import README, check_prebuilt_partition_indexes_attach


def test_the_partition_indexes_the_readme_builds_beforehand_are_what_0086_attaches(scratch_url):
    check_prebuilt_partition_indexes_attach(scratch_url, "corrections_by_id", "lane, customer_id, id", "0085", "0086")


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

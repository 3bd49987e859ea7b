"""Migration 0084 builds `journal_entries_corrections` on the partitioned journal with a plain
CREATE INDEX: a SHARE lock on every lane's partition until it commits, so every write to the
journal waits (README, Migrations: 1.7 s for 1,000,000 entries). The README's way around it, each
lane's partition's index built beforehand with CONCURRENTLY, must be what the migration then
attaches: no second index on any partition, none built under the lock; and 0084 goes down and up
again on a journal holding entries."""
from __future__ import annotations

from tests.integration.journal_index_builds import check_prebuilt_partition_indexes_attach


def test_the_partition_indexes_the_readme_builds_beforehand_are_what_0084_attaches(scratch_url):
    check_prebuilt_partition_indexes_attach(scratch_url, "corrections", "lane, customer_id, occurred_at", "0083",
                                            "0084")

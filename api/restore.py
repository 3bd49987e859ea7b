"""`tokentill restore FILE`: a pg_dump archive (README, Backups) into the configured database,
which must be empty: the embedded cluster of a new TOKENTILL_DATA_DIR, or a new database.

Every other command migrates the database it opens, so an embedded cluster was never empty to
restore into. A cluster other than the one dumped numbers its transactions below the restored
journal's; a new embedded one is moved past them here (its epoch, with pg_resetwal), where an
outside server's operator is told how."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg

from api.runtime import DatabaseHandle, open_database, sync_url, upgrade
from api.settings import Settings
from ledger import embedded
from migrations import runner


def restore(settings: Settings, dump: Path) -> int:
    if not dump.is_file():  # a bad argument: a usage error, exit 2, as audit verify --file's (it was 1)
        print(f"error: {dump}: no such file", file=sys.stderr)
        return 2
    handle = open_database(settings, migrate=False)
    try:
        with psycopg.connect(handle.url, autocommit=True) as conn:
            tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()").fetchone()[0]
        if tables:
            raise SystemExit(f"error: the database holds {tables} tables: restore into an empty one (a new "
                             f"TOKENTILL_DATA_DIR, or a new database named by TOKENTILL_DATABASE_URL)")
        done = subprocess.run([str(embedded.bin_dir() / "pg_restore"), "--exit-on-error", "--single-transaction",
                               "--no-owner", f"--dbname={handle.url}", str(dump)], capture_output=True, text=True)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no output"])[0]
            raise SystemExit(f"error: pg_restore restored nothing: {reason}")
        handle = _past_the_journals_transaction_ids(handle)
        print(f"restored {dump}; migrated to {upgrade(handle, settings)}")
    finally:
        handle.close()
    return 0


def _past_the_journals_transaction_ids(handle: DatabaseHandle) -> DatabaseHandle:
    """The handle, its cluster's transaction ids past those the restored rows recorded: an
    embedded cluster's epoch is moved on (stopped, pg_resetwal, started again)."""
    try:
        with runner.locked(sync_url(handle.url)):
            return handle
    except runner.TransactionIdsBehind as behind:
        cluster = handle.cluster
        if cluster is None:
            raise SystemExit(f"error: restored, but {behind}") from None
        epoch = (behind.recorded >> 32) + 1
    handle.close()  # the last user out stops it
    handle.cluster = None  # left: restore's own close has nothing more to do
    done = subprocess.run([str(cluster.bin_dir / "pg_resetwal"), f"--epoch={epoch}", "-D", str(cluster.pgdata)],
                          capture_output=True, text=True, user=cluster.system_user)
    if done.returncode != 0:  # another process still runs the cluster, say
        reason = (done.stderr.strip().splitlines() or ["no output"])[0]
        raise SystemExit(f"error: restored, but the cluster's transaction ids could not be moved past the journal's: "
                         f"{reason}")
    restarted = embedded.start(cluster.pgdata, keep=True)
    return DatabaseHandle(restarted.url, restarted)

"""`tokentill restore FILE`: a pg_dump archive (README, Backups) into the configured database,
which must be empty: the embedded cluster of a new TOKENTILL_DATA_DIR, or a new database.

Every other command migrates the database it opens, so an embedded cluster was never empty to
restore into. A cluster other than the one dumped numbers its transactions below the restored
journal's; a new embedded one is moved past them here (its epoch, with pg_resetwal), where an
outside server's operator is told how."""
from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

from api.runtime import DatabaseHandle, open_database, sync_url, upgrade
from api.settings import Settings
from ledger import embedded
from ledger.offline import printable
from migrations import runner

PGDMP = b"PGDMP"  # how every archive pg_dump --format=custom writes begins


def unfit(dump: Path) -> str | None:
    """Why `dump` is no backup to restore, or None: what pg_restore would refuse only once a
    database is opened (an embedded cluster made), and what it cannot be given (a directory)."""
    try:
        mode = dump.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "no such file"
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if stat.S_ISDIR(mode):
        return "a directory, not a backup file (pg_dump --format=custom writes one file)"
    if not stat.S_ISREG(mode):  # a FIFO or a device: opening it may wait for ever
        return "not a file: a backup is the one file pg_dump --format=custom writes"
    try:
        with dump.open("rb") as file:
            head = file.read(len(PGDMP))
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if not head:
        return "an empty file, not a backup (pg_dump --format=custom writes one that begins PGDMP)"
    if head != PGDMP:
        return "not a backup: an archive of pg_dump --format=custom begins PGDMP"
    return None


def restore(settings: Settings, dump: Path) -> int:
    if (problem := unfit(dump)) is not None:  # a bad argument: a usage error, exit 2, as audit verify --file's
        print(f"error: {printable(str(dump))}: {problem}", file=sys.stderr)
        return 2
    handle = open_database(settings, migrate=False)
    try:
        with psycopg.connect(handle.url, autocommit=True) as conn:
            tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()").fetchone()[0]
            server_version = conn.info.server_version
        if tables:
            raise SystemExit(f"error: the database holds {tables} tables: restore into an empty one (a new "
                             f"TOKENTILL_DATA_DIR, or a new database named by TOKENTILL_DATABASE_URL)")
        if server_version >= TRANSACTION_TIMEOUT_SINCE:
            done = subprocess.run([str(embedded.bin_dir() / "pg_restore"), "--exit-on-error", "--single-transaction",
                                   "--no-owner", f"--dbname={handle.url}", str(dump)], capture_output=True, text=True)
            reason = (done.stderr.strip().splitlines() or ["no output"])[0] if done.returncode else None
        else:
            reason = _restore_through_psql(handle.url, dump)
        if reason is not None:
            raise SystemExit(f"error: pg_restore restored nothing: {reason}")
        handle = _past_the_journals_transaction_ids(handle)
        print(f"restored {dump}; migrated to {upgrade(handle, settings)}")
    finally:
        handle.close()
    return 0


# pg_restore 17 and later (the wheel's is 18) begin every restore with `SET transaction_timeout = 0`,
# a setting PostgreSQL 15 and 16 do not know: every restore into one stopped there, nothing
# restored ("unrecognized configuration parameter"). Into those the archive goes as pg_restore's
# script, that line left out, through the wheel's psql, in one transaction committed only once the
# whole script came (a pg_restore that fails midway, a truncated archive, commits nothing).
TRANSACTION_TIMEOUT_SINCE = 170000  # server_version_num of PostgreSQL 17
UNKNOWN_BEFORE_17 = b"SET transaction_timeout = 0;\n"


def _restore_through_psql(url: str, dump: Path) -> str | None:
    """Restore `dump` into `url` (a server older than 17) in one transaction: None, or why not (the
    first line psql or pg_restore wrote)."""
    tools = embedded.bin_dir()
    with tempfile.TemporaryFile("w+") as script_errors, tempfile.TemporaryFile("w+") as psql_errors:
        script = subprocess.Popen([str(tools / "pg_restore"), "--no-owner", "--file=-", str(dump)],
                                  stdout=subprocess.PIPE, stderr=script_errors)
        psql = subprocess.Popen([str(tools / "psql"), "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1",
                                 f"--dbname={url}"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=psql_errors)
        assert script.stdout is not None and psql.stdin is not None
        try:
            psql.stdin.write(b"BEGIN;\n")
            for line in script.stdout:  # the settings pg_restore opens with, before the first table's rows
                if line != UNKNOWN_BEFORE_17:
                    psql.stdin.write(line)
                if line == UNKNOWN_BEFORE_17 or line.startswith(b"COPY "):
                    break
            shutil.copyfileobj(script.stdout, psql.stdin)
            if script.wait() == 0:
                psql.stdin.write(b"COMMIT;\n")
            psql.stdin.close()
        except BrokenPipeError:  # psql stopped at an error (ON_ERROR_STOP): its transaction rolled back
            script.kill()
            script.wait()
        psql.wait()
        if psql.returncode == 0 and script.returncode == 0:
            return None
        for errors in (psql_errors, script_errors):
            errors.seek(0)
            if lines := errors.read().strip().splitlines():
                return lines[0]
        return "no output"


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

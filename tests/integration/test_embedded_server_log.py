"""The embedded cluster's server log. `pg_ctl -l <data dir>/log` appended every line PostgreSQL
wrote to one file for as long as the data dir lived: a service that ran for months filled its
disk. Now PostgreSQL's logging collector writes it to pg_log/postgresql-HH.log, one file per hour
of the day, each truncated when its hour comes round again: 24 files, a day's log at most."""
from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import psycopg

from ledger import embedded

WARNINGS = 2_000  # about 200 kB of log


def test_the_embedded_server_log_goes_to_24_hourly_files_each_truncated_when_reused():
    where = tempfile.TemporaryDirectory(prefix="tokentill-server-log-")  # one the server's user may reach
    pgdata = Path(where.name) / "pg"
    cluster = embedded.start(pgdata)
    try:
        before = (pgdata / "log").stat().st_size
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute(f"""DO $$ BEGIN FOR i IN 1..{WARNINGS} LOOP
                               RAISE WARNING 'tokentill log rotation test line %', i; END LOOP; END $$""")
            current = conn.execute("SELECT pg_current_logfile()").fetchone()[0]
            settings = dict(conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('log_filename', 'log_truncate_on_rotation', "
                "'log_rotation_age', 'log_rotation_size')").fetchall())
        # the lines went to the hour's file, not to the file that grows for ever
        assert (pgdata / "log").stat().st_size - before < 1_000
        assert re.fullmatch(r"pg_log/postgresql-([01]\d|2[0-3])\.log", current), current
        written = (pgdata / current).read_text()
        assert f"tokentill log rotation test line {WARNINGS}" in written
        # a new file each hour (60 minutes), named by the hour of the day: 24 names, each truncated
        # when its hour comes round again; no size-based rotation (it would append to the same name)
        assert settings == {"log_filename": "postgresql-%H.log", "log_truncate_on_rotation": "on",
                            "log_rotation_age": "60", "log_rotation_size": "0"}
    finally:
        cluster.stop()
        where.cleanup()


def test_a_cluster_made_before_the_collector_gets_it_at_its_next_start():
    """A data dir an older tokentill made (its settings without the collector) is restarted with
    them once, at start, as the other settings are."""
    where = tempfile.TemporaryDirectory(prefix="tokentill-server-log-")
    pgdata = Path(where.name) / "pg"
    cluster = embedded.start(pgdata)
    try:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET logging_collector")  # as an older tokentill left it
            conn.execute("ALTER SYSTEM RESET log_directory")
    finally:
        cluster.stop()
    cluster = embedded.start(pgdata)
    try:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            assert conn.execute("SHOW logging_collector").fetchone()[0] == "on"
            assert conn.execute("SELECT pg_current_logfile()").fetchone()[0].startswith("pg_log/postgresql-")
    finally:
        cluster.stop()
        where.cleanup()


def test_a_start_that_fails_once_the_collector_runs_says_the_reason_from_its_file():
    """The WAL gone: the startup process fails after the logging collector took the log over, so
    the reason is in pg_log's file, not in `log` (whose last line then is "Future log output will
    appear in directory \"pg_log\"", which the start said): the start says the PANIC line from
    there. (Before the collector the same start said `log`'s last line, "database system is shut
    down": a PANIC line was not taken for a reason.)"""
    where = tempfile.TemporaryDirectory(prefix="tokentill-server-log-")
    pgdata = Path(where.name) / "pg"
    try:
        embedded.start(pgdata).stop()
        for segment in (pgdata / "pg_wal").iterdir():
            if segment.is_file():
                segment.unlink()
        try:
            embedded.start(pgdata).stop()
        except embedded.StartFailed as exc:
            reason = str(exc)
        else:
            raise AssertionError("started without its WAL")
        assert reason.startswith(f"{pgdata.resolve()}: PostgreSQL did not start: "), reason
        assert "PANIC:  could not locate a valid checkpoint record" in reason, reason
    finally:
        where.cleanup()


def test_a_failed_start_in_another_hour_does_not_give_an_old_fatal_line_of_that_hour_s_file(tmp_path):
    """The collector appends to the hour's file at a start (PostgreSQL truncates it only when it
    rotates into it): a start at 14:05, whose last run ended at 09:xx (current_logfiles named
    postgresql-09.log), writes after an old run's lines in postgresql-14.log, a stop at 14:30 some
    day before ("FATAL: terminating connection due to administrator command", one a pooled
    connection). A start failing there without a FATAL line (its startup process killed) was told
    that old line as its reason; only what this start wrote counts."""
    pgdata = tmp_path / "pg"
    (pgdata / "pg_log").mkdir(parents=True)
    collector = ('LOG:  redirecting log output to logging collector process\n'
                 'HINT:  Future log output will appear in directory "pg_log".\n')
    (pgdata / "log").write_text(collector)
    (pgdata / "pg_log" / "postgresql-09.log").write_text("2026-12-04 09:59:58 UTC LOG:  database system is shut down\n")
    old = "2026-12-03 14:30:01 UTC FATAL:  terminating connection due to administrator command"
    (pgdata / "pg_log" / "postgresql-14.log").write_text(
        f"{old}\n2026-12-03 14:30:01 UTC LOG:  database system is shut down\n")
    (pgdata / "current_logfiles").write_text("stderr pg_log/postgresql-09.log\n")
    since = embedded._log_size(pgdata)
    # the start at 14:05: the postmaster's two lines in `log`, then the collector's in the hour's file
    with (pgdata / "log").open("a") as file:
        file.write(collector)
    (pgdata / "current_logfiles").write_text("stderr pg_log/postgresql-14.log\n")
    with (pgdata / "pg_log" / "postgresql-14.log").open("a") as file:
        file.write("2026-12-05 14:05:00 UTC LOG:  startup process (PID 77) was terminated by signal 9: Killed\n"
                   "2026-12-05 14:05:00 UTC LOG:  aborting startup due to startup process failure\n")
    reason = embedded._last_log_line(pgdata, since)
    assert "administrator command" not in reason
    assert reason == "2026-12-05 14:05:00 UTC LOG:  startup process (PID 77) was terminated by signal 9: Killed"


def test_a_start_empties_an_older_days_file_for_its_hour_and_bounds_pg_ctls_log():
    """PostgreSQL truncates an hour's file only when a running server rotates into it, not at
    start: a start appended to its hour's file after an older day's lines, and a server started
    in the same hour every day (a cron job's CLI) and never running into it again grew that file
    for ever; pg_ctl's `log` takes two lines a start, for ever too. Every hour's file is planted
    with a line of yesterday (so the test holds whatever the hour), and `log` past its bound."""
    where = tempfile.TemporaryDirectory(prefix="tokentill-server-log-")
    pgdata = Path(where.name) / "pg"
    embedded.start(pgdata).stop()
    yesterday = time.time() - 24 * 3600
    for hour in range(24):
        planted = pgdata / "pg_log" / f"postgresql-{hour:02d}.log"
        planted.write_text("yesterday's line of this hour\n")
        os.utime(planted, (yesterday, yesterday))
    line = b"LOG:  an old start's line\n"
    (pgdata / "log").write_bytes(line * (2 * embedded.LOG_MAX_BYTES // len(line)))  # 2 MiB
    cluster = embedded.start(pgdata)
    try:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute("DO $$ BEGIN RAISE WARNING 'tokentill fresh log test line'; END $$")
            current = conn.execute("SELECT pg_current_logfile()").fetchone()[0]
        deadline = time.monotonic() + 10  # the collector writes what it reads from its pipe, a moment later
        while "tokentill fresh log test line" not in (written := (pgdata / current).read_text()):
            assert time.monotonic() < deadline, written
            time.sleep(0.05)
        assert "yesterday's line" not in written  # was: the first line of the hour's file
        assert (pgdata / "log").stat().st_size < embedded.LOG_KEEP_BYTES + 1_000  # was: 2 MiB and growing
    finally:
        cluster.stop()
        where.cleanup()

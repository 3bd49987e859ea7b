"""Before a start, the hourly server-log file the server is about to append to is emptied when
it holds an older day's lines (PostgreSQL truncates it only when a running server rotates into
it, never at start), and pg_ctl's `log` is kept to its last lines (ledger.embedded.fresh_logs).
The clock is the `now` given: 2026-12-05 10:05 UTC."""
from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from ledger import embedded

NOW = datetime(2026, 12, 5, 10, 5, tzinfo=UTC).timestamp()
HOUR = 3600


def cluster(tmp_path: Path, zone: str = "Etc/UTC") -> Path:
    (tmp_path / "pg_log").mkdir()
    (tmp_path / "postgresql.conf").write_text(f"log_timezone = 'Europe/Paris'\nlog_timezone = '{zone}'\n")
    return tmp_path


def written(path: Path, text: str, at: float) -> Path:
    path.write_text(text)
    os.utime(path, (at, at))
    return path


def test_the_hours_file_of_an_older_day_is_emptied_and_the_others_kept(tmp_path):
    pgdata = cluster(tmp_path)
    ten = written(pgdata / "pg_log" / "postgresql-10.log", "yesterday at 10:30\n", NOW - 24 * HOUR + 25 * 60)
    nine = written(pgdata / "pg_log" / "postgresql-09.log", "today at 09:59\n", NOW - 6 * 60)
    embedded.fresh_logs(pgdata, NOW)
    assert ten.read_text() == ""  # was: the start appended after yesterday's 10 o'clock lines
    assert nine.read_text() == "today at 09:59\n"


def test_a_restart_within_the_hour_keeps_what_this_hour_wrote(tmp_path):
    pgdata = cluster(tmp_path)
    ten = written(pgdata / "pg_log" / "postgresql-10.log", "today at 10:01\n", NOW - 4 * 60)
    embedded.fresh_logs(pgdata, NOW)
    assert ten.read_text() == "today at 10:01\n"


def test_the_file_is_named_in_the_servers_log_timezone_the_last_setting_winning(tmp_path):
    pgdata = cluster(tmp_path, "Asia/Kolkata")  # UTC+5:30: 10:05 UTC is 15:35 there, its hour began at 15:00
    (pgdata / "postgresql.auto.conf").write_text("log_timezone = 'America/New_York'\n")  # ALTER SYSTEM's: 05:05
    five = written(pgdata / "pg_log" / "postgresql-05.log", "yesterday\n", NOW - 24 * HOUR)
    ten = written(pgdata / "pg_log" / "postgresql-10.log", "yesterday\n", NOW - 24 * HOUR)
    embedded.fresh_logs(pgdata, NOW)
    assert (five.read_text(), ten.read_text()) == ("", "yesterday\n")


def test_pg_ctls_log_is_cut_to_its_last_whole_lines_past_its_bound(tmp_path):
    pgdata = cluster(tmp_path)
    line = b"2026-12-05 10:00:00 UTC LOG:  redirecting log output to logging collector process\n"  # 82 bytes
    assert len(line) == 82
    (pgdata / "log").write_bytes(line * (embedded.LOG_MAX_BYTES // len(line) + 1))
    embedded.fresh_logs(pgdata, NOW)
    kept = (pgdata / "log").read_bytes()
    # 799 whole lines of 82 bytes (65,518), the 18 bytes of a line cut at the start dropped
    assert kept == line * (embedded.LOG_KEEP_BYTES // len(line))
    small = line * 3
    (pgdata / "log").write_bytes(small)
    embedded.fresh_logs(pgdata, NOW)
    assert (pgdata / "log").read_bytes() == small

"""The embedded cluster's first start (README, Quick start: `tokentill serve` on a fresh machine).
Making the cluster and giving it tokentill's settings is routine: it logged two WARNING lines
(`embedded PostgreSQL in …/pg: applying {...} (restart)` and `… restarted`) to every new user.
A cluster made earlier whose settings are changed at start is still a warning."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import psycopg

from ledger import embedded


def _warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


def test_the_first_start_of_a_new_cluster_logs_no_warning(caplog):
    where = tempfile.TemporaryDirectory(prefix="tokentill-first-start-")  # one the server's user may reach
    caplog.set_level(logging.INFO)
    cluster = embedded.start(Path(where.name) / "pg", keep=False)
    try:
        with psycopg.connect(cluster.url, autocommit=True) as conn:  # the settings were applied all the same
            assert conn.execute("SHOW max_pred_locks_per_transaction").fetchone()[0] == "1024"
            assert conn.execute("SHOW logging_collector").fetchone()[0] == "on"
    finally:
        cluster.stop()
        where.cleanup()
    assert _warnings(caplog) == []
    assert any("applying" in record.getMessage() for record in caplog.records)  # said, at INFO


def test_settings_changed_on_an_existing_cluster_are_still_a_warning(caplog):
    """Guard: a cluster whose settings someone changed (or an older tokentill left) is restarted
    with tokentill's at start, and that is said as a WARNING, as before."""
    where = tempfile.TemporaryDirectory(prefix="tokentill-first-start-")
    pgdata = Path(where.name) / "pg"
    cluster = embedded.start(pgdata)
    try:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET max_pred_locks_per_transaction")  # 64, PostgreSQL's default
    finally:
        cluster.stop()
    caplog.clear()
    caplog.set_level(logging.INFO)
    cluster = embedded.start(pgdata, keep=False)
    try:
        said = _warnings(caplog)
    finally:
        cluster.stop()
        where.cleanup()
    assert said == [
        f"embedded PostgreSQL in {pgdata.resolve()}: applying {{'max_pred_locks_per_transaction': '1024'}} (restart)",
        f"embedded PostgreSQL in {pgdata.resolve()} restarted",
    ]

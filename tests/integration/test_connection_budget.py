"""`tokentill serve` says at start when its processes may open more database connections than
the server allows (README, Several processes: N x (2 x TOKENTILL_POOL_SIZE + 4)); they used to
find out under load, as 503s (too many clients)."""
from __future__ import annotations

import logging

from api.runtime import warn_connection_budget
from api.settings import Settings


def test_more_connections_than_the_database_allows_is_a_warning_at_start_naming_the_settings(database_url, caplog):
    with caplog.at_level(logging.WARNING, logger="tokentill"):
        allowed = warn_connection_budget(database_url, Settings(pool_size=30), processes=4)
    assert 0 < allowed < 4 * (2 * 30 + 4)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"4 processes x (2 x TOKENTILL_POOL_SIZE 30 + 4) = 256 database connections at "
                              f"most, but the database allows {allowed}")
    assert "TOKENTILL_WORKERS" in warning


def test_a_budget_the_database_allows_says_nothing(database_url, caplog):
    with caplog.at_level(logging.WARNING, logger="tokentill"):
        warn_connection_budget(database_url, Settings(pool_size=3), processes=2)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []

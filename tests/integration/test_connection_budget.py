"""`tokentill serve` stops at start when its processes may open more database connections than the
server allows (README, Several processes: N x (2 x TOKENTILL_POOL_SIZE + 7), 2 + 5 with webhooks
off); they used to find out under load, as 503s (too many clients), after a warning only.
TOKENTILL_POOL_OVERCOMMIT=on starts anyway, with the warning."""
from __future__ import annotations

import logging

import psycopg
import pytest

from api.runtime import check_connection_budget
from api.settings import Settings


def _server(url: str) -> tuple[int, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT current_setting('max_connections')::int, "
                            "current_setting('superuser_reserved_connections')::int").fetchone()


def test_the_embedded_server_allows_97_connections_to_others_than_superusers(database_url):
    """The premise of the figures below (guard): PostgreSQL's defaults, 100 less 3 reserved."""
    assert _server(database_url) == (100, 3)


@pytest.mark.parametrize(("pool", "processes", "webhooks", "most", "per", "fix"), [
    # 4 x (2 x 10 + 7) = 108 > 97; the pool that fits 4: 97 // 4 = 24 each, (24 - 7) // 2 = 8
    # (4 x 23 = 92); the workers that fit a pool of 10: 97 // 27 = 3 (81)
    (10, 4, True, 108, 7, "lower TOKENTILL_POOL_SIZE (to at most 8) or TOKENTILL_WORKERS (to at most 3)"),
    # one process: 2 x 46 + 7 = 99 > 97; (97 - 7) // 2 = 45 (97 taken exactly)
    (46, 1, True, 99, 7, "lower TOKENTILL_POOL_SIZE (to at most 45)"),
    # without webhooks, 2 beside the pool: 8 x (2 x 6 + 2) = 112 > 97; 97 // 8 = 12, (12 - 2) // 2 = 5
    # (8 x 12 = 96); 97 // 14 = 6 workers (84)
    (6, 8, False, 112, 2, "lower TOKENTILL_POOL_SIZE (to at most 5) or TOKENTILL_WORKERS (to at most 6)"),
    # 40 x (2 x 1 + 7) = 360: no pool fits 40 processes (97 // 40 = 2 each, fewer than 2 + 7);
    # 97 // 9 = 10 workers of a pool of 1 (90)
    (1, 40, True, 360, 7, "lower TOKENTILL_WORKERS (to at most 10)"),
])
def test_more_connections_than_the_database_allows_stops_the_start_naming_what_fits(
        database_url, pool, processes, webhooks, most, per, fix):
    settings = Settings(pool_size=pool, webhooks=webhooks)
    with pytest.raises(SystemExit) as stopped:
        check_connection_budget(database_url, settings, processes=processes)
    assert stopped.value.code == (
        f"{processes} process{'es' if processes > 1 else ''} x (2 x TOKENTILL_POOL_SIZE {pool} + {per}) = {most} "
        f"database connections at most, but the database allows 97 (max_connections 100 less 3 reserved): {fix}, "
        "or raise the server's max_connections (TOKENTILL_POOL_OVERCOMMIT=on starts anyway)")


def test_overcommit_on_starts_with_the_warning(database_url, caplog):
    with caplog.at_level(logging.WARNING, logger="tokentill"):
        allowed = check_connection_budget(database_url, Settings(pool_size=10, pool_overcommit=True), processes=4)
    assert allowed == 97
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("4 processes x (2 x TOKENTILL_POOL_SIZE 10 + 7) = 108 database connections at most, "
                              "but the database allows 97")
    assert "TOKENTILL_POOL_OVERCOMMIT is on: under load some requests would be answered 503" in warning


@pytest.mark.parametrize(("pool", "processes"), [
    (10, 3),  # 3 x 27 = 81 <= 97
    (45, 1),  # 2 x 45 + 7 = 97: every connection allowed, taken
    (3, 8),  # 8 x 13 = 104 > 97 with webhooks; see below without
])
def test_a_budget_the_database_allows_says_nothing(database_url, caplog, pool, processes):
    webhooks = (pool, processes) != (3, 8)  # without webhooks: 8 x (2 x 3 + 2) = 64
    with caplog.at_level(logging.WARNING, logger="tokentill"):
        assert check_connection_budget(database_url, Settings(pool_size=pool, webhooks=webhooks),
                                       processes=processes) == 97
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize(("servers", "workers", "pool"), [
    # `bench lifecycle --workers-per-server 4` (README, Several processes: measured with 1, 2 and 4
    # workers): one serve of 4 at the default pool, 4 x (2 x 10 + 7) = 108 > 97, stopped at start;
    # the bench's pool: 97 // 4 = 24 a process, (24 - 7) // 2 = 8 (4 x 23 = 92)
    (1, 4, 8),
    # README's `--servers 2, --workers-per-server 2`: each serve checks its own 2 x 27 = 54, but the
    # four processes on one cluster may open 108 > 97; the same 8 as above
    (2, 2, 8),
    # one serve of 2 workers: 2 x 27 = 54 fits, the pool asked (10) is kept: (48 - 7) // 2 = 20 > 10
    (1, 2, 10),
    # two servers of 4: 97 // 8 = 12 a process, (12 - 7) // 2 = 2 (8 x 11 = 88)
    (2, 4, 2),
])
def test_the_lifecycle_bench_sizes_its_servers_pools_to_fit_the_database_together(
        database_url, servers, workers, pool):
    from api.bench.lifecycle_bench import servers_pool

    assert servers_pool(database_url, Settings(), servers=servers, workers=workers) == pool
    # and each serve of them starts (TOKENTILL_POOL_OVERCOMMIT off): all of them fit together
    assert check_connection_budget(database_url, Settings(pool_size=pool), processes=servers * workers) == 97

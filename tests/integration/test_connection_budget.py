"""`tokentill serve` stops at start when its processes may open more database connections than the
server allows (README, Several processes: N x (2 x TOKENTILL_POOL_SIZE + 8), 3 beside the pool and
5 more with webhooks); they used to find out under load, as 503s (too many clients), after a warning only.
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
    # 4 x (2 x 10 + 8) = 112 > 97; the pool that fits 4: 97 // 4 = 24 each, (24 - 8) // 2 = 8
    # (4 x 24 = 96); the workers that fit a pool of 10: 97 // 28 = 3 (84)
    (10, 4, True, 112, 8, "lower TOKENTILL_POOL_SIZE (to at most 8) or TOKENTILL_WORKERS (to at most 3)"),
    # one process: 2 x 45 + 8 = 98 > 97; (97 - 8) // 2 = 44 (96)
    (45, 1, True, 98, 8, "lower TOKENTILL_POOL_SIZE (to at most 44)"),
    # without webhooks, 3 beside the pool: 8 x (2 x 6 + 3) = 120 > 97; 97 // 8 = 12, (12 - 3) // 2 = 4
    # (8 x 11 = 88); 97 // 15 = 6 workers (90)
    (6, 8, False, 120, 3, "lower TOKENTILL_POOL_SIZE (to at most 4) or TOKENTILL_WORKERS (to at most 6)"),
    # 40 x (2 x 1 + 8) = 400: no pool fits 40 processes (97 // 40 = 2 each, fewer than 2 + 8);
    # 97 // 10 = 9 workers of a pool of 1 (90)
    (1, 40, True, 400, 8, "lower TOKENTILL_WORKERS (to at most 9)"),
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
    assert warning.startswith("4 processes x (2 x TOKENTILL_POOL_SIZE 10 + 8) = 112 database connections at most, "
                              "but the database allows 97")
    assert "TOKENTILL_POOL_OVERCOMMIT is on: under load some requests would be answered 503" in warning


@pytest.mark.parametrize(("pool", "processes"), [
    (10, 3),  # 3 x 28 = 84 <= 97
    (44, 1),  # 2 x 44 + 8 = 96 <= 97 (45: 98)
    (3, 8),  # 8 x 14 = 112 > 97 with webhooks; see below without
])
def test_a_budget_the_database_allows_says_nothing(database_url, caplog, pool, processes):
    webhooks = (pool, processes) != (3, 8)  # without webhooks: 8 x (2 x 3 + 3) = 72
    with caplog.at_level(logging.WARNING, logger="tokentill"):
        assert check_connection_budget(database_url, Settings(pool_size=pool, webhooks=webhooks),
                                       processes=processes) == 97
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize(("servers", "workers", "pool"), [
    # `bench lifecycle --workers-per-server 4` (README, Several processes: measured with 1, 2 and 4
    # workers): one serve of 4 at the default pool, 4 x (2 x 10 + 8) = 112 > 97, stopped at start;
    # the bench's pool: 97 // 4 = 24 a process, (24 - 8) // 2 = 8 (4 x 24 = 96)
    (1, 4, 8),
    # README's `--servers 2, --workers-per-server 2`: each serve checks its own 2 x 28 = 56, but the
    # four processes on one cluster may open 112 > 97; the same 8 as above
    (2, 2, 8),
    # one serve of 2 workers: 2 x 28 = 56 fits, the pool asked (10) is kept: (48 - 8) // 2 = 20 > 10
    (1, 2, 10),
    # two servers of 4: 97 // 8 = 12 a process, (12 - 8) // 2 = 2 (8 x 12 = 96)
    (2, 4, 2),
])
def test_the_lifecycle_bench_sizes_its_servers_pools_to_fit_the_database_together(
        database_url, servers, workers, pool):
    from api.bench.lifecycle_bench import servers_pool

    assert servers_pool(database_url, Settings(), servers=servers, workers=workers) == pool
    # and each serve of them starts (TOKENTILL_POOL_OVERCOMMIT off): all of them fit together
    assert check_connection_budget(database_url, Settings(pool_size=pool), processes=servers * workers) == 97

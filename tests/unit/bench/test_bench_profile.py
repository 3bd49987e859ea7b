"""The profile summary of `tokentill bench lifecycle --profile`: py-spy's raw stacks by layer."""
from __future__ import annotations

from api.bench.profile import OTHER, summarize

SITE = "/venv/lib/python3.11/site-packages"
ROOT = "/src/tokentill"
BOOT = ";".join([  # under every stack of `tokentill serve`
    "_run_module_as_main (<frozen runpy>:198)", f"main ({ROOT}/api/cli.py:183)", f"_serve ({ROOT}/api/cli.py:27)",
    f"serve ({ROOT}/api/server.py:290)", f"Server.run ({SITE}/uvicorn/server.py:86)",
    f"asyncio_run ({SITE}/uvicorn/_compat.py:30)"])
LOOP = f"{BOOT};run (/usr/lib/python3.11/asyncio/base_events.py:600)"
UVICORN = f"run_asgi ({SITE}/uvicorn/protocols/http/httptools_impl.py:401)"
ROUTE = f"settle ({ROOT}/api/routes/reservations.py:160)"
ENGINE = f"_work ({ROOT}/wallets/engine.py:150)"
RULES = f"apply ({ROOT}/wallets/commands.py:300)"
RATING = f"rate ({ROOT}/pricing/rating.py:200)"
DRIVER = f"execute ({SITE}/psycopg/cursor_async.py:90)"


def test_each_sample_counts_for_the_innermost_layer_on_its_stack(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text("\n".join([
        f"{LOOP};{UVICORN};{ROUTE} 50",  # HTTP
        f"{LOOP};{ENGINE};{RULES};{RATING} 20",  # rules and pricing (pricing under commands)
        f"{LOOP};{ENGINE};{DRIVER} 20",  # the driver, though the engine called it
        f"{LOOP};{ENGINE} 5",  # the unit of work itself
        f"{LOOP} 3",  # nothing of ours: the loop
        f"{BOOT} 2",  # the command line and uvicorn starting the loop are no layer either
        "garbage line without a count",
    ]) + "\n")
    summary = summarize(raw)
    assert summary["samples"] == 100
    assert summary["percent_by_layer"] == {
        "HTTP: uvicorn, Litestar, routes": 50.0,
        "wallet rules and pricing": 20.0,
        "database driver (psycopg, SQLAlchemy)": 20.0,
        "unit of work: batch, SQL parameters, results": 5.0,
        OTHER: 5.0,
    }
    own = dict((name, share) for name, share in summary["top_own_time"])
    assert own["execute (psycopg/cursor_async.py)"] == 20.0
    assert own["rate (/src/tokentill/pricing/rating.py)"] == 20.0  # not under this checkout: path kept


def test_an_empty_profile_has_no_shares(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text("")
    assert summarize(raw) == {"samples": 0, "file": str(raw), "percent_by_layer": {}, "top_own_time": []}


def test_lifecycle_profile_without_py_spy_stops_before_any_database_or_server_starts(monkeypatch):
    """README: `tokentill bench lifecycle --seconds 10 --profile /tmp/prof` needs py-spy. Without it
    the bench opened the cluster, made a scratch database, started its servers and seeded 1,000
    wallets, and only at the spread case stopped with `--profile needs py-spy` (printing every
    server's log tail as for a crash). It now stops first, with that line, nothing started."""
    import argparse

    import pytest

    import api.bench.lifecycle_bench as lifecycle_bench
    import api.bench.profile as profile

    started: list[str] = []

    def open_database(*args, **kwargs):
        started.append("database")
        raise RuntimeError("the bench opened the database")

    monkeypatch.setattr(profile.shutil, "which", lambda name: None)
    monkeypatch.setattr(lifecycle_bench, "open_database", open_database)
    for scaling in (False, True):
        args = argparse.Namespace(scaling=scaling, profile="/tmp/prof", seconds=10.0, servers=1, lanes=None,
                                  workers=64, workers_per_server=1, pgbench_clients=8, json=False)
        with pytest.raises(SystemExit) as stopped:
            lifecycle_bench.main(args, settings=None)
        assert "--profile needs py-spy: pip install py-spy" in str(stopped.value.code)
    assert started == []  # was: ['database'], the RuntimeError above

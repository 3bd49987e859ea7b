"""`tokentill bench console` runs end to end on a small customer: the charges are posted, the
admin signs in, every page is timed. Figures are printed and checked for consistency, not for
speed (speed is never a unit-test pass/fail; the exit code says whether the goal was met)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from api.bench.console_bench import GOAL_MS, PAGES


def test_bench_console_times_every_page_of_a_customer_with_the_charges_asked_for(server_url):
    env = {**os.environ, "TOKENTILL_DATABASE_URL": server_url}
    done = subprocess.run([sys.executable, "-m", "api.cli", "bench", "console", "--charges", "1500",
                           "--requests", "5", "--workers", "2", "--json"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["charges"] == report["charges_posted"] == 1500  # two batches, every event charged
    assert set(report["pages"]) == {p.format(c="bench-console") for p in PAGES}
    for figures in report["pages"].values():
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["max_ms"]
        assert figures["p95_ratio_to_goal"] == round(figures["p95_ms"] / GOAL_MS, 3)
    assert report["goal_met"] == all(f["p95_ms"] < GOAL_MS for f in report["pages"].values())
    assert done.returncode == (0 if report["goal_met"] else 1)

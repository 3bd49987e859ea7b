"""`tokentill bench lifecycle` runs end to end: it is where the performance goals are checked, so
it must not rot. Its figures are printed, not asserted (speed is never a unit-test pass/fail)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def test_bench_lifecycle_runs_every_case_and_reports_its_figures(server_url):
    env = {**os.environ, "TOKENTILL_DATABASE_URL": server_url}
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "bench", "lifecycle", "--seconds", "1", "--wallets", "10",
         "--workers", "4", "--pgbench-clients", "2", "--json"],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["verify_ok"] is True
    assert report["serialization_retries"] == 0
    for case in ("spread", "hot", "half_load", "background_settles"):
        assert report[case]["lifecycles"] > 0, case
        assert report[case]["errors"] == 0, case
        assert report[case]["reserve_p50_ms"] <= report[case]["reserve_p99_ms"], case
    assert report["pgbench_tpcb_like_tps"] > 0
    assert report["spread_ratio"] == round(report["spread"]["lifecycles_per_s"] / report["pgbench_tpcb_like_tps"], 3)
    if sys.platform == "linux":
        assert set(report["cpu_cores"]["spread"]) >= {"servers", "load_generator", "postgres_and_other"}
        assert report["cpu_cores"]["spread"]["servers"] > 0
        # the servers' CPU per lifecycle agrees with their cores over the case (to the cores' rounding)
        spread = report["spread"]
        assert report["server_cpu_us_per_lifecycle"]["spread"] == pytest.approx(
            report["cpu_cores"]["spread"]["servers"] * 1e6 / spread["lifecycles_per_s"], rel=0.3)

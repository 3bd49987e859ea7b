"""`tokentill bench export` runs end to end on a small ledger: its figures are printed, never
asserted (speed is not a unit-test pass/fail), but what it proves must hold."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def test_bench_export_builds_exports_and_checks_a_small_ledger(server_url):
    env = {**os.environ, "TOKENTILL_DATABASE_URL": server_url}
    done = subprocess.run([sys.executable, "-m", "api.cli", "bench", "export", "--entries", "3000",
                           "--bean-check", "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    report = json.loads(done.stdout)
    assert report["entries"] == 3000
    assert set(report["build"]["checks"]) == {"entries_balanced", "cached_balances", "bounds", "trial_balance"}
    assert all(report["build"]["checks"].values())
    for fmt in ("beancount", "jsonl"):
        assert report[fmt]["entries_per_s"] > 0 and report[fmt]["peak_rss_mb"] > 0 and report[fmt]["mb_written"] > 0
        assert report[fmt]["streaming_s"] <= report[fmt]["process_s"]
        assert report[fmt]["export_cpu_s"] >= 0 and report[fmt]["postgres_cpu_s"] >= 0
    assert report["offline_verify"]["ok"] is True
    assert "3,000 entries" in report["offline_verify"]["output"][0]
    assert report["bean_check"]["bean_check_ok"] is True
    assert report["bean_check"]["balances_equal_trial_balance"] is True
    assert report["bean_check"]["accounts"] > 1000  # the platform's and 1,000 customers' accounts

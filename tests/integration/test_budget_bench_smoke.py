"""The budget benchmarks run end to end (their figures are printed, never asserted): the
lifecycle bench's case with three matching budgets per wallet, and the design comparison."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys


def test_bench_lifecycle_budgets_runs_the_spread_case_again_with_three_matching_budgets(server_url):
    env = {**os.environ, "TOKENTILL_DATABASE_URL": server_url}
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "bench", "lifecycle", "--seconds", "1", "--wallets", "10",
         "--workers", "4", "--pgbench-clients", "2", "--budgets", "--json"],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["verify_ok"] is True
    budgets = report["budgets"]
    assert budgets["lifecycles"] > 0 and budgets["errors"] == 0 and budgets["refused"] == 0
    assert report["budgets_ratio_to_without"] == round(
        budgets["lifecycles_per_s"] / report["spread"]["lifecycles_per_s"], 3)


def test_bench_budgets_prints_both_designs_per_batch(server_url):
    env = {**os.environ, "TOKENTILL_DATABASE_URL": server_url}
    done = subprocess.run([sys.executable, "-m", "api.cli", "bench", "budgets", "--seconds", "1"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {m.group(1): float(m.group(2))
             for m in re.finditer(r"^  (base|ledger|counters) +([0-9.]+) ms", done.stdout, re.M)}
    assert set(lines) == {"base", "ledger", "counters"} and all(v > 0 for v in lines.values()), done.stdout

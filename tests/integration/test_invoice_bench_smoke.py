"""`tokentill bench invoices` runs end to end small: customers seeded through the API, their
charges copied in bulk, the busiest customer's reads timed, every period closed; the invoices it
counts and sums are checked against a hand calculation. Speed is never a pass/fail here."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from api.bench.invoice_bench import READ_GOAL_MS


def test_bench_invoices_closes_every_customer_and_the_invoices_sum_to_the_charges(server_url):
    env = {**os.environ, "TOKENTILL_DATABASE_URL": server_url}
    done = subprocess.run([sys.executable, "-m", "api.cli", "bench", "invoices", "--customers", "12",
                           "--total-charges", "1212", "--big", "200", "--requests", "5", "--json"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    # By hand: a charge is 1,000 input tokens at $1/M + 500 output at $4/M + $0.001 a call = $0.004;
    # 12 invoices, 1,212 charges = $4.848 in all; the busiest customer's 200 charges = $0.80.
    assert report["found"] == {"invoices": 12, "total_units": 4_848_000_000, "big_upcoming_total": "0.80"}
    assert report["exact"] is True
    rows = {r["token_type"]: r for r in report["usage_report_rows"]}
    assert rows["input"]["quantity"] == 200_000 and rows["output"]["quantity"] == 100_000
    for name in ("usage_report", "upcoming_invoice"):
        figures = report[name]
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
        assert figures["p99_ratio_to_goal"] == round(figures["p99_ms"] / READ_GOAL_MS, 3)
    assert report["close_s"] > 0 and report["closed_per_s"] > 0

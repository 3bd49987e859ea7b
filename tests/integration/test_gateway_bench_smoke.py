"""`tokentill bench gateway` runs end to end: a fake upstream, a real `tokentill gateway` process
(so the command line is exercised too), calls straight and through it, every charge exact.
Figures are printed, not asserted (speed is never a unit-test pass/fail)."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def test_bench_gateway_reports_added_latency_and_exact_charges(server_url):
    env = {**os.environ, "TOKENTILL_DATABASE_URL": server_url}
    done = subprocess.run([sys.executable, "-m", "api.cli", "bench", "gateway", "--seconds", "1", "--workers", "4",
                           "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["peak_calls_per_s"] > 0 and report["calls_checked"] > 0
    assert set(report["failed_statuses"]) <= {"503"}  # retry later, under load; nothing else
    assert report["charges_exact"] is True and report["verify_ok"] is True
    for figure in ("through_ms", "direct_ms", "reserve_ms", "settle_ms", "first_byte_through_ms"):
        assert report[figure]["p50"] > 0, figure
    assert report["added_ms"]["p50"] == round(report["through_ms"]["p50"] - report["direct_ms"]["p50"], 2)
    # where the ledger's part goes: the gateway's wallet batches by phase, read from its /metrics
    phases = report["batch_phases_ms"]
    assert {"queued", "lock", "load", "rules", "post", "write", "commit"} <= set(phases), phases
    assert all(v >= 0 for v in phases.values()) and phases["commit"] > 0
    assert report["commands_per_batch"] >= 1

"""`tokentill bench lifecycle --workers-per-server N` runs its cases against one `tokentill serve
--workers N`: the load reaches every worker, and the CPU and retry figures cover all of them."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def test_bench_lifecycle_against_one_server_of_two_workers(server_url):
    env = {**os.environ, "TOKENTILL_DATABASE_URL": server_url}
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "bench", "lifecycle", "--seconds", "1", "--wallets", "10",
         "--workers", "8", "--pgbench-clients", "2", "--workers-per-server", "2", "--json"],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert (report["servers"], report["workers_per_server"]) == (1, 2)
    assert report["verify_ok"] is True
    assert report["serialization_retries"] == 0
    for case in ("spread", "hot", "half_load"):
        assert report[case]["lifecycles"] > 0 and report[case]["errors"] == 0, case
    if sys.platform == "linux":
        assert report["cpu_cores"]["spread"]["servers"] > 0

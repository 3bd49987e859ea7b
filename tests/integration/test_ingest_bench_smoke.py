"""`tokentill bench ingest` runs end to end: usage events in batches of 1,000 through a real
server, then the same events again, which must add no postings. Figures are printed, not
asserted (speed is never a unit-test pass/fail)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def test_bench_ingest_reports_its_rate_and_a_replay_that_adds_no_postings(server_url):
    env = {**os.environ, "TOKENTILL_DATABASE_URL": server_url}
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "bench", "ingest", "--seconds", "1", "--wallets", "5", "--workers", "2",
         "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    first, again = report["ingest"], report["replay"]
    assert report["batch"] == 1000 and first["events"] % 1000 == 0
    assert first["accepted"] == first["events"] > 0 and first["rejected"] == first["errors"] == 0
    assert report["ratio_to_goal"] == round(first["events_per_s"] / report["goal_events_per_s"], 3)
    assert (again["events"], again["accepted"], again["duplicates"]) == (first["events"], 0, first["events"])
    assert report["postings_before_replay"] > 0 and report["replay_added_postings"] == 0
    assert report["verify_ok"] is True
    assert len(report["load_average"]) == 2
    if report["cpu_cores"]:  # the server's CPU over the ingest, per accepted event
        assert report["server_cpu_us_per_event"] == pytest.approx(
            report["cpu_cores"]["servers"] * first["seconds"] / first["accepted"] * 1e6, rel=0.02)

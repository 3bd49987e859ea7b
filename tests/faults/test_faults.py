"""Fault injection (opt-in: `python -m pytest -m faults tests/faults`; about 70 s).

SDK lifecycles run against two real `tokentill serve` processes on one embedded PostgreSQL while
a server is killed and restarted, the postmaster is killed, and a server is stopped for 20 s.
Every lifecycle must be charged exactly once with its expected amount, and verify must be ok.
"""
from __future__ import annotations

import argparse

import pytest

from api.bench import faults

pytestmark = pytest.mark.faults


def test_lifecycles_through_kills_and_stops_are_each_charged_exactly_once(capsys):
    args = argparse.Namespace(workers=16, stop_seconds=20.0, settle_seconds=2.0)
    report = faults.asyncio.run(faults.run(args))
    with capsys.disabled():
        print("\n" + faults.text_report(report))
    assert report["settled"] > 100
    assert report["problems"] == []
    assert report["verify_ok"], report["failed_checks"]
    assert [f["fault"] for f in report["faults"]] == [
        "server kill -9, restarted at once", "embedded postmaster kill -9", "server SIGSTOP for 20 s"]
    for fault in report["faults"]:
        assert all(v is not None for k, v in fault.items() if k != "fault"), fault  # every server came back


def test_the_driver_reports_usage_within_its_hold():
    # 400 input and 300 output tokens are held; usage never exceeds them, so a settle never
    # needs the receivable and its expected charge is the usage priced by hand.
    for n in range(2000):
        i, o = faults.usage_of(n)
        assert 0 < i <= 400 and 0 < o <= 300

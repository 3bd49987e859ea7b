"""`tokentill prices import`: creates the book, then reports it unchanged; a model it does not
know is an error, and `audit verify` is still ok afterwards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from api.cli import parser

pytest.importorskip("genai_prices")


def _cli(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENTILL_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "api.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_importing_twice_creates_the_book_once_and_then_nothing(scratch_url: str):
    args = ("prices", "import", "--source", "genai-prices", "--provider", "anthropic", "--json")
    first = _cli(scratch_url, *args)
    assert first.returncode == 0, first.stderr
    (report,) = [json.loads(line) for line in first.stdout.splitlines()]
    assert report["book"] == "genai-anthropic" and report["created"] and report["models"] > 10
    again = _cli(scratch_url, *args)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) | {"created": report["created"]} == report | {"unchanged": True}
    assert json.loads(again.stdout)["created"] == []
    unknown = _cli(scratch_url, "prices", "import", "--source", "genai-prices", "--model", "no-such-model")
    assert unknown.returncode == 2 and "no-such-model" in unknown.stderr
    assert _cli(scratch_url, "audit", "verify").returncode == 0


def test_an_effective_from_finer_than_a_microsecond_is_read_as_the_next_microsecond():
    """--effective-from 2026-12-01T00:00:00.0000005Z is half a microsecond past midnight: the
    versions it makes take effect from .000001 (as a price version posted with it does), where the
    7th digit was dropped (.000000), and a call at midnight took the new prices."""
    args = parser().parse_args(["prices", "import", "--source", "genai-prices",
                                "--effective-from", "2026-12-01T00:00:00.0000005Z"])
    assert args.effective_from == datetime(2026, 12, 1, 0, 0, 0, 1, tzinfo=UTC)
    whole = parser().parse_args(["prices", "import", "--source", "genai-prices",
                                 "--effective-from", "2026-12-01T00:00:00.0000010Z"])  # .000001 itself
    assert whole.effective_from == datetime(2026, 12, 1, 0, 0, 0, 1, tzinfo=UTC)

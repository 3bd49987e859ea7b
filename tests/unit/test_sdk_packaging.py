"""The SDK is a typed package (PEP 561): a user's `mypy --strict` checks against its annotations.
Without `py.typed` in what is installed, mypy stops at the import ("module is installed, but
missing library stubs or py.typed marker") and the user's program fails to check."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_built_package_marks_the_sdk_and_its_token_counter_typed(tmp_path):
    """What setuptools builds from this checkout (its package data applied) holds the markers."""
    subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "build_py",
                    "-d", str(tmp_path)], cwd=ROOT, check=True, capture_output=True)
    assert (tmp_path / "api" / "client.py").is_file()  # the build ran
    assert (tmp_path / "api" / "py.typed").is_file()
    assert (tmp_path / "pricing" / "py.typed").is_file()  # api.client's StreamMeter counts with pricing.tokens

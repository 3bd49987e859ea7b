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


def test_the_clients_keyword_options_are_typed_so_mypy_checks_them():
    """README: `mypy --strict` checks a program's calls against the SDK's types. The clients'
    constructors and `reserve` took their options as `**kwargs: Any`, so `Client(url, key,
    drain_timeout_s="thirty", spool_dri="/tmp")` and `tt.reserve(..., max_output_tokens="500")`
    passed `mypy --strict` (found: no issues) and failed only when run. Each is now `**kwargs:
    Unpack[...]` of a TypedDict naming every option the call takes, with its type."""
    import inspect
    import typing

    import api.client as client

    hints = {name: typing.get_type_hints(getattr(client, name), include_extras=True)
             for name in ("ClientOptions", "ReserveOptions")}
    base = inspect.signature(client._Base.__init__).parameters
    body = inspect.signature(client._Base.reserve_body).parameters
    assert set(hints["ClientOptions"]) == {n for n, p in base.items() if p.kind is p.KEYWORD_ONLY}
    assert set(hints["ReserveOptions"]) == {n for n, p in body.items() if p.kind is p.KEYWORD_ONLY}
    assert hints["ClientOptions"]["drain_timeout_s"] is float
    assert hints["ReserveOptions"]["max_output_tokens"] is int
    for cls, options in ((client.Client, "ClientOptions"), (client.AsyncClient, "ClientOptions"),
                         (client.Client, "ReserveOptions"), (client.AsyncClient, "ReserveOptions")):
        method = cls.__init__ if options == "ClientOptions" else cls.reserve
        kwargs = typing.get_type_hints(method, include_extras=True)["kwargs"]
        assert kwargs == typing.Unpack[getattr(client, options)], (cls.__name__, method.__name__, kwargs)

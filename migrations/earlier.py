"""An earlier migration's module, for a later one that restates or restores its SQL: migrations
stay frozen copies, so a later one reads an earlier one's text, never the application's."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

VERSIONS = Path(__file__).with_name("versions")


def migration(name: str) -> ModuleType:
    """The module of `versions/<name>.py` (e.g. "0029_period_deltas"), loaded afresh."""
    spec = importlib.util.spec_from_file_location(f"migration_{name}", VERSIONS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

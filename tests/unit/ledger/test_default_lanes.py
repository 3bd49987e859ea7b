"""Migration 0009's default lane count follows the machine that creates the database."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

MIGRATION = Path(__file__).resolve().parents[3] / "migrations" / "versions" / "0009_lanes.py"


def _migration():
    spec = importlib.util.spec_from_file_location("migration_0009", MIGRATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("cores", "lanes"), [(1, 2), (2, 2), (3, 3), (8, 8), (16, 16), (64, 16)])
def test_the_default_lane_count_is_the_cores_between_2_and_16(monkeypatch: pytest.MonkeyPatch, cores: int,
                                                                lanes: int):
    migration = _migration()
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)), raising=False)
    assert migration.default_lanes() == lanes

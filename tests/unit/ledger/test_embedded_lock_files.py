"""The lock files of a cluster are removed only when the process they name is dead; a standalone
backend (initdb's bootstrap, single-user mode) names itself with a negative pid and is alive."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

from ledger.embedded import Postmaster, _clear_stale_lock_files


def _lock_files(pgdata: Path, pid_line: str, start_time: int) -> tuple[Path, Path]:
    pgdata.mkdir()
    pid_file = pgdata / "postmaster.pid"
    pid_file.write_text(f"{pid_line}\n{pgdata}\n{start_time}\n5432\n{pgdata}\n")
    socket_lock = pgdata / ".s.PGSQL.5432.lock"
    socket_lock.write_text(f"{pid_line}\n{pgdata}\n{start_time}\n5432\n")
    return pid_file, socket_lock


def test_a_standalone_backend_with_a_negative_pid_is_alive_and_its_lock_files_stay(tmp_path):
    me = psutil.Process()
    pid_file, socket_lock = _lock_files(tmp_path / "pg", f"-{me.pid}", int(me.create_time()))
    info = Postmaster.read(tmp_path / "pg")
    assert info is not None and info.pid == me.pid and info.alive()
    _clear_stale_lock_files(tmp_path / "pg")
    assert pid_file.exists() and socket_lock.exists()


def test_the_lock_files_of_a_dead_process_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file, socket_lock = _lock_files(tmp_path / "pg", str(dead.pid), 0)
    assert Postmaster.read(tmp_path / "pg").alive() is False
    _clear_stale_lock_files(tmp_path / "pg")
    assert not pid_file.exists() and not socket_lock.exists()
    assert os.path.isdir(tmp_path / "pg")


def test_a_postmaster_whose_start_was_slow_is_alive(tmp_path):
    """postmaster.pid's start time is when PostgreSQL got to write it, after its process was
    created (by pg_ctl's fork): more than 5 s later on a machine under extreme load, and then a
    live postmaster was taken for dead (the supervisor would clear its lock files and start another)."""
    me = psutil.Process()
    _lock_files(tmp_path / "pg", str(me.pid), int(me.create_time()) + 30)
    assert Postmaster.read(tmp_path / "pg").alive()


def test_a_pid_recycled_after_the_postmaster_started_is_not_alive(tmp_path):
    """A process created after the start time the file records is not the postmaster that wrote
    it, even within a few seconds of it (the 5 s either way it was allowed)."""
    me = psutil.Process()
    _lock_files(tmp_path / "pg", str(me.pid), int(me.create_time()) - 3)
    assert Postmaster.read(tmp_path / "pg").alive() is False

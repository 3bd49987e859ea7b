"""A spool lock held when the process forks (a Client's replay thread flushing while gunicorn
--preload forks its workers) is the parent's alone: the child's copy of the descriptor is closed
at the fork, so once the parent lets go the lock is free again. It stayed held as long as the
child lived (an flock belongs to the open file, which the child's inherited descriptor kept
open), so every later replay found the spool "busy" and left its records unsent."""
from __future__ import annotations

import os

import pytest

from api.spool import Spool, release_lock

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")


def test_a_lock_held_at_a_fork_is_free_once_the_parent_lets_go(tmp_path):
    spool = Spool(tmp_path / "s.jsonl")
    held = spool.take_flush_lock()
    assert held is not None
    child_ready_r, child_ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: alive, doing nothing with the spool, until told to leave
        os.write(child_ready_w, b"x")
        os.read(go_r, 1)
        os._exit(0)
    try:
        assert os.read(child_ready_r, 1) == b"x"
        release_lock(held)
        again = spool.take_flush_lock()  # while the child lives
        assert again is not None, "the child kept the parent's lock"
        release_lock(again)
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
        for fd in (child_ready_r, child_ready_w, go_r, go_w):
            os.close(fd)

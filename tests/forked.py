"""A forked child's exit code, waited for up to ~10 s: a child that hangs (a lock held at the fork)
is killed and named, not waited for forever."""

from __future__ import annotations

import os
import signal
import time


def exit_code_of(pid: int, hung: str) -> int:
    for _ in range(200):  # up to ~10 s: a hang, not a timing
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(hung)

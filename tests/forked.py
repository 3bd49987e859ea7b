"""A forked child's exit code, waited for up to ~10 s: a child that hangs (a lock held at the fork)
is killed and named, not waited for forever."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any


def exit_code_of(pid: int, hung: str) -> int:
    for _ in range(200):  # up to ~10 s: a hang, not a timing
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(hung)


def forked_while_held(lock: AbstractContextManager[Any], child: Callable[[], object], hung: str) -> int:
    """Fork while another thread of this process holds `lock` (entered, not yet left); the child
    runs `child` and exits 0 (1 if it raised); its exit code, as exit_code_of waits for it."""
    held, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            leave.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10), "the holding thread never took the lock"
        pid = os.fork()
        if pid == 0:  # the child: only the forking thread is in it
            try:
                child()
            except BaseException:
                os._exit(1)
            os._exit(0)
        return exit_code_of(pid, hung)
    finally:
        leave.set()
        holder.join()

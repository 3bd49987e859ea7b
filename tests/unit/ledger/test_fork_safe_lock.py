"""ledger.forksafe.ForkSafeLock, the one lock a forked child gets anew when another thread held it at
the fork (that thread is not in the child: the lock would stay held there forever). Used by the
embedded cluster's process lock, new_id's lock and the SDK client's lock for a child's own
connections; the embedded cluster's was a plain lock, and a child forked while another thread
started or stopped the cluster hung at its first start."""

from __future__ import annotations

import importlib
import os

import pytest

from tests.forked import exit_code_of, forked_while_held


def _take(lock) -> None:
    with lock:
        pass


@pytest.mark.parametrize(
    "module, name", [("ledger.embedded", "_PROCESS_LOCK"), ("wallets.model", "_ids_lock"), ("api.client", "_OWNING")]
)
def test_a_child_forked_while_another_thread_holds_the_lock_takes_it(module, name):
    lock = getattr(importlib.import_module(module), name)
    code = forked_while_held(
        lock, lambda: _take(getattr(importlib.import_module(module), name)), f"the forked child hung on {module}.{name}"
    )
    assert code == 0
    _take(lock)  # and the parent's is let go as ever


def test_a_child_forked_by_the_thread_holding_the_lock_lets_go_of_it_and_takes_it_again():
    """The forking thread is in the child: its hold is the child's too, left when its block ends
    (a lock made anew there was released unheld: RuntimeError)."""
    from ledger.forksafe import ForkSafeLock

    lock = ForkSafeLock()
    with lock:
        pid = os.fork()
    if pid == 0:  # the child, out of the block
        try:
            _take(lock)
        except BaseException:
            os._exit(1)
        os._exit(0)
    assert exit_code_of(pid, "the forked child hung on the lock its own thread held at the fork") == 0


def test_taking_and_leaving_the_lock_runs_no_python_code():
    """new_id takes the lock for every id (hundreds of thousands a second): a lock entered and left
    through Python methods (7c6d0ae's __enter__/__exit__ and its owner field) cost about 0.5-1.2 µs
    more per id than the plain lock before it. The lock is taken in C, as threading's own: a
    profiler sees no Python call (event "call") while one is taken and let go, only C calls."""
    import sys

    from ledger.forksafe import ForkSafeLock

    lock = ForkSafeLock()
    python_calls: list[str] = []

    def profile(frame, event, arg) -> None:
        if event == "call":
            python_calls.append(frame.f_code.co_qualname)

    sys.setprofile(profile)
    try:
        with lock:
            pass
    finally:
        sys.setprofile(None)
    assert python_calls == []


def test_a_thread_that_holds_the_lock_may_take_it_again():
    """Reentrant, as an RLock: a nested use by the thread holding it goes on, where 7c6d0ae's (a
    plain lock inside) hung that thread for ever."""
    import threading

    from ledger.forksafe import ForkSafeLock

    lock, done = ForkSafeLock(), threading.Event()

    def nested() -> None:
        with lock, lock:
            done.set()

    threading.Thread(target=nested, daemon=True).start()
    assert done.wait(10), "the thread hung taking the lock it held"

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

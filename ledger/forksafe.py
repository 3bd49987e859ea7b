"""A lock a forked child can take: one held at the fork by another thread (not in the child) would
never be let go there. Used by the embedded cluster's process lock, wallets.model's id lock and
the SDK client's; pricing.tokens keeps its own (pricing may not import ledger)."""

from __future__ import annotations

import _thread
import os
import weakref
from collections.abc import Callable


def in_forked_child(do: Callable[[], None]) -> None:
    """Run `do` in every child this process forks from now on (nothing where there is no fork)."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=do)


class ForkSafeLock(_thread.RLock):
    """threading's RLock (taken and let go in C, reentrant: new_id takes it for every id) that a
    forked child makes anew unless the forking thread (the child's only one) held it: then that
    thread lets go of it in the child as in the parent. Made anew at the fork, in C, the child's
    lock has no holder nor waiter (the parent's waiters are threads the child has not)."""

    __slots__ = ()

    def __init__(self) -> None:
        mine = weakref.ref(self)  # the fork hook does not keep the lock alive

        def in_child() -> None:
            lock = mine()
            if lock is not None and not lock._is_owned():  # type: ignore[attr-defined]
                lock._at_fork_reinit()  # type: ignore[attr-defined]

        in_forked_child(in_child)

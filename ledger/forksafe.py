"""A lock a forked child can take: one held at the fork by another thread (not in the child) would
never be let go there. Used by the embedded cluster's process lock, wallets.model's id lock and
the SDK client's; pricing.tokens keeps its own (pricing may not import ledger)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any


def in_forked_child(do: Callable[[], None]) -> None:
    """Run `do` in every child this process forks from now on (nothing where there is no fork)."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=do)


class ForkSafeLock:
    """A threading.Lock, used with `with`, that a forked child makes anew unless the forking thread
    (the child's only one) held it: then that thread lets go of it in the child as in the parent."""

    __slots__ = ("_lock", "_owner")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread that holds it, set once taken and unset before let go
        in_forked_child(self._in_child)

    def _in_child(self) -> None:
        if self._owner != threading.get_ident():
            self._lock, self._owner = threading.Lock(), None

    def __enter__(self) -> ForkSafeLock:
        self._lock.acquire()
        self._owner = threading.get_ident()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._owner = None
        self._lock.release()

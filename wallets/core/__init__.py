"""The wallet rules as pure functions: `decide(state, command, now, book) -> Decision`.

A decision holds the balanced journal entry a command posts, its typed effects (lots, holds,
reservation transitions, charges, counters, outbox events, customer flags, answers kept for
replays) and its outcome (a code and a body). Nothing here touches a database, a clock, a
`Batch` or HTTP: the shell (wallets/batch.py) loads the state, applies the decision and writes
its effects; api/ alone maps outcome codes to HTTP statuses. An import-linter contract keeps it so.
"""
from __future__ import annotations

from wallets.core.decide import State, decide
from wallets.core.decision import Decision, Outcome

__all__ = ["Decision", "Outcome", "State", "decide"]

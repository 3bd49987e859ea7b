"""What a re-rate moves in the money budgets that counted the charges it corrects.

A budget's window counts each charge as charged; a re-rate that corrects a charge from $10.01 to
$8.01 left $10.01 there, so a hard cap refused holds the customer had room for, and a re-rate
upward never alerted. Now each adjustment moves, by its difference, every live money budget whose
current window counted its charge (a row `rerate:<adjustment id>` beside the call's own), and one
upward crosses the thresholds it passes. A window that is over keeps what it counted: it limits
nothing any more, and its alerts were for what was charged then.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from wallets.core.budgets import counted, counts_now, crossed
from wallets.core.decision import OutboxEvent
from wallets.core.state import State
from wallets.model import Budget


@dataclass(frozen=True, slots=True)
class Counted:
    """An adjustment of a charge that budget `budget_id` counted in its window at `window_start`."""

    adjustment_id: int
    delta: int
    budget_id: str
    window_start: datetime


@dataclass(frozen=True, slots=True)
class Move:
    key: str  # rerate:<adjustment id>
    budget_id: str
    window_start: datetime
    delta: int


def key_of(adjustment_id: int) -> str:
    return f"rerate:{adjustment_id}"


def moves(state: State, budgets: Mapping[str, Budget], found: Iterable[Counted], currency: str,
          now: datetime) -> tuple[list[Move], list[OutboxEvent]]:
    """The moves of the adjustments `found` in the live money budgets' current windows, in order, and
    the alerts of those upward."""
    out: list[Move] = []
    alerts: list[OutboxEvent] = []
    moved: dict[str, int] = {}  # what this re-rate moved so far, by budget
    for c in found:
        b = budgets.get(c.budget_id)
        if b is None or b.metric != "money" or not c.delta or not counts_now(b, c.window_start, now):
            continue
        used, held = counted(b, now)
        before = used + held + moved.get(b.id, 0)
        moved[b.id] = moved.get(b.id, 0) + c.delta
        out.append(Move(key_of(c.adjustment_id), b.id, c.window_start, c.delta))
        alerts += crossed(state, b, currency, before, before + c.delta, held, c.window_start,
                          key_of(c.adjustment_id), now)
    return out, alerts

"""What a re-rate moves in the money budgets that counted the charges it corrects.

A budget's window counts each charge as charged; a re-rate that corrects a charge from $10.01 to
$8.01 left $10.01 there, so a hard cap refused holds the customer had room for, and a re-rate
upward never alerted. Now each adjustment moves, by its difference, every live money budget whose
current window counted its charge (a row `rerate:<adjustment id>` beside the call's own), or a window
ahead of the clock did (a usage event timed ahead), and one upward crosses the thresholds it passes.
A window that is over keeps what it counted: it limits nothing any more, and its alerts were for what
was charged then.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from wallets.core.budgets import counted, counts_now, crossed, window_start
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
    """The moves of the adjustments `found` in the live money budgets' current windows (and those
    ahead of the clock), in order, and the alerts of those upward."""
    out: list[Move] = []
    alerts: list[OutboxEvent] = []
    moved: dict[tuple[str, datetime | None], int] = {}  # what this re-rate moved so far, by budget and window
    for c in found:
        b = budgets.get(c.budget_id)
        figures = None if b is None or b.metric != "money" or not c.delta else _open(b, c.window_start, now)
        if b is None or figures is None:
            continue
        used, held = figures
        window = (b.id, None if counts_now(b, c.window_start, now) else c.window_start)  # None: the current
        before = used + held + moved.get(window, 0)
        moved[window] = moved.get(window, 0) + c.delta
        out.append(Move(key_of(c.adjustment_id), b.id, c.window_start, c.delta))
        alerts += crossed(state, b, currency, before, before + c.delta, held, c.window_start,
                          key_of(c.adjustment_id), now)
    return out, alerts


def _open(b: Budget, start: datetime, now: datetime) -> tuple[int, int] | None:
    """(used, held) of the budget's window starting at `start` where a re-rate moves it: the window
    current at `now`, or one ahead of it (a usage event timed ahead of the clock, by up to 300 s,
    counts in its own day, or its own second a minute or more ahead; the minute at that second). A
    re-rate left such a window at the first charge: moved, 23:58's re-rate of an event of 00:02 the
    next day from $0.70 to $1.40 counts $1.40 there. None: a window that is over."""
    if counts_now(b, start, now):
        return counted(b, now)
    if start < window_start(b, now):
        return None
    if b.window == "minute":
        return counted(b, start)
    return b.windows.get(start, (0, 0))

"""What a budget made part-way through its window finds there: the calls its window counted before
it existed, as a budget made earlier would have counted them.

A daily $10 hard cap made at 15:00 after $9 was charged that day counted from $0 and let $10 more
through; now it counts the $9. Each call whose hold may still move (an open reservation, and an
expired one, which takes a late settle) gets its own row, so that its settle, release or expiry
moves the new budget as it moves the others; the closed calls and usage events are one row
(`before:<budget id>`), so that a lifetime budget over a long history writes two rows, not one per
call. The window row is the sum of those rows, as `verify` rebuilds it. A money budget counts each
call as the re-rates made before it left it (a closed call's difference in the `before:` row, a
movable call's as a `rerate:<adjustment id>` row beside its own, as a re-rate writes them).

A rolling minute counts what the seconds less than a minute before it held and used, each call in
its own second's row (so that it lapses with its second): a TPM made at 12:00:30 counts 12:00:10's
800 tokens until 12:01:10. A per-request cap counts one hold, and nothing from before. In a token
budget a hold open when it is made counts the tokens it holds (the reservation keeps them,
migration 0062), less what its captures used; a hold of an amount alone, or one taken before 0062,
counts once settled.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wallets.core.budget_rerates import key_of
from wallets.core.budgets import actual_quantity, counted, counts_now, crossed, hold_quantity, matches, window_start
from wallets.core.decision import OutboxEvent
from wallets.core.state import State
from wallets.model import Budget


@dataclass(frozen=True, slots=True)
class PastCall:
    """A reservation or a usage event of the customer, as the window counted it: `key` is the
    reservation's id (or `event:<id>`), `held` what its hold has left (0: closed), `charged` and
    `tokens` what its charges came to, `charges` how many there were, `open` whether it is held or
    capturing, `movable` whether a charge may still come (open, or expired: a late settle),
    `adjusted` the re-rates of its charges so far: (adjustment id, difference), in order; `calls`
    how many charged calls it stands for (closed calls summed by scope: a request budget's count);
    `hold_tokens` the prompt and output tokens its hold counts in a token budget (None: not kept)."""

    key: str
    model: str
    dimensions: Mapping[str, Any]
    at: datetime
    held: int
    charged: int
    tokens: Mapping[str, int]
    charges: int
    open: bool
    movable: bool
    adjusted: tuple[tuple[int, int], ...] = ()
    calls: int = 1
    hold_tokens: tuple[int | None, int | None] = (None, None)  # the (prompt, output) tokens its hold counts


@dataclass(frozen=True, slots=True)
class Seed:
    """One row of what the budget counts from before it was made: (key, held, used), in the window
    starting at `start` (a rolling minute's second; None: the budget's current window)."""

    key: str
    held: int
    used: int
    start: datetime | None = None


def before_key(budget_id: str) -> str:
    return f"before:{budget_id}"


def seeds(b: Budget, calls: Iterable[PastCall], now: datetime) -> tuple[datetime, list[Seed]] | None:
    """The window current at `now` and the rows the budget counts in it from `calls` (None: its
    window counts nothing from before: a per-request cap, which counts each hold alone). A rolling
    minute's are in the seconds of the calls less than a minute from `now`, each call its own row.
    A call in a window after the current one (a usage event timed ahead of the clock, by up to
    300 s) is its own row in its own window, where a budget made before it counted it: one made
    after it counted the current window alone, and the event never, in the day (or the minute) it
    was timed in."""
    if b.window == "request":
        return None
    start = window_start(b, now)
    minute = b.window == "minute"
    rows: list[Seed] = []
    before = Seed(before_key(b.id), 0, 0)
    for call in calls:
        second = window_start(b, call.at)
        here = counts_now(b, second, now) if minute else second == start
        if not (here or second > start) or not matches(b, call.model, call.dimensions):
            continue
        held, used = _counts(b.metric, call)
        # a money budget counts a call as its re-rates left it, as one made before them was moved
        moved = [(i, d) for i, d in call.adjusted if d] if b.metric == "money" else []
        if minute or not here:  # its window's own rows: a second lapses with them, a window ahead is its own
            if held or used or moved:
                rows.append(Seed(call.key, held, used, second))
                rows += [Seed(key_of(i), 0, d, second) for i, d in moved]
        elif call.movable:  # its own row is what it was charged; each re-rate one row beside it
            rows.append(Seed(call.key, held, used))
            rows += [Seed(key_of(i), 0, d) for i, d in moved]
        elif used + sum(d for _, d in moved):
            before = Seed(before.key, 0, before.used + used + sum(d for _, d in moved))
    return start, [*rows, *([before] if before.used else [])]


def ahead_alerts(state: State, b: Budget, currency: str, now: datetime) -> list[OutboxEvent]:
    """The alerts of the windows after the current one (at `now`) that what the new budget `b` found
    there (`seeds`: calls timed ahead of the clock) puts at or past its thresholds, each window's own,
    as such a call alerts in a budget made before it (on_usage). The current window's are a change's
    (on_change). Before, a day budget of 1,000 tokens at 50 % made at 23:58:30, after a 700-token
    event timed 00:02 the next day, never alerted that day at 70 %."""
    current = window_start(b, now)
    alerts: list[OutboxEvent] = []
    for start in sorted(s for s in b.windows if s > current and not counts_now(b, s, now)):
        used, held = counted(b, start) if b.window == "minute" else b.windows[start]
        alerts += crossed(state, b, currency, 0, used + held, held, start, before_key(b.id), now)
    return alerts


def _counts(metric: str, call: PastCall) -> tuple[int, int]:
    """(held, used) of a call in `metric`, as the reserve and its settles counted them."""
    used = actual_quantity(metric, call.charged, call.tokens, first=True)
    if metric == "money":
        return call.held, call.charged
    if metric == "requests":
        return (1 if call.open and not call.charges else 0), (used * call.calls if call.charges else 0)
    # an open hold counts its tokens, less what its captures used (each took as much off the hold)
    held = hold_quantity(metric, 0, *call.hold_tokens) if call.open else None
    return max(0, (held or 0) - used), used

"""Budgets and quotas, as pure rules over a customer's budgets and a reservation.

A reservation counts against every budget that matches it (its API key, model and dimensions),
at its upper bound, from the moment it is held, in the window current at that moment; settle
replaces the hold with the actual amount and release returns it, in that same window, so a
window's rollover never forgets what is still held. A hard budget refuses a hold that would
take its window past its limit; a soft one allows it. Each alert threshold is emitted once per
window (the outbox keeps one event per key).

Windows: `request` (the hold alone), `minute` (rolling: one-second windows, the last 60 count),
`day` and `month` (calendar, in the budget's time zone), `lifetime`.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any
from zoneinfo import ZoneInfo

from pricing.money import format_money
from pricing.units import OUTPUT_TYPES, PROMPT_TYPES
from wallets.core.decision import BudgetCounted, Decision, Effect, OutboxEvent
from wallets.core.state import State, wire_time
from wallets.errors import BudgetExceededError, TooManyBudgetsError, WalletValidationError
from wallets.model import Budget, Reservation, Wallet
from wallets.periods import new_zone

WINDOWS = ("request", "minute", "day", "month", "lifetime")
ZONED = ("day", "month")  # the windows that begin in a time zone: the others take and show none
METRICS = ("money", "tokens", "input_tokens", "output_tokens", "requests")
MODES = ("hard", "soft")
NOT_WILDCARDS = "?["  # refused in a budget's model: `*` is its one wildcard (fnmatch would take these too)
ROLLING = timedelta(seconds=60)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the one window of a lifetime budget
# calendar windows that start later than this before the load's `now` are loaded (wallets.store reads
# `window_start > now - 33 days`, with the batch's own now): every row of them, so a missing one is 0.
# The longest month, 31 days and a daylight saving hour (October in Berlin), and the day after it:
# at 32 days, an October hold settled on November 1st after 23:00 in Berlin crossed no threshold.
LOADED = timedelta(days=33)
THRESHOLD_TOPIC = "budget.threshold_crossed"
EXCEEDED_TOPIC = "budget.exceeded"
# What an input_tokens or output_tokens quota counts: every token type a call's input or output is
# billed as (its fallbacks lead to `input` or `output`), not only the format 1 names: audio, image and
# video tokens in and out, one-hour cache writes, tool tokens, citations were billed and never counted.
_INPUT_SIDE = tuple(sorted(PROMPT_TYPES | {"embedding"}))
_OUTPUT_SIDE = OUTPUT_TYPES
# What a tokens quota counts: both sides. Every unit but the request counted, so web searches,
# audio seconds, input characters and document pages were counted as as many tokens.
_TOKENS = _INPUT_SIDE + _OUTPUT_SIDE


def matches(b: Budget, model: str, dimensions: Mapping[str, Any]) -> bool:
    """Whether a reservation of `model` with `dimensions` falls in the budget's scope: every
    narrowing it has (API key, model pattern with `*`, dimension values) must hold."""
    if b.api_key is not None and _text(dimensions.get("api_key")) != b.api_key:
        return False
    if b.model is not None and not fnmatchcase(model, b.model):
        return False
    return all(_text(dimensions.get(k)) == v for k, v in b.dimensions.items())


def _text(value: Any) -> str | None:
    """A reservation's dimension value as a budget's (text) spells it: a JSON boolean as JSON does,
    `true`; str() said `True`, and a budget on {"batch": "true"} never bound a call sending true."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return None if value is None else str(value)


def window_start(b: Budget, now: datetime) -> datetime:
    """The start (UTC) of the budget's window that holds `now`."""
    if b.window == "minute":
        return now.astimezone(UTC).replace(microsecond=0)
    if b.window in ("lifetime", "request"):
        return EPOCH
    zone = ZoneInfo(b.time_zone)
    local = now.astimezone(zone)
    day = 1 if b.window == "month" else local.day
    return datetime(local.year, local.month, day, tzinfo=zone).astimezone(UTC)


def window_end(b: Budget, start: datetime) -> datetime | None:
    """When the calendar window starting at `start` rolls over (None: it never does)."""
    if b.window not in ("day", "month"):
        return start + ROLLING if b.window == "minute" else None
    zone = ZoneInfo(b.time_zone)
    local = start.astimezone(zone)
    if b.window == "day":
        nxt = (local.replace(tzinfo=None) + timedelta(days=1)).date()
        return datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).astimezone(UTC)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return datetime(year, month, 1, tzinfo=zone).astimezone(UTC)


def _live(b: Budget, now: datetime) -> list[tuple[datetime, list[int]]]:
    """The loaded windows that count at `now`, oldest first. A rolling minute counts the seconds
    less than a minute from this one either way: one ahead was written by a process whose clock
    runs ahead (hosts differ by a little), and shares a minute with this one; summing only the
    seconds up to this one let 900 + 200 tokens pass a limit of 1,000."""
    start = window_start(b, now)
    if b.window == "minute":
        return sorted((s, w) for s, w in b.windows.items() if abs(s - start) < ROLLING)
    return [(start, b.windows[start])] if start in b.windows else []


def counted(b: Budget, now: datetime) -> tuple[int, int]:
    """(used, held) in the budget's window at `now`."""
    live = _live(b, now)
    return sum(w[0] for _, w in live), sum(w[1] for _, w in live)


def counts_now(b: Budget, start: datetime, now: datetime) -> bool:
    """Whether the window starting at `start` is (part of) the budget's window at `now`."""
    current = window_start(b, now)
    return abs(start - current) < ROLLING if b.window == "minute" else start == current


def hold_quantity(metric: str, amount: int, prompt_tokens: int | None, max_output_tokens: int | None) -> int | None:
    """What a hold of `amount` counts in `metric` (None: tokens with no estimate to count)."""
    if metric == "money":
        return amount
    if metric == "requests":
        return 1
    if prompt_tokens is None and max_output_tokens is None:
        return None
    prompt, output = prompt_tokens or 0, max_output_tokens or 0
    return {"tokens": prompt + output, "input_tokens": prompt, "output_tokens": output}[metric]


def actual_quantity(metric: str, cost: int, tokens: Mapping[str, int], first: bool) -> int:
    """What a charge of `cost` for `tokens` (by rating token type) counts in `metric`."""
    if metric == "money":
        return cost
    if metric == "requests":
        return 1 if first else 0
    if metric == "input_tokens":
        return sum(tokens.get(t, 0) for t in _INPUT_SIDE)
    if metric == "output_tokens":
        return sum(tokens.get(t, 0) for t in _OUTPUT_SIDE)
    return sum(tokens.get(t, 0) for t in _TOKENS)


def retry_after(b: Budget, now: datetime, excess: int) -> int | None:
    """Seconds until enough of a rolling window lapses to free `excess` (None: waiting cannot)."""
    if b.window != "minute":
        return None
    freed = 0
    for start, (used, held) in _live(b, now):
        freed += used + held
        if freed >= excess:
            return max(1, math.ceil((start + ROLLING - now).total_seconds()))
    return None


def figure(b: Budget, units: int, currency: str) -> str | int:
    """A budget figure on the wire: money as a decimal string, tokens and requests as integers."""
    return format_money(units, currency) if b.metric == "money" else units


def _describe(b: Budget, currency: str, used: int, held: int, start: datetime) -> dict[str, Any]:
    end = window_end(b, start) if b.window in ZONED else None
    return {"budget_id": b.id, "budget_name": b.name, "metric": b.metric, "window": b.window, "mode": b.mode,
            "limit": figure(b, b.limit, currency), "used": figure(b, used, currency),
            "held": figure(b, held, currency), "currency": currency,
            "window_start": wire_time(start) if b.window not in ("request", "lifetime") else None,
            "resets_at": wire_time(end) if end else None}


def _alert_key(b: Budget, start: datetime, reservation_id: str | None, now: datetime,
               request_id: str | None = None) -> str:
    """The window and limit an alert is once per: a calendar window, the lifetime, the request (its
    reservation; a refusal, which has none, its request id: keyed by the clock minute, a second
    request refused in that minute was silent), and a rolling minute, which has no fixed start, at
    most once per clock minute. The limit: one raised by a PATCH alerts again as the window reaches
    its thresholds (a $10 month's 50 % said, raised to $20, it never said 50 % of $20, nor refused
    with a budget.exceeded at $20 after one at $10)."""
    if b.window == "request" and reservation_id is not None:
        window = reservation_id
    elif b.window == "request" and request_id is not None:
        window = f"request:{request_id}"  # the customer's request ids are its own: the budget is too
    elif b.window in ("minute", "request"):
        window = now.astimezone(UTC).replace(second=0, microsecond=0).isoformat()
    else:
        window = start.isoformat()
    return f"{window}:{b.limit}"


def crossed(state: State, b: Budget, currency: str, before: int, after: int, held: int, start: datetime,
            reservation_id: str, now: datetime) -> list[OutboxEvent]:
    """Alerts for each threshold (percent of the limit) that `before` -> `after` crosses. A rolling
    minute's figures are the minute's at `now` (a late event named the second its event counted in), or,
    a second a minute or more ahead of the clock (an event timed ahead), at that second, and its minute."""
    at = start if b.window == "minute" and start - window_start(b, now) >= ROLLING else now
    shown, events = window_start(b, at) if b.window == "minute" else start, []
    for pct in sorted(b.thresholds):  # lowest first, as the window reached them: ids sort in that order
        if before * 100 < pct * b.limit <= after * 100:
            key = f"{THRESHOLD_TOPIC}:{b.id}:{_alert_key(b, start, reservation_id, at)}:{pct}"
            events.append(state.event(THRESHOLD_TOPIC, b.customer_id, key, now, {
                **_describe(b, currency, after - held, held, shown), "threshold": pct}))
    return events


def on_change(state: State, was: Budget, b: Budget, currency: str, now: datetime) -> list[OutboxEvent]:
    """The alerts of a change to a budget (its limit or thresholds): each threshold its window now
    stands at or past that it did not before (a limit lowered under what the window counts, a
    threshold added below it), once per window as a crossing's. No hold crossed those: the window
    stood past 80 and 100 % of a lowered limit, and no alert ever came in that window."""
    if b.window == "request":
        return []
    used, held = counted(b, now)
    start = window_start(b, now)

    def past(budget: Budget, pct: int) -> bool:
        return pct in budget.thresholds and (used + held) * 100 >= pct * budget.limit

    window = _alert_key(b, start, None, now)
    return [state.event(THRESHOLD_TOPIC, b.customer_id, f"{THRESHOLD_TOPIC}:{b.id}:{window}:{pct}", now,
                        {**_describe(b, currency, used, held, start), "threshold": pct})
            for pct in sorted(b.thresholds) if past(b, pct) and not past(was, pct)]


def on_reserve(state: State, w: Wallet, reservation_id: str, model: str, dimensions: Mapping[str, Any],
               amount: int, tokens: tuple[int | None, int | None], now: datetime,
               request_id: str | None = None) -> Decision | list[Effect]:
    """The budget effects of a new hold (in every matching budget's current window) and the
    alerts it crosses, or the refusal naming the hard budget that binds (`_binding`) among those
    it would take past their limits."""
    effects: list[Effect] = []
    refused: list[_Refused] = []
    currency = w.customer.currency
    for b in _matching(w.budgets.values(), model, dimensions):
        q = hold_quantity(b.metric, amount, *tokens)
        if q is None:
            return Decision.refuse(WalletValidationError(
                "estimate", f"budget {b.id} counts {b.metric}: reserve with an estimate, not an amount"))
        start = window_start(b, now)
        used, held = counted(b, now) if b.window != "request" else (0, 0)
        if b.mode == "hard" and used + held + q > b.limit:
            refused.append(_Refused(b, used, held, q, start, retry_after(b, now, used + held + q - b.limit)))
            continue
        if b.window != "request":
            effects.append(BudgetCounted(w.customer.id, reservation_id, b.id, start, b.metric, q, 0, opened=True))
        effects += crossed(state, b, currency, used + held, used + held + q, held + q, start, reservation_id, now)
    return _refusal(state, _binding(refused), currency, now, request_id) if refused else effects


@dataclass(frozen=True, slots=True)
class _Refused:
    """A hard budget that cannot take a hold: what its window counts, and the seconds until a
    rolling minute lapses enough for it (None: waiting cannot make room)."""

    budget: Budget
    used: int
    held: int
    requested: int
    start: datetime
    wait: int | None


def _binding(refused: list[_Refused]) -> _Refused:
    """The refusal a caller must wait out: the first (by id) that no wait frees (a calendar window,
    the lifetime, a per-request cap, a hold larger than a limit), else the rolling minute that frees
    last, so that its Retry-After is when every refusing budget takes the hold. Naming the first by
    id answered a TPM's 10 s where an RPM freed in 55 s, or where a day's quota was spent."""
    unending = [r for r in refused if r.wait is None]
    return unending[0] if unending else max(refused, key=lambda r: r.wait or 0)  # max: the first of equals


def _matching(budgets: Iterable[Budget], model: str, dimensions: Mapping[str, Any]) -> list[Budget]:
    return sorted((b for b in budgets if matches(b, model, dimensions)), key=lambda b: b.id)


def _refusal(state: State, r: _Refused, currency: str, now: datetime, request_id: str | None) -> Decision:
    b = r.budget
    context = {**_describe(b, currency, r.used, r.held, r.start), "requested": figure(b, r.requested, currency)}
    if r.wait is not None:
        context["retry_after_seconds"] = r.wait
    noun = "a hold" if b.metric == "money" else f"{r.requested} {b.metric}"
    error = BudgetExceededError(
        f"budget {b.id} ({b.window}, hard) cannot take {noun}: its limit {context['limit']} has "
        f"{context['used']} used and {context['held']} held", **context)
    key = f"{EXCEEDED_TOPIC}:{b.id}:{_alert_key(b, r.start, None, now, request_id)}"  # the event: what the 429 shows
    return Decision.refuse(error, state.event(EXCEEDED_TOPIC, b.customer_id, key, now, error.shown()))


def on_settle(state: State, w: Wallet, r: Reservation, cost: int, tokens: Mapping[str, int], final: bool,
              now: datetime) -> list[Effect]:
    """A charge replaces (part of) each budget hold of the reservation with the actual amount,
    in the window it was held in; a final one returns what is left of the hold there."""
    effects: list[Effect] = []
    for bh in sorted(r.budget_holds.values(), key=lambda h: h.budget_id):
        used = actual_quantity(bh.metric, cost, tokens, first=r.captures == 0)
        freed = 0 if not r.is_open else bh.held if final else min(used, bh.held)
        if not used and not freed:
            continue
        effects.append(BudgetCounted(w.customer.id, r.id, bh.budget_id, bh.window_start, bh.metric, -freed, used))
        b = w.budgets.get(bh.budget_id)
        figures = None if b is None or used <= freed else _counted_in(b, bh.window_start, now)
        if figures is not None:
            before_used, before_held = figures
            before = before_used + before_held
            effects += crossed(state, b, w.customer.currency, before, before + used - freed,
                               before_held - freed, bh.window_start, r.id, now)
    return effects


def _counted_in(b: Budget, start: datetime, now: datetime) -> tuple[int, int] | None:
    """(used, held) of the budget's window starting at `start`, where an amount counted there
    crosses its thresholds: the window current at `now`, or a calendar window that has rolled
    over since (a hold settled after midnight, usage reported late) or is ahead (an event timed ahead
    of the clock), if the load read it (33 days back and ahead, every window there: one it has no row
    of counted nothing yet), or a minute's second ahead (the minute at it). None: a lapsed second, or
    a window older than that."""
    if counts_now(b, start, now) or (b.window == "minute" and start > now):
        return counted(b, now if counts_now(b, start, now) else start)
    if b.window in ("day", "month") and now - start < LOADED:
        used, held = b.windows.get(start, (0, 0))
        return used, held
    return None


def on_usage(state: State, w: Wallet, event_id: str, model: str, dimensions: Mapping[str, Any], cost: int,
             tokens: Mapping[str, int], occurred_at: datetime, now: datetime) -> list[Effect]:
    """A post-hoc usage event happened: it counts as used (never held, never refused) in every
    matching budget's window of its own time; a hard budget it takes past the limit refuses
    the next hold. Its record is `event:<event_id>` beside the reservations'."""
    if not w.budgets:
        return []  # most customers have none
    effects: list[Effect] = []
    key = f"event:{event_id}"
    for b in _matching(w.budgets.values(), model, dimensions):
        used = actual_quantity(b.metric, cost, tokens, first=True)
        if b.window == "request" or not used:
            continue
        start = window_start(b, occurred_at)
        figures = _counted_in(b, start, now)
        effects.append(BudgetCounted(w.customer.id, key, b.id, start, b.metric, 0, used, opened=True))
        if figures is not None:
            before_used, held = figures
            effects += crossed(state, b, w.customer.currency, before_used + held, before_used + held + used, held,
                               start, key, now)
    return effects


def on_release(w: Wallet, r: Reservation) -> list[Effect]:
    """A release or expiry returns each budget hold to the window it was held in."""
    return [BudgetCounted(w.customer.id, r.id, bh.budget_id, bh.window_start, bh.metric, -bh.held, 0)
            for bh in sorted(r.budget_holds.values(), key=lambda h: h.budget_id) if bh.held]


def ensure_room(customer_id: str, set_by: str, live: int, most: int) -> None:
    """Refuse another budget `set_by` the operator (or the customer) to a customer that has
    `live` of at most `most` set by it: every budget is matched on each of the customer's
    reserves, so their number is bounded (a deleted one makes room). Each setter has its own
    allowance: a customer that fills its own never locks the operator out of setting a quota."""
    if live >= most:
        raise TooManyBudgetsError(f"customer {customer_id} has {live} live budgets set by the {set_by}, the most "
                                  "it may have: delete one (DELETE /v1/budgets/{id}) before creating another",
                                  customer_id=customer_id, set_by=set_by, limit=most)


def check_key(api_key: str | None, dimensions: Mapping[str, str]) -> None:
    """Refuse a budget on a key that names another key in its dimensions: a call counts under one
    key (its dimensions.api_key, which `matches` compares with both), so it bound no call (201)."""
    if api_key is not None and dimensions.get("api_key", api_key) != api_key:
        raise WalletValidationError("dimensions.api_key", f"the budget's api_key is {api_key}: a call counts "
                                    "under one key, so a dimensions.api_key of another binds no call")


def validate(window: str, metric: str, mode: str, limit: int, thresholds: Iterable[int],
             time_zone: str | None, model: str | None = None) -> None:
    """Refuse a budget that cannot mean anything (names the field)."""
    if model is not None and any(c in model for c in NOT_WILDCARDS):
        # fnmatch's other wildcards: "gpt-4?" bound gpt-41 and gpt-4o, "m-[1m]" bound m-1 and m-m, not itself
        raise WalletValidationError("model", "a model or a pattern whose only wildcard is `*`: `?` and `[` "
                                    "are not allowed")
    for name, value, allowed in (("window", window, WINDOWS), ("metric", metric, METRICS), ("mode", mode, MODES)):
        if value not in allowed:
            raise WalletValidationError(name, f"must be one of {', '.join(allowed)}")
    if window == "request" and metric == "requests":
        raise WalletValidationError("metric", "a request is always one request: limit money or tokens per request")
    if limit <= 0:
        raise WalletValidationError("limit", "must be more than 0")
    check_thresholds(thresholds)
    if time_zone is not None and window not in ZONED:  # kept, shown, and changing nothing
        raise WalletValidationError("time_zone", f"only a day or a month begins in a time zone: a {window} "
                                    "budget takes none")
    if time_zone is not None:
        new_zone(time_zone)


def check_thresholds(thresholds: Iterable[int]) -> None:
    """Refuse thresholds that are not distinct percentages of the limit from 1 to 1000."""
    marks = list(thresholds)
    if any(not 1 <= t <= 1000 for t in marks) or len(set(marks)) != len(marks):
        raise WalletValidationError("thresholds", "distinct percentages of the limit, from 1 to 1000")


@dataclass(frozen=True, slots=True)
class BudgetView:
    """A budget as it stands at `now`: its window's start and rollover, what it used and holds."""

    budget: Budget
    currency: str
    used: int
    held: int
    window_start: datetime | None
    resets_at: datetime | None


def budget_view(b: Budget, currency: str, now: datetime) -> BudgetView:
    used, held = counted(b, now) if b.window != "request" else (0, 0)
    start = window_start(b, now) if b.window in ("minute", "day", "month") else None
    end = window_end(b, start) if start and b.window != "minute" else None
    return BudgetView(replace(b, windows={}), currency, used, held, start, end)  # a value, not the loaded state

"""Billing periods as plain values: a customer's cycle (IANA time zone, anchor day of month) and
the period an instant falls in. Calendar months by default; with an anchor day d a period runs
from local midnight of day d to local midnight of day d a month later (day d clamped to the
month's length: anchor 31 starts on Feb 28 or 29). Pure: no clock, no database.

A period is named by the local year and month it starts in (`2026-11`), unique per customer;
this is also the period of the usage counters that graduated tiers continue from.
"""
from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import msgspec

from wallets.errors import WalletValidationError

DEFAULT_GRACE_S = 3600  # late usage is awaited this long after a period's end before it closes
DEFAULT_TERMS_DAYS = 30  # an invoice is due this long after its period's end


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (from the tzdata package where the system has no zone data)."""
    try:
        if not name or name != name.strip() or len(name) > 64:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory of zones (America)
        raise WalletValidationError("time_zone", f"{name!r} is not an IANA time zone") from None


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    """The IANA zones of the zone database (zoneinfo leaves out its right/ and posix/ copies and
    posixrules), less `localtime`: a link to the host's own zone, which differs from host to host,
    and `Factory`: tzdata's "no zone" (its local time is "-00", at UTC), the one name of the list
    that is no place's time (Etc/GMT+5, EST, US/Eastern and the like are fixed or real zones)."""
    return frozenset(available_timezones()) - {"localtime", "Factory"}


def new_zone(name: str) -> ZoneInfo:
    """The time zone a new customer or budget may be given: an IANA zone. ZoneInfo also opens any
    file of the zone directory: `localtime` (each host's own zone, so two hosts' windows and
    periods differed) and the leap-second `right/` copies (December's midnight in
    right/America/New_York fell at 04:00 UTC, not 05:00); and the zone list's `Factory`, no place's
    time. Those already stored still load (`zone`)."""
    found = zone(name)
    if name == "Factory":
        raise WalletValidationError("time_zone", "'Factory' is tzdata's \"no zone\" (local time -00), not a "
                                    "place's time zone (such as Europe/Berlin)")
    if name not in _zone_names():
        raise WalletValidationError("time_zone", f"{name!r} is not an IANA time zone (such as Europe/Berlin)")
    return found


class Cycle(msgspec.Struct, frozen=True, gc=False):
    """A customer's billing cycle (an immutable msgspec Struct: it keys the period cache, and its
    hash and equality run in C, where a frozen dataclass's ran in Python on every usage event)."""

    time_zone: str = "UTC"
    anchor_day: int | None = None  # None: the first of the month

    def __post_init__(self) -> None:
        zone(self.time_zone)
        if self.anchor_day is not None and not 1 <= self.anchor_day <= 31:
            raise WalletValidationError("billing_anchor_day", "must be a day of the month, 1 to 31")


class Period(msgspec.Struct, frozen=True, gc=False):
    label: str  # local year-month the period starts in
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive


def _start_of(year: int, month: int, cycle: Cycle) -> datetime:
    day = min(cycle.anchor_day or 1, calendar.monthrange(year, month)[1])
    local = datetime(year, month, day, tzinfo=zone(cycle.time_zone))
    return local.astimezone(UTC)


def _shift(year: int, month: int, by: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + by
    return index // 12, index % 12 + 1


_LAST: dict[Cycle, Period] = {}  # the period each cycle was last asked for: usage comes in time order


def period_of(at: datetime, cycle: Cycle) -> Period:
    """The billing period `at` (an aware datetime) falls in."""
    last = _LAST.get(cycle)
    if last is not None and at.tzinfo is not None and last.start <= at < last.end:
        return last
    period = _period_of(at, cycle)
    if len(_LAST) >= 1024:
        _LAST.clear()
    _LAST[cycle] = period
    return period


def _period_of(at: datetime, cycle: Cycle) -> Period:
    local = at.astimezone(zone(cycle.time_zone))
    year, month = local.year, local.month
    if at.astimezone(UTC) < _start_of(year, month, cycle):
        year, month = _shift(year, month, -1)
    start = _start_of(year, month, cycle)
    end = _start_of(*_shift(year, month, 1), cycle)
    return Period(f"{year:04d}-{month:02d}", start, end)


def period_named(label: str, cycle: Cycle) -> Period:
    """The period of `cycle` named `label` (the local year-month it starts in)."""
    year, month = int(label[:4]), int(label[5:7])
    return Period(label, _start_of(year, month, cycle), _start_of(*_shift(year, month, 1), cycle))


def following(period: Period, cycle: Cycle) -> Period:
    return period_of(period.end, cycle)


def assigned(at: datetime, open_start: datetime, cycle: Cycle) -> Period:
    """The period something that happened at `at` is billed in: its own, unless that period
    is closed already (before `open_start`): then the first open one."""
    return period_of(max(at, open_start), cycle)


def close_due_at(period: Period, grace_s: int) -> datetime:
    return period.end + timedelta(seconds=grace_s)

"""Days past due count the customer's calendar days, as its due date does: an invoice due at
local midnight is 1 day late for any part of the day after, and N days late up to local midnight
N days after it, whatever daylight saving does in between. Counted in 24-hour days from the UTC
instant, a New York invoice due on October 1st was 33 days late at midnight on November 2nd (32
calendar days), and one in Sydney 30 days late at 23:00 local on the 30th day."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wallets.ageing import OpenInvoice, age, bucket_of, days_past_due
from wallets.periods import zone

NEW_YORK, SYDNEY = zone("America/New_York"), zone("Australia/Sydney")


def local(tz, *args: int) -> datetime:
    return datetime(*args, tzinfo=tz).astimezone(UTC)


def test_days_past_due_count_local_calendar_days_across_daylight_saving():
    due = local(NEW_YORK, 2026, 10, 1)  # 04:00 UTC (EDT); clocks go back on November 1st
    assert days_past_due(due, due, NEW_YORK) == 0
    assert days_past_due(due, due + timedelta(seconds=1), NEW_YORK) == 1
    assert days_past_due(due, local(NEW_YORK, 2026, 10, 31), NEW_YORK) == 30
    assert days_past_due(due, local(NEW_YORK, 2026, 11, 2), NEW_YORK) == 32  # 32 days and 1 hour of UTC
    assert days_past_due(due, local(NEW_YORK, 2026, 11, 2) - timedelta(seconds=1), NEW_YORK) == 32
    assert days_past_due(due, local(NEW_YORK, 2026, 12, 30), NEW_YORK) == 90
    assert bucket_of(days_past_due(due, local(NEW_YORK, 2026, 12, 30), NEW_YORK)) == "days_61_90"
    # Sydney's clocks go forward on October 4th: local midnight 30 days on is 23 hours of UTC short
    due = local(SYDNEY, 2026, 10, 1)
    assert days_past_due(due, local(SYDNEY, 2026, 10, 31), SYDNEY) == 30
    assert days_past_due(due, local(SYDNEY, 2026, 10, 31, 0, 0, 1), SYDNEY) == 31
    assert days_past_due(due, local(SYDNEY, 2026, 10, 30, 23), SYDNEY) == 30


def test_an_invoice_due_at_another_time_of_day_is_late_from_that_time():
    """Invoices issued before due dates were local midnights fell due at 23:00 New York time."""
    due = local(NEW_YORK, 2026, 11, 30, 23)
    assert days_past_due(due, local(NEW_YORK, 2026, 11, 30, 23, 30), NEW_YORK) == 1
    assert days_past_due(due, local(NEW_YORK, 2026, 12, 1, 22), NEW_YORK) == 1
    assert days_past_due(due, local(NEW_YORK, 2026, 12, 1, 23, 0, 1), NEW_YORK) == 2


def test_unapplied_credit_comes_off_the_oldest_invoice_and_the_rest_is_unbilled():
    at = datetime(2027, 3, 1, tzinfo=UTC)
    old = OpenInvoice("i1", "INV-1", "2026-11", at, datetime(2026, 12, 31, tzinfo=UTC), 1000, 0)
    new = OpenInvoice("i2", "INV-2", "2026-12", at, datetime(2027, 1, 31, tzinfo=UTC), 500, 100)
    unbilled, unapplied, aged = age(at, 1150, [new, old], UTC)  # 1,400 open on 1,150 owed
    assert (unbilled, unapplied) == (0, 250)
    assert [(a.invoice.invoice_id, a.outstanding, a.days_past_due, a.bucket) for a in aged] == [
        ("i1", 750, 60, "days_31_60"), ("i2", 400, 29, "days_1_30")]
    unbilled, unapplied, aged = age(at, 1500, [new, old], UTC)
    assert (unbilled, unapplied, sum(a.outstanding for a in aged)) == (100, 0, 1400)

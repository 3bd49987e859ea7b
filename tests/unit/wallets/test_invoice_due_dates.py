"""An invoice's due date: its payment terms' days after its period's end, counted in the
customer's own calendar (the period's time zone), by hand."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from wallets.core.billing import Balances, Header, document
from wallets.model import Customer
from wallets.periods import Cycle, period_named


def _due(time_zone: str, label: str, terms_days: int) -> tuple[str, str]:
    cycle = Cycle(time_zone)
    customer = Customer("c", "C", "USD", "postpaid", "seed", None, None, False, False,
                        datetime(2026, 1, 1, tzinfo=UTC), cycle=cycle, terms_days=terms_days)
    content = document(customer, period_named(label, cycle), {}, Balances(0, 0, 0),
                       Header(None, None, "upcoming", datetime(2026, 1, 1, tzinfo=UTC)))
    return content["period"]["end"], content["due_at"]


@pytest.mark.parametrize(("time_zone", "label", "terms", "end", "due"), [
    # Net 30 of New York's October: the period ends in summer time, the invoice is due in winter
    # time, at midnight of December 1st there (30 days of 24 hours fell on November 30th, 23:00)
    ("America/New_York", "2026-10", 30, "2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z"),
    # Berlin's September: ends in summer time, due on October 31st at midnight, winter time
    ("Europe/Berlin", "2026-09", 30, "2026-09-30T22:00:00Z", "2026-10-30T23:00:00Z"),
    # Berlin's February: the clocks go forward before the due date (it was 01:00 there)
    ("Europe/Berlin", "2027-02", 30, "2027-02-28T23:00:00Z", "2027-03-30T22:00:00Z"),
    ("UTC", "2026-11", 30, "2026-12-01T00:00:00Z", "2026-12-31T00:00:00Z"),
    ("America/New_York", "2026-11", 0, "2026-12-01T05:00:00Z", "2026-12-01T05:00:00Z"),
])
def test_an_invoice_is_due_at_local_midnight_its_terms_days_after_its_period(time_zone, label, terms, end,
                                                                              due) -> None:
    assert _due(time_zone, label, terms) == (end, due)

"""The copies of pricing.errors.wire_time are gone: the times the reports, invoices, credit notes,
re-rates, price imports and the webhook log write go through the one function, which writes any
aware time in UTC with a Z. reports.when did not convert first: a time at another offset kept it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from wallets.reports import when


def test_a_report_time_at_another_offset_is_written_in_utc_with_a_z():
    # 2026-12-07 13:30 at +01:00 is 12:30 UTC (worked by hand), not "2026-12-07T13:30:00+01:00"
    at = datetime(2026, 12, 7, 13, 30, tzinfo=timezone(timedelta(hours=1)))
    assert when(at) == "2026-12-07T12:30:00Z"
    assert when(datetime(2026, 12, 7, 12, 30, 0, 5, tzinfo=UTC)) == "2026-12-07T12:30:00.000005Z"
    assert when(None) is None


def test_an_answer_time_at_another_offset_is_written_in_utc_with_a_z():
    """api.routes.wire.time_out, which every route's times go through, was an eighth copy that did
    not convert first: 2026-12-07 13:30 at +01:00 is 12:30 UTC (worked by hand), it wrote
    "2026-12-07T13:30:00+01:00". A string (a result's time already spelled) is taken as given."""
    from api.routes.wire import time_out

    at = datetime(2026, 12, 7, 13, 30, tzinfo=timezone(timedelta(hours=1)))
    assert time_out(at) == "2026-12-07T12:30:00Z"
    assert time_out(datetime(2026, 12, 7, 12, 30, 0, 5, tzinfo=UTC)) == "2026-12-07T12:30:00.000005Z"
    assert time_out("2026-12-07T12:30:00+00:00") == "2026-12-07T12:30:00Z"
    assert time_out(None) is None

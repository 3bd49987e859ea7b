"""The console labels every time UTC: a time with another offset is shown as its UTC time. The
database answers in UTC (80ccacc), but an invoice frozen before on a server in another time
zone keeps the offset it was written with (its issued_at, say)."""
from __future__ import annotations

from api.console import utc


def test_the_utc_filter_shows_any_offset_as_its_utc_time():
    assert utc("2027-01-01T09:00:00+09:00") == "2027-01-01 00:00:00 UTC"
    assert utc("2026-12-04T00:50:19.081495+09:00") == "2026-12-03 15:50:19 UTC"
    assert utc("2026-12-03T15:50:19.5Z") == "2026-12-03 15:50:19 UTC"
    assert utc("2026-03-29T01:30:00-04:30") == "2026-03-29 06:00:00 UTC"
    assert utc("2026-12-03") == "2026-12-03" and utc(None) == "" and utc("") == ""

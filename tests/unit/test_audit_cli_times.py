"""`tokentill audit export` and `reconcile` take `--from`/`--to` with up to 9 digits of a second;
entries are kept to the microsecond. A bound finer than that is read as the next microsecond,
which keeps the same entries: an entry at .000001 occurred before .0000011 and at or after
.0000001. The 7th to 9th digits were dropped (.0000011 read as .000001), so `--to` left out an
entry that occurred before it and `--from` took in one that occurred before it."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api import audit_cli


@pytest.mark.parametrize(("text", "microseconds"), [
    ("2026-01-01T00:00:00.0000001Z", 1),  # 100 ns: the first microsecond at or after it is .000001
    ("2026-01-01T00:00:00.0000011Z", 2),  # 1.1 us: .000002
    ("2026-01-01T00:00:00.000001000Z", 1),  # exactly 1 us, however many zeros follow
    ("2026-01-01T00:00:00.123456Z", 123456),
    ("2026-01-01T00:00:00Z", 0),
    ("2026-01-01T01:00:00.999999999+01:00", 1_000_000),  # 999,999.999 us: the next second, 00:00:01 UTC
])
def test_a_bound_finer_than_a_microsecond_is_read_as_the_next_one(text: str, microseconds: int):
    assert audit_cli.parse_time(text) == datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=microseconds)

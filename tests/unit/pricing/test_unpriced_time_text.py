"""An unpriced_model refusal for usage before the price version in force writes its time as the
rest of the API writes times: RFC 3339 in UTC with a Z (wallets.core.state.wire_time), where it
wrote `1000-01-01T00:00:00+00:00` (datetime.isoformat). Each of the three ways to it: a book asked
for the version in force (PriceBook.version_at), a version rating usage before it (rate), and a
hold estimated with a version before it (estimate_upper_bound)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pricing_testkit import version

from pricing.books import PriceBook
from pricing.errors import UnpricedModelError
from pricing.estimate import estimate_upper_bound
from pricing.rating import rate
from pricing.usage import Usage

V = version({"id": "in", "model": "m", "token_type": "input", "price": "1"})  # in force from 2026-01-01
EARLY = datetime(1000, 1, 1, tzinfo=UTC)
# 2025-12-31 23:30 at +05:30 is 18:00 UTC the same day, a microsecond past it
EARLY_INDIA = datetime(2025, 12, 31, 23, 30, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30)))


def _refusals(at: datetime) -> list[str]:
    said = []
    for attempt in (
        lambda: PriceBook(V.book_id, V.currency, (V,)).version_at(at),
        lambda: rate(Usage("m", {"input": 1}, at), V),
        lambda: rate(Usage("m", {"input": 1}, at), V, general=True),
        lambda: estimate_upper_bound(V, "m", 1, 1, {}, at),
    ):
        with pytest.raises(UnpricedModelError) as info:
            attempt()
        said.append(str(info.value))
    return said


@pytest.mark.parametrize(
    ("at", "text"), [(EARLY, "1000-01-01T00:00:00Z"), (EARLY_INDIA, "2025-12-31T18:00:00.000001Z")]
)
def test_a_time_before_the_version_in_force_is_written_in_utc_with_a_z(at, text):
    for said in _refusals(at):
        assert said.endswith(f"in force at {text}"), said
        assert "+00:00" not in said and "+05:30" not in said

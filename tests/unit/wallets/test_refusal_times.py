"""A refusal that names a time writes it as every answer of the API does: UTC with a Z (RFC 3339),
not Python's `+00:00` (a close's `until`, an expired reservation's expiry)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from wallet_memory import CID, T0, MemoryWallet

from wallets.billing import close_clock
from wallets.commands import Extend
from wallets.errors import ReservationClosedError, WalletValidationError

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_a_close_until_in_the_future_is_named_in_utc_with_a_z():
    # 2026-12-08 09:30 at +05:30 is 04:00 UTC that day, a day ahead of NOW
    until = datetime(2026, 12, 8, 9, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    with pytest.raises(WalletValidationError) as refused:
        close_clock(until, NOW, early=False)
    assert refused.value.context["fields"][0]["message"].startswith("2026-12-08T04:00:00Z is in the future")


def test_a_close_until_beyond_the_early_reach_is_named_in_utc_with_a_z():
    until = datetime(2030, 1, 1, tzinfo=UTC)  # 3 years ahead: past the 731 days an early close reaches
    with pytest.raises(WalletValidationError) as refused:
        close_clock(until, NOW, early=True)
    assert refused.value.context["fields"][0]["message"].startswith("2030-01-01T00:00:00Z is more than 731 days ahead")


def test_an_expired_reservation_the_job_has_not_released_names_its_expiry_with_a_z():
    m = MemoryWallet()
    m.top_up("4.00")
    r = m.reserve("1.00", ttl_seconds=60).reservation
    m.advance(seconds=61)  # past its expiry (T0 + 60 s = 12:01:00 UTC), not yet swept
    refused = m.run(Extend(customer_id=CID, reservation_id=r.id, ttl_seconds=60))  # returned, not raised
    assert T0 == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert isinstance(refused, ReservationClosedError)
    assert refused.detail == (f"reservation {r.id} expired at 2026-11-23T12:01:00Z")

"""guard: a customer or budget stored with time_zone "Factory" (taken before new_zone refused it:
tzdata's "no zone", local time "-00") still loads: its periods are read as before, UTC months. By
hand: Factory is UTC+0, so 2026-12-07 12:00 UTC falls in the period from 2026-12-01 00:00 UTC to
2027-01-01 00:00 UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from wallets.errors import WalletValidationError
from wallets.periods import Cycle, new_zone, period_of


def test_a_stored_factory_zone_still_loads_while_a_new_one_is_refused() -> None:
    period = period_of(datetime(2026, 12, 7, 12, tzinfo=UTC), Cycle("Factory"))
    assert (period.start, period.end) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    with pytest.raises(WalletValidationError) as refused:
        new_zone("Factory")
    assert str(refused.value).startswith("time_zone: 'Factory' is tzdata's \"no zone\"")

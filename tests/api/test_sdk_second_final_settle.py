"""A second final settle of one reservation is `ReservationClosed` from the SDK, as over raw HTTP
and as the README says ("A second final settle is still 409 reservation_closed"): an explicit
`tt.settle(R, ...)` without `key=` was sent under `{R}:settle:0`, the key a block's exit settles
under, so after the exit it was `IdempotencyConflict` ("Idempotency-Key R:settle:0 was used with
another request"), and an explicit settle inside the block made the exit's own settle conflict.
A settle retried as it was (same usage) is still answered its first answer, charged once.

Book: the demo's (model-a $10.00 per 1M input, $20.00 per 1M output, $0.01 a call); $10.00 of credit."""
from __future__ import annotations

from decimal import Decimal

import pytest

from api.client import AsyncClient, Client, ReservationClosed
from tests.api.test_sdk_durability import ADMIN, available, new_customer, reservation

# held $0.03: 1,000 x $10/M ($0.01) + 500 x $20/M ($0.01) + $0.01 a call
CALL = {"input_tokens": 1000, "max_output_tokens": 500}
USED = {"input_tokens": 1000, "output_tokens": 400}  # $0.01 + 400 x $20/M ($0.008) + $0.01 = $0.028
OTHER = {"input_tokens": 1000, "output_tokens": 100}  # $0.01 + 100 x $20/M ($0.002) + $0.01 = $0.022


def test_a_settle_after_the_block_s_exit_settled_is_reservation_closed(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    with Client(url, ADMIN, flush_spool=False) as tt:
        with tt.reserve(customer, "model-a", request_id=f"exit-{customer}", **CALL) as r:
            r.record(**USED)
        assert Decimal(r.settlement["charged"]) == Decimal("0.028")
        with pytest.raises(ReservationClosed) as refused:
            tt.settle(r.id, usage=OTHER)
    assert (refused.value.reservation_id, refused.value.reservation_status) == (r.id, "settled")
    view = reservation(url, r.id)
    assert (view["status"], Decimal(view["charged"]), len(view["charges"])) == ("settled", Decimal("0.028"), 1)
    assert available(url, customer) == Decimal("9.972")  # 10.00 - 0.028, the hold's 0.002 back


def test_a_settle_inside_the_block_leaves_the_exit_s_settle_reservation_closed(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    with Client(url, ADMIN, flush_spool=False) as tt:
        with pytest.raises(ReservationClosed) as refused:
            with tt.reserve(customer, "model-a", **CALL) as r:
                assert Decimal(tt.settle(r.id, usage=OTHER)["charged"]) == Decimal("0.022")
                r.record(**USED)
    assert (refused.value.reservation_id, refused.value.reservation_status) == (r.id, "settled")
    view = reservation(url, r.id)
    assert (view["status"], Decimal(view["charged"]), len(view["charges"])) == ("settled", Decimal("0.022"), 1)
    assert available(url, customer) == Decimal("9.978")  # 10.00 - 0.022


async def test_a_settle_retried_as_it_was_is_replayed_and_another_is_reservation_closed(live, spool_dir):
    """The retried settle's exactly-once is a guard (it held under `{R}:settle:0` too); the
    other settle after it was IdempotencyConflict."""
    url, book = live
    customer = new_customer(url, book)
    async with AsyncClient(url, ADMIN, flush_spool=False) as tt:
        rid = (await tt.post("/v1/reservations", {"customer_id": customer, "request_id": f"twice-{customer}",
                                                  "model": "model-a", "amount": "0.10"}))["id"]
        first = await tt.settle(rid, usage=USED)
        again = await tt.settle(rid, usage=dict(reversed(USED.items())))  # the same usage, its keys in another order
        assert again == first and Decimal(first["charged"]) == Decimal("0.028")
        with pytest.raises(ReservationClosed) as refused:
            await tt.settle(rid, usage=OTHER)
    assert (refused.value.reservation_id, refused.value.reservation_status) == (rid, "settled")
    view = reservation(url, rid)
    assert (Decimal(view["charged"]), len(view["charges"])) == (Decimal("0.028"), 1)
    assert available(url, customer) == Decimal("9.972")  # 10.00 - 0.028, the hold's 0.072 back

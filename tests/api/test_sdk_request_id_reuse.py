"""A block entered again under a request id of the caller's whose hold is already gone (its first
block released it: the call failed before any output). The server answers a request id with its
first answer, so the reserve said "held"; the block ran the provider call, and its exit's settle
was refused (`reservation_closed`): a call made and never billed, every time the caller's retry
loop came round. Now the block is refused on entry (`ReservationClosed`), before the call.

Book: the demo's (model-a $10.00 per 1M input, $20.00 per 1M output, $0.01 a call); $10.00 of credit."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from api.client import AsyncClient, Client, ReservationClosed
from ledger.db import connect
from tests.api.test_sdk_durability import ADMIN, available, new_customer, reservation
from wallets.expiry import expire_reservations

# held $0.03: 1,000 x $10/M ($0.01) + 500 x $20/M ($0.01) + $0.01 a call
CALL = {"input_tokens": 1000, "max_output_tokens": 500}
# charged $0.028: 1,000 x $10/M ($0.01) + 400 x $20/M ($0.008) + $0.01 a call
USED = {"input_tokens": 1000, "output_tokens": 400}


class ProviderDown(Exception):
    pass


def _refused_on_entry(tt: Client, customer: str, request_id: str, **reserve) -> tuple[dict, int]:
    """A block entered under `request_id` and refused (ReservationClosed): the refusal's body and the
    provider calls the block made (0 when it is refused before the call)."""
    calls = 0
    with pytest.raises(ReservationClosed) as refused:
        with tt.reserve(customer, "model-a", request_id=request_id, **CALL, **reserve) as r:
            calls += 1  # the provider call: made, and never billed
            r.record(**USED)
    return refused.value.body, calls


async def _refused_on_entry_async(tt: AsyncClient, customer: str, request_id: str, **reserve) -> tuple[dict, int]:
    """`_refused_on_entry` with the async client."""
    calls = 0
    with pytest.raises(ReservationClosed) as refused:
        async with tt.reserve(customer, "model-a", request_id=request_id, **CALL, **reserve) as r:
            calls += 1
            r.record(**USED)
    return refused.value.body, calls


def test_a_block_under_a_request_id_whose_hold_was_released_is_refused_before_the_call(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    request_id = f"retry-{customer}"
    with Client(url, ADMIN, flush_spool=False) as tt:
        with pytest.raises(ProviderDown):
            with tt.reserve(customer, "model-a", request_id=request_id, **CALL):
                raise ProviderDown  # before any output: the exit releases the hold
        refused, calls = _refused_on_entry(tt, customer, request_id)
        assert refused["reservation_status"] == "released" and calls == 0
        again = f"{request_id}-2"  # a new request id is the way to try again: billed
        with tt.reserve(customer, "model-a", request_id=again, **CALL) as r:
            r.record(**USED)
        refused, calls = _refused_on_entry(tt, customer, again)  # settled: its exit's settle was a replay, unbilled
        assert refused["reservation_status"] == "settled" and calls == 0
    assert r.settlement["status"] == "settled" and Decimal(r.settlement["charged"]) == Decimal("0.028")
    assert available(url, customer) == Decimal("10") - Decimal("0.028")


async def test_the_async_client_refuses_it_too(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    request_id = f"retry-{customer}"
    async with AsyncClient(url, ADMIN, flush_spool=False) as tt:
        with pytest.raises(ProviderDown):
            async with tt.reserve(customer, "model-a", request_id=request_id, **CALL):
                raise ProviderDown
        _, calls = await _refused_on_entry_async(tt, customer, request_id)
    assert calls == 0
    assert available(url, customer) == Decimal("10")


def test_a_block_under_a_request_id_still_held_goes_ahead(live, spool_dir):
    """The caller's retry after a lost answer (the hold is still there) is not refused."""
    url, book = live
    customer = new_customer(url, book)
    request_id = f"held-{customer}"
    with Client(url, ADMIN, flush_spool=False) as tt:
        first = tt.post("/v1/reservations", {"customer_id": customer, "request_id": request_id, "model": "model-a",
                                             "estimate": CALL})
        with tt.reserve(customer, "model-a", request_id=request_id, **CALL) as r:
            assert r.id == first["id"]
            r.record(**USED)
    assert r.settlement["status"] == "settled"
    assert available(url, customer) == Decimal("10") - Decimal("0.028")


async def _expire(database_url: str, expires_at: str) -> int:
    """The expiry job, run as of a second past `expires_at`: the hold given back, the reservation expired."""
    db = connect(database_url, pool_size=1)
    try:
        return await expire_reservations(db, datetime.fromisoformat(expires_at) + timedelta(seconds=1))
    finally:
        await db.dispose()


def _expired_hold(tt: Client, customer: str, request_id: str) -> dict:
    """A $0.03 hold (1,000 input at $10/M, 500 output at $20/M, $0.01 a call) under `request_id`, to expire."""
    first = tt.post("/v1/reservations", {"customer_id": customer, "request_id": request_id, "model": "model-a",
                                         "ttl_seconds": 60, "estimate": CALL})
    assert first["amount"] == "0.03"
    return first


def test_a_block_under_a_request_id_whose_hold_expired_is_refused_before_the_call(live, spool_dir, database_url):
    """Expired, the hold is gone (or going): nothing holds the call's credit, the wallet was not asked
    whether it can pay (it may have spent the credit since), and extend refuses it. Entered, the block
    made the provider call and its exit's settle was charged late, $0.028 unheld (from the lots here;
    past the credit, onto the receivable, whatever the overdraft limit). Now it is refused as a settled
    or released one is; a new request id is held and charged as any call."""
    url, book = live
    customer = new_customer(url, book)
    request_id = f"lapsed-{customer}"
    with Client(url, ADMIN, flush_spool=False) as tt:
        first = _expired_hold(tt, customer, request_id)
        assert asyncio.run(_expire(database_url, first["expires_at"])) >= 1
        assert reservation(url, first["id"])["status"] == "expired"
        assert available(url, customer) == Decimal("10")  # the $0.03 given back
        refused, calls = _refused_on_entry(tt, customer, request_id, ttl_seconds=60)  # a call under no hold
        assert refused["reservation_status"] == "expired"
        assert refused["reservation_id"] == first["id"]
    assert calls == 0
    assert reservation(url, first["id"])["status"] == "expired" and available(url, customer) == Decimal("10")


async def test_the_async_client_refuses_an_expired_one_too(live, spool_dir, database_url):
    url, book = live
    customer = new_customer(url, book)
    request_id = f"lapsed-{customer}"
    with Client(url, ADMIN, flush_spool=False) as tt:
        first = _expired_hold(tt, customer, request_id)
    assert await _expire(database_url, first["expires_at"]) >= 1
    async with AsyncClient(url, ADMIN, flush_spool=False) as tt:
        refused, calls = await _refused_on_entry_async(tt, customer, request_id, ttl_seconds=60)
        assert refused["reservation_status"] == "expired"
    assert calls == 0
    assert available(url, customer) == Decimal("10")

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


class ProviderDown(Exception):
    pass


def test_a_block_under_a_request_id_whose_hold_was_released_is_refused_before_the_call(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    request_id = f"retry-{customer}"
    calls = 0
    with Client(url, ADMIN, flush_spool=False) as tt:
        with pytest.raises(ProviderDown):
            with tt.reserve(customer, "model-a", request_id=request_id, input_tokens=1000, max_output_tokens=500):
                raise ProviderDown  # before any output: the exit releases the hold
        with pytest.raises(ReservationClosed) as refused:
            with tt.reserve(customer, "model-a", request_id=request_id, input_tokens=1000,
                            max_output_tokens=500) as r:
                calls += 1  # the provider call: made, and never billed
                r.record(input_tokens=1000, output_tokens=400)
        assert refused.value.body["reservation_status"] == "released"
        again = f"{request_id}-2"  # a new request id is the way to try again: billed
        with tt.reserve(customer, "model-a", request_id=again, input_tokens=1000, max_output_tokens=500) as r:
            r.record(input_tokens=1000, output_tokens=400)
        with pytest.raises(ReservationClosed) as refused:  # settled: its exit's settle was a replay, unbilled
            with tt.reserve(customer, "model-a", request_id=again, input_tokens=1000, max_output_tokens=500):
                calls += 1
        assert refused.value.body["reservation_status"] == "settled"
    assert calls == 0
    assert r.settlement["status"] == "settled" and Decimal(r.settlement["charged"]) == Decimal("0.028")
    assert available(url, customer) == Decimal("10") - Decimal("0.028")


async def test_the_async_client_refuses_it_too(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    request_id = f"retry-{customer}"
    calls = 0
    async with AsyncClient(url, ADMIN, flush_spool=False) as tt:
        with pytest.raises(ProviderDown):
            async with tt.reserve(customer, "model-a", request_id=request_id, input_tokens=1000, max_output_tokens=500):
                raise ProviderDown
        with pytest.raises(ReservationClosed):
            async with tt.reserve(customer, "model-a", request_id=request_id, input_tokens=1000,
                                  max_output_tokens=500) as r:
                calls += 1
                r.record(input_tokens=1000, output_tokens=400)
    assert calls == 0
    assert available(url, customer) == Decimal("10")


def test_a_block_under_a_request_id_still_held_goes_ahead(live, spool_dir):
    """The caller's retry after a lost answer (the hold is still there) is not refused."""
    url, book = live
    customer = new_customer(url, book)
    request_id = f"held-{customer}"
    with Client(url, ADMIN, flush_spool=False) as tt:
        first = tt.post("/v1/reservations", {"customer_id": customer, "request_id": request_id, "model": "model-a",
                                             "estimate": {"input_tokens": 1000, "max_output_tokens": 500}})
        with tt.reserve(customer, "model-a", request_id=request_id, input_tokens=1000, max_output_tokens=500) as r:
            assert r.id == first["id"]
            r.record(input_tokens=1000, output_tokens=400)
    assert r.settlement["status"] == "settled"
    assert available(url, customer) == Decimal("10") - Decimal("0.028")


async def _expire(database_url: str, expires_at: str) -> int:
    """The expiry job, run as of a second past `expires_at`: the hold given back, the reservation expired."""
    db = connect(database_url, pool_size=1)
    try:
        return await expire_reservations(db, datetime.fromisoformat(expires_at) + timedelta(seconds=1))
    finally:
        await db.dispose()


def _expired_hold(url: str, tt: Client, customer: str, request_id: str) -> dict:
    """A $0.03 hold (1,000 input at $10/M, 500 output at $20/M, $0.01 a call) under `request_id`, expired."""
    first = tt.post("/v1/reservations", {"customer_id": customer, "request_id": request_id, "model": "model-a",
                                         "ttl_seconds": 60,
                                         "estimate": {"input_tokens": 1000, "max_output_tokens": 500}})
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
    calls = 0
    with Client(url, ADMIN, flush_spool=False) as tt:
        first = _expired_hold(url, tt, customer, request_id)
        assert asyncio.run(_expire(database_url, first["expires_at"])) >= 1
        assert reservation(url, first["id"])["status"] == "expired"
        assert available(url, customer) == Decimal("10")  # the $0.03 given back
        with pytest.raises(ReservationClosed) as refused:
            with tt.reserve(customer, "model-a", request_id=request_id, input_tokens=1000,
                            max_output_tokens=500, ttl_seconds=60) as r:
                calls += 1  # the provider call: made under no hold
                r.record(input_tokens=1000, output_tokens=400)
        assert refused.value.body["reservation_status"] == "expired"
        assert refused.value.body["reservation_id"] == first["id"]
    assert calls == 0
    assert reservation(url, first["id"])["status"] == "expired" and available(url, customer) == Decimal("10")


async def test_the_async_client_refuses_an_expired_one_too(live, spool_dir, database_url):
    url, book = live
    customer = new_customer(url, book)
    request_id = f"lapsed-{customer}"
    calls = 0
    with Client(url, ADMIN, flush_spool=False) as tt:
        first = _expired_hold(url, tt, customer, request_id)
    assert await _expire(database_url, first["expires_at"]) >= 1
    async with AsyncClient(url, ADMIN, flush_spool=False) as tt:
        with pytest.raises(ReservationClosed) as refused:
            async with tt.reserve(customer, "model-a", request_id=request_id, input_tokens=1000,
                                  max_output_tokens=500, ttl_seconds=60) as r:
                calls += 1
                r.record(input_tokens=1000, output_tokens=400)
        assert refused.value.body["reservation_status"] == "expired"
    assert calls == 0
    assert available(url, customer) == Decimal("10")

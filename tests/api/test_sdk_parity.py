"""The blocking and the async client answer the same refusals with the same typed errors: same
class, status, `code` and detail, for every call an inference service makes."""
from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Any

from api.client import (
    AsyncClient,
    Client,
    ExtensionTooShort,
    IdempotencyConflict,
    InsufficientFunds,
    NotFound,
    ReservationClosed,
    TokentillError,
    UnpricedModel,
)
from tests.api.test_sdk_durability import ADMIN, new_customer

USAGE = {"input_tokens": 1000, "output_tokens": 400}
Seen = tuple[type, int, str, str] | None


def _seen(error: BaseException | None) -> Seen:
    if error is None:  # no error at all
        return None
    assert isinstance(error, TokentillError), repr(error)
    return type(error), error.status, error.code, re.sub(r"\(\S+\)", "(now)", error.detail)  # "from now (T)"


def refusing_calls(tt: Client | AsyncClient, customer: str, closed: str, open_: str, key: str) -> list[Any]:
    """The calls each client makes, the same for both (a reservation entered as its `with` or
    `async with` does): each is refused."""
    enter = "__aenter__" if isinstance(tt, AsyncClient) else "__enter__"
    return [
        lambda: getattr(tt.reserve(customer, "model-a", input_tokens=1, max_output_tokens=2_000_000), enter)(),
        lambda: getattr(tt.reserve(customer, "no-such-model", input_tokens=10, max_output_tokens=10), enter)(),
        lambda: tt.settle("res_nowhere", usage=USAGE),
        lambda: tt.settle(closed, usage=USAGE),
        lambda: tt.release(closed),
        lambda: tt.extend(open_, 1),
        lambda: tt.post("/v1/customers", {"id": customer, "name": "other", "currency": "USD"}, key=key),
        lambda: tt.get("/v1/customers/nobody-at-all"),
    ]


def blocking_refusals(url: str, customer: str, closed: str, open_: str, key: str) -> list[Seen]:
    seen = []
    with Client(url, ADMIN, flush_spool=False) as tt:
        for call in refusing_calls(tt, customer, closed, open_, key):
            try:
                call()
            except TokentillError as error:
                seen.append(_seen(error))
            else:
                seen.append(None)
    return seen


async def async_refusals(url: str, customer: str, closed: str, open_: str, key: str) -> list[Seen]:
    seen = []
    async with AsyncClient(url, ADMIN, flush_spool=False) as tt:
        for call in refusing_calls(tt, customer, closed, open_, key):
            try:
                await call()
            except TokentillError as error:
                seen.append(_seen(error))
            else:
                seen.append(None)
    return seen


async def test_both_clients_raise_the_same_typed_error_for_each_refusal(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    key = f"parity-{uuid.uuid4().hex}"
    with Client(url, ADMIN, flush_spool=False) as tt:
        closed = tt.post("/v1/reservations", tt.reserve_body(customer, "model-a", input_tokens=10))["id"]
        tt.post(f"/v1/reservations/{closed}/settle", {"usage": {"input_tokens": 10, "output_tokens": 0}},
                key=f"{key}-settle")  # another usage than the refused second final's: no replay of it
        open_ = tt.post("/v1/reservations", tt.reserve_body(customer, "model-a", input_tokens=10,
                                                            ttl_seconds=3600))["id"]
        tt.post("/v1/customers", {"id": f"{customer}-k", "name": "k", "currency": "USD", "price_book": book}, key=key)
    blocking = blocking_refusals(url, customer, closed, open_, key)
    asynchronous = await async_refusals(url, customer, closed, open_, key)
    assert [seen and seen[0] for seen in blocking] == [InsufficientFunds, UnpricedModel, NotFound, ReservationClosed,
                                               ReservationClosed, ExtensionTooShort, IdempotencyConflict, NotFound]
    assert asynchronous == blocking


async def test_both_clients_send_a_decimal_as_its_exact_decimal_string(live, spool_dir):
    """Money is a Decimal in a caller's code, as in ours: a body holding one was a TypeError
    ("Object of type Decimal is not JSON serializable") before anything was sent, so callers
    went through float or str by hand. Now it goes as its exact decimal string."""
    url, book = live
    customer = new_customer(url, book)
    with Client(url, ADMIN, flush_spool=False) as tt:
        tt.post(f"/v1/customers/{customer}/topups", {"amount": Decimal("2.50")})
    async with AsyncClient(url, ADMIN, flush_spool=False) as att:
        await att.post(f"/v1/customers/{customer}/topups", {"amount": Decimal("1.5E+1")})
        wallet = await att.get(f"/v1/customers/{customer}/wallet")
    assert Decimal(wallet["available"]) == Decimal("27.50")  # 10.00 + 2.50 + 15

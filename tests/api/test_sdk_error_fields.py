"""The SDK's typed errors give the fields of their problem as attributes, as `BudgetExceeded` and
`InvalidAmount` did alone: a caller told `ReservationClosed` needs its `reservation_status` (README:
"`ReservationClosed` with its `reservation_status`"), `ExtensionTooShort` its `expires_at`,
`ValidationFailed` its `fields`; they were only in `.body`, and `e.reservation_status` was an
AttributeError. Each attribute is read from the server's own answer here, not a body written by hand.

Book: the demo's (model-a $10.00 per 1M input, $20.00 per 1M output, $0.01 a call); $10.00 of credit."""
from __future__ import annotations

import pickle
import uuid

import httpx
import pytest

from api.client import (
    Client,
    ExtensionTooShort,
    IdempotencyConflict,
    ImplausibleUsage,
    InsufficientFunds,
    NotFound,
    ReservationClosed,
    UnpricedModel,
    ValidationFailed,
)
from api.client_errors import raise_for
from tests.api.test_sdk_durability import ADMIN, new_customer

# held $0.03: 1,000 x $10/M ($0.01) + 500 x $20/M ($0.01) + $0.01 a call
CALL = {"input_tokens": 1000, "max_output_tokens": 500}
USED = {"input_tokens": 1000, "output_tokens": 400}


def test_a_closed_reservation_s_refusal_names_the_reservation_and_its_status(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    with Client(url, ADMIN, flush_spool=False) as tt:
        with tt.reserve(customer, "model-a", **CALL) as r:
            r.record(**USED)
        with pytest.raises(ReservationClosed) as refused:
            tt.release(r.id)
    assert (refused.value.reservation_id, refused.value.reservation_status) == (r.id, "settled")
    again = pickle.loads(pickle.dumps(refused.value))  # a worker's error reaches its parent with them
    assert (again.reservation_id, again.reservation_status) == (r.id, "settled")


def test_a_block_refused_on_entry_gives_the_status_of_the_request_id_s_reservation(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    request_id = f"again-{customer}"
    with Client(url, ADMIN, flush_spool=False) as tt:
        with tt.reserve(customer, "model-a", request_id=request_id, **CALL) as r:
            r.record(**USED)
        with pytest.raises(ReservationClosed) as refused:
            with tt.reserve(customer, "model-a", request_id=request_id, **CALL):
                pass
    assert (refused.value.reservation_id, refused.value.reservation_status) == (r.id, "settled")


def test_an_extension_too_short_gives_the_expiry_it_did_not_pass(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    with Client(url, ADMIN, flush_spool=False) as tt:
        with tt.reserve(customer, "model-a", ttl_seconds=600, **CALL) as r:
            with pytest.raises(ExtensionTooShort) as refused:
                r.extend(1)  # 1 s from now is not later than 600 s from the reserve
            r.record(**USED)
    assert refused.value.reservation_id == r.id
    assert refused.value.expires_at == r.data["expires_at"]


def test_refusals_of_a_reserve_and_a_settle_give_their_fields(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    with Client(url, ADMIN, flush_spool=False) as tt:
        # $10.00 of credit; 1,000,000 output tokens hold 1,000 x $10/M + 1M x $20/M + $0.01 = $20.02
        with pytest.raises(InsufficientFunds) as poor:
            with tt.reserve(customer, "model-a", request_id=f"big-{customer}", input_tokens=1000,
                            max_output_tokens=1_000_000):
                pass
        assert (poor.value.customer_id, poor.value.request_id) == (customer, f"big-{customer}")
        with pytest.raises(UnpricedModel) as unpriced:
            with tt.reserve(customer, "model-zzz", **CALL):
                pass
        assert (unpriced.value.model, unpriced.value.token_type) == ("model-zzz", "input")
        with pytest.raises(ValidationFailed) as invalid:
            tt.extend("res_nope", 0)
        assert [f["field"] for f in invalid.value.fields] == ["ttl_seconds"]
        with tt.reserve(customer, "model-a", **CALL) as r:
            tt.extend(r.id, 900, key=f"same-{r.id}")
            with pytest.raises(IdempotencyConflict) as conflict:  # another request under that key
                tt.post(f"/v1/reservations/{r.id}/extend", {"ttl_seconds": 1200}, key=f"same-{r.id}")
            r.record(**USED)
        assert (conflict.value.key, conflict.value.request_id) == (f"same-{r.id}", None)
        with pytest.raises(IdempotencyConflict) as conflict:  # a request id used with another estimate
            with tt.reserve(customer, "model-a", request_id=r.request_id, input_tokens=1, max_output_tokens=1):
                pass
        assert (conflict.value.key, conflict.value.request_id) == (None, r.request_id)
        with pytest.raises(NotFound):
            tt.get("/v1/reservations/res_nope")


def test_an_implausible_usage_names_its_bound_and_value(live, spool_dir):
    url, book = live
    customer = f"max-{uuid.uuid4().hex[:10]}"
    with Client(url, ADMIN, flush_spool=False) as tt:
        tt.post("/v1/customers", {"id": customer, "currency": "USD", "price_book": book,
                                  "max_charge_per_request": "0.05"})
        tt.post(f"/v1/customers/{customer}/topups", {"amount": "10.00"})
        with tt.reserve(customer, "model-a", **CALL) as r:
            with pytest.raises(ImplausibleUsage) as past:
                # 1,000 x $10/M + 5,000 x $20/M + $0.01 = $0.01 + $0.10 + $0.01 = $0.12 > $0.05
                tt.settle(r.id, usage={"input_tokens": 1000, "output_tokens": 5000}, key=f"too-big-{r.id}")
            r.record(**USED)
    assert (past.value.limit, past.value.maximum, past.value.value, past.value.source) == (
        "max_charge_per_request", "0.05", "0.12", "customer")


def test_an_answer_whose_body_is_no_object_has_no_fields_not_an_attribute_error():
    """A proxy's 422 whose JSON is a list is a ValidationFailed whose `fields` is None."""
    with pytest.raises(ValidationFailed) as invalid:
        raise_for(httpx.Response(422, json=[1]))
    assert invalid.value.fields is None

"""The SDK's refusals of money give their problem's fields as attributes, read here from the
server's own answers: `InsufficientFunds` its `needed` and `available` (the server's problem named
neither: they were only in the detail's words, and a replay of the refusal kept the detail alone),
`ExceedsRemaining`, `GrantClosed` and `InvalidRange` theirs (each was a bare class, its fields in
`.body` alone: `e.available` was an AttributeError), as f762f78a gave `ReservationClosed` its
`reservation_status`.

Book: the demo's (model-a $10.00 per 1M input, $20.00 per 1M output, $0.01 a call); $10.00 of credit."""

from __future__ import annotations

import pickle

import httpx
import pytest

from api.client import Client, ExceedsRemaining, GrantClosed, InsufficientFunds, InvalidRange
from api.client_errors import (
    ERRORS,
    CurrencyMismatch,
    ExceedsRefundable,
    GrantNotReversible,
    Overpayment,
    TooManyBudgets,
    VersionNotInForce,
    raise_for,
)
from tests.api.test_sdk_durability import ADMIN, new_customer


def test_insufficient_funds_names_what_the_hold_needed_and_what_the_wallet_had(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    request_id = f"big-{customer}"
    with Client(url, ADMIN, flush_spool=False) as tt:
        for _ in range(2):  # the refusal, then its replay under the same request id
            # 1,000 x $10/M + 1,000,000 x $20/M + $0.01 = $0.01 + $20.00 + $0.01 = $20.02 > $10.00
            with pytest.raises(InsufficientFunds) as poor:
                with tt.reserve(
                    customer, "model-a", request_id=request_id, input_tokens=1000, max_output_tokens=1_000_000
                ):
                    pass
            refused = pickle.loads(pickle.dumps(poor.value))
            assert (refused.needed, refused.available, refused.currency) == ("20.02", "10.00", "USD")
            assert refused.overdraft_headroom is None  # no overdraft limit
            assert (refused.customer_id, refused.request_id) == (customer, request_id)


def test_a_reversal_s_refusals_name_the_lot_and_its_amounts(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)  # a $10.00 top-up
    with Client(url, ADMIN, flush_spool=False) as tt:
        [lot] = [g["id"] for g in tt.get(f"/v1/customers/{customer}/wallet")["grants"]]
        with pytest.raises(ExceedsRemaining) as more:
            tt.post(f"/v1/customers/{customer}/grants/{lot}/reverse", {"amount": "10.01"})
        assert (more.value.grant_id, more.value.available, more.value.asked, more.value.currency) == (
            lot,
            "10.00",
            "10.01",
            "USD",
        )
        tt.post(f"/v1/customers/{customer}/grants/{lot}/reverse", {})  # all of it: 10.00
        with pytest.raises(GrantClosed) as closed:
            tt.post(f"/v1/customers/{customer}/grants/{lot}/reverse", {})
        assert (closed.value.grant_id, closed.value.state) == (lot, "emptied")


def test_an_inverted_re_rate_range_names_its_bounds(live, spool_dir):
    url, book = live
    with Client(url, ADMIN, flush_spool=False) as tt:
        with pytest.raises(InvalidRange) as inverted:
            tt.post(
                "/v1/rerate",
                {
                    "price_book": book,
                    "version": "v1",
                    "from": "2026-12-01T00:00:00Z",
                    "to": "2026-11-01T00:00:00Z",
                    "mode": "preview",
                },
            )
    assert (inverted.value.from_, inverted.value.to) == ("2026-12-01T00:00:00Z", "2026-11-01T00:00:00Z")


def test_the_other_refusals_give_the_fields_their_raise_sites_name():
    """Bodies with the context each refusal's raise site passes (wallets/core/credits.py,
    refunds.py, invoicing.py, budgets.py, wallets/books.py, wallets/rerating.py)."""
    cases = [
        (GrantNotReversible, 409, {"grant_id": "g1", "opened_by": "rerate"}, ("grant_id", "opened_by")),
        (
            ExceedsRefundable,
            409,
            {"customer_id": "c1", "refundable": "2.50", "asked": "3.00", "currency": "USD"},
            ("customer_id", "refundable", "asked", "currency"),
        ),
        (Overpayment, 422, {"invoice_id": "inv1", "amount_due": "4.00"}, ("invoice_id", "amount_due")),
        (
            TooManyBudgets,
            409,
            {"customer_id": "c1", "set_by": "operator", "limit": 50},
            ("customer_id", "set_by", "limit"),
        ),
        (CurrencyMismatch, 422, {"invoice_id": "inv1", "currency": "EUR"}, ("invoice_id", "currency")),
        (CurrencyMismatch, 422, {"field": "currency", "customer_id": "c1"}, ("field", "customer_id")),
        (
            VersionNotInForce,
            422,
            {
                "price_book": "b",
                "version": "v2",
                "effective_from": "2026-01-01T00:00:00.000000Z",
                "effective_until": None,
            },
            ("price_book", "version", "effective_from", "effective_until"),
        ),
    ]
    codes = {kind: code for code, kind in ERRORS.items()}
    for kind, status, fields, names in cases:
        with pytest.raises(kind) as refused:
            raise_for(httpx.Response(status, json={"code": codes[kind], "detail": "d", **fields}))
        assert {name: getattr(refused.value, name) for name in names} == {name: fields[name] for name in names}

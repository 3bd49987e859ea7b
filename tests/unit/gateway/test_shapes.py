"""The gateway's refusals: a domain refusal's code picks the status, each provider gets its shape."""
from __future__ import annotations

import msgspec
import pytest

from api.auth import Principal
from api.gateway.proxy import _refusal_of, customer_of
from api.gateway.shapes import error_body, stream_error_event
from ledger.errors import LedgerError
from wallets.errors import InsufficientFundsError


class BudgetExceeded(LedgerError):  # as the budgets' refusal reads: a code and its figures
    code = "budget_exceeded"


class Frobnicated(LedgerError):
    code = "frobnicated"


def test_a_budget_refusal_is_a_429_with_its_figures_and_retry_after():
    refusal = _refusal_of(BudgetExceeded("budget b1 exceeded", budget_id="b1", retry_after_seconds=12))
    assert (refusal.status, refusal.code, refusal.retry_after) == (429, "budget_exceeded", "12")
    assert msgspec.json.decode(error_body("openai", 429, refusal.code, refusal.message, refusal.details)) == {
        "error": {"message": "budget b1 exceeded", "type": "rate_limit_exceeded", "param": None,
                  "code": "budget_exceeded", "tokentill": {"budget_id": "b1", "retry_after_seconds": 12}}}
    anthropic = msgspec.json.decode(error_body("anthropic", 429, refusal.code, refusal.message))
    assert anthropic == {"type": "error", "error": {"type": "rate_limit_error", "message": "budget b1 exceeded",
                                                    "code": "budget_exceeded"}}


def test_insufficient_funds_is_a_402_and_an_unknown_refusal_a_422():
    assert _refusal_of(InsufficientFundsError("no", customer_id="c")).status == 402
    unknown = _refusal_of(Frobnicated("odd"))
    assert (unknown.status, unknown.code, unknown.retry_after) == (422, "frobnicated", None)


def test_anything_else_is_not_a_refusal():
    with pytest.raises(ZeroDivisionError):
        _refusal_of(ZeroDivisionError())


def test_an_error_inside_a_stream_is_an_event_each_sdk_raises_on():
    assert stream_error_event("anthropic", "upstream_failed", "x").startswith(b"event: error\ndata: {")
    assert msgspec.json.decode(stream_error_event("openai", "upstream_failed", "x")[6:])["error"]["code"] == \
        "upstream_failed"


def test_the_customer_is_the_named_one_or_the_keys_only_one():
    assert customer_of(Principal("k", "inference", ("acme",)), None) == "acme"
    assert customer_of(Principal("k", "inference"), "acme") == "acme"
    for principal, named in ((Principal("k", "inference"), None), (Principal("k", "inference", ("a", "b")), None),
                             (Principal("k", "inference", ("a",)), "b"), (Principal("k", "inference"), "bad id")):
        with pytest.raises(Exception) as raised:
            customer_of(principal, named)
        assert raised.value.status in (403, 422)


def test_the_gateways_upstream_timeout_is_anthropics_timeout_error_and_an_openai_api_error():
    assert msgspec.json.decode(error_body("anthropic", 504, "upstream_timeout", "x"))["error"]["type"] == \
        "timeout_error"
    assert msgspec.json.decode(error_body("openai", 504, "upstream_timeout", "x"))["error"]["type"] == "api_error"
    assert msgspec.json.decode(error_body("anthropic", 502, "upstream_unavailable", "x"))["error"]["type"] == \
        "api_error"

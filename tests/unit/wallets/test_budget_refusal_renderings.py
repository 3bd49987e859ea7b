"""A budget refusal on every path that renders it: the HTTP 429, the gateway's provider-shaped 429
(OpenAI's and Anthropic's), an item of a bulk call (`POST /v1/settlements` answers each item as its
single call would) and the budget.exceeded event. Each shows the same fields, the window's nulls
included: the error spells them itself (`BudgetExceededError.nulls`), where `refusal_body` used to
special-case the budget's class to keep them."""
from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest
from litestar import Request
from wallet_memory import MemoryWallet, usd

from api.client_errors import BudgetExceeded, raise_for
from api.errors import error_response
from api.gateway.proxy import _refusal_of
from api.gateway.shapes import error_body
from api.routes.settlements import _problem
from wallets.core import budgets as rules
from wallets.core.idempotency import refusal_body
from wallets.errors import BudgetExceededError, InsufficientFundsError
from wallets.model import Budget

EVENT_OWN = {"id", "type", "customer_id", "created_at"}  # what every event has beside its fields


def _request(path: str) -> Request:
    return Request(scope={"type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
                          "root_path": "", "scheme": "http", "server": ("test", 80), "headers": [],
                          "query_string": b"", "path_params": {}, "state": {}})


def _refused(window: str) -> tuple[BudgetExceededError, dict[str, Any]]:
    """A hold of $2.00 under a hard $1.00 budget of `window`: the rule's refusal and its event."""
    mw = MemoryWallet()
    mw.top_up("100.00")
    mw.wallet.budgets["cap"] = Budget("cap", mw.wallet.customer.id, "team cap", None, None, {}, window, "money",
                                      usd("1.00"), "hard", (), "UTC", mw.now)
    error = mw.reserve("2.00", request_id="r1")
    assert isinstance(error, BudgetExceededError)
    (event,) = [e["payload"] for e in mw.outbox if e["topic"] == rules.EXCEEDED_TOPIC]
    return error, event


@pytest.mark.parametrize("window", ["lifetime", "request", "minute", "day"])
def test_a_budget_refusal_shows_the_same_fields_nulls_included_on_every_path(window):
    error, event = _refused(window)
    # the fields, worked by hand: $1.00 limit, nothing used or held, $2.00 asked; a lifetime's and a
    # request's window has no start nor end, a rolling minute no end (window_start: its second)
    fields = {k: v for k, v in event.items() if k not in EVENT_OWN}
    assert {k: fields[k] for k in ("budget_id", "budget_name", "window", "metric", "mode", "limit", "used",
                                   "held", "requested", "currency", "resets_at")} == {
        "budget_id": "cap", "budget_name": "team cap", "window": window, "metric": "money", "mode": "hard",
        "limit": "1.00", "used": "0.00", "held": "0.00", "requested": "2.00", "currency": "USD",
        "resets_at": "2026-11-24T00:00:00Z" if window == "day" else None}
    assert (fields["window_start"] is None) == (window in ("lifetime", "request"))
    assert "retry_after_seconds" not in fields  # nothing counted lapses: no wait frees $2.00 under $1.00

    http = error_response(_request("/v1/reservations"), error)
    assert http.status_code == 429
    assert {k: v for k, v in http.content.items() if k not in ("type", "title", "status", "code", "detail",
                                                                "instance")} == fields

    refusal = _refusal_of(error)
    assert (refusal.status, refusal.code, refusal.details) == (429, "budget_exceeded", fields)
    for provider, path in (("openai", ("error", "tokentill")), ("anthropic", ("error", "tokentill"))):
        shaped = msgspec.json.decode(error_body(provider, 429, refusal.code, refusal.message, refusal.details))
        assert shaped[path[0]][path[1]] == fields, provider

    item = _problem(_request("/v1/settlements"), error, None, "k")
    assert item.status == 429
    assert msgspec.json.decode(item.body) == {**http.content, "instance": "/v1/settlements"}


def test_a_budget_refusal_spells_its_windows_nulls_whatever_context_it_was_given():
    """The error spells its own nulls: one made without its window's times (as a test's, or a
    future path's) still shows window_start and resets_at as null, where refusal_body showed a
    budget's nulls only when its context carried them. Another refusal's nulls stay left out."""
    assert refusal_body(BudgetExceededError("over", budget_id="b")) == {
        "detail": "over", "budget_id": "b", "window_start": None, "resets_at": None}
    assert refusal_body(InsufficientFundsError("short", customer_id="c", request_id=None)) == {
        "detail": "short", "customer_id": "c"}


@pytest.mark.parametrize(("window", "bounds"), [
    ("lifetime", (None, None)),  # no start, no end
    ("request", (None, None)),
    ("day", ("2026-11-23T00:00:00Z", "2026-11-24T00:00:00Z"))])  # the UTC day of the wallet's clock
def test_the_sdk_reads_every_field_a_budget_refusal_spells_its_window_start_too(window, bounds):
    """The SDK's BudgetExceeded names the 429's fields (README: The refusal); the window's start,
    spelt beside resets_at on every path, was not among them (AttributeError)."""
    error, _ = _refused(window)
    http = error_response(_request("/v1/reservations"), error)
    with pytest.raises(BudgetExceeded) as refused:
        raise_for(httpx.Response(429, json=http.content))
    # by hand: a hold of $2.00 under a hard $1.00 budget, nothing used or held
    assert (refused.value.budget_id, refused.value.window, refused.value.limit, refused.value.used,
            refused.value.held, refused.value.requested) == ("cap", window, "1.00", "0.00", "0.00", "2.00")
    assert (refused.value.window_start, refused.value.resets_at) == bounds

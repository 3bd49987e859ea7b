"""The official clients retry a 409, a 429 and a 5xx by themselves (twice by default), unless the
answer says `x-should-retry: false`. A gateway refusal that the same call meets again however
long it waits says so; one that waiting may lift (a rolling budget's Retry-After, the ledger or the
upstream unavailable) does not."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.api.test_gateway import HI, admin, customer, fake, live  # noqa: F401 (fake, live: fixtures)


def counted(sdk: Any = openai) -> tuple[list[str], Any]:
    """An HTTP client for `sdk` (its own kind) that logs each request it sends (retries included)."""
    sent: list[str] = []
    return sent, sdk.DefaultHttpxClient(event_hooks={"request": [lambda request: sent.append(request.url.path)]})


@pytest.fixture
def budgeted(live) -> Iterator[tuple[str, str]]:  # noqa: F811
    """(url, key) of a customer whose month budget of 1 request is spent."""
    url, _ = live
    cid, key = customer(live)
    with admin(url) as http:
        made = http.post("/v1/budgets", json={"customer_id": cid, "window": "month", "metric": "requests",
                                              "limit": 1})
        assert made.status_code == 201, made.text
    openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0).chat.completions.create(
        model="gpt-test", messages=HI)
    yield url, key


def test_a_request_id_used_already_is_refused_once_not_three_times(live):  # noqa: F811
    """A reused x-tokentill-request-id is 409 idempotency_conflict whenever it comes: the clients
    sent it three times (two retries, 0.5 to 2 s of backoff each), each refused again."""
    url, _ = live
    _, key = customer(live)
    rid = f"gw-retry-{uuid.uuid4().hex[:8]}"
    openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0).chat.completions.create(
        model="gpt-test", messages=HI, extra_headers={"x-tokentill-request-id": rid})
    sent, http = counted()
    with pytest.raises(openai.ConflictError) as raised:
        openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, http_client=http).chat.completions.create(
            model="gpt-test", messages=HI, extra_headers={"x-tokentill-request-id": rid})
    assert raised.value.body["code"] == "idempotency_conflict"
    assert len(sent) == 1
    assert raised.value.response.headers["x-should-retry"] == "false"
    sent, http = counted(anthropic)
    with pytest.raises(anthropic.ConflictError):
        anthropic.Anthropic(base_url=f"{url}/anthropic", api_key=key, http_client=http).messages.create(
            model="claude-test", max_tokens=10, messages=HI, extra_headers={"x-tokentill-request-id": rid})
    assert len(sent) == 1


def test_a_budget_spent_for_its_month_is_refused_once_not_three_times(budgeted):
    url, key = budgeted
    sent, http = counted()
    with pytest.raises(openai.RateLimitError) as raised:
        openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, http_client=http).chat.completions.create(
            model="gpt-test", messages=HI)
    assert raised.value.body["code"] == "budget_exceeded" and "retry-after" not in raised.value.response.headers
    assert len(sent) == 1
    assert raised.value.response.headers["x-should-retry"] == "false"


def test_a_rolling_budgets_refusal_may_be_retried_after_its_wait(live):  # noqa: F811
    url, _ = live
    cid, key = customer(live)
    with admin(url) as http:
        assert http.post("/v1/budgets", json={"customer_id": cid, "window": "minute", "metric": "requests",
                                              "limit": 1}).status_code == 201
    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0)
    client.chat.completions.create(model="gpt-test", messages=HI)
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-test", messages=HI)
    assert "retry-after" in raised.value.response.headers and "x-should-retry" not in raised.value.response.headers

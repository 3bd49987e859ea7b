"""A naive datetime given to the SDK as a time (a journal or statement window, a settle's or a
release's `expires_at`) is in no time zone: the journal sent it as '2026-01-01T00:00:00' and the
server answered 422 only after a request, while `expires_at` was silently read as UTC (a deadline
an hour off for a caller in Berlin). Now each is refused before any request with a ValueError
naming the parameter, sync and async alike; an aware datetime is sent with its own offset."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from api.client import AsyncClient, Client

NAIVE = datetime(2026, 1, 1)
BERLIN_WINTER = timezone(timedelta(hours=1))
PAGE = {"entries": [], "postings": [], "next_cursor": None}


def _recording() -> tuple[list[httpx.Request], httpx.MockTransport]:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=PAGE)
    return sent, httpx.MockTransport(answer)


def _client(transport: httpx.MockTransport) -> Client:
    return Client("http://tt", "secret", transport=transport, spool=False, flush_spool=False)


@pytest.mark.parametrize(("call", "name"), [
    (lambda tt: tt.journal(start=NAIVE), "start"),
    (lambda tt: tt.journal(start=datetime(2026, 1, 1, tzinfo=UTC), end=NAIVE), "end"),
    (lambda tt: tt.statement_pages("income:platform:usage:USD", start=NAIVE), "start"),
    (lambda tt: tt.statement_pages("income:platform:usage:USD", end=NAIVE), "end"),
    (lambda tt: tt.settle("res_1", expires_at=NAIVE, usage={"input_tokens": 1}), "expires_at"),
    (lambda tt: tt.release("res_1", expires_at=NAIVE), "expires_at"),
])
def test_a_naive_time_is_refused_before_any_request(call, name) -> None:
    sent, transport = _recording()
    with _client(transport) as tt, pytest.raises(ValueError, match=f"^{name}: .*aware datetime"):
        call(tt)  # at the call, not at the first page read
    assert sent == []


def test_an_aware_time_is_sent_with_its_own_offset() -> None:
    sent, transport = _recording()
    with _client(transport) as tt:
        assert list(tt.journal(start=datetime(2026, 1, 1, tzinfo=BERLIN_WINTER),
                               end=datetime(2026, 2, 1, tzinfo=UTC))) == []
    [request] = sent
    assert request.url.params["from"] == "2026-01-01T00:00:00+01:00"  # 2025-12-31T23:00:00Z
    assert request.url.params["to"] == "2026-02-01T00:00:00+00:00"


@pytest.mark.parametrize(("call", "name"), [
    (lambda tt: tt.journal(start=NAIVE), "start"),
    (lambda tt: tt.journal(end=NAIVE), "end"),
    (lambda tt: tt.statement_pages("income:platform:usage:USD", start=NAIVE), "start"),
    (lambda tt: tt.settle("res_1", expires_at=NAIVE, usage={"input_tokens": 1}), "expires_at"),
    (lambda tt: tt.release("res_1", expires_at=NAIVE), "expires_at"),
])
async def test_the_async_client_refuses_a_naive_time_before_any_request(call, name) -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=PAGE)
    async with AsyncClient("http://tt", "secret", transport=httpx.MockTransport(answer), spool=False,
                           flush_spool=False) as tt:
        with pytest.raises(ValueError, match=f"^{name}: .*aware datetime"):
            made = call(tt)  # the journal's reads at the call; a settle's or a release's when awaited
            if hasattr(made, "__await__"):
                await made
    assert sent == []

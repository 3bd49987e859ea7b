"""The SDK's retry schedules, on a virtual clock: deadlines, backoff with jitter, Retry-After."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from api import delivery
from api.client import BudgetExceeded, Client, ImplausibleUsage, ServiceUnavailable, SettlementSpooled
from api.delivery import RetryPolicy, retry_after


class VirtualClock:
    """Stands in for the `time` module of api.delivery: sleeping only moves the clock."""

    def __init__(self) -> None:
        self.now, self.sleeps = 1000.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> VirtualClock:
    clock = VirtualClock()
    monkeypatch.setattr(delivery, "time", clock)
    return clock


def server(*answers: httpx.Response | type[Exception], requests: list[httpx.Request]) -> httpx.MockTransport:
    """A reserve always succeeds; every other call gets the next answer (the last one repeats)."""
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path == "/v1/reservations":
            return httpx.Response(201, json={"id": "res_1", "status": "held", "expires_at": None})
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, type):
            raise answer("connection refused", request=request)
        return answer

    return httpx.MockTransport(handle)


def problem(status: int, code: str, retry: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry} if retry is not None else {}
    return httpx.Response(status, headers=headers, json={"status": status, "code": code, "detail": code})


def client(transport: httpx.MockTransport, tmp_path, **kwargs) -> Client:
    return Client("http://tt", "secret", transport=transport, spool_dir=tmp_path, **kwargs)


def settle_once(tt: Client, ttl_seconds: int = 300) -> None:
    with tt.reserve("acme", "model-a", input_tokens=10, max_output_tokens=10, ttl_seconds=ttl_seconds) as r:
        r.record(input_tokens=10, output_tokens=5)


def test_full_jitter_stays_under_the_capped_exponential_ceiling():
    policy = RetryPolicy(backoff_s=0.1, max_backoff_s=1.0)
    for attempt in range(8):
        ceiling = min(1.0, 0.1 * 2**attempt)
        waits = [policy.wait(attempt, None) for _ in range(300)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > 0.8 * ceiling and min(waits) < 0.2 * ceiling, "spread over the whole range"
    assert 7.0 <= policy.wait(0, 7.0) <= 7.1 and 30.0 <= policy.wait(0, 500.0) <= 30.1, "Retry-After wins, capped"


def test_clients_told_the_same_retry_after_do_not_come_back_at_the_same_instant():
    """The server answers every contended call 503 with Retry-After: 1: clients that all waited
    exactly 1 s came back together, the same spike again. Each now waits at least what it was
    asked, plus a jitter of the backoff's ceiling."""
    policy = RetryPolicy(backoff_s=0.05, max_backoff_s=5.0, max_retry_after_s=30.0)
    for attempt, ceiling in ((0, 0.05), (3, 0.4), (10, 5.0)):
        waits = [policy.wait(attempt, 1.0) for _ in range(300)]
        assert all(1.0 <= w <= 1.0 + ceiling for w in waits)
        assert max(waits) > 1.0 + 0.8 * ceiling and min(waits) < 1.0 + 0.2 * ceiling, "spread"
    assert all(30.0 <= policy.wait(0, 500.0) <= 30.05 for _ in range(50)), "capped, then spread"


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after(httpx.Response(503, headers={"Retry-After": "3"})) == 3.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 18 <= retry_after(httpx.Response(503, headers={"Retry-After": later})) <= 20
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=20), usegmt=True)
    assert retry_after(httpx.Response(503, headers={"Retry-After": past})) == 0
    assert retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None
    assert retry_after(httpx.Response(503)) is None


@pytest.mark.parametrize(("ttl_seconds", "deadline_s"), [(300, 330.0), (1, 60.0)])
def test_a_settle_retries_until_the_hold_expires_plus_a_margin_and_never_under_a_minute(
        clock, tmp_path, ttl_seconds, deadline_s):
    requests: list[httpx.Request] = []
    tt = client(server(httpx.ConnectError, requests=requests), tmp_path)
    started = clock.now
    with pytest.raises(SettlementSpooled):
        settle_once(tt, ttl_seconds)
    assert deadline_s - 0.5 <= clock.now - started <= deadline_s
    assert max(clock.sleeps) <= 5.0, "each wait is capped"
    settles = [r for r in requests if r.url.path.endswith("/settle")]
    assert len(settles) > 10 and {r.headers["Idempotency-Key"] for r in settles} == {"res_1:settle:0"}


def test_a_settle_of_a_two_hour_hold_retries_past_a_thousand_attempts_until_its_deadline(clock, tmp_path):
    """A hold of 2 h and a ledger down throughout: its settle retries for 2 h 30 s, over a thousand
    attempts at 2.5 s on average. The 1,025th wait's ceiling, 0.05 * 2**1024, was past a float:
    OverflowError out of the block after 43 min, where SettlementSpooled was due."""
    requests: list[httpx.Request] = []
    tt = client(server(httpx.ConnectError, requests=requests), tmp_path)
    started = clock.now
    with pytest.raises(SettlementSpooled):
        settle_once(tt, 7200)
    assert 7229.5 <= clock.now - started <= 7230.0
    assert len([r for r in requests if r.url.path.endswith("/settle")]) > 1100
    assert max(clock.sleeps) <= 5.0 and RetryPolicy().wait(10**6, None) <= 5.0


def test_a_configured_deadline_replaces_the_default(clock, tmp_path):
    tt = client(server(httpx.ConnectError, requests=[]), tmp_path, settle_deadline_s=2.0)
    started = clock.now
    with pytest.raises(SettlementSpooled):
        settle_once(tt)
    assert 1.5 <= clock.now - started <= 2.0


def test_a_settle_waits_what_retry_after_asks_up_to_its_cap(clock, tmp_path):
    requests: list[httpx.Request] = []
    answers = (problem(503, "service_unavailable", "120"), problem(429, "rate_limited", "2"),
               httpx.Response(200, json={"id": "res_1", "status": "settled"}))
    tt = client(server(*answers, requests=requests), tmp_path, max_retry_after_s=30.0)
    settle_once(tt)
    assert 30.0 <= clock.sleeps[0] <= 30.05 and 2.0 <= clock.sleeps[1] <= 2.1 and len(clock.sleeps) == 2
    assert not list(tmp_path.glob("*.jsonl")), "delivered in the end: struck off the spool"


def test_a_reserve_waits_out_a_short_retry_after_within_its_budget(clock, tmp_path):
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return problem(503, "service_unavailable", "1")
        return httpx.Response(201, json={"id": "res_1", "status": "held"})

    tt = Client("http://tt", "secret", transport=httpx.MockTransport(handle), spool_dir=tmp_path)
    tt.post("/v1/reservations", {"customer_id": "acme"})
    assert len(clock.sleeps) == 1 and 1.0 <= clock.sleeps[0] <= 1.05 and len(requests) == 2


def test_a_read_told_to_come_back_later_than_its_budget_answers_at_once(clock, tmp_path):
    requests: list[httpx.Request] = []
    tt = client(server(problem(503, "service_unavailable", "30"), requests=requests), tmp_path)
    with pytest.raises(ServiceUnavailable) as refused:
        tt.get("/v1/customers/acme/wallet")
    assert refused.value.retry_after == 30.0
    assert clock.sleeps == [] and len(requests) == 1


def test_a_reserve_refused_by_a_budget_is_not_retried(clock, tmp_path):
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return problem(429, "budget_exceeded", "60")

    tt = Client("http://tt", "secret", transport=httpx.MockTransport(handle), spool_dir=tmp_path)
    with pytest.raises(BudgetExceeded) as refused, tt.reserve("acme", "model-a", input_tokens=1, max_output_tokens=1):
        pass
    assert refused.value.retry_after == 60.0
    assert clock.sleeps == [] and len(requests) == 1


@pytest.mark.parametrize("limited", [
    problem(429, "rate_limited", "1"),
    httpx.Response(429, headers={"Retry-After": "1"}, text="Too Many Requests"),  # a proxy's, not a problem
], ids=["rate_limited", "a proxy's"])
def test_a_call_rate_limited_with_a_short_retry_after_waits_it_out(clock, tmp_path, limited):
    """A 429 that is not a budget's refusal (a rate limit in front of the server) says nothing about
    the call: it is waited out within the budget, as a 503 is. It was raised at once."""
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return limited
        return httpx.Response(201 if request.method == "POST" else 200, json={"id": "res_1", "status": "held"})

    tt = Client("http://tt", "secret", transport=httpx.MockTransport(handle), spool_dir=tmp_path)
    assert tt.get("/v1/reservations/res_1")["status"] == "held"
    assert tt.post("/v1/reservations", {"customer_id": "acme"})["status"] == "held"
    assert len(clock.sleeps) == 1 and 1.0 <= clock.sleeps[0] <= 1.05 and len(requests) == 3


def test_a_settle_whose_body_the_server_timed_out_is_sent_again(clock, tmp_path):
    # The server's connection guard answers 408 when a request body stalls, before the
    # application sees the request: nothing was done, and the same Idempotency-Key may go again.
    requests: list[httpx.Request] = []
    answers = (problem(408, "request_timeout"), httpx.Response(200, json={"id": "res_1", "status": "settled"}))
    tt = client(server(*answers, requests=requests), tmp_path)
    settle_once(tt)
    settles = [r for r in requests if r.url.path.endswith("/settle")]
    assert len(settles) == 2 and {r.headers["Idempotency-Key"] for r in settles} == {"res_1:settle:0"}
    assert not list(tmp_path.glob("*.jsonl")), "delivered: nothing left in the spool"


def test_a_reserve_whose_body_the_server_timed_out_is_sent_again(clock, tmp_path):
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return problem(408, "request_timeout")
        return httpx.Response(201, json={"id": "res_1", "status": "held"})

    tt = Client("http://tt", "secret", transport=httpx.MockTransport(handle), spool_dir=tmp_path)
    assert tt.post("/v1/reservations", {"customer_id": "acme"})["status"] == "held"
    assert len(requests) == 2 and requests[0].headers["Idempotency-Key"] == requests[1].headers["Idempotency-Key"]


@pytest.mark.parametrize(("status", "outcome"), [
    (200, "delivered"), (409, "rejected"), (422, "rejected"), (401, "kept"), (404, "kept"), (408, "kept"),
    (500, "kept"), (429, "unreachable"), (503, "unreachable")])
def test_a_flushed_record_is_struck_off_kept_or_left_for_an_unreachable_server(status, outcome):
    # 408 is retried while delivering, but a flush that meets it keeps the record and goes on
    # with the next one (the server answered; it is not unreachable).
    assert delivery.flush_outcome(httpx.Response(status)) == outcome


async def test_the_async_loops_sleep_on_the_event_loop_and_spool_once(clock):
    # The blocking client runs these same coroutines; here they run as the AsyncClient runs them.
    answers = [httpx.ConnectError("refused"), problem(503, "service_unavailable", "2"),
               httpx.Response(200, json={"status": "settled"})]
    slept: list[float] = []
    written: list[delivery.Failure] = []
    struck: list[bool] = []

    async def send() -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def spool(failure: delivery.Failure) -> bool:
        written.append(failure)
        return True

    async def unspool() -> None:
        struck.append(True)

    schedule = delivery.Schedule(RetryPolicy(backoff_s=0.05), deadline_s=60.0)
    response = await delivery.adeliver(send, schedule, spool=spool, unspool=unspool, sleep=sleep)
    assert response.status_code == 200
    assert len(slept) == 2 and 2.0 <= slept[1] <= 2.1 and clock.sleeps == []
    assert len(written) == 1 and isinstance(written[0], httpx.ConnectError) and struck == [True]

    answers[:] = [problem(502, "bad_gateway"), httpx.ConnectError("refused")]
    with pytest.raises(httpx.ConnectError):
        await delivery.acall(send, delivery.Schedule(RetryPolicy(), retries=1), sleep=sleep)


def test_an_implausible_settle_raises_its_typed_error_once_and_is_not_spooled(clock, tmp_path):
    requests: list[httpx.Request] = []
    tt = client(server(problem(422, "implausible_usage"), requests=requests), tmp_path)
    with pytest.raises(ImplausibleUsage) as raised:
        settle_once(tt)
    assert raised.value.status == 422 and len(requests) == 2  # the reserve, and one settle
    assert not list(tmp_path.glob("*.jsonl"))

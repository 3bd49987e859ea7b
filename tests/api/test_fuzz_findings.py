"""What a fuzzing session found by hand past schemathesis (round 12): each is a bad input that
answered something other than a clear problem+json naming what to fix, and that now does."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from litestar.testing import AsyncTestClient

from tests.api.test_sdk_durability import ADMIN as LIVE_ADMIN

ADMIN = {"Authorization": "Bearer test-admin"}


async def _customer(client: AsyncTestClient, tag: str, billing: str = "prepaid") -> str:
    """A customer on a book of $10/M input and $20/M output tokens for model-a, with $100.00."""
    book = {"id": f"book-{tag}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
            "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "10.00"},
                      {"id": "out", "model": "model-a", "token_type": "output", "price": "20.00"}]}
    assert (await client.post("/v1/price-books", json=book)).status_code == 201
    cid = f"fz-{billing}-{tag}"
    created = await client.post("/v1/customers", json={"id": cid, "price_book": f"book-{tag}", "billing": billing})
    assert created.status_code == 201, created.text
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "100.00"})).status_code == 201
    return cid


async def _available(client: AsyncTestClient, cid: str) -> str:
    return (await client.get(f"/v1/customers/{cid}/wallet")).json()["available"]


def _live_customer(http: httpx.Client, book: str, tag: str) -> str:
    cid = f"fz-live-{tag}"
    assert http.post("/v1/customers", json={"id": cid, "price_book": book}).status_code == 201
    assert http.post(f"/v1/customers/{cid}/topups", json={"amount": "100.00"}).status_code == 201
    return cid


# Litestar's test transport folds repeated header lines into one ("a, b"), as a proxy may; two
# separate lines reach the app only through a real server.
def test_two_idempotency_keys_on_one_request_are_refused_naming_the_header(live, tag):
    """Two `Idempotency-Key` lines mean two keys: the first was kept silently, so a proxy or log
    that reads the last one keys the call differently from the server. Refused, nothing posted."""
    url, book = live
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {LIVE_ADMIN}"}) as http:
        cid = _live_customer(http, book, tag)
        headers = [("Idempotency-Key", f"first-{tag}"), ("Idempotency-Key", f"second-{tag}")]
        answer = http.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"}, headers=headers)
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["code"] == "validation_error"
        assert [f["field"] for f in answer.json()["fields"]] == ["Idempotency-Key"]
        assert http.get(f"/v1/customers/{cid}/wallet").json()["available"] == "100.00"
        # neither key was taken: each is free for a call of its own
        for key in (f"first-{tag}", f"second-{tag}"):
            single = http.post(f"/v1/customers/{cid}/topups", json={"amount": "2.00"},
                               headers={"Idempotency-Key": key})
            assert single.status_code == 201, single.text
        assert http.get(f"/v1/customers/{cid}/wallet").json()["available"] == "104.00"


def test_two_idempotency_keys_are_refused_on_a_rerate_too(live, tag):
    """`POST /v1/rerate` reads its key by itself; the same rule holds there."""
    url, book = live
    rerate = {"price_book": book, "version": "2026-01-01T00:00:00Z", "from": "2026-01-01T00:00:00Z",
              "to": "2026-02-01T00:00:00Z", "mode": "apply"}
    headers = [("Authorization", f"Bearer {LIVE_ADMIN}"), ("Idempotency-Key", f"a-{tag}"),
               ("Idempotency-Key", f"b-{tag}")]
    answer = httpx.post(f"{url}/v1/rerate", json=rerate, headers=headers)
    assert answer.status_code == 422, answer.text
    assert [f["field"] for f in answer.json()["fields"]] == ["Idempotency-Key"]


# model-a: $10/M input, $20/M output. 10^15 of each: 10^15 * 10/10^6 + 10^15 * 20/10^6 = $30,000,000,000,
# 3 * 10^19 atomic units of USD (10^-9), past the 2^63 - 1 (about 9.22 * 10^18) a posting holds.
HUGE = {"input_tokens": 10**15, "output_tokens": 10**15}


def _names_usage_field(answer: httpx.Response, field: str) -> None:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["code"] == "validation_error"
    assert [f["field"] for f in problem["fields"]] == [field]
    assert "30000000000" in problem["detail"], problem["detail"]  # the charge, in dollars


async def test_a_settle_whose_charge_no_posting_can_hold_names_the_usage_and_leaves_the_hold(client, tag):
    """The charge past 63 bits was a 422 saying "posting amount must be non-zero and fit in 63
    bits" with no field: now it names `usage` and the charge, and the hold stays open, uncharged,
    forced or not."""
    cid = await _customer(client, tag, billing="postpaid")
    held = await client.post("/v1/reservations", json={"customer_id": cid, "request_id": f"r-{tag}",
                                                       "model": "model-a", "amount": "0.50"})
    assert held.status_code == 201, held.text
    rid = held.json()["id"]
    answer = await client.post(f"/v1/reservations/{rid}/settle", json={"usage": HUGE, "final": True})
    _names_usage_field(answer, "usage")
    forced = await client.post(f"/v1/reservations/{rid}/settle", json={"usage": HUGE, "final": True, "force": True})
    _names_usage_field(forced, "usage")  # an admin's force cannot make the ledger carry it
    state = (await client.get(f"/v1/reservations/{rid}")).json()
    assert (state["status"], state["charged"]) == ("held", "0.00")
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["reserved"], wallet["receivable"]) == ("99.50", "0.50", "0.00")
    # the same reservation settles normally afterwards: 1,000 input tokens, $0.01
    done = await client.post(f"/v1/reservations/{rid}/settle", json={"usage": {"input_tokens": 1000}, "final": True})
    assert (done.status_code, done.json()["charged"]) == (200, "0.01"), done.text


async def test_a_usage_event_whose_charge_no_posting_can_hold_is_rejected_naming_the_usage(client, tag):
    cid = await _customer(client, tag, billing="postpaid")
    event = {"event_id": f"e-{tag}", "customer_id": cid, "model": "model-a", "timestamp": "2026-06-01T00:00:00Z",
             "usage": HUGE}
    answer = await client.post("/v1/usage-events", json=[event])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["accepted"], body["duplicates"]) == (0, 0)
    [rejected] = body["rejected"]
    assert rejected["code"] == "validation_error"
    assert rejected["detail"].startswith("usage: ") and "30000000000" in rejected["detail"], rejected
    assert await _available(client, cid) == "100.00"


async def test_a_hold_no_posting_can_hold_names_the_estimate(client, tag):
    """A postpaid customer's hold may run into the receivable without limit; one past 63 bits
    was the same field-less 422. Its estimate is named (its input tokens: 10^15 x $10/M =
    $10,000,000,000 of prompt alone, past $9,223,372,036.854775807, since 24c13fb0); nothing is held."""
    cid = await _customer(client, tag, billing="postpaid")
    answer = await client.post("/v1/reservations", json={
        "customer_id": cid, "request_id": f"r-{tag}", "model": "model-a",
        "estimate": {"input_tokens": 10**15, "max_output_tokens": 10**15}})
    _names_usage_field(answer, "estimate.input_tokens")
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["reserved"], wallet["receivable"]) == ("100.00", "0.00", "0.00")


async def test_an_early_close_years_ahead_is_refused_not_run_for_hours(client, tag):
    """`{"until": "8961-05-30…", "early": true}` closed one monthly period after another, ~83,000
    invoices for one customer: the call timed out at 120 s and the server went on for hours. An
    early close reaches at most two years (731 days) past the clock; further is a 422 naming
    `until`, nothing closed. Two years less a month still closes, period by period."""
    cid = await _customer(client, tag, billing="postpaid")
    start = (await client.get(f"/v1/customers/{cid}")).json()["current_period_start"]
    for until in ((datetime.now(UTC) + timedelta(days=732)).isoformat(), "8961-05-30T05:13:48Z"):
        refused = await client.post("/v1/billing/close", json={"until": until, "early": True, "customer_id": cid})
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert [f["field"] for f in refused.json()["fields"]] == ["until"]
        assert (await client.get(f"/v1/customers/{cid}")).json()["current_period_start"] == start
    until = datetime.now(UTC) + timedelta(days=700)
    closed = await client.post("/v1/billing/close", json={"until": until.isoformat(), "early": True,
                                                          "customer_id": cid})
    assert closed.status_code == 200, closed.text
    assert len(closed.json()["closed"]) >= 22  # a monthly period each, from this one on


def test_two_authorization_lines_are_refused_whichever_comes_first(live, tag):
    """Two `Authorization` lines are two keys: the first was taken, so a proxy that checks the
    last one let through a call the server ran as another key. 401, nothing done."""
    url, book = live
    admin = f"Bearer {LIVE_ADMIN}"
    with httpx.Client(base_url=url, headers={"Authorization": admin}) as http:
        cid = _live_customer(http, book, tag)
    for lines in ([admin, "Bearer not-a-key"], ["Bearer not-a-key", admin], [admin, admin]):
        answer = httpx.post(f"{url}/v1/customers/{cid}/topups", json={"amount": "1.00"},
                            headers=[("Authorization", line) for line in lines])
        assert answer.status_code == 401, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["code"] == "unauthorized"
    with httpx.Client(base_url=url, headers={"Authorization": admin}) as http:
        assert http.get(f"/v1/customers/{cid}/wallet").json()["available"] == "100.00"

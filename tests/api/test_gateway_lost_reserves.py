"""A gateway call's reserve the ledger did not answer (ab09a4e): the gateway asks it again under the
same request id, and goes on with the hold it kept; left unanswered, it answers 503 and a task of
its own (Gateway.reclaim) releases the hold, if one was taken, once the ledger answers. Faults are
injected at the engine's seam with the database (Engine._execute_lane), as in
test_gateway_retries.py; the official clients against the fake upstream. Charges worked by hand
from test_gateway's book: per 1M, $10 input, $1 cached, $12.50 cache write, $20 output, and
$0.001 a call."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import psycopg
import pytest

from api.bench import fake_upstream as fk
from tests.api.test_gateway import (  # noqa: F401 (fixtures)
    CACHED,
    CALL,
    CHAT_CHARGE,
    HI,
    IN,
    MESSAGES_CHARGE,
    OUT,
    M,
    admin,
    charge_usage,
    charged,
    customer,
    fake,
    live,
    tool_book,
    wallet,
)
from tests.api.test_gateway_edges import WHOLE, body, model, post_and_leave, start, upstream  # noqa: F401 (upstream: a fixture)
from tests.api.test_gateway_retries import counted, held_upstream, reserve_faults, scripted  # noqa: F401 (scripted: a fixture)

HOLD = (9 * Decimal("12.5") + 1000 * OUT) / M + CALL  # the hold of HI: 9 prompt tokens at the write price, 1,000 out


def _reservations(url: str, rid: str) -> int:
    """How many reservations the request id names (its audit trace: 404 for none)."""
    with admin(url) as http:
        answer = http.get(f"/v1/audit/charges/{rid}")
    assert answer.status_code in (200, 404), answer.text
    return 0 if answer.status_code == 404 else 1


def _asked(tries: list[str], count: int) -> None:
    """Until the engine has been asked the reserve `count` times (the reclaim's first waits 0.5 s),
    then a moment for what that answer leads to (a release) to be written."""
    deadline = time.monotonic() + 15
    while len(tries) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(tries) >= count, tries
    time.sleep(0.5)


def test_an_unanswered_reserve_never_taken_is_not_taken_by_its_reclaim_nor_alerts(live, database_url, monkeypatch):  # noqa: F811
    """The ledger was down for each of the gateway's 3 tries (nothing written): 503, and the
    reclaim asked the same reserve once the ledger answered. Was: that reserve TOOK the hold
    ($0.0211125: 9 x 12.50 + 1,000 x 20 per 1M + 0.001) for a call nobody was making, then
    released it: a reservation under the caller's id, the customer's balance.low (10.00 - 0.0211125
    = 9.9788875 < its 9.99 threshold) and the soft budget's 50 % (0.0211125 >= 0.02 of 0.04)
    sent for it. Now the reclaim asks for the kept answer only: nothing held, nothing written, no
    alert; the id free, its resend goes on and is charged once, 0.0100 (800 x 10 + 200 x 1 + 40 x
    20 per 1M + 0.001)."""
    url, book = live
    cid = f"gw-{uuid.uuid4().hex[:10]}"
    with admin(url) as http:
        assert (
            http.post(
                "/v1/customers",
                json={"id": cid, "currency": "USD", "price_book": book, "low_balance_threshold": "9.99"},
            ).status_code
            == 201
        )
        assert http.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"}).status_code == 201
        key = http.post("/v1/api-keys", json={"scope": "inference", "customers": [cid]}).json()["key"]
        made = http.post(
            "/v1/budgets",
            json={
                "customer_id": cid,
                "window": "day",
                "metric": "money",
                "limit": "0.04",
                "mode": "soft",
                "thresholds": [50],
            },
        )
        assert made.status_code == 201, made.text
    assert HOLD == Decimal("0.0211125") and Decimal("10") - HOLD < Decimal("9.99")
    assert HOLD * 100 >= 50 * Decimal("0.04")
    rid = f"gw-never-{uuid.uuid4().hex[:8]}"
    tries = reserve_faults(monkeypatch, lambda c: c.request_id == rid, ["down", "down", "down"])
    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="gpt-test", messages=HI, extra_headers={"x-tokentill-request-id": rid})
    assert raised.value.status_code == 503 and raised.value.body["code"] == "service_unavailable"
    _asked(tries, 4)
    assert tries == ["down", "down", "down", "ok"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        topics = [t for (t,) in conn.execute("SELECT topic FROM outbox WHERE customer_id = %s", (cid,))]
    with admin(url) as http:
        budget = http.get(f"/v1/budgets/{made.json()['id']}").json()
    seen = (wallet(url, cid), _reservations(url, rid), topics, budget["used"], budget["held"])
    assert seen == ((Decimal("10"), 0), 0, [], "0.00", "0.00"), seen
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=HI, extra_headers={"x-tokentill-request-id": rid}
    )
    assert Decimal(raw.headers["x-tokentill-charged"]) == CHAT_CHARGE == Decimal("0.0100")
    assert wallet(url, cid) == (Decimal("10") - CHAT_CHARGE, 0) == (Decimal("9.9900"), 0)


def test_a_reclaim_whose_own_answer_is_lost_leaves_nothing_held(live, monkeypatch):  # noqa: F811
    """Nothing written by the gateway's 3 tries; the reclaim's first ask committed and its answer
    was lost too. Was: that ask took the $0.0211125 hold, and the reclaim's next ask, answered by
    it as a replay made after the 503, took it for a resend of the caller's and left it held,
    by nobody, for its 600 s. Now the reclaim writes nothing: $10.00 available, 0 held, no
    reservation."""
    url, _ = live
    cid, key = customer(live)
    rid = f"gw-never-{uuid.uuid4().hex[:8]}"
    tries = reserve_faults(monkeypatch, lambda c: c.request_id == rid, ["down", "down", "down", "lost"])
    with pytest.raises(openai.APIStatusError) as raised:
        openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0).chat.completions.create(
            model="gpt-test", messages=HI, extra_headers={"x-tokentill-request-id": rid}
        )
    assert raised.value.status_code == 503
    _asked(tries, 5)  # the reclaim asks again 1 s after its lost answer
    assert tries == ["down", "down", "down", "lost", "ok"]
    assert wallet(url, cid, timeout=3) == (Decimal("10"), 0) and _reservations(url, rid) == 0


def test_a_call_on_a_hold_its_reserve_kept_is_charged_at_the_tier_that_hold_assumed(live, fake, monkeypatch):  # noqa: F811
    """A call leaving its tier to OpenAI ("auto"), held at the dearest tier the book prices
    (priority: $40 per 1M output), whose reserve's answer was lost after its COMMIT: asked again,
    the kept hold answered without the tier it was priced at (a replay kept no `held_at`), and an
    answer that does not tell its tier was charged at the standard one: 0.0100 (observed), below
    the hold's priority. Now the replay carries the tier its hold was priced at, and the call is
    charged at it, recorded as assumed, as without the fault: (800 x 10 + 200 x 1 + 40 x 40) per
    1M + 0.001 = 0.0098 + 0.001 = 0.0108."""
    url, _ = live
    priority = Decimal("40")
    cid, key = customer(
        (
            url,
            tool_book(
                url,
                {"id": "out-priority", "token_type": "output", "price": "40", "match": {"service_tier": "priority"}},
            ),
        )
    )
    rid = f"gw-tier-{uuid.uuid4().hex[:8]}"
    tries = reserve_faults(monkeypatch, lambda c: c.request_id == rid, ["lost"])
    fake.fake.auto_tier = None
    try:
        raw = openai.OpenAI(
            base_url=f"{url}/openai/v1", api_key=key, max_retries=0
        ).chat.completions.with_raw_response.create(
            model="gpt-test", messages=HI, max_tokens=100, extra_headers={"x-tokentill-request-id": rid}
        )
    finally:
        fake.fake.auto_tier = fk.AUTO_TIER
    assert raw.parse().service_tier is None and tries == ["lost", "ok"]
    usage = charge_usage(url, rid)
    assert usage["assumed"] == usage["dimensions"] == {"service_tier": "priority"}
    assert (800 * IN + 200 * CACHED + 40 * priority) / M + CALL == Decimal("0.0108")
    assert charged(url, rid) == Decimal("0.0108")
    assert wallet(url, cid) == (Decimal("10") - Decimal("0.0108"), 0)


@pytest.mark.parametrize(
    ("provider", "stream"),
    [("openai", True), ("anthropic", False), ("anthropic", True)],
    ids=["openai-stream", "anthropic", "anthropic-stream"],
)
def test_a_lost_reserve_answer_goes_on_for_streams_and_anthropic_charged_once(live, monkeypatch, provider, stream):  # noqa: F811
    """ab09a4e's case (committed, its answer lost) on the other paths: a streamed chat, and the
    Anthropic mount (whole and streamed). One request, one charge: the chat's 0.0100, the
    message's 0.011525 (900 x 10 + 100 x 1 + 50 x 12.50 + 40 x 20 per 1M + 0.001)."""
    url, _ = live
    cid, key = customer(live)
    rid = f"gw-lost-{uuid.uuid4().hex[:8]}"
    tries = reserve_faults(monkeypatch, lambda c: c.request_id == rid, ["lost"])
    headers = {"x-tokentill-request-id": rid}
    sent, http = counted(openai if provider == "openai" else anthropic)
    if provider == "openai":
        chunks = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, http_client=http).chat.completions.create(
            model="gpt-test", messages=HI, stream=True, extra_headers=headers
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        expected = CHAT_CHARGE
    else:
        client = anthropic.Anthropic(base_url=f"{url}/anthropic", api_key=key, http_client=http)
        if stream:
            with client.messages.stream(
                model="claude-test", max_tokens=1000, messages=HI, extra_headers=headers
            ) as events:
                assert events.get_final_message().content
        else:
            assert client.messages.create(
                model="claude-test", max_tokens=1000, messages=HI, extra_headers=headers
            ).content
        expected = MESSAGES_CHARGE
    assert (CHAT_CHARGE, MESSAGES_CHARGE) == (Decimal("0.0100"), Decimal("0.011525"))
    assert len(sent) == 1 and tries == ["lost", "ok"]
    assert charged(url, rid) == expected
    assert wallet(url, cid) == (Decimal("10") - expected, 0)


def test_a_gateway_made_id_whose_reserve_stays_unanswered_is_retried_by_the_client_under_a_new_one(live, monkeypatch):  # noqa: F811
    """No x-tokentill-request-id: the gateway makes one per request. The first request's reserve
    committed, its answer lost, and the ledger then down for the gateway's 2 more tries: 503 with
    no x-should-retry: false (the id was the gateway's), so the openai client sends it again, under
    a new id of the gateway's, which goes on. Charged once, 0.0100; the first hold ($0.0211125)
    released by the reclaim: 10.00 - 0.0100 = 9.9900 available, 0 held; 2 requests, 5 asks."""
    url, _ = live
    cid, key = customer(live)
    tries = reserve_faults(monkeypatch, lambda c: c.customer_id == cid, ["lost", "down", "down"])
    sent, http = counted()
    raw = openai.OpenAI(
        base_url=f"{url}/openai/v1", api_key=key, http_client=http
    ).chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
    assert len(sent) == 2 and Decimal(raw.headers["x-tokentill-charged"]) == CHAT_CHARGE
    _asked(tries, 5)  # 3 of the first request, 1 of the second, 1 of the reclaim
    assert tries == ["lost", "down", "down", "ok", "ok"]
    assert wallet(url, cid) == (Decimal("9.9900"), 0)


@pytest.mark.parametrize("plan", [["lost", "lost", "lost"], ["down", "down", "down"], ["lost", "down", "lost"],
                                  ["lost", "ok"], ["down", "lost", "ok"]])
def test_a_call_under_an_id_another_call_here_holds_is_409_however_its_reserve_goes_unanswered(
        scripted, upstream, monkeypatch, plan):  # noqa: F811
    """Call A under the caller's own request id holds and is upstream; call B, the same id and body,
    sent meanwhile, has its reserves go as `plan` says: "lost" ran (a conflict: its hash carries B's
    own nonce, 92d457c, so A's kept answer is no replay of B's) and its answer lost, "down" never
    ran, "ok" answered (the conflict). Whatever the interleaving, the truth is 409: the id is A's,
    and B's reserve took nothing (A's, answered first, owns the id). Was: after 3 unanswered asks,
    503 service_unavailable "the ledger did not answer this call's hold ... send the call again
    under a new request id", and a reclaim that met A's hold under another hash (a 5th ask). Now
    409 idempotency_conflict whenever another call of this gateway goes on with a hold under the
    id (an answered ask was 409 already: guard); B is never sent upstream, charged 0, x-should-retry
    false; nothing reclaimed (no ask after B's). A's hold stays held while A is upstream, (9 prompt
    tokens x 12.50 + 50 x 20) per 1M + 0.001 = 0.0011125 + 0.001 = 0.0021125 (9.9978875 available),
    and A is answered 200 and charged once, CHAT_CHARGE (1,000 prompt, 200 of them cached, 40 out:
    (800 x 10 + 200 x 1 + 40 x 20) per 1M + 0.001 = 0.0100): 9.99 available, nothing held, one
    reservation."""
    url, _ = scripted
    cid, key = customer(scripted)
    rid = f"gw-twice-lost-{uuid.uuid4().hex[:8]}"
    name, arrived, release, send, answers = held_upstream(upstream, url, key, rid)
    tries = reserve_faults(monkeypatch, lambda c: c.request_id == rid, ["ok", *plan])
    first = threading.Thread(target=send, args=("A",))
    first.start()
    try:
        assert arrived.wait(30)
        send("B")
        _asked(tries, 1 + len(plan))  # A's reserve, B's; and the 0.5 s a reclaim would wait before its ask
        time.sleep(0.5)
        with admin(url) as http:
            held = http.get(f"/v1/customers/{cid}/wallet").json()
    finally:
        release.set()
        first.join(30)
    assert tries == ["ok", *plan], tries
    refused = answers["B"]
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "idempotency_conflict", refused.text
    assert refused.headers["x-should-retry"] == "false" and refused.headers["x-tokentill-charged"] == "0"
    assert (9 * Decimal("12.5") + 50 * OUT) / M + CALL == Decimal("0.0021125")
    assert (Decimal(held["available"]), Decimal(held["reserved"])) == (Decimal("9.9978875"), Decimal("0.0021125"))
    assert answers["A"].status_code == 200, answers["A"].text
    assert Decimal(answers["A"].headers["x-tokentill-charged"]) == CHAT_CHARGE == Decimal("0.0100")
    assert sum(call["model"] == name for call in upstream.fake.calls) == 1
    assert charged(url, rid) == CHAT_CHARGE and _reservations(url, rid) == 1
    assert wallet(url, cid) == (Decimal("9.99"), 0)


@pytest.mark.parametrize("ending", ["upstream_error", "cut_before_its_body", "caller_gone"])
def test_a_call_ended_by_a_fault_no_longer_holds_its_id_here(scripted, upstream, monkeypatch, ending):  # noqa: F811
    """Guard (review of bd1b1ccb): Gateway.holding counts a call under the caller's own id from its
    reserve's answer to its end, whatever ends it: an upstream 500, an answer cut before its body,
    the caller hanging up while the upstream is still at it (its exchange cancelled). Once that call
    A has ended (its hold released, nothing reserved), call B under the same id whose 3 reserve asks
    go unanswered is the 503 of an id no call here holds (service_unavailable, x-should-retry false
    under the caller's id, charged 0, never sent upstream); a count left behind would make it 409
    idempotency_conflict "another call under it holds and goes on", with no call going on."""
    url, _ = scripted
    cid, key = customer(scripted)
    failed = json.dumps({"error": {"message": "boom", "type": "server_error"}}).encode()
    arrived, release = threading.Event(), threading.Event()

    async def ends(send: Any, receive: Any) -> None:
        arrived.set()
        if ending == "upstream_error":
            await start(send, b"application/json", len(failed), status=500)
            await body(send, failed, more=False)
        elif ending == "cut_before_its_body":
            await start(send, b"application/json", len(WHOLE))
            raise ConnectionAbortedError("the upstream drops the answer before its body")
        else:
            await asyncio.to_thread(release.wait, 30)
            await start(send, b"application/json", len(WHOLE))
            await body(send, WHOLE, more=False)

    name = model(upstream, ends)
    payload = {"model": name, "messages": HI, "max_tokens": 50}
    headers = {"Authorization": f"Bearer {key}"}
    try:
        if ending == "caller_gone":
            rid = post_and_leave(url, key, payload, arrived.is_set)
        else:
            rid = f"gw-ended-{uuid.uuid4().hex[:8]}"
            first = httpx.post(f"{url}/openai/v1/chat/completions", json=payload, timeout=30,
                               headers={**headers, "x-tokentill-request-id": rid})
            assert first.status_code in (500, 502), first.text
    finally:
        release.set()
    assert wallet(url, cid)[1] == 0  # A's hold released: A has ended
    time.sleep(0.5)  # A's exchange leaves its finally after its release
    tries = reserve_faults(monkeypatch, lambda c: c.request_id == rid, ["down", "down", "down"])
    second = httpx.post(f"{url}/openai/v1/chat/completions", json=payload, timeout=30,
                        headers={**headers, "x-tokentill-request-id": rid})
    assert tries[:3] == ["down", "down", "down"], tries
    assert second.status_code == 503, second.text
    assert second.json()["error"]["code"] == "service_unavailable"
    assert second.headers["x-should-retry"] == "false" and second.headers["x-tokentill-charged"] == "0"
    assert sum(call["model"] == name for call in upstream.fake.calls) == 1

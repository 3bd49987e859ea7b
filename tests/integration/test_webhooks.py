"""Webhooks against a real local HTTP receiver: every outbox event reaches each subscribed
endpoint, signed per Standard Webhooks (verified with the `standardwebhooks` package), at least
once under one event id, retried with backoff, logged, re-driven on request, and an endpoint
that fails for its whole retry window is disabled with an event of its own."""
from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from standardwebhooks import Webhook, WebhookVerificationError

from api.app import create_app
from api.demo import PRICE_BOOK
from api.settings import Settings
from tests.webhook_receiver import Received, for_customer, receiver
from wallets.webhooks.rules import AddressPolicy, parse_networks

ADMIN = {"Authorization": "Bearer webhooks-admin"}
LOOPBACK = AddressPolicy(parse_networks("127.0.0.0/8"))  # the receivers listen there
FAST = Settings(admin_key="webhooks-admin", scheduler=False, webhook_poll_s=0.05, webhook_backoff_s=0.2,
                webhook_timeout_s=2.0, webhook_addresses=LOOPBACK)
# Every endpoint a test makes is deleted after it: left enabled (its receiver closed), it was handed
# every event of every later file. An endpoint's log read here is that of the test's own event: a
# new endpoint is also handed what the fan-out had not handed out yet (another file's events,
# written while no app ran), which joined "the" delivery of its log.
pytestmark = pytest.mark.usefixtures("no_endpoint_left")


@pytest.fixture
async def client(database_url):
    async with AsyncTestClient(app=create_app(FAST, database_url)) as c:
        c.headers.update(ADMIN)
        yield c


async def _endpoint(client, url: str, topics: list[str], **extra) -> dict:
    response = await client.post("/v1/webhook-endpoints", json={"url": url, "topics": topics, **extra})
    assert response.status_code == 201, response.text
    return response.json()


async def _low_balance(client) -> str:
    """A customer whose balance falls below its threshold: one balance.low event."""
    customer, book = f"wh-{uuid.uuid4().hex[:10]}", f"wh-book-{uuid.uuid4().hex[:8]}"
    assert (await client.post("/v1/price-books", json={**PRICE_BOOK, "id": book})).status_code == 201
    assert (await client.post("/v1/customers", json={"id": customer, "currency": "USD", "price_book": book,
                                                     "low_balance_threshold": "5.00"})).status_code == 201
    assert (await client.post(f"/v1/customers/{customer}/topups", json={"amount": "6.00"})).status_code == 201
    reserved = await client.post("/v1/reservations", json={
        "customer_id": customer, "request_id": "r1", "model": "model-a", "amount": "2.00"})
    assert reserved.status_code == 201, reserved.text
    return customer


def _verified(secret: str, got: Received) -> dict:
    return Webhook(secret).verify(got.body, got.headers)


async def test_an_event_arrives_signed_and_verifies_with_standardwebhooks(client):
    with receiver() as hook:
        endpoint = await _endpoint(client, hook.url, ["balance.low"], description="finance")
        assert endpoint["secret"].startswith("whsec_") and endpoint["status"] == "enabled"
        customer = await _low_balance(client)
        [got] = await hook.wait_for(for_customer(customer))
        event = _verified(endpoint["secret"], got)
        assert event["type"] == "balance.low" and event["data"]["customer_id"] == customer
        assert got.webhook_id == event["data"]["id"] and got.webhook_id.startswith("evt_")
        assert event["data"]["available"] == "4.00" and event["data"]["threshold"] == "5.00"
        with pytest.raises(WebhookVerificationError):
            _verified((await _endpoint(client, hook.url, ["balance.low"]))["secret"], got)
        tampered = Received(got.headers, got.body.replace(b"\"4.00\"", b"\"9.00\""), got.at)
        with pytest.raises(WebhookVerificationError):
            _verified(endpoint["secret"], tampered)
        for _ in range(100):  # the attempt is recorded once the receiver's answer is read
            log = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries",
                                    params={"event_id": got.webhook_id})).json()
            [delivery] = log["items"]
            if delivery["status"] != "pending":
                break
            await asyncio.sleep(0.05)
        assert delivery["status"] == "succeeded" and delivery["attempts"] == 1
        assert delivery["last_status_code"] == 200 and delivery["last_latency_ms"] >= 0


async def test_a_receiver_failing_five_times_gets_the_event_with_the_same_id_after_backoff(client):
    def five_failures(seen: list[Received], this: Received) -> int:
        earlier = [r for r in seen if r.webhook_id == this.webhook_id]
        return 500 if len(earlier) <= 5 else 200

    with receiver(five_failures) as hook:
        endpoint = await _endpoint(client, hook.url, ["balance.*"])
        customer = await _low_balance(client)
        got = await hook.wait_for(for_customer(customer), count=6, within=60)
        assert len({r.webhook_id for r in got}) == 1
        for r in got:
            _verified(endpoint["secret"], r)
        gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
        # attempt n failed: the next waits between half and all of 0.2 s * 2**(n-1)
        for n, gap in enumerate(gaps, start=1):
            assert gap >= 0.5 * 0.2 * 2 ** (n - 1) - 0.01, gaps
        await asyncio.sleep(0.5)
        assert len(hook.of(for_customer(customer))) == 6, "once successful, never sent again"
        attempts = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}/attempts",
                                     params={"event_id": got[0].webhook_id})).json()["items"]
        assert [a["status_code"] for a in reversed(attempts)] == [500] * 5 + [200]
        assert [a["attempt"] for a in reversed(attempts)] == [1, 2, 3, 4, 5, 6]
        print(f"\nretry gaps (base 0.2 s): {', '.join(f'{g:.2f}' for g in gaps)} s")


async def test_the_backoff_after_an_attempt_that_timed_out_counts_from_its_end(database_url):
    """The wait after a failed attempt counted from when the attempt started: after one that
    got no answer within the timeout (10 s), the first retries (2.5-5 s, then 5-10 s) were due
    before it ended, and an overloaded receiver got the next attempt the moment the last one
    timed out, with no pause at all. Here a 2 s timeout and a 2 s backoff: the second attempt
    came 2.0-2.05 s after the first began (the timeout itself, 1.54 s with 1.5 s); now at least
    half the backoff after the first timed out: 3 s. (The margin of 0.5 s either side takes
    the delay of each request's arrival on a loaded machine.)"""
    timing_out = replace(FAST, webhook_timeout_s=2.0, webhook_backoff_s=2.0)
    async with AsyncTestClient(app=create_app(timing_out, database_url)) as client:
        client.headers.update(ADMIN)
        with receiver(lambda seen, this: None if len(seen) == 1 else 200) as hook:
            await _endpoint(client, hook.url, ["balance.low"])
            customer = await _low_balance(client)
            first, second = await hook.wait_for(for_customer(customer), count=2)
            assert second.webhook_id == first.webhook_id
            assert second.at - first.at >= 2.0 + 0.5 * 2.0 - 0.5, second.at - first.at


async def test_an_endpoint_failing_for_its_whole_window_is_disabled_with_an_event(database_url):
    short = replace(FAST, webhook_retry_window_s=1.0)
    async with AsyncTestClient(app=create_app(short, database_url)) as client:
        client.headers.update(ADMIN)
        with receiver(lambda seen, this: 503) as dead, receiver() as watcher:
            failing = await _endpoint(client, dead.url, ["balance.low"])
            await _endpoint(client, watcher.url, ["webhook_endpoint.disabled"])
            customer = await _low_balance(client)
            [notice] = await watcher.wait_for(lambda r: r.event["data"].get("endpoint_id") == failing["id"])
            assert notice.event["type"] == "webhook_endpoint.disabled"
            state = (await client.get(f"/v1/webhook-endpoints/{failing['id']}")).json()
            assert state["status"] == "disabled" and state["disabled_reason"].startswith("no successful delivery")
            # the reason spells the time as every answer and event does (it said +00:00 beside failing_since's Z)
            data = notice.event["data"]
            assert data["reason"] == state["disabled_reason"] == f"no successful delivery since {data['failing_since']}"
            assert data["failing_since"].endswith("Z"), data
            [delivery] = (await client.get(f"/v1/webhook-endpoints/{failing['id']}/deliveries", params={
                "event_id": dead.of(for_customer(customer))[0].webhook_id})).json()["items"]
            # its id is made as every event's (README: `evt_`, the microseconds in hex, then random), so it
            # sorts after the balance.low it gave up on, made before it: it was `evt_` and 24 random hex
            # digits, which sort anywhere (its first digit past the µs' "6" in 9 cases of 16)
            assert re.fullmatch(r"evt_[0-9a-f]{13}[0-9a-f]{10}", data["id"]), data["id"]
            assert data["id"] > delivery["event_id"] and notice.webhook_id == data["id"]
            assert delivery["status"] == "failed" and delivery["last_status_code"] == 503
            assert delivery["attempts"] >= 2 and len(dead.of(for_customer(customer))) == delivery["attempts"]


async def test_a_redrive_sends_one_event_again_and_everything_since_a_time(client):
    with receiver() as hook:
        endpoint = await _endpoint(client, hook.url, ["balance.low"])
        first = await _low_balance(client)
        [got] = await hook.wait_for(for_customer(first))
        second = await _low_balance(client)
        await hook.wait_for(for_customer(second))
        path = f"/v1/webhook-endpoints/{endpoint['id']}/redrive"
        again = await client.post(path, json={"event_id": got.webhook_id})
        assert again.status_code == 202 and again.json()["scheduled"] == 1
        twice = await hook.wait_for(for_customer(first), count=2)
        assert {r.webhook_id for r in twice} == {got.webhook_id}
        since = await client.post(path, json={"since": got.event["timestamp"], "failed_only": True})
        assert since.json()["scheduled"] == 0, "both were delivered"
        everything = await client.post(path, json={"since": got.event["timestamp"]})
        assert everything.json()["scheduled"] >= 2
        await hook.wait_for(for_customer(second), count=2)
        await hook.wait_for(for_customer(first), count=3)
        for _ in range(200):  # received is not yet recorded: wait until nothing is pending
            if not (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries",
                                     params={"status": "pending"})).json()["items"]:
                break
            await asyncio.sleep(0.05)
        missing = await client.post(path, json={"event_id": "evt_nope"})
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        both = await client.post(path, json={"event_id": got.webhook_id, "since": "2026-01-01T00:00:00Z"})
        assert both.status_code == 422
        # nothing is queued for a disabled endpoint, a re-drive included: enable it first
        await client.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": False})
        refused = await client.post(path, json={"since": got.event["timestamp"]})
        assert refused.status_code == 409 and refused.json()["code"] == "endpoint_disabled", refused.text
        pending = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries",
                                    params={"status": "pending"})).json()["items"]
        assert pending == []
        await client.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": True})
        enabled = await client.post(path, json={"event_id": got.webhook_id})
        assert enabled.status_code == 202 and enabled.json()["scheduled"] == 1
        await hook.wait_for(for_customer(first), count=4)


async def test_a_redrive_from_an_event_goes_by_its_timestamp_not_its_created_at(client):
    """Guard (README's re-drive row): a window's bounds are the times the events were written, the
    body's `timestamp` (the deliveries' `event_at`: when the writing transaction began), not
    `data.created_at` (when its rules decided it, after the batch's load: 4-11 ms later here). From an
    event's timestamp and id, the event and what follows are sent again; from its created_at and id,
    the event itself is not."""
    with receiver() as hook:
        endpoint = await _endpoint(client, hook.url, ["balance.low"])
        customer = await _low_balance(client)
        [got] = await hook.wait_for(for_customer(customer))
        event, path = got.event, f"/v1/webhook-endpoints/{endpoint['id']}/redrive"
        written, decided = (datetime.fromisoformat(t) for t in (event["timestamp"], event["data"]["created_at"]))
        delivered = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries",
                                      params={"event_id": got.webhook_id})).json()["items"]
        assert [d["event_at"] for d in delivered] == [event["timestamp"]]
        assert written <= decided
        from_it = await client.post(path, json={"since": event["timestamp"], "since_event_id": got.webhook_id,
                                                "until": (decided + timedelta(seconds=1)).isoformat()})
        assert (from_it.status_code, from_it.json()["scheduled"]) == (202, 1), from_it.text
        await hook.wait_for(for_customer(customer), count=2)
        if written < decided:  # the window from created_at starts after the event was written
            after = await client.post(path, json={"since": event["data"]["created_at"],
                                                  "since_event_id": got.webhook_id,
                                                  "until": (decided + timedelta(seconds=1)).isoformat()})
            assert (after.status_code, after.json()["scheduled"]) == (202, 0), after.text


async def test_a_redrive_by_event_id_refuses_an_event_of_a_topic_the_endpoint_does_not_subscribe_to(client):
    """Before: a re-drive by event_id queued any event to any endpoint (202, scheduled 1): one
    subscribed to budget.* only was sent a balance.low, and so was one whose topics had moved
    off balance.* since it received it, while a re-drive `since` left both alone (scheduled 0).
    Now both agree: the event_id one is a 422 naming event_id, and nothing is queued."""
    with receiver() as hook, receiver() as other:
        watcher = await _endpoint(client, hook.url, ["balance.low"])
        moved = await _endpoint(client, other.url, ["balance.*"])
        budgets = await _endpoint(client, other.url, ["budget.*"])
        customer = await _low_balance(client)
        [got] = await hook.wait_for(for_customer(customer))
        await other.wait_for(for_customer(customer))  # `moved` got it
        changed = await client.patch(f"/v1/webhook-endpoints/{moved['id']}", json={"topics": ["budget.exceeded"]})
        assert changed.status_code == 200, changed.text
        for endpoint, topics in ((budgets, "budget.*"), (moved, "budget.exceeded")):
            path = f"/v1/webhook-endpoints/{endpoint['id']}/redrive"
            since = await client.post(path, json={"since": got.event["timestamp"]})
            assert since.status_code == 202 and since.json()["scheduled"] == 0, since.text
            refused = await client.post(path, json={"event_id": got.webhook_id})
            assert refused.status_code == 422, refused.text
            problem = refused.json()
            assert problem["code"] == "validation_error" and problem["fields"][0]["field"] == "event_id"
            assert "balance.low" in problem["detail"] and topics in problem["detail"], problem["detail"]
        pending = [(await client.get(f"/v1/webhook-endpoints/{e['id']}/deliveries",
                                     params={"status": "pending"})).json()["items"] for e in (budgets, moved)]
        assert pending == [[], []], "nothing queued"
        # the endpoint that subscribes to it still gets it again, and it alone
        again = await client.post(f"/v1/webhook-endpoints/{watcher['id']}/redrive", json={"event_id": got.webhook_id})
        assert again.status_code == 202 and again.json()["scheduled"] == 1, again.text
        await hook.wait_for(for_customer(customer), count=2)
        await asyncio.sleep(0.5)  # a wrongly queued one would be under way by now (poll 0.05 s)
        assert len(other.of(for_customer(customer))) == 1


async def test_a_rotated_secret_signs_beside_the_old_one_during_its_grace(client):
    with receiver() as hook:
        endpoint = await _endpoint(client, hook.url, ["balance.low"])
        rotated = (await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")).json()
        assert rotated["secret"] != endpoint["secret"] and rotated["previous_secret_until"]
        [got] = await hook.wait_for(for_customer(await _low_balance(client)))
        _verified(endpoint["secret"], got)
        _verified(rotated["secret"], got)
        final = (await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret",
                                   json={"previous_secret_valid_seconds": 0})).json()
        assert final["previous_secret_until"] is None
        [got] = await hook.wait_for(for_customer(await _low_balance(client)))
        _verified(final["secret"], got)
        with pytest.raises(WebhookVerificationError):
            _verified(rotated["secret"], got)


async def test_a_second_rotation_leaves_the_first_rotated_out_secret_signing_until_its_grace_ends(client):
    """Rotated twice within a day (a retried rotation sent without an Idempotency-Key does it):
    the original secret was promised a day of signing by the first answer, and a receiver still
    on it lost every event from the second rotation on; now each rotated-out secret signs for its
    own grace."""
    with receiver() as hook:
        endpoint = await _endpoint(client, hook.url, ["balance.low"])
        path = f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret"
        first = (await client.post(path)).json()
        second = (await client.post(path, json={"previous_secret_valid_seconds": 3600})).json()
        assert second["previous_secret_until"] == first["previous_secret_until"], "the latest grace's end"
        [got] = await hook.wait_for(for_customer(await _low_balance(client)))
        for secret in (endpoint["secret"], first["secret"], second["secret"]):
            _verified(secret, got)
        assert len(got.headers["webhook-signature"].split(" ")) == 3


async def test_disabled_and_deleted_endpoints_get_nothing_and_topics_filter(client):
    with receiver() as hook, receiver() as other:
        disabled = await _endpoint(client, hook.url, ["*"])
        patched = await client.patch(f"/v1/webhook-endpoints/{disabled['id']}", json={"enabled": False})
        assert patched.json()["status"] == "disabled" and patched.json()["disabled_reason"] == "disabled by request"
        deleted = await _endpoint(client, hook.url, ["balance.*"])
        assert (await client.delete(f"/v1/webhook-endpoints/{deleted['id']}")).status_code == 200
        assert (await client.get(f"/v1/webhook-endpoints/{deleted['id']}")).status_code == 404
        await _endpoint(client, hook.url, ["grant.expired", "reservation.*"])
        await _endpoint(client, other.url, ["balance.low"])
        customer = await _low_balance(client)
        await other.wait_for(for_customer(customer))
        await asyncio.sleep(0.5)
        assert hook.of(for_customer(customer)) == []
        listed = {e["id"] for e in (await client.get("/v1/webhook-endpoints")).json()}
        assert disabled["id"] in listed and deleted["id"] not in listed


@pytest.mark.parametrize("body, field", [
    ({"url": "ftp://example.com/x", "topics": ["*"]}, "url"),
    ({"url": "http://user:pw@example.com/x", "topics": ["*"]}, "url"),
    ({"url": "https://example.com/x", "topics": []}, "topics"),
    ({"url": "https://example.com/x", "topics": ["balanse.low"]}, "topics[0]"),
    ({"url": "https://example.com/x", "topics": ["balance.low", "budget.threshold"]}, "topics[1]"),  # no such event
    ({"url": "https://example.com/x", "topics": ["*"], "max_in_flight": 0}, "max_in_flight"),
    ({"url": "https://example.com/x", "topics": ["*"], "secret": "mine"}, "secret"),  # unknown: refused
])
async def test_bad_endpoints_are_refused_naming_the_field(client, body, field):
    response = await client.post("/v1/webhook-endpoints", json=body)
    assert response.status_code == 422 and response.json()["code"] == "validation_error"
    assert response.json()["fields"][0]["field"] == field


# A re-drive whose window is backwards, or that mixes one event with a window's fields, was 202
# "scheduled": 0 (or the window's fields were ignored): a mistake answered as if nothing was due.
@pytest.mark.parametrize("body, field", [
    ({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
    ({"event_id": "evt_x", "until": "2026-01-01T00:00:00Z"}, "until"),
    ({"event_id": "evt_x", "failed_only": True}, "failed_only"),
    ({"event_id": "evt_x", "failed_only": False}, "failed_only"),  # was 202, 1 scheduled: only true was refused
])
async def test_a_redrive_with_a_window_that_cannot_be_meant_is_refused_naming_the_field(client, body, field):
    endpoint = await _endpoint(client, "https://hooks.example.com/redrive", ["balance.low"])
    try:
        response = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/redrive", json=body)
        assert response.status_code == 422 and response.json()["code"] == "validation_error", response.text
        assert response.json()["fields"][0]["field"] == field
    finally:
        assert (await client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")).status_code == 200


# Hosts the URL pattern lets through but that no request can reach: an empty or over-long label
# (getaddrinfo's UnicodeError), an xn-- name that is not IDNA, an IDNA-invalid character, a
# bracketed literal that is no IPv6 address (httpx.InvalidURL). They were 201, and every attempt
# then crashed the dispatcher's send, unrecorded, the delivery claimed again at each lease forever.
@pytest.mark.parametrize("url", ["http://a..b/hook", "http://.example.com/", "http://" + "a" * 64 + ".example.com/",
                                 "http://xn--a.com/", "http://\u2488.com/", "http://a.\u3002com/", "http://[v1.x]/"])
async def test_a_host_no_request_could_reach_is_refused_on_create_and_update(client, url):
    created = await client.post("/v1/webhook-endpoints", json={"url": url, "topics": ["*"]})
    assert created.status_code == 422, created.text
    assert created.json()["fields"][0]["field"] == "url"
    endpoint = await _endpoint(client, "https://hooks.example.com/ok", ["balance.low"])
    changed = await client.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={"url": url})
    assert changed.status_code == 422 and changed.json()["fields"][0]["field"] == "url"
    assert (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()["url"] == "https://hooks.example.com/ok"
    assert (await client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")).status_code == 200  # sends nothing later


async def test_the_database_keeps_attempts_append_only_and_deleted_endpoints_deleted(client, db):
    with receiver() as hook:
        endpoint = await _endpoint(client, hook.url, ["balance.low"])
        await hook.wait_for(for_customer(await _low_balance(client)))
        assert (await client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")).status_code == 200
    for sql in ("UPDATE webhook_attempts SET status_code = 500 WHERE endpoint_id = :e",
                "DELETE FROM webhook_attempts WHERE endpoint_id = :e",
                "UPDATE webhook_endpoints SET status = 'enabled' WHERE id = :e",
                "DELETE FROM webhook_endpoints WHERE id = :e"):
        with pytest.raises(Exception, match=r"append-only|deleted"):
            await db.committed(lambda conn, sql=sql: conn.execute(text(sql), {"e": endpoint["id"]}))
    with pytest.raises(Exception, match="check constraint"):
        await db.committed(lambda conn: conn.execute(text(
            "INSERT INTO webhook_endpoints (id, url, topics, secret) VALUES ('we_0000000000000000', "
            "'https://x.example', '{*}', 'plaintext')")))


async def test_create_and_rotate_answer_a_replayed_idempotency_key_with_the_same_secret(client):
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"url": "https://hooks.example.com/a", "topics": ["invoice.finalized"]}
    first = await client.post("/v1/webhook-endpoints", json=body, headers=key)
    again = await client.post("/v1/webhook-endpoints", json=body, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = await client.post("/v1/webhook-endpoints", json={**body, "url": "https://hooks.example.com/b"},
                              headers=key)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"
    listed = [e for e in (await client.get("/v1/webhook-endpoints")).json() if e["id"] == first.json()["id"]]
    assert len(listed) == 1 and "secret" not in listed[0]
    path, rotation = f"/v1/webhook-endpoints/{first.json()['id']}/rotate-secret", {"Idempotency-Key": uuid.uuid4().hex}
    rotated = await client.post(path, json={}, headers=rotation)
    retried = await client.post(path, json={}, headers=rotation)
    assert rotated.status_code == retried.status_code == 200
    assert retried.json()["secret"] == rotated.json()["secret"] != first.json()["secret"]
    missing = await client.post("/v1/webhook-endpoints/we_0000000000000000/rotate-secret")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_another_admin_key_resending_a_create_or_rotation_never_reads_its_secret(client):
    """The Idempotency-Key scope is the customers a key acts for, so every unlimited admin key
    shares it. Before: a second admin key that sent the same key and body was answered the first
    answer, signing secret included. Now the kept secret is sealed to the key that sent the call:
    another key gets 409 idempotency_conflict, and no second endpoint or rotation is made."""
    made = await client.post("/v1/api-keys", json={"scope": "admin", "name": "second admin"})
    assert made.status_code == 201, made.text
    second = {"Authorization": f"Bearer {made.json()['key']}"}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"url": "https://hooks.example.com/sealed", "topics": ["invoice.finalized"]}
    first = await client.post("/v1/webhook-endpoints", json=body, headers=key)
    assert first.status_code == 201 and first.json()["secret"].startswith("whsec_"), first.text
    own = await client.post("/v1/webhook-endpoints", json=body, headers=key)  # its own replay: the secret
    assert (own.status_code, own.json()) == (201, first.json())
    stolen = await client.post("/v1/webhook-endpoints", json=body, headers={**key, **second})
    assert stolen.status_code == 409 and stolen.json()["code"] == "idempotency_conflict", stolen.text
    assert first.json()["secret"] not in stolen.text
    assert [e["id"] for e in (await client.get("/v1/webhook-endpoints")).json()
            if e["url"] == body["url"]] == [first.json()["id"]]
    path, rotation = f"/v1/webhook-endpoints/{first.json()['id']}/rotate-secret", {"Idempotency-Key": uuid.uuid4().hex}
    rotated = await client.post(path, json={}, headers=rotation)
    assert rotated.status_code == 200 and rotated.json()["secret"].startswith("whsec_"), rotated.text
    stolen = await client.post(path, json={}, headers={**rotation, **second})
    assert stolen.status_code == 409 and stolen.json()["code"] == "idempotency_conflict", stolen.text
    assert rotated.json()["secret"] not in stolen.text
    retried = await client.post(path, json={}, headers=rotation)  # not rotated again by the refused call
    assert (retried.status_code, retried.json()["secret"]) == (200, rotated.json()["secret"])
    assert retried.json()["previous_secret_until"] == rotated.json()["previous_secret_until"]


async def test_by_default_deliveries_reach_no_loopback_or_private_address(database_url, db):
    """The guard against server-side request forgery: an address, in any spelling the resolver
    reads as one (2130706433 is 127.0.0.1), is refused when the endpoint is created; a host that
    resolves to one is refused when the delivery connects, and the attempt's log says why (here
    the row is given 2130706433, which the API refuses, as a name that resolves inside would)."""
    guarded = replace(FAST, webhook_addresses=AddressPolicy())
    with receiver() as hook:
        port = hook.url.split(":")[2].split("/")[0]
        async with AsyncTestClient(app=create_app(guarded, database_url)) as client:
            client.headers.update(ADMIN)
            for url in (hook.url, f"http://localhost:{port}/hook", "http://169.254.169.254/latest/meta-data",
                        "http://[::ffff:10.0.0.1]/x", "http://192.168.1.1/x", f"http://2130706433:{port}/hook"):
                refused = await client.post("/v1/webhook-endpoints", json={"url": url, "topics": ["*"]})
                assert refused.status_code == 422 and refused.json()["fields"][0]["field"] == "url", url
                assert "may not go to" in refused.json()["fields"][0]["message"]
            endpoint = await _endpoint(client, "https://hooks.example.com/hook", ["balance.low"])
            await db.committed(lambda conn: conn.execute(text("UPDATE webhook_endpoints SET url = :u WHERE id = :e"),
                                                         {"u": f"http://2130706433:{port}/hook", "e": endpoint["id"]}))
            customer = await _low_balance(client)
            path = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"
            for _ in range(200):
                items = (await client.get(path)).json()["items"]
                if items and items[0]["last_error"]:
                    break
                await asyncio.sleep(0.05)
            assert "127.0.0.1 is a loopback address" in items[0]["last_error"], items
            assert items[0]["status"] != "succeeded" and items[0]["last_status_code"] is None
        assert hook.of(for_customer(customer)) == [], "nothing reached the loopback receiver"


async def test_a_committed_event_wakes_the_dispatcher_without_waiting_for_its_poll(database_url):
    """Migration 0022 announces outbox inserts at commit; with the fallback poll at a minute, the
    event still arrives within seconds (first a round at start, then nothing polls)."""
    slow = replace(FAST, webhook_poll_s=60.0)
    async with AsyncTestClient(app=create_app(slow, database_url)) as client:
        client.headers.update(ADMIN)
        with receiver() as hook:
            await _endpoint(client, hook.url, ["balance.low"])
            await asyncio.sleep(0.5)  # the start-up round is over; the next poll is a minute away
            customer = await _low_balance(client)
            [got] = await hook.wait_for(for_customer(customer), within=10)
            assert got.webhook_id.startswith("evt_")


async def test_a_redrive_and_an_endpoint_enabled_again_wake_the_dispatcher_without_waiting_for_its_poll(
        database_url):
    """A re-drive is due now, and so is what an endpoint enabled again had pending, but neither
    writes the outbox, whose commit alone was announced: the dispatcher found them at its next
    poll (5 s by default; measured 2.9, 5.0, 5.0 s for three re-drives of one event against a
    live server, where a new event goes out in 0.1 s). Each now announces itself at commit too."""
    slow = replace(FAST, webhook_poll_s=60.0)
    async with AsyncTestClient(app=create_app(slow, database_url)) as client:
        client.headers.update(ADMIN)
        with receiver() as hook:
            endpoint = await _endpoint(client, hook.url, ["balance.low"])
            path = f"/v1/webhook-endpoints/{endpoint['id']}"
            await asyncio.sleep(0.5)  # the start-up round is over; the next poll is a minute away
            customer = await _low_balance(client)
            [first] = await hook.wait_for(for_customer(customer), within=10)
            again = await client.post(f"{path}/redrive", json={"event_id": first.webhook_id})
            assert again.status_code == 202 and again.json()["scheduled"] == 1, again.text
            await hook.wait_for(for_customer(customer), count=2, within=10)
            [delivery] = (await client.get(f"{path}/deliveries", params={"event_id": first.webhook_id})).json()["items"]
            since = await client.post(f"{path}/redrive", json={"since": delivery["event_at"]})
            assert since.status_code == 202 and since.json()["scheduled"] == 1, since.text
            await hook.wait_for(for_customer(customer), count=3, within=10)
            assert {r.webhook_id for r in hook.of(for_customer(customer))} == {first.webhook_id}
        up = {"now": False}
        with receiver(lambda seen, this: 200 if up["now"] else 503) as hook:
            path = f"/v1/webhook-endpoints/{(await _endpoint(client, hook.url, ['balance.low']))['id']}"
            await asyncio.sleep(0.5)
            customer = await _low_balance(client)
            await hook.wait_for(for_customer(customer), within=10)  # 503: its retry waits for a poll
            assert (await client.patch(path, json={"enabled": False})).json()["status"] == "disabled"
            up["now"] = True
            assert (await client.patch(path, json={"enabled": True})).json()["status"] == "enabled"
            await hook.wait_for(for_customer(customer), count=2, within=10)  # pending: due now again


async def test_times_are_utc_whatever_time_zone_the_database_server_has(scratch_url):
    """API.md: times are RFC 3339 UTC. A PostgreSQL server whose TimeZone is not UTC (initdb takes
    the host's) gave every time read back from it in its own offset: the envelope's `timestamp`
    of a webhook, an endpoint's created_at, the delivery log ("2026-12-03T10:47:42-05:00")."""
    import psycopg

    with psycopg.connect(scratch_url, autocommit=True) as conn:
        conn.execute("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone TO %L', current_database(), "
                     "'America/New_York'); END $$")
    async with AsyncTestClient(app=create_app(FAST, scratch_url)) as client:
        client.headers.update(ADMIN)
        with receiver() as hook:
            endpoint = await _endpoint(client, hook.url, ["balance.low"])
            assert endpoint["created_at"].endswith("Z"), endpoint
            customer = await _low_balance(client)
            [got] = await hook.wait_for(for_customer(customer))
            event = _verified(endpoint["secret"], got)
            assert event["timestamp"].endswith("Z") and event["data"]["created_at"].endswith("Z"), event
            for _ in range(100):
                [delivery] = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries")).json()["items"]
                if delivery["status"] != "pending":
                    break
                await asyncio.sleep(0.05)
            assert delivery["event_at"].endswith("Z") and delivery["last_attempt_at"].endswith("Z"), delivery


async def test_an_endpoint_enabled_again_gets_what_was_pending_with_a_new_retry_window(database_url):
    """Deliveries left pending while an endpoint is disabled wait for it; enabled again, each
    starts afresh (due now, a new retry window), as a re-drive does. They kept the window of
    their first fan-out, spent meanwhile: the first failed attempt after enabling failed them
    for good and disabled the endpoint again at once, the event never delivered."""
    short = replace(FAST, webhook_retry_window_s=2.0)
    mode = {"now": "down"}  # down: 503; once: one more 503 (a receiver still starting), then up: 200

    def answer(seen: list[Received], this: Received) -> int:
        if mode["now"] == "once":
            mode["now"] = "up"
            return 503
        return 200 if mode["now"] == "up" else 503

    async with AsyncTestClient(app=create_app(short, database_url)) as client:
        client.headers.update(ADMIN)
        with receiver(answer) as hook:
            endpoint = await _endpoint(client, hook.url, ["balance.low"])
            customer = await _low_balance(client)
            [first] = await hook.wait_for(for_customer(customer))
            path = f"/v1/webhook-endpoints/{endpoint['id']}"
            assert (await client.patch(path, json={"enabled": False})).json()["status"] == "disabled"
            await asyncio.sleep(2.5)  # past the delivery's first retry window
            mode["now"] = "once"
            assert (await client.patch(path, json={"enabled": True})).json()["status"] == "enabled"
            for _ in range(300):
                [delivery] = (await client.get(f"{path}/deliveries", params={"event_id": first.webhook_id})).json()[
                    "items"]
                if delivery["status"] != "pending":
                    break
                await asyncio.sleep(0.05)
            assert delivery["status"] == "succeeded" and delivery["event_id"] == first.webhook_id, delivery
            assert (await client.get(path)).json()["status"] == "enabled"


async def test_a_failed_only_redrive_sends_now_what_is_still_waiting_for_its_next_retry(database_url):
    """A receiver back after an outage asks for what it missed (`failed_only`: skip what it
    already received). An event still retried, its next attempt an hour away, was left out
    (scheduled 0): it arrived only at that retry, up to 4 h later with the default backoff. Now
    it is sent again at once, as everything the endpoint has not received."""
    slow = replace(FAST, webhook_backoff_s=3600.0)
    up = {"now": False}
    async with AsyncTestClient(app=create_app(slow, database_url)) as client:
        client.headers.update(ADMIN)
        with receiver(lambda seen, this: 200 if up["now"] else 503) as hook:
            endpoint = await _endpoint(client, hook.url, ["balance.low"])
            customer = await _low_balance(client)
            [missed] = await hook.wait_for(for_customer(customer))
            path = f"/v1/webhook-endpoints/{endpoint['id']}"
            for _ in range(200):  # the failed attempt recorded: next retry in 30 to 60 minutes
                [delivery] = (await client.get(f"{path}/deliveries", params={"event_id": missed.webhook_id})).json()[
                    "items"]
                if delivery["last_status_code"] == 503:
                    break
                await asyncio.sleep(0.05)
            assert (delivery["status"], delivery["attempts"]) == ("pending", 1), delivery
            up["now"] = True
            again = await client.post(f"{path}/redrive", json={"since": missed.event["timestamp"], "failed_only": True})
            assert again.status_code == 202 and again.json()["scheduled"] == 1, again.text
            [_, got] = await hook.wait_for(for_customer(customer), count=2)
            assert got.webhook_id == missed.webhook_id


async def test_a_failed_only_redrive_leaves_alone_an_event_being_sent_right_now(database_url):
    """`failed_only` sends what the endpoint has not received; an event whose attempt is open
    right now (its receiver has not answered yet) was started again beside it, a second copy
    sent while the first was in flight. Now it is left to that attempt (scheduled 0)."""
    async with AsyncTestClient(app=create_app(replace(FAST, webhook_timeout_s=10.0), database_url)) as client:
        client.headers.update(ADMIN)
        with receiver(lambda seen, this: None if len(seen) == 1 else 200) as hook:
            endpoint = await _endpoint(client, hook.url, ["balance.low"])
            customer = await _low_balance(client)
            [open_] = await hook.wait_for(for_customer(customer))  # the receiver holds it, unanswered
            path = f"/v1/webhook-endpoints/{endpoint['id']}"
            again = await client.post(f"{path}/redrive", json={"since": open_.event["timestamp"], "failed_only": True})
            assert again.status_code == 202 and again.json()["scheduled"] == 0, again.text
            hook.released.set()  # the first attempt ends (no answer: it fails and is retried)
            later = await hook.wait_for(for_customer(customer), count=2)
            await asyncio.sleep(0.5)  # a second copy started beside the first would be here by now
            assert len(hook.of(for_customer(customer))) == len(later) == 2


async def test_an_endpoint_that_drops_a_topic_gets_no_more_retries_of_its_events(database_url):
    """An endpoint subscribed to `*` whose receiver fails balance.low moves to `invoice.*` only:
    the balance.low delivery stayed pending and was retried for the rest of its 3-day window
    (and started afresh if the endpoint was disabled and enabled again), to a receiver that had
    unsubscribed from it, while a re-drive of that event was refused as not of its topics. Now
    the change cancels what is pending of the topics it dropped (a re-drive sends it once it
    subscribes again); the rest stays pending."""
    slow = replace(FAST, webhook_backoff_s=3600.0)
    async with AsyncTestClient(app=create_app(slow, database_url)) as client:
        client.headers.update(ADMIN)
        with receiver(lambda seen, this: 503) as hook:
            endpoint = await _endpoint(client, hook.url, ["*"])
            customer = await _low_balance(client)
            [got] = await hook.wait_for(for_customer(customer))
            path = f"/v1/webhook-endpoints/{endpoint['id']}"
            mine = {"event_id": got.webhook_id}  # `*`: other events' deliveries beside it
            for _ in range(200):  # the failed attempt recorded: next retry in 30 to 60 minutes
                [delivery] = (await client.get(f"{path}/deliveries", params=mine)).json()["items"]
                if delivery["last_status_code"] == 503:
                    break
                await asyncio.sleep(0.05)
            assert (delivery["topic"], delivery["status"]) == ("balance.low", "pending"), delivery
            kept = await client.patch(path, json={"topics": ["balance.*", "invoice.*"]})
            assert kept.status_code == 200, kept.text
            [delivery] = (await client.get(f"{path}/deliveries", params=mine)).json()["items"]
            assert delivery["status"] == "pending", "balance.* still takes it"
            moved = await client.patch(path, json={"topics": ["invoice.*"]})
            assert moved.status_code == 200, moved.text
            [delivery] = (await client.get(f"{path}/deliveries", params=mine)).json()["items"]
            assert (delivery["status"], delivery["next_attempt_at"]) == ("cancelled", None), delivery
            await client.patch(path, json={"enabled": False})
            await client.patch(path, json={"enabled": True})
            assert (await client.get(f"{path}/deliveries", params={**mine, "status": "pending"})).json()["items"] == []


async def test_the_operator_page_counts_as_due_only_what_the_dispatcher_may_send(scratch_url):
    """What waits for a disabled endpoint is sent only once it is enabled again: it was counted
    'due now' on the operator page for as long as it stayed disabled, a backlog that looked stuck."""
    from api.console.operator import lanes
    from ledger.db import connect
    from wallets.webhooks.rules import new_secret

    db = connect(scratch_url, pool_size=1)
    try:
        async def rows(conn) -> None:
            await conn.execute(text(
                """INSERT INTO webhook_endpoints (id, url, topics, secret, status, disabled_reason) VALUES
                     ('we_000000000000000a', 'https://a.example.com/', '{*}', :s, 'enabled', NULL),
                     ('we_000000000000000b', 'https://b.example.com/', '{*}', :s, 'disabled', 'by request')"""),
                {"s": new_secret()})
            await conn.execute(text(
                """INSERT INTO webhook_deliveries (endpoint_id, event_id, topic, payload, event_at) VALUES
                     ('we_000000000000000a', 'evt_1', 'balance.low', '{}', now()),
                     ('we_000000000000000b', 'evt_1', 'balance.low', '{}', now()),
                     ('we_000000000000000b', 'evt_2', 'balance.low', '{}', now())"""))

        await db.committed(rows)
        webhooks = (await db.read(lanes))["webhooks"]
        assert (webhooks["pending"], webhooks["due"], webhooks["failed"]) == (1, 1, 0), webhooks
        assert webhooks["held"] == 2, webhooks  # waiting for an endpoint enabled again
    finally:
        await db.dispose()


async def test_a_delete_during_a_fan_out_leaves_nothing_pending_for_the_deleted_endpoint(client, database_url):
    """A fan-out that read the endpoint as enabled and committed after its DELETE left a pending
    delivery the DELETE never cancelled: never sent, pending in its log for ever. The DELETE now
    waits for a fan-out in flight (it takes the fan-out's cursor), then cancels what it wrote."""
    import threading
    import time

    import psycopg

    endpoint = await _endpoint(client, "https://hooks.example.com/racing", ["balance.low"])
    holding, done = threading.Event(), threading.Event()

    def fan_out_in_flight() -> None:  # a fan-out's transaction: the cursor taken, a delivery written
        with psycopg.connect(database_url) as conn:
            conn.execute("SELECT 1 FROM webhook_fan_out FOR UPDATE")
            conn.execute("INSERT INTO webhook_deliveries (endpoint_id, event_id, topic, payload, event_at) "
                         "VALUES (%s, %s, 'balance.low', '{}', now())", (endpoint["id"], f"evt_{uuid.uuid4().hex}"))
            holding.set()
            time.sleep(1.0)
        done.set()  # committed

    thread = threading.Thread(target=fan_out_in_flight, daemon=True)
    thread.start()
    assert await asyncio.to_thread(holding.wait, 10)
    assert (await client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")).status_code == 200
    await asyncio.to_thread(thread.join, 10)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT status FROM webhook_deliveries WHERE endpoint_id = %s",
                            (endpoint["id"],)).fetchall()
    assert done.is_set() and rows == [("cancelled",)], rows


async def test_a_redrive_replayed_by_its_idempotency_key_is_done_once(client):
    """API.md: a mutating call replayed with its Idempotency-Key returns the first response; the
    same key with another body is idempotency_conflict. Before: a re-drive ignored the header, so
    a retry after a lost answer queued the event again (every event, for a `since`)."""
    with receiver() as hook:
        endpoint = await _endpoint(client, hook.url, ["balance.low"])
        customer = await _low_balance(client)
        [got] = await hook.wait_for(for_customer(customer))
        path = f"/v1/webhook-endpoints/{endpoint['id']}/redrive"
        key = {"Idempotency-Key": f"redrive-{uuid.uuid4().hex}"}
        first = await client.post(path, json={"event_id": got.webhook_id}, headers=key)
        await hook.wait_for(for_customer(customer), count=2)
        again = await client.post(path, json={"event_id": got.webhook_id}, headers=key)
        assert first.status_code == again.status_code == 202, again.text
        assert again.content == first.content and again.headers.get("idempotent-replayed") == "true"
        other = await client.post(path, json={"since": got.event["timestamp"]}, headers=key)
        assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict", other.text
        await asyncio.sleep(1.0)  # a third delivery would be under way by now (poll 0.05 s)
        assert len(hook.of(for_customer(customer))) == 2


async def test_an_endpoint_change_and_delete_replayed_by_their_idempotency_keys_answer_the_first_answer(client):
    """Before: PATCH and DELETE /v1/webhook-endpoints/{id} ignored Idempotency-Key: a DELETE
    retried after a lost answer was 404 not_found, and a PATCH under a used key applied whatever
    it carried."""
    with receiver() as hook:
        endpoint = await _endpoint(client, hook.url, ["balance.low"])
        path, tag = f"/v1/webhook-endpoints/{endpoint['id']}", uuid.uuid4().hex
        change = {"Idempotency-Key": f"change-{tag}"}
        first = await client.patch(path, headers=change, json={"description": "first"})
        again = await client.patch(path, headers=change, json={"description": "first"})
        assert first.status_code == again.status_code == 200, again.text
        assert again.content == first.content and again.headers.get("idempotent-replayed") == "true"
        other = await client.patch(path, headers=change, json={"description": "other"})
        assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict", other.text
        assert (await client.get(path)).json()["description"] == "first"
        gone = {"Idempotency-Key": f"delete-{tag}"}
        deleted = await client.delete(path, headers=gone)
        retried = await client.delete(path, headers=gone)
        assert deleted.status_code == retried.status_code == 200, retried.text
        assert retried.content == deleted.content and retried.headers.get("idempotent-replayed") == "true"
        assert (await client.delete(path)).status_code == 404  # without the key: gone


async def test_a_redrive_over_more_events_than_its_limit_is_refused_with_the_count_and_queues_nothing(database_url):
    """A re-drive `since` a time queued every event of the window in one call, however many: a
    window a year wide re-queued millions of deliveries in one transaction. Now one call queues
    at most `webhook_redrive_limit` (TOKENTILL_WEBHOOK_REDRIVE_LIMIT); a window holding more is a
    422 `too_many_events` giving the count, the limit and an `until` that keeps the call within
    it, and nothing is queued. `failed_only` counts what it would queue, not the whole window."""
    async with AsyncTestClient(app=create_app(replace(FAST, webhook_redrive_limit=3), database_url)) as client:
        client.headers.update(ADMIN)
        with receiver() as hook:
            endpoint = await _endpoint(client, hook.url, ["balance.low"])
            customers = [await _low_balance(client) for _ in range(4)]
            got = [(await hook.wait_for(for_customer(c)))[0] for c in customers]
            path = f"/v1/webhook-endpoints/{endpoint['id']}"
            for _ in range(200):  # every delivery recorded as received
                if not (await client.get(f"{path}/deliveries", params={"status": "pending"})).json()["items"]:
                    break
                await asyncio.sleep(0.05)
            since = got[0].event["timestamp"]
            key = {"Idempotency-Key": f"redrive-{uuid.uuid4().hex}"}
            refused = await client.post(f"{path}/redrive", json={"since": since}, headers=key)
            assert refused.status_code == 422, refused.text
            problem = refused.json()
            assert (problem["code"], problem["count"], problem["limit"]) == ("too_many_events", 4, 3), problem
            assert datetime.fromisoformat(problem["until"]) == datetime.fromisoformat(got[3].event["timestamp"])
            again = await client.post(f"{path}/redrive", json={"since": since}, headers=key)
            assert again.status_code == 422 and again.json() == problem
            await asyncio.sleep(0.5)  # a queued delivery would be here by now (poll 0.05 s)
            assert all(len(hook.of(for_customer(c))) == 1 for c in customers)
            logged = (await client.get(f"{path}/deliveries")).json()["items"]
            delivered = [d for d in logged if d["customer_id"] in customers]  # its own events
            assert [d["status"] for d in delivered] == ["succeeded"] * 4 and {d["attempts"] for d in delivered} == {1}
            # only what failed_only would queue counts: nothing here
            failed = await client.post(f"{path}/redrive", json={"since": since, "failed_only": True})
            assert failed.status_code == 202 and failed.json()["scheduled"] == 0, failed.text
            within = await client.post(f"{path}/redrive", json={"since": since, "until": problem["until"]})
            assert within.status_code == 202 and within.json()["scheduled"] == 3, within.text
            for c in customers[:3]:
                await hook.wait_for(for_customer(c), count=2)
            assert len(hook.of(for_customer(customers[3]))) == 1


async def test_a_redrive_window_bound_finer_than_a_microsecond_is_read_as_the_next_microsecond(client, db):
    """An event written at T (to the microsecond, as the outbox keeps it) lies in [T, T + 100 ns)
    and not in [T + 100 ns, T + 1 us). The re-drive read a bound's 7th to 9th digits as nothing, T
    + 100 ns as T: [T, T) queued nothing where the event is 1, and [T, T + 1 us) queued it where it
    is 0. Read as the next microsecond (api.routes.wire.bound_in), as the journal reads them:
    [T, T + 1 us) holds the event, 1; [T + 1 us, T + 1 us) nothing, 0."""
    mark = uuid.uuid4().hex[:10]

    async def write(conn) -> datetime:
        return (await conn.execute(text(
            "INSERT INTO outbox (topic, dedup_key, payload, delivered_at) VALUES ('invoice.finalized', :m, "
            "jsonb_build_object('id', 'evt_' || :m), now()) RETURNING created_at"), {"m": mark})).scalar_one()

    at = (await db.committed(write)).astimezone(UTC)
    exact = at.strftime("%Y-%m-%dT%H:%M:%S.%f")  # T, six digits: what the outbox keeps
    after = (at + timedelta(microseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # T + 1 us
    with receiver() as hook:
        endpoint = await _endpoint(client, hook.url, ["invoice.*"])
        path = f"/v1/webhook-endpoints/{endpoint['id']}/redrive"
        holding = await client.post(path, json={"since": exact + "Z", "until": exact + "100Z"})
        past = await client.post(path, json={"since": exact + "100Z", "until": after})
        assert (holding.status_code, past.status_code) == (202, 202), (holding.text, past.text)
        assert (holding.json()["scheduled"], past.json()["scheduled"]) == (1, 0)

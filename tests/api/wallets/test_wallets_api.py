"""The wallet HTTP contract: shapes, status codes and exact amounts through the app."""
from __future__ import annotations

import asyncio

import httpx
from litestar.testing import AsyncTestClient


async def _customer(client: httpx.AsyncClient, tag: str, book: str, **extra) -> str:
    cid = f"acme-{tag}"
    response = await client.post("/v1/customers", json={"id": cid, "name": "Acme", "price_book": book, **extra})
    assert response.status_code == 201, response.text
    return cid


async def test_price_book_errors_list_every_bad_field(client: AsyncTestClient, tag: str):
    response = await client.post("/v1/price-books", json={
        "id": f"bad-{tag}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
        "rules": [{"id": "a", "token_type": "inputs", "price": "1"},
                  {"id": "b", "token_type": "output", "price": 1.5}]})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert {f["field"] for f in body["fields"]} == {"rules[0].token_type", "rules[1].price"}


async def test_price_book_versions_never_change(client: AsyncTestClient, book: str):
    again = await client.post("/v1/price-books", json={
        "id": book, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
            {"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"},
            {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
            {"id": "call", "token_type": "request", "price": "0.01"}]})
    assert again.status_code == 200
    other = await client.post("/v1/price-books", json={
        "id": book, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
        "rules": [{"id": "a-in", "model": "model-a", "token_type": "input", "price": "9.00"}]})
    # no Idempotency-Key was sent: it was idempotency_conflict
    assert other.status_code == 409 and other.json()["code"] == "price_version_conflict"
    assert other.json()["field"] == "effective_from"
    later = await client.post("/v1/price-books", json={
        "id": book, "currency": "USD", "effective_from": "2027-01-01T00:00:00Z",
        "rules": [{"id": "a-in", "model": "model-a", "token_type": "input", "price": "9.00"}]})
    assert later.status_code == 201
    listed = (await client.get(f"/v1/price-books/{book}", params={"rules": "true"})).json()
    assert [v["effective_from"] for v in listed["versions"]] == ["2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"]
    assert listed["versions"][1]["rules"] == [
        {"id": "a-in", "model": "model-a", "token_type": "input", "price": "9.00"}]


async def test_a_customer_posted_twice_is_one_customer_and_another_definition_conflicts(
        client: AsyncTestClient, tag: str, book: str):
    cid = await _customer(client, tag, book)
    same = await client.post("/v1/customers", json={"id": cid, "name": "Acme", "price_book": book})
    assert same.status_code == 200 and same.json()["id"] == cid
    # another definition under a stored id, with no Idempotency-Key or a fresh one: no key was
    # reused, so it is `customer_exists` (it was `idempotency_conflict`, which tells a client to
    # retry under a new key, to the same 409); the same key with another body stays a key reuse
    for headers in ({}, {"Idempotency-Key": f"c2-{tag}"}):
        other = await client.post("/v1/customers", json={"id": cid, "name": "Other", "price_book": book},
                                  headers=headers)
        assert other.status_code == 409, other.text
        assert other.headers["content-type"].startswith("application/problem+json")
        assert (other.json()["code"], other.json()["customer_id"]) == ("customer_exists", cid), headers
    keyed = await client.post("/v1/customers", json={"id": f"{cid}-k", "name": "Acme", "price_book": book},
                              headers={"Idempotency-Key": f"c3-{tag}"})
    assert keyed.status_code == 201, keyed.text
    reused = await client.post("/v1/customers", json={"id": f"{cid}-k", "name": "Other", "price_book": book},
                               headers={"Idempotency-Key": f"c3-{tag}"})
    assert (reused.status_code, reused.json()["code"]) == (409, "idempotency_conflict"), reused.text
    assert (await client.get(f"/v1/customers/{cid}")).json()["name"] == "Acme"
    assert (await client.get(f"/v1/customers/{cid}-k")).json()["name"] == "Acme"
    assert (await client.get(f"/v1/customers/{cid}")).json()["overdraft_limit"] == "0.00"
    assert (await client.get("/v1/customers/nobody-" + tag)).status_code == 404


async def test_reserve_settle_release_with_exact_amounts(client: AsyncTestClient, tag: str, book: str):
    cid = await _customer(client, tag, book)
    topup = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "100.00", "reference": "payment-123"})
    assert topup.status_code == 201
    assert topup.json()["wallet"]["available"] == "100.00"
    grant = await client.post(f"/v1/customers/{cid}/grants", json={
        "amount": "5.00", "priority": 10, "expires_at": "2099-12-31T00:00:00Z", "reason": "welcome credit"})
    assert grant.status_code == 201 and grant.json()["wallet"]["available"] == "105.00"

    # 1,200 input at $10/M + 500 output at $20/M + $0.01 per call = 0.012 + 0.01 + 0.01
    body = {"customer_id": cid, "request_id": "req-42", "model": "model-a", "ttl_seconds": 300,
            "estimate": {"input_tokens": 1200, "max_output_tokens": 500},
            "dimensions": {"feature": "chat", "api_key": "k1"}}
    reserved = await client.post("/v1/reservations", json=body)
    assert reserved.status_code == 201, reserved.text
    r = reserved.json()
    assert (r["status"], r["amount"], r["request_id"]) == ("held", "0.032", "req-42")
    again = await client.post("/v1/reservations", json=body)
    assert again.status_code == 200 and again.json() == r
    conflict = await client.post("/v1/reservations", json={**body, "ttl_seconds": 60})
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_conflict"

    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["reserved"], wallet["receivable"]) == ("104.968", "0.032", "0.00")
    assert [(g["kind"], g["remaining"]) for g in wallet["grants"]] == [("grant", "4.968"), ("topup", "100.00")]

    # 1,000 input + 200 cached (priced as input) + 350 output + the call: 0.01 + 0.002 + 0.007 + 0.01
    settle = {"usage": {"input_tokens": 1000, "cached_input_tokens": 200, "output_tokens": 350,
                        "reasoning_tokens": 0}, "final": True}
    settled = await client.post(f"/v1/reservations/{r['id']}/settle", json=settle)
    assert settled.status_code == 200, settled.text
    s = settled.json()
    assert (s["status"], s["charged"], s["released"]) == ("settled", "0.029", "0.003")
    assert [(ln["token_type"], ln["quantity"], ln["unit_price"], ln["amount"], ln["rule_id"]) for ln in s["lines"]] == [
        ("input", 1000, "10.00", "0.01", "a-in"), ("cached_input", 200, "10.00", "0.002", "a-in"),
        ("output", 350, "20.00", "0.007", "a-out"), ("request", 1, "0.01", "0.01", "call")]
    assert all(ln["price_version"] == "2026-01-01T00:00:00Z" for ln in s["lines"])
    assert (await client.post(f"/v1/reservations/{r['id']}/settle", json=settle)).json() == s  # replay
    closed = await client.post(f"/v1/reservations/{r['id']}/settle", json={**settle, "usage": {"input_tokens": 1}})
    assert closed.status_code == 409 and closed.json()["code"] == "reservation_closed"
    assert (await client.post(f"/v1/reservations/{r['id']}/release")).status_code == 409

    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["reserved"]) == ("104.971", "0.00")

    held = (await client.post("/v1/reservations", json={**body, "request_id": "req-43"})).json()
    released = await client.post(f"/v1/reservations/{held['id']}/release")
    assert released.status_code == 200
    assert (released.json()["status"], released.json()["released"]) == ("released", "0.032")
    assert (await client.post(f"/v1/reservations/{held['id']}/release")).json()["released"] == "0.032"

    trace = (await client.get("/v1/audit/charges/req-42", params={"customer_id": cid})).json()
    assert trace["reservation"]["id"] == r["id"]
    assert [c["charged"] for c in trace["charges"]] == ["0.029"]
    assert {rule["id"] for rule in trace["charges"][0]["rules"]} == {"a-in", "a-out", "call"}
    assert [e["kind"] for e in trace["entries"]] == ["reserve", "settle"]
    verify = (await client.post("/v1/audit/verify")).json()
    assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]


async def test_provider_usage_objects_are_normalized(client: AsyncTestClient, tag: str, book: str):
    cid = await _customer(client, tag, book)
    await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"})
    openai = {"prompt_tokens": 1200, "completion_tokens": 400, "total_tokens": 1600,
              "prompt_tokens_details": {"cached_tokens": 200},
              "completion_tokens_details": {"reasoning_tokens": 100}}
    r = (await client.post("/v1/reservations", json={"customer_id": cid, "request_id": "o", "model": "model-a",
                                                      "amount": "0.10"})).json()
    s = (await client.post(f"/v1/reservations/{r['id']}/settle", json={"openai_usage": openai})).json()
    # input 1000 + cached 200 at $10/M = 0.012; output 300 + reasoning 100 at $20/M = 0.008; call 0.01
    assert s["charged"] == "0.03"
    anthropic = {"input_tokens": 1000, "output_tokens": 100, "cache_read_input_tokens": 500,
                 "cache_creation_input_tokens": 0}
    r = (await client.post("/v1/reservations", json={"customer_id": cid, "request_id": "a", "model": "model-a",
                                                      "amount": "0.10"})).json()
    s = (await client.post(f"/v1/reservations/{r['id']}/settle", json={"anthropic_usage": anthropic})).json()
    assert s["charged"] == "0.027"  # 0.015 + 0.002 + 0.01


async def test_estimates_from_messages_are_counted_and_unpriced_models_refused(
        client: AsyncTestClient, tag: str, book: str):
    cid = await _customer(client, tag, book)
    await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"})
    counted = await client.post("/v1/reservations", json={
        "customer_id": cid, "request_id": "m", "model": "model-a",
        "estimate": {"messages": [{"role": "user", "content": "hello there"}], "max_output_tokens": 0}})
    assert counted.status_code == 201
    # model-a is unknown to the tokenizer table: cl100k_base counts 9 tokens (2 of text, 3 for the
    # message, 1 for the role, 3 to prime the reply), +10% margin rounded up = 10 at $10/M, + $0.01 a call
    assert counted.json()["amount"] == "0.0101"
    stored = (await client.get(f"/v1/reservations/{counted.json()['id']}")).json()["estimate"]
    assert (stored["input_tokens"], stored["counted_tokens"], stored["encoding"]) == (10, 9, "cl100k_base")
    unpriced = await client.post("/v1/reservations", json={
        "customer_id": cid, "request_id": "u", "model": "model-zzz",
        "estimate": {"input_tokens": 10, "max_output_tokens": 10}})
    assert unpriced.status_code == 422 and unpriced.json()["code"] == "unpriced_model"
    both = await client.post("/v1/reservations", json={"customer_id": cid, "request_id": "b", "model": "model-a",
                                                        "amount": "1.00", "estimate": {"input_tokens": 1}})
    assert both.status_code == 422 and both.json()["code"] == "validation_error"


async def test_a_hold_given_as_an_amount_for_a_model_no_rule_prices_is_refused_before_the_call(
        client: AsyncTestClient, tag: str, book: str):
    """A reserve with `amount` took a hold for a model the book does not price (201), the call ran,
    and its settle was 422 unpriced_model: the hold lapsed and the usage went unbilled. Unpriced is
    refused before inference, as an estimate's reserve is; the book's per-call fee for every model
    does not price a model (README, unpriced: zero)."""
    cid = await _customer(client, tag, book)
    await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"})
    refused = await client.post("/v1/reservations", json={
        "customer_id": cid, "request_id": "zzz", "model": "model-zzz", "amount": "0.50"})
    assert refused.status_code == 422, refused.text
    assert (refused.json()["code"], refused.json()["model"]) == ("unpriced_model", "model-zzz")
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["reserved"]) == ("1.00", "0.00")
    held = await client.post("/v1/reservations", json={
        "customer_id": cid, "request_id": "a", "model": "model-a", "amount": "0.50"})
    assert held.status_code == 201 and held.json()["amount"] == "0.50"


async def test_a_refused_reservation_stays_refused_when_replayed(client: AsyncTestClient, tag: str, book: str):
    cid = await _customer(client, tag, book)
    body = {"customer_id": cid, "request_id": "big", "model": "model-a", "amount": "5.00"}
    refused = await client.post("/v1/reservations", json=body)
    assert refused.status_code == 402 and refused.json()["code"] == "insufficient_funds"
    await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})
    replay = await client.post("/v1/reservations", json=body)
    assert replay.status_code == 402 and replay.json() == refused.json()
    assert (await client.post("/v1/reservations", json={**body, "request_id": "big-2"})).status_code == 201


async def test_64_concurrent_one_dollar_holds_against_ten_dollars_give_exactly_ten(
        http: tuple[httpx.AsyncClient, str], tag: str, book: str):
    client, _ = http  # the live server: the 64 holds are in flight together
    cid = await _customer(client, tag, book)
    await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})
    responses = await asyncio.gather(*(client.post("/v1/reservations", json={
        "customer_id": cid, "request_id": f"r{i}", "model": "model-a", "amount": "1.00"}) for i in range(64)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 10 and statuses.count(402) == 54
    assert all(r.json()["code"] == "insufficient_funds" for r in responses if r.status_code == 402)
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["reserved"]) == ("0.00", "10.00")
    assert (await client.post("/v1/audit/verify")).json()["ok"]


async def test_an_idempotency_key_moves_money_once_however_often_it_is_replayed(
        http: tuple[httpx.AsyncClient, str], tag: str, book: str):
    client, _ = http  # the live server: the five replays are in flight together
    cid = await _customer(client, tag, book)
    headers = {"Idempotency-Key": f"topup-{tag}"}
    first = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "7.00"}, headers=headers)
    again = await asyncio.gather(*(client.post(f"/v1/customers/{cid}/topups", json={"amount": "7.00"},
                                               headers=headers) for _ in range(5)))
    assert {(r.status_code, r.text) for r in again} == {(first.status_code, first.text)}
    assert (await client.get(f"/v1/customers/{cid}/wallet")).json()["available"] == "7.00"
    other = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "8.00"}, headers=headers)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"


async def test_usage_events_are_rated_once_per_event_id(client: AsyncTestClient, tag: str, book: str):
    cid = await _customer(client, tag, book, billing="postpaid")
    event = {"event_id": f"evt-{tag}", "customer_id": cid, "model": "model-a",
             "timestamp": "2026-11-23T10:00:00Z", "usage": {"input_tokens": 1000, "output_tokens": 10},
             "dimensions": {"feature": "search"}}
    bad = {**event, "event_id": f"bad-{tag}", "model": "model-zzz"}
    first = await client.post("/v1/usage-events", json=[event, event, bad])
    assert first.status_code == 200
    body = first.json()
    assert (body["accepted"], body["duplicates"]) == (1, 1)
    assert [(r["event_id"], r["code"]) for r in body["rejected"]] == [(f"bad-{tag}", "unpriced_model")]
    changed = await client.post("/v1/usage-events", json=[{**event, "usage": {"input_tokens": 1}}])
    assert changed.json()["rejected"][0]["code"] == "idempotency_conflict"
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert wallet["receivable"] == "0.0202"  # 1,000 in 0.01 + 10 out 0.0002 + the call 0.01
    usage = (await client.get(f"/v1/customers/{cid}/usage", params={"group_by": "feature,token_type"})).json()
    assert [(r["feature"], r["token_type"], r["quantity"], r["amount"]) for r in usage["rows"]] == [
        ("search", "input", 1000, "0.01"), ("search", "output", 10, "0.0002"), ("search", "request", 1, "0.01")]
    trace = (await client.get(f"/v1/audit/charges/evt-{tag}")).json()
    assert (trace["kind"], trace["charges"][0]["charged"]) == ("usage_event", "0.0202")


async def test_usage_events_under_an_idempotency_key_answer_the_first_response_again(
        client: AsyncTestClient, tag: str, book: str):
    cid = await _customer(client, tag, book, billing="postpaid")
    events = [{"event_id": f"k-{tag}-{i}", "customer_id": cid, "model": "model-a",
               "timestamp": "2026-11-23T10:00:00Z", "usage": {"input_tokens": 100}} for i in range(3)]
    headers = {"Idempotency-Key": f"batch-{tag}"}
    first = await client.post("/v1/usage-events", json=events, headers=headers)
    again = await client.post("/v1/usage-events", json=events, headers=headers)
    assert first.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    assert (again.status_code, again.content) == (first.status_code, first.content)
    without_key = await client.post("/v1/usage-events", json=events)
    assert without_key.json() == {"accepted": 0, "duplicates": 3, "rejected": []}
    other = await client.post("/v1/usage-events", json=events[:1], headers=headers)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"


async def test_a_usage_report_whose_to_is_before_its_from_is_422_not_an_empty_report(
        client: AsyncTestClient, tag: str, book: str):
    # it answered 200 with no rows: a swapped range read as a customer without usage
    cid = await _customer(client, tag, book)
    event = {"event_id": "e1", "customer_id": cid, "model": "model-a", "timestamp": "2026-11-23T10:00:00Z",
             "usage": {"input_tokens": 1000}}
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"})).status_code == 201
    assert (await client.post("/v1/usage-events", json=[event])).json()["accepted"] == 1
    swapped = await client.get(f"/v1/customers/{cid}/usage",
                               params={"from": "2026-12-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"})
    assert swapped.status_code == 422, swapped.text
    assert swapped.json()["code"] == "validation_error"
    assert [f["field"] for f in swapped.json()["fields"]] == ["to"]
    right = await client.get(f"/v1/customers/{cid}/usage",
                             params={"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"})
    assert [(r["token_type"], r["quantity"], r["amount"]) for r in right.json()["rows"]] == [
        ("input", 1000, "0.01"), ("request", 1, "0.01")]


async def test_a_usage_event_from_the_future_is_rejected_not_billed_in_a_period_far_ahead(
        client: AsyncTestClient, tag: str, book: str):
    # a year typo (2062 for 2026) was accepted and charged now, billed in a period that closes
    # decades later: a postpaid customer's usage never invoiced
    from datetime import UTC, datetime, timedelta

    cid = await _customer(client, tag, book)
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"})).status_code == 201
    ahead = {"2062": "2062-11-23T10:00:00Z",
             "a day": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
             "a minute": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()}  # clocks differ a little
    events = [{"event_id": name, "customer_id": cid, "model": "model-a", "timestamp": at,
               "usage": {"input_tokens": 1000}} for name, at in ahead.items()]
    answer = (await client.post("/v1/usage-events", json=events)).json()
    assert (answer["accepted"], answer["duplicates"]) == (1, 0)
    assert [(r["event_id"], r["code"]) for r in answer["rejected"]] == [
        ("2062", "validation_error"), ("a day", "validation_error")]
    assert all(r["detail"].startswith("timestamp:") for r in answer["rejected"])
    assert (await client.get(f"/v1/customers/{cid}/wallet")).json()["available"] == "0.98"  # one event of 0.02

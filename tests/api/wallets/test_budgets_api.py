"""Budgets through the HTTP contract: their routes, the 429 they answer, what a reservation's
hold, settle and release count in them, alerts once per window, and the wallet view."""
from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import event, text

from ledger.db import Database


async def _funded(client: AsyncTestClient, tag: str, book: str, amount: str = "1000.00") -> str:
    cid = f"bud-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": amount})).status_code == 201
    return cid


async def _budget(client: AsyncTestClient, **body) -> dict:
    response = await client.post("/v1/budgets", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def _reserve(client: AsyncTestClient, cid: str, request_id: str, **body):
    return await client.post("/v1/reservations", json={"customer_id": cid, "request_id": request_id,
                                                       "model": "model-a", **body})


async def test_a_hard_monthly_budget_refuses_the_hold_that_would_pass_it_with_429(
        client: AsyncTestClient, tag: str, book: str):
    cid = await _funded(client, tag, book)
    b = await _budget(client, customer_id=cid, name="team cap", window="month", metric="money", limit="10.00",
                      time_zone="America/New_York")
    assert (b["limit"], b["used"], b["held"], b["remaining"], b["mode"]) == ("10.00", "0.00", "0.00", "10.00", "hard")
    held = [await _reserve(client, cid, f"r{i}", amount="3.00") for i in range(3)]
    assert [r.status_code for r in held] == [201, 201, 201]
    refused = await _reserve(client, cid, "r3", amount="3.00")
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "retry-after" not in refused.headers  # a calendar window: waiting a few seconds cannot help
    body = refused.json()
    assert body["code"] == "budget_exceeded" and body["budget_id"] == b["id"]
    assert (body["limit"], body["used"], body["held"], body["requested"]) == ("10.00", "0.00", "9.00", "3.00")
    assert body["window"] == "month" and body["currency"] == "USD"
    # the window as the budget's own answer spells it (README, Budgets: "...Z"; the refusal said +00:00)
    assert (body["window_start"], body["resets_at"]) == (b["window_start"], b["resets_at"])
    # settle one for less than its hold: the budget counts the actual, and room opens
    settled = await client.post(f"/v1/reservations/{held[0].json()['id']}/settle",
                                json={"usage": {"input_tokens": 100000, "output_tokens": 0}})
    assert settled.status_code == 200 and settled.json()["charged"] == "1.01"
    now = (await client.get(f"/v1/budgets/{b['id']}")).json()
    assert (now["used"], now["held"], now["remaining"]) == ("1.01", "6.00", "2.99")
    assert (await _reserve(client, cid, "r3", amount="2.99")).status_code == 201  # the refusal was not kept
    assert (await _reserve(client, cid, "r4", amount="0.01")).status_code == 429
    # release returns the hold
    assert (await client.post(f"/v1/reservations/{held[1].json()['id']}/release")).status_code == 200
    assert (await client.get(f"/v1/budgets/{b['id']}")).json()["held"] == "5.99"
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert [(x["id"], x["used"], x["held"]) for x in wallet["budgets"]] == [(b["id"], "1.01", "5.99")]


async def test_a_streamed_request_counts_its_hold_in_flight_and_its_tokens_after_settle(
        client: AsyncTestClient, tag: str, book: str):
    cid = await _funded(client, tag, book)
    b = await _budget(client, customer_id=cid, window="minute", metric="tokens", limit=100000)
    r = await _reserve(client, cid, "stream", estimate={"input_tokens": 0, "max_output_tokens": 4000})
    assert r.status_code == 201, r.text
    assert (await client.get(f"/v1/budgets/{b['id']}")).json()["held"] == 4000
    # the client cancels after 200 tokens and settles what was generated
    settled = await client.post(f"/v1/reservations/{r.json()['id']}/settle",
                                json={"usage": {"input_tokens": 0, "output_tokens": 200}})
    assert settled.status_code == 200, settled.text
    now = (await client.get(f"/v1/budgets/{b['id']}")).json()
    assert (now["used"], now["held"], now["remaining"]) == (200, 0, 99800)


async def test_a_tpm_refusal_says_when_to_retry(client: AsyncTestClient, tag: str, book: str):
    cid = await _funded(client, tag, book)
    b = await _budget(client, customer_id=cid, window="minute", metric="tokens", limit=1000, api_key="k1")
    ok = await _reserve(client, cid, "a", estimate={"input_tokens": 600, "max_output_tokens": 0},
                        dimensions={"api_key": "k1"})
    assert ok.status_code == 201
    other_key = await _reserve(client, cid, "b", estimate={"input_tokens": 600, "max_output_tokens": 0},
                               dimensions={"api_key": "k2"})
    assert other_key.status_code == 201  # another key: outside the budget's scope
    refused = await _reserve(client, cid, "c", estimate={"input_tokens": 600, "max_output_tokens": 0},
                             dimensions={"api_key": "k1"})
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["retry_after_seconds"] == int(refused.headers["retry-after"])
    assert (refused.json()["used"], refused.json()["held"], refused.json()["limit"]) == (0, 600, 1000)
    no_estimate = await _reserve(client, cid, "d", amount="1.00", dimensions={"api_key": "k1"})
    assert no_estimate.status_code == 422 and no_estimate.json()["fields"][0]["field"] == "estimate"
    assert b["api_key"] == "k1"


async def test_soft_budget_alerts_each_threshold_once_per_window(
        client: AsyncTestClient, db: Database, tag: str, book: str):
    cid = await _funded(client, tag, book)
    b = await _budget(client, customer_id=cid, window="day", metric="money", limit="1.00", mode="soft",
                      thresholds=[50, 80, 100])
    ids = []
    for i, amount in enumerate(["0.40", "0.20", "0.30", "0.50"]):  # 0.40, 0.60 (50), 0.90 (80), 1.40 (100)
        r = await _reserve(client, cid, f"s{i}", amount=amount)
        assert r.status_code == 201  # soft: past its limit too
        ids.append(r.json()["id"])
    for rid in ids:  # everything returns, and is held again: the thresholds are crossed again
        assert (await client.post(f"/v1/reservations/{rid}/release")).status_code == 200
    assert (await _reserve(client, cid, "again", amount="1.50")).status_code == 201
    rows = await db.read(lambda conn: conn.execute(text(
        "SELECT payload FROM outbox WHERE customer_id = :c AND topic = 'budget.threshold_crossed' ORDER BY id"),
        {"c": cid}))
    payloads = [row.payload for row in rows]
    assert [p["threshold"] for p in payloads] == [50, 80, 100]
    assert {p["budget_id"] for p in payloads} == {b["id"]}
    assert [p["used"] for p in payloads] == ["0.00", "0.00", "0.00"]
    assert [p["held"] for p in payloads] == ["0.60", "0.90", "1.40"]


async def test_budget_routes_change_list_and_delete(client: AsyncTestClient, tag: str, book: str):
    cid = await _funded(client, tag, book)
    b = await _budget(client, customer_id=cid, window="lifetime", metric="requests", limit=2, model="model-*")
    assert (await _reserve(client, cid, "x1", amount="0.10")).status_code == 201
    assert (await _reserve(client, cid, "x2", amount="0.10")).status_code == 201
    assert (await _reserve(client, cid, "x3", amount="0.10")).status_code == 429
    changed = await client.patch(f"/v1/budgets/{b['id']}", json={"limit": 3, "name": "three calls"})
    assert changed.status_code == 200 and (changed.json()["limit"], changed.json()["name"]) == (3, "three calls")
    assert (await _reserve(client, cid, "x3", amount="0.10")).status_code == 201
    listed = (await client.get(f"/v1/budgets?customer_id={cid}")).json()["budgets"]
    assert [(x["id"], x["held"]) for x in listed] == [(b["id"], 3)]
    wrong = await client.patch(f"/v1/budgets/{b['id']}", json={"limit": "3.00"})
    assert wrong.status_code == 422 and wrong.json()["fields"][0]["field"] == "limit"
    assert (await client.delete(f"/v1/budgets/{b['id']}")).status_code == 200
    assert (await client.get(f"/v1/budgets/{b['id']}")).status_code == 404
    assert (await _reserve(client, cid, "x4", amount="0.10")).status_code == 201
    bad = await client.post("/v1/budgets", json={"customer_id": cid, "window": "week", "metric": "money",
                                                 "limit": "1.00"})
    assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "window"
    zone = await client.post("/v1/budgets", json={"customer_id": cid, "window": "day", "metric": "money",
                                                  "limit": "1.00", "time_zone": "Mars/Olympus"})
    assert zone.status_code == 422 and zone.json()["fields"][0]["field"] == "time_zone"
    nobody = await client.post("/v1/budgets", json={"customer_id": f"nobody-{tag}", "window": "day",
                                                    "metric": "money", "limit": "1.00"})
    assert nobody.status_code == 404


async def test_a_budget_created_again_under_its_idempotency_key_is_the_same_budget(
        client: AsyncTestClient, tag: str, book: str):
    cid = await _funded(client, tag, book)
    body = {"customer_id": cid, "window": "day", "metric": "tokens", "limit": 5000, "thresholds": [80]}
    first = await client.post("/v1/budgets", json=body, headers={"Idempotency-Key": f"b-{tag}"})
    again = await client.post("/v1/budgets", json=body, headers={"Idempotency-Key": f"b-{tag}"})
    assert (first.status_code, again.status_code) == (201, 201) and first.content == again.content
    other = await client.post("/v1/budgets", json={**body, "limit": 6000}, headers={"Idempotency-Key": f"b-{tag}"})
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"
    listed = (await client.get(f"/v1/budgets?customer_id={cid}")).json()["budgets"]
    assert [b["id"] for b in listed] == [first.json()["id"]]


async def test_post_hoc_usage_counts_in_the_window_of_its_own_time_and_is_never_refused(
        client: AsyncTestClient, db: Database, tag: str, book: str):
    cid = await _funded(client, tag, book)
    b = await _budget(client, customer_id=cid, window="lifetime", metric="money", limit="1.00",
                      thresholds=[100])
    events = [{"event_id": f"e{i}", "customer_id": cid, "model": "model-a", "timestamp": "2026-11-23T10:00:00Z",
               "usage": {"input_tokens": 60000, "output_tokens": 0}} for i in range(2)]  # 0.61 each
    sent = await client.post("/v1/usage-events", json=events)
    assert sent.json()["accepted"] == 2, sent.text
    again = await client.post("/v1/usage-events", json=events)
    assert again.json()["duplicates"] == 2  # counted once
    now = (await client.get(f"/v1/budgets/{b['id']}")).json()
    assert (now["used"], now["held"], now["remaining"]) == ("1.22", "0.00", "0.00")  # past a hard limit: it happened
    refused = await _reserve(client, cid, "after", amount="0.01")
    assert refused.status_code == 429 and refused.json()["used"] == "1.22"
    rows = await db.read(lambda conn: conn.execute(text(
        "SELECT payload FROM outbox WHERE customer_id = :c AND topic = 'budget.threshold_crossed'"), {"c": cid}))
    assert [(p["threshold"], p["used"]) for (p,) in rows] == [(100, "1.22")]
    verify = (await client.post("/v1/audit/verify")).json()
    assert next(c for c in verify["checks"] if c["name"] == "budgets")["ok"]


async def test_a_change_to_what_a_budget_is_is_refused_not_ignored(client: AsyncTestClient, tag: str, book: str):
    # PATCH {"window": "day"} was 200 with the budget unchanged: the caller was told nothing
    cid = await _funded(client, tag, book)
    b = await _budget(client, customer_id=cid, window="month", metric="money", limit="10.00")
    for change, field in [({"window": "day"}, "window"), ({"metric": "tokens", "limit": 5}, "metric"),
                          ({"time_zone": "Europe/Paris"}, "time_zone"), ({"name": "x", "model": "gpt-*"}, "model"),
                          ({"dimensions": {"feature": "search"}}, "dimensions"), ({"api_key": "k1"}, "api_key"),
                          ({"customer_id": "other"}, "customer_id"), ({"limt": "5.00"}, "limt")]:
        refused = await client.patch(f"/v1/budgets/{b['id']}", json=change)
        assert refused.status_code == 422 and refused.json()["code"] == "validation_error", (change, refused.text)
        assert refused.json()["fields"][0]["field"] == field, (change, refused.text)
    now = (await client.get(f"/v1/budgets/{b['id']}")).json()
    assert (now["window"], now["metric"], now["name"], now["limit"]) == ("month", "money", "", "10.00")


async def test_a_budget_the_operator_set_is_changed_by_admin_keys_only(client: AsyncTestClient, tag: str, book: str):
    """A customer's own key manages the budgets it made, but may not raise or delete the cap an
    admin key set on it (it could, before: PATCH and DELETE answered 200)."""
    cid = await _funded(client, tag, book)
    made = await client.post("/v1/api-keys", json={"scope": f"customer:{cid}"})
    own = {"Authorization": f"Bearer {made.json()['key']}"}
    cap = await _budget(client, customer_id=cid, window="month", metric="money", limit="5.00", name="plan cap")
    assert cap["set_by"] == "operator"
    mine = await client.post("/v1/budgets", headers=own, json={"customer_id": cid, "window": "day",
                                                                "metric": "money", "limit": "1.00"})
    assert mine.status_code == 201 and mine.json()["set_by"] == "customer", mine.text
    raised = await client.patch(f"/v1/budgets/{cap['id']}", headers=own, json={"limit": "500.00"})
    assert raised.status_code == 403 and raised.json()["code"] == "forbidden", raised.text
    dropped = await client.delete(f"/v1/budgets/{cap['id']}", headers=own)
    assert dropped.status_code == 403 and dropped.json()["code"] == "forbidden", dropped.text
    seen = await client.get(f"/v1/budgets/{cap['id']}", headers=own)
    assert seen.status_code == 200 and (seen.json()["limit"], seen.json()["set_by"]) == ("5.00", "operator")
    assert (await _reserve(client, cid, "cap-1", amount="6.00")).status_code == 429  # the cap still holds
    changed = await client.patch(f"/v1/budgets/{mine.json()['id']}", headers=own, json={"limit": "2.00"})
    assert changed.status_code == 200 and changed.json()["limit"] == "2.00", changed.text
    assert (await client.delete(f"/v1/budgets/{mine.json()['id']}", headers=own)).status_code == 200
    assert (await client.patch(f"/v1/budgets/{cap['id']}", json={"limit": "6.00"})).status_code == 200  # admin


class _BudgetReads:
    """The statements that read budgets (`FROM budgets`) on the app's database, while in use."""

    def __init__(self, client: AsyncTestClient) -> None:
        self.engine = client.app.state.services.db.engine.sync_engine
        self.seen: list[str] = []

    def _seen(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if "FROM budgets" in statement:
            self.seen.append(statement)

    def __enter__(self) -> list[str]:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self.seen

    def __exit__(self, *exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


async def test_a_customer_keys_change_and_delete_read_the_budget_once_where_they_act(
        client: AsyncTestClient, tag: str, book: str):
    """A customer key's PATCH and DELETE read the budget to authorize it (set_by, its customer),
    then again, in other transactions, to act on it: 9 reads for a PATCH, a window in which the
    budget could change between the check and the write. Now the unit of work that writes reads
    it once, and checks it there; the answers are unchanged."""
    cid = await _funded(client, tag, book)
    other = await _funded(client, f"{tag}-o", book)
    made = await client.post("/v1/api-keys", json={"scope": f"customer:{cid}"})
    own = {"Authorization": f"Bearer {made.json()['key']}"}
    cap = await _budget(client, customer_id=cid, window="month", metric="money", limit="5.00")
    theirs = await _budget(client, customer_id=other, window="month", metric="money", limit="5.00")
    mine = (await client.post("/v1/budgets", headers=own, json={"customer_id": cid, "window": "day",
                                                                "metric": "tokens", "limit": 1000})).json()
    with _BudgetReads(client) as reads:
        changed = await client.patch(f"/v1/budgets/{mine['id']}", headers=own, json={"limit": 2000, "name": "n"})
    assert changed.status_code == 200 and (changed.json()["limit"], changed.json()["name"]) == (2000, "n")
    assert len(reads) <= 2, reads  # the owner (for the lane's lock: it never changes), then the budget
    with _BudgetReads(client) as reads:
        dropped = await client.delete(f"/v1/budgets/{mine['id']}", headers=own)
    assert dropped.status_code == 200 and dropped.json()["limit"] == 2000, dropped.text
    assert len(reads) == 1, reads  # its owner is known now
    assert (await client.get(f"/v1/budgets/{mine['id']}", headers=own)).status_code == 404
    assert (await client.delete(f"/v1/budgets/{mine['id']}", headers=own)).status_code == 404  # gone already
    for method, body in (("PATCH", {"limit": "500.00"}), ("DELETE", None)):
        refused = await client.request(method, f"/v1/budgets/{cap['id']}", headers=own, json=body)
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden", refused.text
        hidden = await client.request(method, f"/v1/budgets/{theirs['id']}", headers=own, json=body)
        assert hidden.status_code == 404 and hidden.json()["code"] == "not_found", hidden.text
    money = await client.patch(f"/v1/budgets/{cap['id']}", json={"limit": 6})  # a money limit is a string
    assert money.status_code == 422 and money.json()["fields"][0]["field"] == "limit", money.text
    assert (await client.get(f"/v1/budgets/{cap['id']}")).json()["limit"] == "5.00"
    assert (await client.get(f"/v1/budgets/{theirs['id']}")).json()["limit"] == "5.00"


async def test_an_input_or_output_token_quota_counts_every_kind_of_input_and_output_token_billed(
        client: AsyncTestClient, tag: str, book: str):
    """Audio and image tokens in and out, one-hour cache writes, tool tokens: a settle (or usage event)
    billed them as input or output, and a quota on input or output tokens counted none of them, so a
    hard quota of 1,000 input tokens a day let 5,010 through and took the next hold too."""
    cid = await _funded(client, tag, book)
    quota_in = await _budget(client, customer_id=cid, window="day", metric="input_tokens", limit=1000)
    quota_out = await _budget(client, customer_id=cid, window="day", metric="output_tokens", limit=1000)
    r = await _reserve(client, cid, "audio", estimate={"input_tokens": 10, "max_output_tokens": 1})
    assert r.status_code == 201, r.text
    settled = await client.post(f"/v1/reservations/{r.json()['id']}/settle", json={"usage": {
        "input_tokens": 10, "input_audio_tokens": 5000, "output_tokens": 1, "output_audio_tokens": 7000}})
    assert settled.status_code == 200, settled.text
    assert {ln["token_type"]: ln["quantity"] for ln in settled.json()["lines"]} == {
        "input": 5010, "output": 7001, "request": 1}  # the book bills them as input and output
    assert (await client.get(f"/v1/budgets/{quota_in['id']}")).json()["used"] == 5010
    assert (await client.get(f"/v1/budgets/{quota_out['id']}")).json()["used"] == 7001
    refused = await _reserve(client, cid, "next", estimate={"input_tokens": 10, "max_output_tokens": 1})
    assert refused.status_code == 429 and refused.json()["code"] == "budget_exceeded", refused.text
    # a usage event counts the same way: an Anthropic one-hour cache write, a tool's tokens
    other = await _funded(client, f"{tag}-ev", book)
    ev_quota = await _budget(client, customer_id=other, window="day", metric="input_tokens", limit=100000)
    sent = await client.post("/v1/usage-events", json=[
        {"event_id": "cache-1h", "customer_id": other, "model": "model-a", "timestamp": r.json()["created_at"],
         "anthropic_usage": {"input_tokens": 10, "output_tokens": 1, "cache_creation_input_tokens": 3000,
                             "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 3000}}},
        {"event_id": "tool", "customer_id": other, "model": "model-a", "timestamp": r.json()["created_at"],
         "usage": {"input_tokens": 10, "tool_tokens": 400, "output_tokens": 0}}])
    assert sent.json()["accepted"] == 2, sent.text
    assert (await client.get(f"/v1/budgets/{ev_quota['id']}")).json()["used"] == 3420


async def test_a_tokens_quota_counts_tokens_not_calls_seconds_characters_or_pages(client: AsyncTestClient, tag: str):
    """A `tokens` quota counted every unit of a call but its request: 2 web searches, 60 audio
    seconds, 100,000 input characters and 9 document pages were 100,071 tokens where the call had
    11. Only tokens count: every type an input_tokens or output_tokens quota counts."""
    book = f"units-{tag}"
    rules = [{"id": "in", "model": "model-a", "token_type": "input", "price": "10.00"},
             {"id": "out", "model": "model-a", "token_type": "output", "price": "20.00"},
             {"id": "search", "token_type": "web_search", "price": "0.01"},
             {"id": "seconds", "token_type": "audio_seconds", "price": "0.36"},
             {"id": "chars", "token_type": "input_characters", "price": "1.00"},
             {"id": "pages", "token_type": "document_page", "price": "0.01"}]
    created = await client.post("/v1/price-books", json={"id": book, "currency": "USD", "format": 2,
                                                         "effective_from": "2026-01-01T00:00:00Z", "rules": rules})
    assert created.status_code == 201, created.text
    cid = await _funded(client, tag, book)
    quota = await _budget(client, customer_id=cid, window="day", metric="tokens", limit=1000)
    r = await _reserve(client, cid, "units", estimate={"input_tokens": 10, "max_output_tokens": 1})
    assert r.status_code == 201, r.text
    settled = await client.post(f"/v1/reservations/{r.json()['id']}/settle", json={"usage": {
        "input_tokens": 10, "output_tokens": 1, "input_audio_tokens": 5, "web_search_calls": 2, "audio_seconds": 60,
        "input_characters": 100000, "document_pages": 9}})
    assert settled.status_code == 200, settled.text
    assert (await client.get(f"/v1/budgets/{quota['id']}")).json()["used"] == 16


@pytest.mark.parametrize(("value", "got"), [(2, "int"), (True, "bool")])
async def test_a_budget_dimension_sent_as_a_number_or_boolean_is_named_and_told_to_spell_it(
        client: AsyncTestClient, tag: str, book: str, value, got):
    """A budget's dimension values are text ({"tier": "2"} binds a call's {"tier": 2}). Sent as the
    call sends it, {"tier": 2} or {"tier": true}, it was 422 in msgspec's words on a field no one
    sent, 'dimensions[...]: Expected `str`, got `int`' (a float, null, object or array was already
    named dimensions.tier); now the dimension is named and the message says how to spell it. Nothing
    is written."""
    cid = await _funded(client, tag, book)
    response = await client.post("/v1/budgets", json={"customer_id": cid, "window": "day", "metric": "money",
                                                      "limit": "10.00", "dimensions": {"feature": "chat",
                                                                                      "tier": value}})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    spelled = "2" if value == 2 else "true"
    assert response.json()["fields"] == [{"field": "dimensions.tier", "message":
                                          f'must be a string: "{spelled}" binds a call\'s {spelled}'}], got
    listed = await client.get("/v1/budgets", params={"customer_id": cid})
    assert listed.status_code == 200 and listed.json()["budgets"] == [], listed.text

"""The same call sent several times at once under one Idempotency-Key has one effect, and every
copy is answered the same status and bytes (all but the one that did it as replays); a call that
fails before its commit keeps no answer. The copies go to the live server (the `http` fixture): through
AsyncTestClient no two of them were ever in flight at once."""
from __future__ import annotations

import asyncio

import httpx
from litestar.testing import AsyncTestClient

from wallets import store
from wallets.batch import Batch

COPIES = 4


async def _at_once(client: httpx.AsyncClient, method: str, path: str, key: str, body: object):
    sent = await asyncio.gather(*(client.request(method, path, json=body, headers={"Idempotency-Key": key})
                                  for _ in range(COPIES)))
    first = sent[0]
    assert all((r.status_code, r.content) == (first.status_code, first.content) for r in sent), \
        [(r.status_code, r.text) for r in sent]
    assert sorted(r.headers.get("idempotent-replayed") == "true" for r in sent) == [False] + [True] * (COPIES - 1), \
        [(r.status_code, r.text) for r in sent]
    return first


async def test_copies_sent_at_once_have_one_effect_and_one_answer(http: tuple[httpx.AsyncClient, str], tag: str,
                                                                 book: str):
    client, _ = http
    cid = f"race-{tag}"
    made = await _at_once(client, "POST", "/v1/customers", f"{tag}-c", {"id": cid, "price_book": book})
    assert made.status_code == 201
    assert (await _at_once(client, "POST", f"/v1/customers/{cid}/topups", f"{tag}-t",
                           {"amount": "2.00"})).status_code == 201
    assert (await _at_once(client, "POST", f"/v1/customers/{cid}/grants", f"{tag}-g",
                           {"amount": "1.00"})).status_code == 201
    held = await _at_once(client, "POST", "/v1/reservations", f"{tag}-r",
                          {"customer_id": cid, "request_id": "r", "model": "model-a", "amount": "0.50"})
    assert held.status_code == 201
    settled = await _at_once(client, "POST", f"/v1/reservations/{held.json()['id']}/settle", f"{tag}-s",
                             {"usage": {"input_tokens": 1000, "output_tokens": 10}})
    assert settled.status_code == 200 and settled.json()["charged"] == "0.0202"
    budget = await _at_once(client, "POST", "/v1/budgets", f"{tag}-b",
                            {"customer_id": cid, "name": "cap", "window": "month", "metric": "money", "limit": "9.00"})
    assert budget.status_code == 201
    events = await _at_once(client, "POST", "/v1/usage-events", f"{tag}-e", [
        {"event_id": "e1", "customer_id": cid, "model": "model-a", "timestamp": "2026-11-23T10:00:00Z",
         "usage": {"input_tokens": 1000}}])
    assert events.json()["accepted"] == 1, events.json()
    overrides = await _at_once(client, "PUT", f"/v1/customers/{cid}/price-overrides", f"{tag}-o",
                               {"discounts": []})
    assert overrides.status_code == 201, overrides.text
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    # 2.00 + 1.00 - 0.0202 (the settle) - 0.02 (the event: 0.01 in + 0.01 a call), once each
    assert (wallet["available"], wallet["reserved"]) == ("2.9598", "0.00")
    budgets = (await client.get(f"/v1/budgets?customer_id={cid}")).json()
    assert len(budgets["budgets"] if isinstance(budgets, dict) else budgets) == 1


async def test_copies_of_a_platform_call_sent_at_once_make_one_thing(http: tuple[httpx.AsyncClient, str], tag: str):
    client, _ = http
    book = await _at_once(client, "POST", "/v1/price-books", f"{tag}-p", {
        "id": f"race-{tag}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
        "rules": [{"id": "in", "model": "m", "token_type": "input", "price": "1"}]})
    assert book.status_code == 201
    versions = (await client.get(f"/v1/price-books/race-{tag}")).json()
    assert len(versions["versions"]) == 1
    key = await _at_once(client, "POST", "/v1/api-keys", f"{tag}-k", {"scope": "auditor", "name": f"race-{tag}"})
    assert key.status_code == 201 and key.json()["key"].startswith("tt_")
    assert [k["id"] for k in (await client.get("/v1/api-keys")).json() if k["name"] == f"race-{tag}"] == \
        [key.json()["id"]]


async def test_a_call_that_fails_before_its_commit_keeps_no_answer_and_its_retry_runs(
        client: AsyncTestClient, tag: str, book: str, monkeypatch):
    """A crash after the effects were written but before the commit: nothing is kept, so the same
    call again under its key is a fresh call that does it once (not a replayed 500)."""
    cid = f"crash-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    crashes: list[str] = []

    def crashing_once(original):
        async def write(*args, **kwargs):
            result = await original(*args, **kwargs)
            if not crashes:
                crashes.append("crashed")
                raise RuntimeError("the process died here")
            return result
        return write

    monkeypatch.setattr(Batch, "write", crashing_once(Batch.write))  # a wallet batch
    headers = {"Idempotency-Key": f"{tag}-t"}
    failed = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "2.00"}, headers=headers)
    assert failed.status_code == 500 and crashes == ["crashed"]
    retried = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "2.00"}, headers=headers)
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
    again = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "2.00"}, headers=headers)
    assert (again.status_code, again.content) == (201, retried.content)
    assert (await client.get(f"/v1/customers/{cid}/wallet")).json()["available"] == "2.00"

    crashes.clear()
    monkeypatch.setattr(store, "write", crashing_once(store.write))  # a call outside the batches
    body = {"customer_id": cid, "name": "cap", "window": "month", "metric": "money", "limit": "9.00"}
    headers = {"Idempotency-Key": f"{tag}-b"}
    failed = await client.post("/v1/budgets", json=body, headers=headers)
    assert failed.status_code == 500 and crashes == ["crashed"]
    retried = await client.post("/v1/budgets", json=body, headers=headers)
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
    budgets = (await client.get(f"/v1/budgets?customer_id={cid}")).json()
    assert len(budgets["budgets"] if isinstance(budgets, dict) else budgets) == 1

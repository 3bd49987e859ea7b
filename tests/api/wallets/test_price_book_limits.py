"""Price-book limits through HTTP (issue 9, item 6): a version of more than 10,000 rules is a
422 naming `rules`, refused before anything is parsed; one of 10,000 is accepted."""
from __future__ import annotations

import secrets
import time

from litestar.testing import AsyncTestClient


def rules(n: int) -> list[dict[str, str]]:
    return [{"id": f"r{i}", "model": f"m{i}", "token_type": "input", "price": "1"} for i in range(n)]


def version(book: str, n: int) -> dict[str, object]:
    return {"id": book, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": rules(n)}


async def test_a_version_over_the_rule_limit_is_refused_naming_rules(client: AsyncTestClient, tag: str):
    response = await client.post("/v1/price-books", json=version(f"huge-{tag}", 10_001))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert [f["field"] for f in body["fields"]] == ["rules"]
    assert "at most 10000 rules" in body["fields"][0]["message"]
    assert (await client.get(f"/v1/price-books/huge-{tag}")).status_code == 404


async def test_a_version_at_the_rule_limit_is_stored(client: AsyncTestClient, tag: str):
    started = time.perf_counter()
    response = await client.post("/v1/price-books", json=version(f"big-{tag}", 10_000))
    print(f"\nPOST of a 10,000-rule version: {time.perf_counter() - started:.2f} s")
    assert response.status_code == 201, response.text
    stored = (await client.get(f"/v1/price-books/big-{tag}")).json()
    assert len(stored["current"]["rules"]) == 10_000 and stored["versions"][0]["rule_count"] == 10_000


async def test_a_rule_of_each_token_type_api_md_names_is_stored(client: AsyncTestClient, tag: str):
    # API.md's token types include tool, image and audio: a book with them is a contract client's
    # book (79287c0 refused them with 422 for a few hours; they now price what they name)
    body = {"id": f"types-{tag}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
        {"id": t, "model": "gpt-4o-audio", "token_type": t, "price": "40"}
        for t in ("input", "cached_input", "cache_write", "output", "reasoning", "tool", "embedding", "image",
                  "audio", "request")]}
    response = await client.post("/v1/price-books", json=body)
    assert response.status_code == 201, response.text
    stored = (await client.get(f"/v1/price-books/types-{tag}")).json()
    assert {r["token_type"] for r in stored["current"]["rules"]} >= {"tool", "image", "audio"}


async def test_a_rule_id_or_model_too_long_to_count_usage_by_is_refused(client: AsyncTestClient, tag: str):
    # a rule's id keys the period's usage counters (a btree index): a 4,000-character id was
    # stored, and then every settle and usage event its book priced was a 500
    long_id = secrets.token_urlsafe(300)[:201]
    for rule, field in (({"id": long_id, "model": "model-a"}, "rules[0].id"),
                        ({"id": "a-in", "model": "m" * 201}, "rules[0].model")):
        refused = await client.post("/v1/price-books", json={
            "id": f"long-{tag}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
            "rules": [{**rule, "token_type": "input", "price": "10"}]})
        assert refused.status_code == 422, refused.text
        assert [f["field"] for f in refused.json()["fields"]] == [field]
    assert (await client.get(f"/v1/price-books/long-{tag}")).status_code == 404


async def test_a_rule_id_at_the_limit_prices_settles_and_usage_events(client: AsyncTestClient, tag: str):
    rule_id = secrets.token_urlsafe(300)[:200]  # incompressible: as long as an index entry gets
    made = await client.post("/v1/price-books", json={
        "id": f"long-{tag}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
        "rules": [{"id": rule_id, "model": "m" * 200, "token_type": "input", "price": "10"}]})
    assert made.status_code == 201, made.text
    cid = f"long-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "currency": "USD", "price_book": f"long-{tag}"})
            ).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    held = await client.post("/v1/reservations", json={"customer_id": cid, "request_id": "r1", "model": "m" * 200,
                                                       "estimate": {"input_tokens": 1000, "max_output_tokens": 0}})
    assert held.status_code == 201, held.text
    settled = await client.post(f"/v1/reservations/{held.json()['id']}/settle",
                                json={"usage": {"input_tokens": 100_000}, "final": True})
    assert settled.status_code == 200, settled.text
    assert settled.json()["charged"] == "1.00" and settled.json()["lines"][0]["rule_id"] == rule_id
    sent = await client.post("/v1/usage-events", json=[{
        "event_id": "e1", "customer_id": cid, "model": "m" * 200, "timestamp": "2026-12-01T00:00:00Z",
        "usage": {"input_tokens": 1000}}])
    assert sent.status_code == 200 and sent.json()["accepted"] == 1, sent.text

"""Price-book limits through HTTP (issue 9, item 6): a version of more than 10,000 rules is a
422 naming `rules`, refused before anything is parsed; one of 10,000 is accepted."""
from __future__ import annotations

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

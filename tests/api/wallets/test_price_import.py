"""Price books imported from genai-prices' bundled snapshot, through the admin endpoint: the
import is idempotent, and the imported book prices a reserve and its settle over HTTP to the
atomic unit of genai-prices' own calculation."""
from __future__ import annotations

import warnings
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from litestar.testing import AsyncTestClient

genai_prices = pytest.importorskip("genai_prices")

IMPORT = {"source": "genai-prices", "provider": "openai", "model": "gpt-5.4"}


def genai_amount(usage: dict[str, int], context: dict[str, str] | None = None) -> str:
    """genai-prices' price of a call now, rounded half-even to the nano-dollar, as a decimal string."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        price = genai_prices.calc_price(genai_prices.Usage(**usage), "gpt-5.4", provider_id="openai",
                                        genai_request_timestamp=datetime.now(UTC), price_context=context).total_price
    return str(price.quantize(Decimal("1e-9"), rounding=ROUND_HALF_EVEN).normalize())


async def test_importing_the_same_data_again_creates_no_version(client: AsyncTestClient):
    first = await client.post("/v1/price-books/import", json=IMPORT)
    assert first.status_code == 200, first.text
    (book,) = first.json()["books"]
    assert book["book"] == "genai-openai" and book["models"] == 1 and book["rules"] > 0
    versions = (await client.get("/v1/price-books/genai-openai?rules=true")).json()["versions"]
    assert versions[-1]["format"] == 2 and versions[-1]["unpriced"] == "zero"
    assert all(r["source"].startswith("genai-prices") and r["source_date"] for r in versions[-1]["rules"])
    again = (await client.post("/v1/price-books/import", json={**IMPORT, "effective_from": "2030-01-01T00:00:00Z"})
             ).json()["books"][0]
    assert (again["unchanged"], again["created"], again["conflicts"]) == (True, [], [])
    assert (await client.get("/v1/price-books/genai-openai?rules=true")).json()["versions"] == versions


async def test_an_effective_from_finer_than_a_microsecond_takes_effect_at_the_next_microsecond(
        client: AsyncTestClient):
    """effective_from 2030-01-01T00:00:00.0000005Z is half a microsecond past midnight: the
    version it adds to a book takes effect from .000001 (as one posted to /v1/price-books with it
    does), where the 7th digit was dropped (.000000), and a call at midnight took the new prices."""
    own = {"id": "genai-cohere", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
           "rules": [{"id": "own:input", "model": "cohere-own", "token_type": "input", "price": "1"}]}
    assert (await client.post("/v1/price-books", json=own)).status_code == 201
    imported = await client.post("/v1/price-books/import", json={
        "source": "genai-prices", "provider": "cohere", "model": "command",
        "effective_from": "2030-01-01T00:00:00.0000005Z"})
    assert imported.status_code == 200, imported.text
    (book,) = imported.json()["books"]
    # in UTC with a Z, as the versions' effective_from below and every other answer's times
    assert book["created"][0] == "2030-01-01T00:00:00.000001Z", book
    versions = (await client.get("/v1/price-books/genai-cohere")).json()["versions"]
    assert [v["effective_from"] for v in versions][:2] == ["2026-01-01T00:00:00Z", "2030-01-01T00:00:00.000001Z"]


async def test_an_unknown_provider_is_not_found(client: AsyncTestClient):
    response = await client.post("/v1/price-books/import", json={"source": "genai-prices", "provider": "nobody"})
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert response.json()["detail"] == "genai-prices has no provider nobody"
    # a model the provider does not have: the provider is named as such (it read "has no model no-such-model x-ai")
    model = await client.post("/v1/price-books/import", json={"source": "genai-prices", "provider": "x-ai",
                                                                "model": "no-such-model"})
    assert (model.status_code, model.json()["detail"]) == (
        404, "genai-prices has no model no-such-model of provider x-ai")
    wrong = await client.post("/v1/price-books/import", json={"source": "elsewhere"})
    assert wrong.status_code == 422 and wrong.json()["code"] == "validation_error"


async def test_the_imported_book_prices_a_reserve_and_a_flex_settle_like_genai_prices(client: AsyncTestClient,
                                                                                       tag: str):
    assert (await client.post("/v1/price-books/import", json=IMPORT)).status_code == 200
    cid = f"importer-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "name": "I", "price_book": "genai-openai"})
            ).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "100.00"})).status_code == 201
    # a 300,000-token prompt crosses gpt-5.4's 272k tier: the hold is at the long-context prices
    reserved = await client.post("/v1/reservations", json={
        "customer_id": cid, "request_id": "r1", "model": "gpt-5.4",
        "estimate": {"input_tokens": 300_000, "max_output_tokens": 1_000}})
    assert reserved.status_code == 201, reserved.text
    assert reserved.json()["amount"] == genai_amount({"input_tokens": 300_000, "output_tokens": 1_000})
    # the Responses usage, with the service tier OpenAI reported on the response
    usage = {"input_tokens": 300_000, "output_tokens": 1_000, "total_tokens": 301_000, "service_tier": "flex",
             "input_tokens_details": {"cached_tokens": 100_000},
             "output_tokens_details": {"reasoning_tokens": 200}}
    settled = await client.post(f"/v1/reservations/{reserved.json()['id']}/settle",
                                json={"openai_usage": usage, "final": True})
    assert settled.status_code == 200, settled.text
    assert settled.json()["charged"] == genai_amount(
        {"input_tokens": 300_000, "cache_read_tokens": 100_000, "output_tokens": 1_000,
         "output_reasoning_tokens": 200}, {"service_tier": "flex"})
    assert {ln["description"] for ln in settled.json()["lines"]} >= {"input (long context, flex)"}
    verify = (await client.post("/v1/audit/verify")).json()
    assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]


async def test_a_gemini_usage_metadata_settles_audio_cache_and_thoughts_like_genai_prices(client: AsyncTestClient,
                                                                                          tag: str):
    imported = await client.post("/v1/price-books/import", json={
        "source": "genai-prices", "provider": "google", "model": "gemini-2.5-flash"})
    assert imported.status_code == 200, imported.text
    cid = f"gemini-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "name": "G", "price_book": "genai-google"})
            ).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    reserved = (await client.post("/v1/reservations", json={
        "customer_id": cid, "request_id": "g1", "model": "gemini-2.5-flash",
        "estimate": {"input_tokens": 30_000, "max_output_tokens": 3_000}})).json()
    metadata = {"promptTokenCount": 30_000, "cachedContentTokenCount": 8_000, "candidatesTokenCount": 1_200,
                "thoughtsTokenCount": 900, "totalTokenCount": 32_100,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 20_000},
                                        {"modality": "AUDIO", "tokenCount": 10_000}],
                "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 5_000},
                                       {"modality": "AUDIO", "tokenCount": 3_000}]}
    settled = await client.post(f"/v1/reservations/{reserved['id']}/settle", json={"gemini_usage": metadata})
    assert settled.status_code == 200, settled.text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        price = genai_prices.calc_price(genai_prices.Usage(
            input_tokens=30_000, cache_read_tokens=8_000, input_audio_tokens=10_000, cache_audio_read_tokens=3_000,
            output_tokens=2_100, output_reasoning_tokens=900), "gemini-2.5-flash", provider_id="google",
            genai_request_timestamp=datetime.now(UTC)).total_price
    assert settled.json()["charged"] == str(price.quantize(Decimal("1e-9"), rounding=ROUND_HALF_EVEN).normalize())
    assert {ln["token_type"] for ln in settled.json()["lines"]} == {
        "input", "cached_input", "input_audio", "cached_input_audio", "output", "reasoning"}


async def test_an_import_into_a_book_its_customers_price_in_another_currency_is_a_conflict(client: AsyncTestClient,
                                                                                           tag: str):
    # a EUR customer named the provider's book before any import: the USD book is not created,
    # and the import says why, as it reports any conflict (nothing of that book written)
    assert (await client.post("/v1/customers", json={"id": f"euro-{tag}", "currency": "EUR",
                                                     "price_book": "genai-deepseek"})).status_code == 201
    imported = await client.post("/v1/price-books/import", json={"source": "genai-prices", "provider": "deepseek"})
    assert imported.status_code == 200, imported.text
    (book,) = imported.json()["books"]
    assert book["created"] == [] and book["unchanged"] is False
    assert len(book["conflicts"]) == 1 and "EUR" in book["conflicts"][0]
    assert (await client.get("/v1/price-books/genai-deepseek")).status_code == 404


async def test_an_import_into_a_book_stored_in_another_currency_reports_a_conflict(client: AsyncTestClient):
    # someone made genai-zai in euros before any import: the import cannot version it, says so
    # in its report as for any conflict, and goes on with the other books (it was a 409, which
    # stopped an import of every provider at that book, for good)
    euro = {"id": "genai-zai", "currency": "EUR", "effective_from": "2026-01-01T00:00:00Z",
            "rules": [{"id": "own", "model": "glm-own", "token_type": "input", "price": "1"}]}
    assert (await client.post("/v1/price-books", json=euro)).status_code == 201
    imported = await client.post("/v1/price-books/import", json={"source": "genai-prices", "provider": "zai"})
    assert imported.status_code == 200, imported.text
    (book,) = imported.json()["books"]
    assert (book["created"], book["unchanged"]) == ([], False)
    assert book["conflicts"] == ["book genai-zai is priced in EUR, not USD"]
    assert len((await client.get("/v1/price-books/genai-zai")).json()["versions"]) == 1


async def test_an_import_whose_rules_clash_with_a_kept_rule_reports_a_conflict(client: AsyncTestClient):
    # a rule added by hand to the provider's book (kept: its model is not imported) under an id
    # the import uses: the merged version is invalid, which the report says (it was a 422)
    own = {"id": "genai-moonshotai", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
           "rules": [{"id": "kimi-k2:input", "model": "kimi-own", "token_type": "input", "price": "1"}]}
    assert (await client.post("/v1/price-books", json=own)).status_code == 201
    imported = await client.post("/v1/price-books/import", json={"source": "genai-prices", "provider": "moonshotai"})
    assert imported.status_code == 200, imported.text
    (book,) = imported.json()["books"]
    assert (book["created"], book["unchanged"]) == ([], False)
    assert len(book["conflicts"]) == 1 and "duplicate rule id 'kimi-k2:input'" in book["conflicts"][0]
    assert len((await client.get("/v1/price-books/genai-moonshotai")).json()["versions"]) == 1

"""A price with a leading zero ("01", "00") or a zero with a sign ("-0", "-00") is refused at the
edge in words, as " 10" ("not a plain decimal number") and "-1" ("must not be negative") are: it
was 422 with msgspec's whole regex ("Expected `str` matching regex '^(?:(?:0|[1-9]..."), because
pricing's own parse reads these (stored versions still load through it). And a book version
without `effective_from` says the field is required, not that it "must be an RFC 3339 date-time"."""

from __future__ import annotations

import pytest

from tests.api.apps import api_client

ADMIN = {"Authorization": "Bearer words-admin"}
RULE = {"id": "a-in", "model": "model-a", "token_type": "input"}
BOOK = {
    "id": "words",
    "currency": "USD",
    "effective_from": "2026-01-01T00:00:00Z",
    "rules": [{**RULE, "price": "10.00"}],
}
# what each should be written as: the leading zeros dropped, and a zero's sign
PLAIN = [("01", "1"), ("00", "0"), ("-00", "0"), ("-0", "0"), ("007.50", "7.50"), ("-0.00", "0.00")]


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="words-admin", books=[BOOK]) as c:
        made = await c.post("/v1/customers", headers=ADMIN, json={"id": "words-1", "price_book": "words"})
        assert made.status_code == 201, made.text
        yield c


def _said(answer, field: str) -> str:
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "validation_error", answer.text
    [named] = [f for f in answer.json()["fields"] if f["field"] == field]
    assert "regex" not in named["message"], named
    return named["message"]


@pytest.mark.parametrize(("sent", "plain"), PLAIN)
async def test_a_book_price_with_a_leading_zero_or_a_signed_zero_is_refused_in_words(client, sent, plain) -> None:
    rule = await client.post(
        "/v1/price-books", headers=ADMIN, json={**BOOK, "id": "w2", "rules": [{**RULE, "price": sent}]}
    )
    said = _said(rule, "rules[0].price")
    assert said.startswith(f"not a plain decimal number: {sent!r}") and said.endswith(f"(write {plain!r})"), said
    tiered = await client.post(
        "/v1/price-books",
        headers=ADMIN,
        json={**BOOK, "id": "w2", "rules": [{**RULE, "tiers": [{"up_to": 1000, "price": "2"}, {"price": sent}]}]},
    )
    assert _said(tiered, "rules[0].tiers[1].price") == said
    assert (await client.get("/v1/price-books/w2", headers=ADMIN)).status_code == 404  # nothing stored


@pytest.mark.parametrize(("sent", "plain"), PLAIN)
async def test_an_override_price_with_a_leading_zero_or_a_signed_zero_is_refused_in_words(client, sent, plain) -> None:
    url = "/v1/customers/words-1/price-overrides"
    put = await client.put(url, headers=ADMIN, json={"contract_prices": [{**RULE, "id": "c", "price": sent}]})
    said = _said(put, "contract_prices[0].price")
    assert said.startswith(f"not a plain decimal number: {sent!r}") and said.endswith(f"(write {plain!r})"), said
    assert (await client.get(url, headers=ADMIN)).json()["versions"] == []  # nothing stored


async def test_an_override_percent_with_a_leading_zero_is_refused_in_words(client) -> None:
    put = await client.put(
        "/v1/customers/words-1/price-overrides", headers=ADMIN, json={"discounts": [{"id": "d", "percent": "05"}]}
    )
    assert _said(put, "discounts[0].percent") == "not a plain decimal number: '05' has a leading zero (write '5')"


async def test_the_neighbours_keep_their_words(client) -> None:
    """Guard: what pricing said already, and says still."""
    for sent, words in (
        (" 10", "not a plain decimal number: ' 10'"),
        ("-1", "must not be negative"),
        ("-01", "must not be negative"),
    ):
        said = _said(
            await client.post(
                "/v1/price-books", headers=ADMIN, json={**BOOK, "id": "w3", "rules": [{**RULE, "price": sent}]}
            ),
            "rules[0].price",
        )
        assert said == words, (sent, said)


async def test_a_book_version_without_effective_from_says_it_is_required(client) -> None:
    body = {k: v for k, v in BOOK.items() if k != "effective_from"}
    said = _said(await client.post("/v1/price-books", headers=ADMIN, json=body), "effective_from")
    assert said.startswith("is required"), said

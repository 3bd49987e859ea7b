"""A price change effective at T: usage at T-1s is rated by the old version, usage at T by the
new one, although both are processed after T (issue: versioned price books)."""
from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from litestar.testing import AsyncTestClient

T = "2026-06-01T00:00:00Z"
BOOK = {"id": "", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"},
    {"id": "call", "token_type": "request", "price": "0.01"},
]}


async def test_usage_is_rated_by_the_version_in_force_at_its_own_time(client: AsyncTestClient, tag: str):
    book = f"versions-{tag}"
    assert (await client.post("/v1/price-books", json={**BOOK, "id": book})).status_code == 201
    doubled = [{**rule, "price": "20.00"} if rule["id"] == "a-in" else rule for rule in BOOK["rules"]]
    assert (await client.post("/v1/price-books", json={**BOOK, "id": book, "effective_from": T,
                                                       "rules": doubled})).status_code == 201
    customer = f"cust-{tag}"
    await client.post("/v1/customers", json={"id": customer, "currency": "USD", "price_book": book})
    await client.post(f"/v1/customers/{customer}/topups", json={"amount": "10.00"})

    events = [{"event_id": f"{tag}-{name}", "customer_id": customer, "model": "model-a", "timestamp": when,
               "usage": {"input_tokens": 1_000_000}}
              for name, when in (("before", "2026-05-31T23:59:59Z"), ("at", T))]
    result = (await client.post("/v1/usage-events", json=events)).json()
    assert result == {"accepted": 2, "duplicates": 0, "rejected": []}

    before = (await client.get(f"/v1/audit/charges/{tag}-before")).json()["charges"][0]
    at = (await client.get(f"/v1/audit/charges/{tag}-at")).json()["charges"][0]
    assert before["price_version"] == "2026-01-01T00:00:00Z" and at["price_version"] == T
    # $10 and $20 for the million input tokens, each plus the $0.01 request fee
    assert Decimal(before["charged"]) == Decimal("10.01")
    assert Decimal(at["charged"]) == Decimal("20.01")


async def test_a_book_posted_in_another_currency_than_its_customers_is_refused(client: AsyncTestClient, tag: str):
    # customers may name a book before it exists (the default book "standard", say); the book
    # then posted in EUR must not price a USD customer's usage (EUR amounts charged as dollars)
    book, customer = f"later-{tag}", f"dollar-{tag}"
    created = await client.post("/v1/customers", json={"id": customer, "currency": "USD", "price_book": book})
    assert created.status_code == 201, created.text
    euro = await client.post("/v1/price-books", json={**BOOK, "id": book, "currency": "EUR"})
    assert euro.status_code == 422, euro.text
    assert euro.json()["code"] == "currency_mismatch" and euro.json()["field"] == "currency"
    assert euro.json()["customer_id"] == customer
    assert (await client.get(f"/v1/price-books/{book}")).status_code == 404  # nothing stored
    assert (await client.post("/v1/price-books", json={**BOOK, "id": book})).status_code == 201


async def _held(client: AsyncTestClient, tag: str, book: str) -> dict:
    customer = f"held-{tag}"
    await client.post("/v1/customers", json={"id": customer, "currency": "USD", "price_book": book})
    await client.post(f"/v1/customers/{customer}/topups", json={"amount": "50.00"})
    held = await client.post("/v1/reservations", json={"customer_id": customer, "request_id": "r1", "model": "model-a",
                                                       "estimate": {"input_tokens": 1_000_000, "max_output_tokens": 0}})
    assert held.status_code == 201, held.text
    assert held.json()["amount"] == "10.01"  # v1: $10 per 1M input tokens, $0.01 a call
    return held.json()


async def test_a_version_taking_effect_after_a_hold_does_not_price_its_settle(client: AsyncTestClient, tag: str):
    """A price change posted while a call runs, in force from a moment after its reservation
    was made: the settle is rated at the reservation's time, by the version that priced its hold."""
    book = f"midcall-{tag}"
    assert (await client.post("/v1/price-books", json={**BOOK, "id": book})).status_code == 201
    held = await _held(client, tag, book)
    after = datetime.fromisoformat(held["created_at"]) + timedelta(milliseconds=1)
    doubled = [{**rule, "price": "20.00"} if rule["id"] == "a-in" else rule for rule in BOOK["rules"]]
    posted = await client.post("/v1/price-books", json={**BOOK, "id": book, "rules": doubled,
                                                        "effective_from": after.isoformat()})
    assert posted.status_code == 201, posted.text
    settled = (await client.post(f"/v1/reservations/{held['id']}/settle",
                                 json={"usage": {"input_tokens": 1_000_000}})).json()
    assert (settled["charged"], settled["released"]) == ("10.01", "0.00")
    assert {ln["price_version"] for ln in settled["lines"]} == {"2026-01-01T00:00:00Z"}


async def test_a_version_back_dated_over_an_open_hold_prices_its_settle(client: AsyncTestClient, tag: str):
    """A version posted while a call runs but in force from before its reservation (a correction
    dated back): the settle is rated by it, as the book stands when the usage is charged, and
    charges past the hold (its hold was priced by the version it replaces)."""
    book = f"backdated-{tag}"
    assert (await client.post("/v1/price-books", json={**BOOK, "id": book})).status_code == 201
    held = await _held(client, tag, book)
    before = datetime.fromisoformat(held["created_at"]) - timedelta(seconds=1)
    doubled = [{**rule, "price": "20.00"} if rule["id"] == "a-in" else rule for rule in BOOK["rules"]]
    posted = await client.post("/v1/price-books", json={**BOOK, "id": book, "rules": doubled,
                                                        "effective_from": before.isoformat()})
    assert posted.status_code == 201, posted.text
    settled = (await client.post(f"/v1/reservations/{held['id']}/settle",
                                 json={"usage": {"input_tokens": 1_000_000}})).json()
    assert (settled["charged"], settled["released"]) == ("20.01", "0.00")
    assert {ln["price_version"] for ln in settled["lines"]} == {posted.json()["version"]}


async def test_a_version_in_another_currency_than_its_book_is_a_currency_mismatch(client: AsyncTestClient, tag: str):
    # it was 409 idempotency_conflict, "Idempotency key reused with a different request": a
    # client retries such a 409 under a new key, and it is no conflict of keys
    book = f"dollars-{tag}"
    assert (await client.post("/v1/price-books", json={**BOOK, "id": book})).status_code == 201
    euro = await client.post("/v1/price-books", json={**BOOK, "id": book, "currency": "EUR",
                                                      "effective_from": "2026-02-01T00:00:00Z"})
    assert euro.status_code == 422, euro.text
    assert (euro.json()["code"], euro.json()["field"]) == ("currency_mismatch", "currency")
    assert euro.json()["detail"] == f"book {book} is priced in USD, not EUR"
    assert len((await client.get(f"/v1/price-books/{book}")).json()["versions"]) == 1


async def test_a_version_label_taken_by_another_time_is_a_conflict_naming_version(client: AsyncTestClient, tag: str):
    # it named effective_from and said "post another effective_from", which was not the problem
    book = f"labels-{tag}"
    assert (await client.post("/v1/price-books", json={**BOOK, "id": book, "version": "v1"})).status_code == 201
    doubled = [{**rule, "price": "20.00"} if rule["id"] == "a-in" else rule for rule in BOOK["rules"]]
    again = await client.post("/v1/price-books", json={**BOOK, "id": book, "version": "v1", "rules": doubled,
                                                       "effective_from": "2026-02-01T00:00:00Z"})
    assert again.status_code == 409, again.text
    assert (again.json()["code"], again.json()["field"]) == ("price_version_conflict", "version")
    assert again.json()["detail"] == (f"version v1 of {book} is the one in force from 2026-01-01T00:00:00Z; versions "
                                      "never change: give this one another version (by default its effective_from)")
    assert len((await client.get(f"/v1/price-books/{book}")).json()["versions"]) == 1


async def test_a_version_taken_with_other_rules_is_a_price_version_conflict_not_an_idempotency_one(
        client: AsyncTestClient, tag: str):
    """Another version at a stored version's effective_from, with no Idempotency-Key or a fresh
    one, was 409 `idempotency_conflict` ("Idempotency key reused with a different request"): no key
    was reused, and a client reading the code retries under a new key, to the same 409. It is
    `price_version_conflict`, naming the field; the same Idempotency-Key with another body stays
    `idempotency_conflict`. Nothing is stored either way: 1 version."""
    book = f"taken-{tag}"
    first = await client.post("/v1/price-books", json={**BOOK, "id": book}, headers={"Idempotency-Key": f"k1-{tag}"})
    assert first.status_code == 201, first.text
    doubled = [{**rule, "price": "20.00"} if rule["id"] == "a-in" else rule for rule in BOOK["rules"]]
    for headers in ({}, {"Idempotency-Key": f"k2-{tag}"}):
        other = await client.post("/v1/price-books", json={**BOOK, "id": book, "rules": doubled}, headers=headers)
        assert other.status_code == 409, other.text
        problem = other.json()
        assert (problem["code"], problem["field"]) == ("price_version_conflict", "effective_from"), headers
        assert problem["detail"] == (f"version 2026-01-01T00:00:00Z of {book} already takes effect then; "
                                     "versions never change, post another effective_from")
        assert other.headers["content-type"].startswith("application/problem+json")
    reused = await client.post("/v1/price-books", json={**BOOK, "id": book, "rules": doubled},
                               headers={"Idempotency-Key": f"k1-{tag}"})
    assert (reused.status_code, reused.json()["code"]) == (409, "idempotency_conflict"), reused.text
    assert len((await client.get(f"/v1/price-books/{book}")).json()["versions"]) == 1


async def test_a_format_1_book_refuses_units_it_cannot_price_but_tool_calls(client: AsyncTestClient, book: str,
                                                                               tag: str):
    """Audio seconds, characters, document pages and input messages have no format 1 type: a settle
    or usage event reporting them against a format 1 book charged the tokens and dropped the rest
    (100 audio seconds, 9 pages, 100,000 characters: $0), where usage no rule prices is
    unpriced_model. Tool calls (web searches, ...) stay unbilled by a format 1 book, as documented."""
    cid = f"f1-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    held = (await client.post("/v1/reservations", json={"customer_id": cid, "request_id": "r1", "model": "model-a",
                                                        "amount": "0.10"})).json()
    for extra in ({"audio_seconds": 100}, {"document_pages": 9}, {"input_characters": 100000},
                  {"input_messages": 3}, {"input_audio_seconds": 5}, {"annotated_document_pages": 1}):
        refused = await client.post(f"/v1/reservations/{held['id']}/settle",
                                    json={"usage": {"input_tokens": 10, **extra}})
        assert refused.status_code == 422 and refused.json()["code"] == "unpriced_model", (extra, refused.text)
        assert next(iter(extra)).removesuffix("s") in refused.json()["detail"]
    event = {"event_id": "e1", "customer_id": cid, "model": "model-a", "timestamp": held["created_at"],
             "usage": {"input_tokens": 10, "audio_seconds": 60}}
    rejected = (await client.post("/v1/usage-events", json=[event])).json()
    assert [r["code"] for r in rejected["rejected"]] == ["unpriced_model"], rejected
    # a web search is still not billed by a format 1 book: the call is charged its tokens
    settled = await client.post(f"/v1/reservations/{held['id']}/settle",
                                json={"usage": {"input_tokens": 10, "web_search_calls": 2}})
    assert settled.status_code == 200 and settled.json()["charged"] == "0.0101", settled.text


@pytest.mark.parametrize("effective_from", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"])
async def test_a_version_whose_time_is_past_the_calendar_in_utc_is_a_validation_error(
        client: AsyncTestClient, tag: str, effective_from: str):
    """Years 1000 to 9998 only (the published pattern); a time just outside, at an offset that takes
    it past the year 9999 or before the year 1 in UTC, made pricing's own reading of the version (which
    lists every bad field) overflow: 500 internal_error. A 422 naming the field, nothing stored."""
    book = f"calendar-{tag}"
    response = await client.post("/v1/price-books", json={**BOOK, "id": book, "effective_from": effective_from})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert [f["field"] for f in response.json()["fields"]] == ["effective_from"]
    assert (await client.get(f"/v1/price-books/{book}")).status_code == 404


async def test_an_effective_from_finer_than_a_microsecond_takes_effect_at_the_next_microsecond(
        client: AsyncTestClient, tag: str):
    """A version from .1234567 is in force from that instant: usage at .123456 (000) is before it,
    usage at .123457 after. The 7th digit was dropped (.123456): the new version rated usage 0.7 us
    before its time. Read now as the next microsecond, as a query's `from`/`to` are. By hand: 1,000
    input tokens at $10.00 and $20.00 per 1M (plus the $0.01 call) are $0.02 and $0.03."""
    book = f"sub-us-{tag}"
    assert (await client.post("/v1/price-books", json={**BOOK, "id": book})).status_code == 201
    doubled = [{**rule, "price": "20.00"} if rule["id"] == "a-in" else rule for rule in BOOK["rules"]]
    posted = await client.post("/v1/price-books", json={**BOOK, "id": book, "rules": doubled,
                                                        "effective_from": "2026-06-30T00:00:00.1234567Z"})
    assert posted.status_code == 201, posted.text
    assert posted.json()["effective_from"] == "2026-06-30T00:00:00.123457Z"
    customer = f"cust-{tag}"
    await client.post("/v1/customers", json={"id": customer, "currency": "USD", "price_book": book})
    await client.post(f"/v1/customers/{customer}/topups", json={"amount": "10.00"})
    events = [{"event_id": f"{tag}-{name}", "customer_id": customer, "model": "model-a", "timestamp": when,
               "usage": {"input_tokens": 1_000}}
              for name, when in (("before", "2026-06-30T00:00:00.123456Z"), ("at", "2026-06-30T00:00:00.123457Z"))]
    assert (await client.post("/v1/usage-events", json=events)).json()["accepted"] == 2
    charged = [(await client.get(f"/v1/audit/charges/{tag}-{name}")).json()["charges"][0]["charged"]
               for name in ("before", "at")]
    assert [Decimal(c) for c in charged] == [Decimal("0.02"), Decimal("0.03")]


async def test_two_versions_in_one_second_get_labels_of_their_own(client: AsyncTestClient, tag: str):
    """The default label was effective_from to the second: a version at .1234567 took
    "2026-06-30T00:00:00Z" and one at .5 the same second was 409 price_version_conflict on it. A
    label is the version's own time: to the microsecond where it has a fraction (as read: .123457)."""
    book = f"one-second-{tag}"
    labels = []
    for at in ("2026-06-30T00:00:00Z", "2026-06-30T00:00:00.1234567Z", "2026-06-30T00:00:00.5Z"):
        posted = await client.post("/v1/price-books", json={**BOOK, "id": book, "effective_from": at})
        assert posted.status_code == 201, posted.text
        labels.append(posted.json()["version"])
    assert labels == ["2026-06-30T00:00:00Z", "2026-06-30T00:00:00.123457Z", "2026-06-30T00:00:00.500000Z"]
    again = await client.post("/v1/price-books", json={**BOOK, "id": book, "effective_from": "2026-06-30T00:00:00.50Z"})
    assert (again.status_code, again.json()["version"]) == (200, "2026-06-30T00:00:00.500000Z")

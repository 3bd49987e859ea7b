"""Reading a big price book: `GET /v1/price-books/{id}` answers the version in force with its
rules and a page of its versions without theirs; history comes a page at a time (`rules=true`),
and one version by its label. A book of 3,000 rules in 13 versions answered every rule of every
version in one body before (about 2.7 MB here; ~7 MB measured on a real book)."""
from __future__ import annotations

import uuid

import pytest
from litestar.testing import AsyncTestClient

RULES = 3_000
MONTHS = range(1, 13)  # versions in force from the first of each month of 2025, then one in 2099


def rules(price: str) -> list[dict[str, str]]:
    return [{"id": f"r{i}", "model": f"m{i}", "token_type": "input", "price": price} for i in range(RULES)]


@pytest.fixture(scope="module")
async def big(client: AsyncTestClient) -> str:
    book = f"big-read-{uuid.uuid4().hex[:8]}"
    for month in MONTHS:
        made = await client.post("/v1/price-books", json={
            "id": book, "currency": "USD", "effective_from": f"2025-{month:02d}-01T00:00:00Z",
            "version": f"v{month}", "rules": rules(str(month))})
        assert made.status_code == 201, made.text
    made = await client.post("/v1/price-books", json={
        "id": book, "currency": "USD", "effective_from": "2099-01-01T00:00:00Z", "version": "future",
        "max_charge_per_request": "5.00", "rules": rules("99")})
    assert made.status_code == 201, made.text
    return book


LABELS = [f"v{m}" for m in MONTHS] + ["future"]


async def test_a_book_answers_the_version_in_force_with_its_rules_and_its_versions_without(
        client: AsyncTestClient, big: str):
    response = await client.get(f"/v1/price-books/{big}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["currency"], body["next_cursor"]) == (big, "USD", None)
    current = body["current"]
    assert current["version"] == "v12" and current["effective_from"] == "2025-12-01T00:00:00Z"
    assert current["rule_count"] == RULES and current["rules"] == rules("12")
    assert [v["version"] for v in body["versions"]] == LABELS
    assert all("rules" not in v and v["rule_count"] == RULES for v in body["versions"])
    assert body["versions"][-1]["max_charge_per_request"] == "5.00"
    history, cursor, size = [], None, 0
    while True:  # the whole history, rules included, a page at a time
        page = await client.get(f"/v1/price-books/{big}", params={"rules": "true", **({"cursor": cursor} if cursor
                                                                                     else {})})
        history += page.json()["versions"]
        size += len(page.content)
        if (cursor := page.json()["next_cursor"]) is None:
            break
    assert [v["rules"] for v in history] == [rules(label[1:]) if label != "future" else rules("99")
                                             for label in LABELS]
    # one version's rules, where all 13 came in one body before: under a tenth of the history's size
    print(f"\nGET of a {RULES}-rule, 13-version book: {len(response.content):,} bytes; "
          f"every version's rules, in pages: {size:,}")
    assert len(response.content) * 10 < size


async def test_at_picks_the_version_in_force_then_and_none_before_the_first(client: AsyncTestClient, big: str):
    march = (await client.get(f"/v1/price-books/{big}", params={"at": "2025-03-15T12:00:00Z"})).json()
    assert march["current"]["version"] == "v3" and march["current"]["rules"][0]["price"] == "3"
    edge = (await client.get(f"/v1/price-books/{big}", params={"at": "2025-04-01T00:00:00Z"})).json()
    assert edge["current"]["version"] == "v4"  # in force from its effective_from, included
    before = (await client.get(f"/v1/price-books/{big}", params={"at": "2024-12-31T23:59:59Z"})).json()
    assert before["current"] is None and len(before["versions"]) == 13
    bad = await client.get(f"/v1/price-books/{big}", params={"at": "yesterday"})
    assert (bad.status_code, bad.json()["code"]) == (422, "validation_error")


async def test_a_page_with_rules_ends_before_it_would_pass_10000_rules(client: AsyncTestClient, big: str):
    # 3,000 rules a version: three versions (9,000 rules) a page, whatever the limit
    seen, cursor, sizes = [], None, []
    while True:
        params = {"limit": 1000, "rules": "true", **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/v1/price-books/{big}", params=params)).json()
        sizes.append(len(page["versions"]))
        seen += [v["version"] for v in page["versions"] if len(v["rules"]) == RULES]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert (sizes, seen) == ([3, 3, 3, 3, 1], LABELS)


async def test_versions_come_a_page_at_a_time_each_once(client: AsyncTestClient, big: str):
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/v1/price-books/{big}", params=params)).json()
        pages += 1
        assert len(page["versions"]) <= 5 and not any("rules" in v for v in page["versions"])
        assert page["current"]["version"] == "v12"  # on every page
        seen += [v["version"] for v in page["versions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert (pages, seen) == (3, LABELS)


async def test_a_cursor_of_another_listing_is_refused(client: AsyncTestClient, big: str, book: str):
    cursor = (await client.get(f"/v1/price-books/{big}", params={"limit": 2})).json()["next_cursor"]
    for path, params in ((f"/v1/price-books/{book}", {"cursor": cursor}),  # another book
                         (f"/v1/price-books/{big}", {"cursor": cursor, "rules": "true"}),  # other filters
                         (f"/v1/price-books/{big}", {"cursor": "bm9wZQ"})):
        refused = await client.get(path, params=params)
        assert (refused.status_code, refused.json()["code"]) == (400, "invalid_cursor"), refused.text


async def test_one_version_is_read_by_its_label(client: AsyncTestClient, big: str):
    one = await client.get(f"/v1/price-books/{big}/versions/v7")
    assert one.status_code == 200, one.text
    body = one.json()
    assert (body["id"], body["version"], body["effective_from"]) == (big, "v7", "2025-07-01T00:00:00Z")
    assert body["rules"] == rules("7") and body["rule_count"] == RULES
    slashed = await client.post("/v1/price-books", json={
        "id": f"{big}-slash", "currency": "USD", "effective_from": "2026-11-01T00:00:00Z", "version": "2026/11",
        "rules": []})
    assert slashed.status_code == 201, slashed.text
    one = (await client.get(f"/v1/price-books/{big}-slash/versions/2026/11")).json()
    assert (one["version"], one["rules"], one["rule_count"]) == ("2026/11", [], 0)
    for path in (f"/v1/price-books/{big}/versions/v13", f"/v1/price-books/nothing-{big}/versions/v7"):
        missing = await client.get(path)
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found"), missing.text


async def test_the_openapi_document_describes_the_reads(client: AsyncTestClient):
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    book = paths["/v1/price-books/{book_id}"]["get"]
    assert {p["name"] for p in book["parameters"]} == {"book_id", "at", "rules", "cursor", "limit"}
    assert "`current`" in book["description"] and "next_cursor" in book["description"]
    one = paths["/v1/price-books/{book_id}/versions/{version}"]["get"]
    assert {p["name"] for p in one["parameters"]} == {"book_id", "version"} and "label" in one["description"]

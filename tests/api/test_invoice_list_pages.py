"""A customer's invoices and credit notes a page at a time, as the journal and budgets page:
`limit` (1 to 1000, default 100) in period order, `next_cursor` to the next page (null on the
last), a cursor not made for the list 400 `invalid_cursor`, a limit out of range 422
`validation_error` naming `limit`. Before, `GET /v1/customers/{id}/invoices` and
`.../credit-notes` answered every document at once (and refused `limit` and `cursor` as unknown
parameters, 422)."""
from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest

from api.console import invoices as console_invoices
from api.routes import cursors
from tests.api.apps import api_client, book_customer
from wallets.periods import Cycle, period_of

LISTS = ["invoices", "credit-notes"]


@pytest.fixture
async def client(scratch_url):  # a database of its own: an early close numbers invoices ahead
    async with api_client(scratch_url, send_admin=True) as c:
        yield c


async def _seven_invoices(client, cid: str) -> list[str]:
    """An idle postpaid customer closed early through its current UTC month and the 6 after it:
    one invoice a period, 7 in all; their numbers in period order."""
    await book_customer(client, cid)
    numbers = await _close_through(client, cid, 6)
    assert len(numbers) == 7, numbers
    return numbers


async def test_seven_invoices_come_in_pages_of_3_3_and_1_in_period_order_none_twice(client) -> None:
    """limit 3 over 7 invoices: 3 + 3 + 1 = 7, the last page's next_cursor null; the pages
    together are the whole list as one page of the default 100 gives it, in the same order."""
    numbers = await _seven_invoices(client, "pager")
    whole = await client.get("/v1/customers/pager/invoices")
    assert whole.status_code == 200, whole.text
    assert whole.json()["next_cursor"] is None
    assert [i["number"] for i in whole.json()["invoices"]] == numbers
    pages, cursor = [], None
    while True:
        page = await client.get("/v1/customers/pager/invoices",
                                params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        pages.append([i["number"] for i in page.json()["invoices"]])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [n for p in pages for n in p] == numbers  # none twice, none left out, period order
    assert sorted(i["period"]["start"] for i in whole.json()["invoices"]) == [
        i["period"]["start"] for i in whole.json()["invoices"]]


@pytest.mark.parametrize("listing", LISTS)
async def test_a_cursor_not_made_for_the_list_is_400_invalid_cursor(client, listing) -> None:
    await _seven_invoices(client, "cursors")
    await book_customer(client, "other")
    first = await client.get(f"/v1/customers/cursors/{listing}", params={"limit": 1})
    assert first.status_code == 200, first.text
    if listing == "invoices":  # another customer's cursor: made for other filters
        theirs = first.json()["next_cursor"]
        refused = await client.get("/v1/customers/other/invoices", params={"cursor": theirs})
        assert (refused.status_code, refused.json()["code"]) == (400, "invalid_cursor"), refused.text
    forged = [cursors.encode_position(listing, ["cursors"], position) for position in (  # this list's, edited
        ["2026-11-01T00:00:00", "x"], ["not a time", "x"], [1, 2, 3], ["2026-11-01T00:00:00Z", "1", "x"])]
    made_for_budgets = cursors.encode_position("budgets", [None], ["cursors", "x"])
    for bad in ("bm90LWEtY3Vyc29y", "eyJ4Ijox", made_for_budgets, *forged):
        refused = await client.get(f"/v1/customers/cursors/{listing}", params={"cursor": bad})
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert (refused.status_code, refused.json()["code"]) == (400, "invalid_cursor"), (bad, refused.text)


@pytest.mark.parametrize("listing", LISTS)
@pytest.mark.parametrize("limit", ["0", "1001", "-1", "x"])
async def test_a_limit_out_of_1_to_1000_is_422_naming_limit(client, listing, limit) -> None:
    await book_customer(client, "limits")
    refused = await client.get(f"/v1/customers/limits/{listing}", params={"limit": limit})
    assert (refused.status_code, refused.json()["code"]) == (422, "validation_error"), refused.text
    assert [f["field"] for f in refused.json()["fields"]] == ["limit"]


@pytest.mark.parametrize("listing", LISTS)
async def test_the_largest_limit_is_taken_and_an_empty_list_has_no_next_page(client, listing) -> None:
    await book_customer(client, "empty")
    page = await client.get(f"/v1/customers/empty/{listing}", params={"limit": 1000})
    assert page.status_code == 200, page.text
    key = "invoices" if listing == "invoices" else "credit_notes"
    assert (page.json()[key], page.json()["next_cursor"]) == ([], None)


async def test_three_credit_notes_come_in_pages_of_2_and_1_in_issue_order(client) -> None:
    """One invoice of 1,000,000 input tokens at $10/M ($10.00), re-rated three times over its
    period: to $5/M (-$5.00), $4/M (-$1.00), $3/M (-$1.00), one credit note each. limit 2:
    2 + 1 = 3, the notes in issue order, none twice, the last page's next_cursor null."""
    await book_customer(client, "noted", "input")
    period = period_of(datetime.now(UTC), Cycle("UTC", None))
    at = max(datetime.now(UTC) - timedelta(minutes=1), period.start)
    sent = await client.post("/v1/usage-events", json=[{"event_id": "e1", "customer_id": "noted", "model": "model-a",
                                                        "timestamp": at.isoformat(), "usage": {"input_tokens": 10**6}}])
    assert sent.json()["accepted"] == 1, sent.text
    closed = await client.post("/v1/billing/close", json={
        "until": (period.end + timedelta(hours=1, seconds=1)).isoformat(), "customer_id": "noted", "early": True})
    assert len(closed.json()["closed"]) == 1, closed.text
    start, end = (t.isoformat().replace("+00:00", "Z") for t in (period.start, period.end))
    notes = []
    for days, version, price in ((3, "v2", "5.00"), (2, "v3", "4.00"), (1, "v4", "3.00")):
        # each in force from before the period (a version's effective_from is its own), over all of it
        since = (period.start - timedelta(days=days)).isoformat()
        fixed = {"id": "noted", "version": version, "currency": "USD", "effective_from": since,
                 "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": price}]}
        assert (await client.post("/v1/price-books", json=fixed)).status_code == 201
        applied = await client.post("/v1/rerate", json={"price_book": "noted", "version": version, "from": start,
                                                        "to": end, "mode": "apply"})
        assert applied.status_code == 200, applied.text
        [note] = applied.json()["credit_notes"]
        notes.append(note["id"])
    pages, cursor = [], None
    while True:
        page = await client.get("/v1/customers/noted/credit-notes",
                                params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        pages.append([(n["id"], n["total"]) for n in page.json()["credit_notes"]])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [2, 1]
    assert [n for p in pages for n in p] == list(zip(notes, ["-5.00", "-1.00", "-1.00"], strict=True))


async def _close_through(client, cid: str, periods_ahead: int) -> list[str]:
    """Close customer `cid` early through the period `periods_ahead` after the current UTC month's;
    the numbers it finalized."""
    period = period_of(datetime.now(UTC), Cycle("UTC", None))
    for _ in range(periods_ahead):
        period = period_of(period.end, Cycle("UTC", None))
    closed = await client.post("/v1/billing/close", json={
        "until": (period.end + timedelta(hours=1, seconds=1)).isoformat(), "customer_id": cid, "early": True})
    assert closed.status_code == 200, closed.text
    return [c["number"] for c in closed.json()["closed"]]


async def test_an_invoice_finalized_between_pages_is_listed_once_and_none_before_it_is_skipped(client) -> None:
    """Page 1 of 7 invoices by 3 read, then an 8th period closed: the pages on from page 1's cursor
    are 3 + 2 (the 8th last, period order), 3 + 3 + 2 = 8, each invoice once."""
    numbers = await _seven_invoices(client, "growing")
    first = await client.get("/v1/customers/growing/invoices", params={"limit": 3})
    seen, cursor = [i["number"] for i in first.json()["invoices"]], first.json()["next_cursor"]
    [eighth] = await _close_through(client, "growing", 7)
    sizes = [len(seen)]
    while cursor is not None:
        page = await client.get("/v1/customers/growing/invoices", params={"limit": 3, "cursor": cursor})
        assert page.status_code == 200, page.text
        seen += [i["number"] for i in page.json()["invoices"]]
        sizes.append(len(page.json()["invoices"]))
        cursor = page.json()["next_cursor"]
    assert (sizes, seen) == ([3, 3, 2], [*numbers, eighth])


async def test_the_console_lists_a_customer_s_invoices_newest_first_a_page_at_a_time(client, monkeypatch) -> None:
    """The console's invoices page listed every finalized invoice at once (a customer of years of
    monthly invoices: all of them on one page). Now a page of them at a time, newest first, as the
    reservations page pages: 7 invoices by 3 are pages of 3 + 3 + 1 = 7, the API's period order
    reversed, each once; a cursor not made for the page (the API list's own) 400 invalid_cursor."""
    monkeypatch.setattr(console_invoices, "INVOICES_PAGE", 3, raising=False)  # none before: all shown
    numbers = await _seven_invoices(client, "shown")
    ids = {i["number"]: i["id"] for i in (await client.get("/v1/customers/shown/invoices")).json()["invoices"]}
    api_cursor = (await client.get("/v1/customers/shown/invoices", params={"limit": 1})).json()["next_cursor"]
    async with api_client(app=client.app, signed_in=True) as browser:
        pages, url = [], "/console/customers/shown/invoices"
        while url is not None and len(pages) <= 3:
            page = await browser.get(url)
            assert page.status_code == 200, page.text
            assert ('>First page</a>' in page.text) == bool(pages)
            assert "This period so far" in page.text  # the upcoming invoice's figures on every page
            pages.append(re.findall(r'<tr data-invoice="([^"]+)">', page.text))
            found = re.search(r'<a href="([^"]+)" rel="next">', page.text)
            url = None if found is None else html.unescape(found.group(1))
        assert [len(p) for p in pages] == [3, 3, 1]
        assert "Last page." in page.text
        assert [i for p in pages for i in p] == [ids[n] for n in reversed(numbers)]
        for bad in ("bm90LWEtY3Vyc29y", api_cursor):
            refused = await browser.get("/console/customers/shown/invoices", params={"cursor": bad})
            assert refused.status_code == 400 and "invalid_cursor" in refused.text, refused.text

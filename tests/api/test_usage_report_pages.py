"""The usage report in pages: `limit` rows at a time in the report's order, `next_cursor` to the
next page (null on the last), the pages disjoint and together exactly the whole report, rows
whose group is null (an event without the dimension) included. Before, a report came whole,
however many rows its groups made (a day × api_key report of a busy platform: tens of
thousands). Without `limit` or `cursor` it still comes whole.

Book: model-a input $10.00 per 1M tokens, output $20.00 per 1M."""
from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from tests.api.apps import book_customer, send_usage


@pytest.fixture
async def customer(client: AsyncTestClient, tag: str) -> str:
    cid = await book_customer(client, f"upg-{tag}")
    features = ["alpha", "beta", None, "gamma"]
    await send_usage(client, cid, [
        {"event_id": f"e{i}", "timestamp": f"2026-11-1{i}T10:00:00Z",
         "usage": {"input_tokens": 1000 * (i + 1), "output_tokens": 100},
         "dimensions": {} if feature is None else {"feature": feature}} for i, feature in enumerate(features)])
    return cid


@pytest.mark.parametrize("group_by", ["feature", "day,model,token_type"])
async def test_pages_of_the_report_are_disjoint_and_together_the_whole_report(client, customer, group_by):
    url = f"/v1/customers/{customer}/usage"
    whole = await client.get(url, params={"group_by": group_by})
    assert whole.status_code == 200 and whole.json()["next_cursor"] is None
    assert len(whole.json()["rows"]) == 8  # 4 groups x input, output
    pages, cursor = [], None
    while True:
        params = {"group_by": group_by, "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = await client.get(url, params=params)
        assert page.status_code == 200, page.text
        pages.append(page.json()["rows"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [r for p in pages for r in p] == whole.json()["rows"]


async def test_a_cursor_of_another_report_is_refused(client, customer):
    url = f"/v1/customers/{customer}/usage"
    first = (await client.get(url, params={"group_by": "feature", "limit": 2})).json()
    other = await client.get(url, params={"group_by": "day", "limit": 2, "cursor": first["next_cursor"]})
    assert other.status_code == 400 and other.json()["code"] == "invalid_cursor", other.text
    broken = await client.get(url, params={"group_by": "feature", "limit": 2, "cursor": "bm9wZQ"})
    assert broken.status_code == 400 and broken.json()["code"] == "invalid_cursor", broken.text


async def test_a_csv_page_names_the_next_cursor_in_a_header(client, customer):
    url = f"/v1/customers/{customer}/usage"
    first = await client.get(url, params={"group_by": "feature", "limit": 6}, headers={"Accept": "text/csv"})
    assert first.status_code == 200 and first.text.count("\r\n") == 7  # the header line and 6 rows
    rest = await client.get(url, params={"group_by": "feature", "cursor": first.headers["next-cursor"]},
                            headers={"Accept": "text/csv"})
    # the event without a feature, last: 3,000 input tokens ($0.03) and 100 output ($0.002)
    assert rest.text.splitlines()[1:] == [",input,3000,0.03,USD,1", ",output,100,0.002,USD,1"]
    assert "next-cursor" not in rest.headers

"""The usage report's `from`/`to` with more than 6 digits of a second. Events are kept (and
billed) to the microsecond: one at 10:00:00.123456 happened before 10:00:00.123456100 (100 ns
later), so `to` that instant reports its 1,000 tokens ($0.01 at $10.00 per 1M) and `from` it
reports none. The 7th to 9th digits were dropped (the bound read as .123456): `to` reported
nothing and `from` the event.

Book: model-a input $10.00 per 1M tokens. One event of 1,000 input tokens."""
from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from tests.api.apps import book_customer, send_usage

AT = "2026-11-10T10:00:00.123456Z"
AFTER = "2026-11-10T10:00:00.123456100Z"


async def test_a_bound_a_fraction_of_a_microsecond_after_an_event_counts_the_event_before_it(
        client: AsyncTestClient, tag: str):
    cid = await book_customer(client, f"uns-{tag}", "input")
    await send_usage(client, cid, [{"event_id": "e1", "timestamp": AT, "usage": {"input_tokens": 1000}}])
    until = await client.get(f"/v1/customers/{cid}/usage", params={"to": AFTER})
    assert until.status_code == 200, until.text
    assert [(r["quantity"], r["amount"]) for r in until.json()["rows"]] == [(1000, "0.01")]
    since = await client.get(f"/v1/customers/{cid}/usage", params={"from": AFTER})
    assert since.json()["rows"] == []
    # at the event's own instant, as [from, to) says: from it counts it, to it does not
    assert [r["quantity"] for r in (await client.get(f"/v1/customers/{cid}/usage",
                                                      params={"from": AT})).json()["rows"]] == [1000]
    assert (await client.get(f"/v1/customers/{cid}/usage", params={"to": AT})).json()["rows"] == []


@pytest.mark.parametrize(("start", "end"), [("00.1234569", "00.1234561"), ("00.123457", "00.1234565")])
async def test_a_to_a_fraction_of_a_microsecond_before_from_is_422_naming_it(client: AsyncTestClient, tag: str,
                                                                             start, end):
    """`.1234561` is before `.1234569`, and `.1234565` before `.123457`, though each pair is read as
    one microsecond, `.123457` (a bound finer than one is read as the next): the range ends before it
    starts, a 422 naming `to` as any `to` before `from` is; compared as read (equal) it answered 200
    with no rows, an empty report."""
    cid = await book_customer(client, f"uns-{tag}", "input")
    day = "2026-11-10T10:00:"
    response = await client.get(f"/v1/customers/{cid}/usage", params={"from": f"{day}{start}Z", "to": f"{day}{end}Z"})
    assert response.status_code == 422, response.text
    assert (response.json()["code"], response.json()["fields"][0]["field"]) == ("validation_error", "to"), response.text

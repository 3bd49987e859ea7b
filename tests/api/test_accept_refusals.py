"""An Accept header that refuses every media type a route answers in (q=0, RFC 9110 12.5.1) is
406 `not_acceptable`, problem+json, nothing written. Before, `Accept: */*;q=0` was answered as
`*/*` is: a customer's JSON, a top-up posted (201), an invoice's JSON; Litestar's best_match takes
a range of q=0 as acceptable. An Accept that names other types (text/plain) without refusing
JSON is still answered with JSON, as before."""
from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from tests.api.apps import book_customer

PROBLEM = "application/problem+json"


def _not_acceptable(answer) -> None:
    assert answer.status_code == 406, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM), answer.headers
    assert answer.json()["code"] == "not_acceptable"


@pytest.mark.parametrize("accept", ["*/*;q=0", "application/json;q=0", "application/*;q=0",
                                    "application/json;q=0, text/plain"])
async def test_an_accept_refusing_json_is_406_on_a_json_route_and_writes_nothing(
        client: AsyncTestClient, tag: str, accept: str):
    cid = await book_customer(client, f"acc-{tag}", billing="prepaid")
    _not_acceptable(await client.get(f"/v1/customers/{cid}", headers={"Accept": accept}))
    _not_acceptable(await client.post(f"/v1/customers/{cid}/topups", json={"amount": "5.00"},
                                      headers={"Accept": accept}))
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["grants"]) == ("0.00", []), wallet  # the top-up not posted


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "text/plain", "*/*;q=0.001",
                                    "text/plain;q=0, */*", "application/json;q=0.5, */*;q=0"])
async def test_any_other_accept_is_still_answered_with_json(client: AsyncTestClient, tag: str, accept: str | None):
    cid = await book_customer(client, f"acc-{tag}")
    answer = await client.get(f"/v1/customers/{cid}", headers={"Accept": accept} if accept else {})
    assert answer.status_code == 200 and answer.json()["id"] == cid, answer.text
    assert answer.headers["content-type"].startswith("application/json")


async def test_an_invoice_s_renderings_are_each_refused_by_a_q_of_0(client: AsyncTestClient, tag: str):
    cid = await book_customer(client, f"acc-{tag}")
    path = f"/v1/customers/{cid}/invoices/upcoming"
    _not_acceptable(await client.get(path, headers={"Accept": "*/*;q=0"}))
    _not_acceptable(await client.get(path, headers={"Accept": "text/html;q=0"}))  # was the page
    page = await client.get(path, headers={"Accept": "application/json;q=0, text/html;q=0.5, */*;q=0.1"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.headers
    document = await client.get(path, headers={"Accept": "text/html;q=0, */*"})
    assert document.status_code == 200 and document.json()["customer_id"] == cid, document.text


async def test_the_usage_report_is_refused_by_a_q_of_0_and_csv_when_json_alone_is(client: AsyncTestClient, tag: str):
    cid = await book_customer(client, f"acc-{tag}")
    path = f"/v1/customers/{cid}/usage"
    params = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
    _not_acceptable(await client.get(path, params=params, headers={"Accept": "*/*;q=0"}))
    sheet = await client.get(path, params=params, headers={"Accept": "application/json;q=0, */*;q=0.5"})
    assert sheet.status_code == 200 and sheet.headers["content-type"].startswith("text/csv"), sheet.text
    assert sheet.text.splitlines()[0].endswith("quantity,amount,currency,charges")

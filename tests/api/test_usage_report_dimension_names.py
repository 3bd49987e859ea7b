"""A usage report grouped by any dimension name a usage event may carry: events take any name
(`région`, `user tier`, `2fa`, one of 100 characters), as price book matches and budgets do, and
the report could be grouped only by names of `[A-Za-z_][A-Za-z0-9_.-]{0,63}`, so the usage under
those names could never be reported by them (422 "must match the pattern"). A name in the CSV's
header that a spreadsheet would run is written after a `'`, as a cell is.

Book: model-a input $10.00 per 1M tokens: 1,000 input tokens $0.01, 3,000 $0.03."""

from __future__ import annotations

import csv
import io

import pytest
from litestar.testing import AsyncTestClient

from tests.api.apps import book_customer, send_usage

NAMES = ["région", "user tier", "2fa", "k" * 100, "=HYPERLINK(1)"]


@pytest.fixture
async def customer(client: AsyncTestClient, tag: str) -> str:
    cid = await book_customer(client, f"udnames-{tag}", "input")
    await send_usage(
        client,
        cid,
        [
            {
                "event_id": "e1",
                "timestamp": "2026-11-10T10:00:00Z",
                "usage": {"input_tokens": 1000},
                "dimensions": {name: "a" for name in NAMES},
            },
            {
                "event_id": "e2",
                "timestamp": "2026-11-10T11:00:00Z",
                "usage": {"input_tokens": 3000},
                "dimensions": {name: "b" for name in NAMES},
            },
        ],
    )
    return cid


@pytest.mark.parametrize("name", NAMES)
async def test_the_report_groups_by_any_dimension_name_an_event_carries(client, customer, name):
    report = await client.get(f"/v1/customers/{customer}/usage", params={"group_by": name})
    assert report.status_code == 200, report.text
    assert report.json()["group_by"] == [name, "token_type"]
    assert report.json()["rows"] == [
        {name: "a", "token_type": "input", "quantity": 1000, "amount": "0.01", "charges": 1},
        {name: "b", "token_type": "input", "quantity": 3000, "amount": "0.03", "charges": 1},
    ]


async def test_a_csv_header_a_spreadsheet_would_run_is_written_after_a_quote(client, customer):
    report = await client.get(
        f"/v1/customers/{customer}/usage", params={"group_by": "=HYPERLINK(1), région"}, headers={"Accept": "text/csv"}
    )
    assert report.status_code == 200, report.text
    rows = list(csv.reader(io.StringIO(report.text, newline="")))
    assert rows[0] == ["'=HYPERLINK(1)", "région", "token_type", "quantity", "amount", "currency", "charges"]
    assert rows[1:] == [
        ["a", "a", "input", "1000", "0.01", "USD", "1"],
        ["b", "b", "input", "3000", "0.03", "USD", "1"],
    ]


@pytest.mark.parametrize("group_by", [",", "model,,token_type", "model,", " , model", "a\tb"])
async def test_an_empty_name_or_a_control_character_is_still_refused(client, customer, group_by):
    report = await client.get(f"/v1/customers/{customer}/usage", params={"group_by": group_by})
    assert report.status_code == 422, report.text
    assert [f["field"] for f in report.json()["fields"]] == ["group_by"]

"""The usage report as CSV (`Accept: text/csv`), for a spreadsheet: one row per report row, its
group keys, quantity, amount, currency and charges, the same figures as the JSON, and a text cell
a spreadsheet would take for a formula (a usage dimension the caller sent) written after a `'`.
Before, the report was JSON only whatever was asked, and said no currency for its amounts.

Book: model-a input $10.00 per 1M tokens, output $20.00 per 1M."""
from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from litestar.testing import AsyncTestClient

from tests.api.apps import book_customer, send_usage


@pytest.fixture
async def customer(client: AsyncTestClient, tag: str) -> str:
    cid = await book_customer(client, f"ucsv-{tag}")
    await send_usage(client, cid, [
        {"event_id": "e1", "timestamp": "2026-11-10T10:00:00Z", "usage": {"input_tokens": 1000, "output_tokens": 500},
         "dimensions": {"feature": "=HYPERLINK(1)"}},
        {"event_id": "e2", "timestamp": "2026-11-11T10:00:00Z", "usage": {"input_tokens": 3000},
         "dimensions": {"feature": "chat"}}])
    return cid


async def test_the_usage_report_as_csv_has_the_json_s_rows_and_sums_to_the_charges(client, customer):
    params = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "group_by": "day,model,token_type"}
    answer = await client.get(f"/v1/customers/{customer}/usage", params=params, headers={"Accept": "text/csv"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    # by hand: Nov 10th 1,000 in ($0.01) and 500 out ($0.01); Nov 11th 3,000 in ($0.03)
    assert [(r["day"], r["model"], r["token_type"], r["quantity"], r["amount"], r["currency"], r["charges"])
            for r in rows] == [("2026-11-10", "model-a", "input", "1000", "0.01", "USD", "1"),
                               ("2026-11-10", "model-a", "output", "500", "0.01", "USD", "1"),
                               ("2026-11-11", "model-a", "input", "3000", "0.03", "USD", "1")]
    assert sum(Decimal(r["amount"]) for r in rows) == Decimal(
        (await client.get(f"/v1/customers/{customer}/wallet")).json()["receivable"])
    as_json = await client.get(f"/v1/customers/{customer}/usage", params=params)
    assert as_json.json()["currency"] == "USD"
    assert [(r["day"], r["quantity"], r["amount"]) for r in as_json.json()["rows"]] == [
        (r["day"], int(r["quantity"]), r["amount"]) for r in rows]


async def test_a_dimension_a_spreadsheet_would_run_is_written_as_text(client, customer):
    answer = await client.get(f"/v1/customers/{customer}/usage", params={"group_by": "feature"},
                              headers={"Accept": "text/csv"})
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [(r["feature"], r["token_type"], r["amount"]) for r in rows] == [
        ("'=HYPERLINK(1)", "input", "0.01"), ("'=HYPERLINK(1)", "output", "0.01"), ("chat", "input", "0.03")]


async def test_json_stays_the_default_and_what_is_not_csv_is_json(client, customer):
    for accept in (None, "*/*", "application/json", "text/html"):
        answer = await client.get(f"/v1/customers/{customer}/usage",
                                  headers={"Accept": accept} if accept else {})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json"), accept

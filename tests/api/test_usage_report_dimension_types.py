"""A usage report grouped by a usage dimension keeps values of different JSON types apart, as
rating does (a rule matching `plan` 1 does not price `plan` "1", nor true "true", 4837d21): one
row each for 1, "1", true and "true", each value as it was sent. Before, the report grouped the
dimension's text (`->>`), so 1 and "1" were one row "1", true and "true" one row "true".

Book: model-a input $10.00 per 1M tokens."""
from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from tests.api.apps import book_customer, send_usage

RANGE = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "group_by": "plan"}
# value sent -> input tokens, at $10.00 per 1M
SENT = [(1, 1_000_000), ("1", 2_000_000), (True, 3_000_000), ("true", 4_000_000)]
EXPECTED = [(1, 1_000_000, "10.00"), ("1", 2_000_000, "20.00"), (True, 3_000_000, "30.00"),
            ("true", 4_000_000, "40.00"), (None, 5_000_000, "50.00")]  # the last sent no plan


@pytest.fixture
async def customer(client: AsyncTestClient, tag: str) -> str:
    cid = await book_customer(client, f"utypes-{tag}", "input")
    events = [{"event_id": f"e{i}", "timestamp": f"2026-11-1{i}T10:00:00Z", "usage": {"input_tokens": tokens},
               "dimensions": {"plan": value}} for i, (value, tokens) in enumerate(SENT)]
    events.append({"event_id": "e9", "timestamp": "2026-11-19T10:00:00Z", "usage": {"input_tokens": 5_000_000}})
    await send_usage(client, cid, events)  # 5 accepted
    return cid


def _rows(rows: list[dict]) -> list[tuple]:
    return sorted(((r["plan"], r["quantity"], r["amount"]) for r in rows), key=lambda r: r[1])


async def test_a_dimension_s_values_of_different_types_are_rows_of_their_own(client: AsyncTestClient, customer: str):
    report = (await client.get(f"/v1/customers/{customer}/usage", params=RANGE)).json()
    assert _rows(report["rows"]) == EXPECTED  # was ("1", 3000000, "30.00"), ("true", 7000000, "70.00")
    assert all(type(r["plan"]) is type(v) for r, (v, _, _) in zip(
        sorted(report["rows"], key=lambda r: r["quantity"]), EXPECTED, strict=True))  # 1 is not True


async def test_pages_of_such_rows_give_each_once(client: AsyncTestClient, customer: str):
    rows, cursor = [], None
    for _ in range(10):
        page = (await client.get(f"/v1/customers/{customer}/usage",
                                 params={**RANGE, "limit": 2, **({"cursor": cursor} if cursor else {})})).json()
        rows += page["rows"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert _rows(rows) == EXPECTED
    assert rows[-1]["plan"] is None  # a null key last


async def test_as_csv_a_true_dimension_is_spelt_as_json_spells_it(client: AsyncTestClient, customer: str):
    sheet = await client.get(f"/v1/customers/{customer}/usage", params=RANGE, headers={"Accept": "text/csv"})
    lines = sorted(sheet.text.splitlines()[1:], key=lambda line: line.split(",")[2])
    assert lines == ["1,input,1000000,10.00,USD,1", "1,input,2000000,20.00,USD,1", "true,input,3000000,30.00,USD,1",
                     "true,input,4000000,40.00,USD,1", ",input,5000000,50.00,USD,1"]  # a cell is text: 1 and "1" alike

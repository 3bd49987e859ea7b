"""The usage report's days and months in a time zone asked for (`time_zone`, IANA): a Tokyo
customer's day runs from 15:00 UTC to 15:00 UTC, so its usage of 10:00 and 20:00 UTC on November
10th falls on November 10th and 11th there. Before, `day` and `month` were UTC only: a customer's
own days could not be reported. Without `time_zone` they stay UTC days.

Book: model-a input $10.00 per 1M tokens. Events of 1,000, 2,000 and 4,000 input tokens."""
from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from tests.api.apps import book_customer, send_usage

NOVEMBER = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}


@pytest.fixture
async def customer(client: AsyncTestClient, tag: str) -> str:
    cid = await book_customer(client, f"utz-{tag}", "input", time_zone="Asia/Tokyo")
    await send_usage(client, cid, [
        {"event_id": f"e{i}", "timestamp": at, "usage": {"input_tokens": tokens}}
        for i, (at, tokens) in enumerate([("2026-11-10T10:00:00Z", 1000), ("2026-11-10T20:00:00Z", 2000),
                                          ("2026-11-30T16:00:00Z", 4000)])])  # Tokyo: December 1st, 01:00
    return cid


def _rows(report, *keys: str) -> list[tuple]:
    assert report.status_code == 200, report.text
    return [tuple(r[k] for k in keys) for r in report.json()["rows"]]


async def test_days_are_the_time_zone_s_days_when_one_is_asked_for(client, customer):
    report = await client.get(f"/v1/customers/{customer}/usage",
                              params={**NOVEMBER, "group_by": "day", "time_zone": "Asia/Tokyo"})
    assert _rows(report, "day", "token_type", "quantity", "amount") == [
        ("2026-11-10", "input", 1000, "0.01"), ("2026-11-11", "input", 2000, "0.02"),
        ("2026-12-01", "input", 4000, "0.04")]
    assert report.json()["time_zone"] == "Asia/Tokyo"


async def test_months_are_the_time_zone_s_months_too(client, customer):
    report = await client.get(f"/v1/customers/{customer}/usage",
                              params={"group_by": "month", "time_zone": "Asia/Tokyo"})
    assert _rows(report, "month", "quantity", "amount") == [("2026-11", 3000, "0.03"), ("2026-12", 4000, "0.04")]


async def test_without_a_time_zone_days_stay_utc_days(client, customer):
    report = await client.get(f"/v1/customers/{customer}/usage", params={**NOVEMBER, "group_by": "day"})
    assert _rows(report, "day", "quantity") == [("2026-11-10", 3000), ("2026-11-30", 4000)]
    assert report.json()["time_zone"] == "UTC"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "America", "localtime", "right/Asia/Tokyo"])
async def test_a_time_zone_that_is_not_an_iana_zone_is_a_422_naming_it(client, customer, zone):
    report = await client.get(f"/v1/customers/{customer}/usage", params={"group_by": "day", "time_zone": zone})
    assert report.status_code == 422, report.text
    assert report.json()["code"] == "validation_error"
    assert [f["field"] for f in report.json()["fields"]] == ["time_zone"]

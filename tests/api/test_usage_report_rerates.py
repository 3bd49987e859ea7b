"""The usage report after a re-rate: its amounts are what the customer is charged now, so they
sum to the revenue the entries posted, as the invoice's lines do (before, the report kept the
amounts as first charged, and a corrected price never reached it).

Book: model-a input $10.00 per 1M tokens, $0.01 a call; the fix, from November 1st: input $6.00
per 1M. Two events of 100,000 input tokens on November 10th: $1.01 each as charged ($1.00 +
$0.01), $0.61 each re-rated: $1.22 in all, $0.80 less."""
from __future__ import annotations

from decimal import Decimal

import pytest
from litestar.testing import AsyncTestClient

from tests.api.apps import send_usage

NOVEMBER = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}


def _book(tag: str, version: str, effective_from: str, price: str) -> dict:
    return {"id": f"urr-{tag}", "version": version, "currency": "USD", "effective_from": effective_from,
            "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": price},
                      {"id": "call", "token_type": "request", "price": "0.01"}]}


@pytest.fixture
async def rerated(client: AsyncTestClient, tag: str) -> str:
    assert (await client.post("/v1/price-books", json=_book(tag, "v1", "2026-01-01T00:00:00Z", "10.00"))
            ).status_code == 201
    cid = f"urr-{tag}"
    made = await client.post("/v1/customers", json={"id": cid, "price_book": f"urr-{tag}", "billing": "postpaid"})
    assert made.status_code == 201, made.text
    await send_usage(client, cid, [{"event_id": f"e{i}", "timestamp": f"2026-11-10T1{i}:00:00Z",
                                    "usage": {"input_tokens": 100_000}, "dimensions": {"feature": "search"}}
                                   for i in range(2)])
    assert (await client.post("/v1/price-books", json=_book(tag, "v2", "2026-11-01T00:00:00Z", "6.00"))
            ).status_code == 201
    applied = await client.post("/v1/rerate", json={"price_book": f"urr-{tag}", "version": "v2", **NOVEMBER,
                                                    "customer_id": cid, "mode": "apply"})
    assert applied.status_code == 200, applied.text
    assert applied.json()["delta"] == "-0.80"
    assert (await client.get(f"/v1/customers/{cid}/wallet")).json()["receivable"] == "1.22"
    return cid


def _rows(report, *keys: str) -> list[tuple]:
    assert report.status_code == 200, report.text
    return [tuple(r[k] for k in keys) for r in report.json()["rows"]]


@pytest.mark.parametrize("window", [NOVEMBER, {"from": "2026-11-10T09:00:00Z", "to": "2026-11-10T12:00:00Z"}, {}],
                         ids=["whole-days", "part-of-a-day", "unbounded"])
async def test_a_usage_report_over_re_rated_charges_shows_what_they_stand_at_now(client, rerated, window):
    report = await client.get(f"/v1/customers/{rerated}/usage",
                              params={**window, "group_by": "day,model,token_type"})
    assert _rows(report, "day", "model", "token_type", "quantity", "amount", "charges") == [
        ("2026-11-10", "model-a", "input", 200_000, "1.20", 2),
        ("2026-11-10", "model-a", "request", 2, "0.02", 2)]


async def test_a_re_rated_usage_report_grouped_by_a_dimension_sums_to_the_receivable(client, rerated):
    report = await client.get(f"/v1/customers/{rerated}/usage", params={**NOVEMBER, "group_by": "feature"})
    assert _rows(report, "feature", "token_type", "quantity", "amount") == [
        ("search", "input", 200_000, "1.20"), ("search", "request", 2, "0.02")]


async def test_grouped_by_kind_the_re_rate_is_a_row_of_its_own_beside_the_usage_as_charged(client, rerated):
    report = await client.get(f"/v1/customers/{rerated}/usage", params={**NOVEMBER, "group_by": "kind"})
    assert _rows(report, "kind", "token_type", "quantity", "amount", "charges") == [
        ("rerate_adjustment", "input", 0, "-0.80", 2),
        ("usage", "input", 200_000, "2.00", 2), ("usage", "request", 2, "0.02", 2)]


async def _allowance_rerated(client: AsyncTestClient, tag: str) -> str:
    """The customer of the allowance tests below (figures in their docstrings), re-rated."""
    assert (await client.post("/v1/price-books", json=_book(tag, "v1", "2026-01-01T00:00:00Z", "10.00"))
            ).status_code == 201
    cid = f"urf-{tag}"
    made = await client.post("/v1/customers", json={"id": cid, "price_book": f"urr-{tag}", "billing": "postpaid"})
    assert made.status_code == 201, made.text
    allowance = await client.put(f"/v1/customers/{cid}/price-overrides", json={
        "effective_from": "2026-11-01T00:00:00Z", "free_allowances": [{"id": "free", "amount": "1.00"}]})
    assert allowance.status_code in (200, 201), allowance.text
    await send_usage(client, cid, [{"event_id": "e0", "timestamp": "2026-11-10T10:00:00Z",
                                    "usage": {"input_tokens": 100_000}}])
    assert (await client.get(f"/v1/customers/{cid}/wallet")).json()["receivable"] == "0.01"
    assert (await client.post("/v1/price-books", json=_book(tag, "v2", "2026-11-01T00:00:00Z", "6.00"))
            ).status_code == 201
    applied = await client.post("/v1/rerate", json={"price_book": f"urr-{tag}", "version": "v2", **NOVEMBER,
                                                    "customer_id": cid, "mode": "apply"})
    assert applied.status_code == 200 and applied.json()["delta"] == "-0.01", applied.text
    assert (await client.get(f"/v1/customers/{cid}/wallet")).json()["receivable"] == "0.00"
    return cid


async def test_a_re_rate_s_change_to_a_free_allowance_is_in_the_allowance_s_own_row(client, tag):
    """A $1.00 free allowance from November 1st; one event of 100,000 input tokens on November
    10th: $1.00 + $0.01 = $1.01, the allowance pays $1.00 (a line with no token type), $0.01 owed.
    Re-rated at $6.00/M: $0.60 + $0.01 = $0.61, all of it free: the allowance's line goes from
    -$1.00 to -$0.61 (+$0.39), input from $1.00 to $0.60 (-$0.40); $0.00 owed. The report has one
    row for the allowance, its token type none as the charge's line has it: -$1.00 + $0.39 = -$0.61.
    Before, the re-rate's +$0.39 was a row of its own under a token type `free_allowance` (the
    re-rate answer's name for the allowance's lines), so one allowance read as two rows, and the
    console's chart drew two lines for it, "free allowance" and "free_allowance"."""
    cid = await _allowance_rerated(client, tag)
    for window in (NOVEMBER, {"from": "2026-11-10T09:00:00Z", "to": "2026-11-10T12:00:00Z"}, {}):
        report = await client.get(f"/v1/customers/{cid}/usage", params={**window, "group_by": "model,token_type"})
        assert _rows(report, "model", "token_type", "quantity", "amount", "charges") == [
            ("model-a", "input", 100_000, "0.60", 1), ("model-a", "request", 1, "0.01", 1),
            ("model-a", None, 0, "-0.61", 1)], window
    # grouped by kind, the re-rate's own row keeps the allowance's lines' token type too (none)
    report = await client.get(f"/v1/customers/{cid}/usage", params={**NOVEMBER, "group_by": "kind"})
    assert _rows(report, "kind", "token_type", "amount") == [
        ("free_allowance", None, "-1.00"), ("rerate_adjustment", "input", "-0.40"),
        ("rerate_adjustment", None, "0.39"), ("usage", "input", "1.00"), ("usage", "request", "0.01")]


async def test_a_re_rate_s_change_to_a_free_allowance_is_labelled_on_the_invoice_as_the_allowance(client, tag):
    """The allowance of the test above on the invoice (the upcoming one, and the close's own code):
    the charge's allowance line is under no model ("all models") and no token type, -$1.00; the
    re-rate's +$0.39 of it read `model-a | free_allowance | adjustment` (a kind name in the token
    type column). Now it is under the allowance's own labels, no model and no token type, +$0.39;
    input's adjustment stays model-a input -$0.40. The lines sum to $1.00 + $0.01 - $1.00 - $0.40
    + $0.39 = $0.00, the amount owed."""
    cid = await _allowance_rerated(client, tag)
    upcoming = await client.get(f"/v1/customers/{cid}/invoices/upcoming")
    assert upcoming.status_code == 200, upcoming.text
    lines = [(x["model"], x["token_type"], x["kind"], Decimal(x["amount"])) for x in upcoming.json()["lines"]]
    assert [x for x in lines if x[2] == "adjustment"] == [
        (None, None, "adjustment", Decimal("0.39")), ("model-a", "input", "adjustment", Decimal("-0.40"))], lines
    assert sum(x[3] for x in lines) == 0, lines

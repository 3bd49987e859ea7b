"""A lot tokentill opened itself (a re-rate's money back beyond what is owed, a volume true-up's,
the close's rounding) has the kind of a paid top-up, but no cash came in as it: its credit came
from usage revenue or the rounding account. `POST .../grants/{id}/reverse` refunded it to the
platform's cash all the same, paying out as a refund money that never came in as that credit.
Now such a lot is refused, 409 `grant_not_reversible`, nothing posted; it stays credit for usage."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.api.apps import api_client
from tests.api.closing import close_early, utc
from wallets.periods import Cycle, period_of

ADMIN = {"Authorization": "Bearer sys-admin"}
CYCLE = Cycle("UTC", None)


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="sys-admin") as c:
        yield c


async def _book(client, book: str, version: str, effective_from: str, rule: dict) -> None:
    made = await client.post("/v1/price-books", headers=ADMIN, json={
        "id": book, "version": version, "currency": "USD", "effective_from": effective_from,
        "rules": [{"id": "in", "model": "model-a", "token_type": "input", **rule}]})
    assert made.status_code == 201, made.text


async def _customer(client, cid: str, book: str, billing: str) -> None:
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": cid, "currency": "USD", "price_book": book, "billing": billing})
    assert created.status_code == 201, created.text


async def _usage(client, cid: str, tokens: list[int]) -> None:
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": f"{cid}-{i}", "customer_id": cid, "model": "model-a", "timestamp": utc(datetime.now(UTC)),
         "usage": {"input_tokens": n, "output_tokens": 0}} for i, n in enumerate(tokens)])
    assert sent.json()["accepted"] == len(tokens), sent.text


async def _cash(client) -> str:
    tb = (await client.get("/v1/audit/trial-balance?currency=USD", headers=ADMIN)).json()
    return next(a["balance"] for a in tb["accounts"] if a["account"] == "asset:platform:cash:USD")


async def _refused(client, cid: str, lot: dict, opened_by: str) -> None:
    cash = await _cash(client)
    for body in ({}, {"amount": "1.00"}):
        refused = await client.post(f"/v1/customers/{cid}/grants/{lot['id']}/reverse", headers=ADMIN, json=body)
        assert refused.status_code == 409, refused.text
        problem = refused.json()
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert (problem["code"], problem["grant_id"], problem["opened_by"]) == (
            "grant_not_reversible", lot["id"], opened_by), problem
    wallet = (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()
    assert [g["remaining"] for g in wallet["grants"] if g["id"] == lot["id"]] == [lot["remaining"]]
    assert await _cash(client) == cash  # no cash went out
    journal = (await client.get(f"/v1/journal?customer={cid}", headers=ADMIN)).json()["entries"]
    assert "grant_reversal" not in [e["kind"] for e in journal]
    verify = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]


async def test_a_re_rate_s_credit_is_not_refunded_as_cash(client) -> None:
    """$10.00 invoiced and paid by wire, re-rated to $7.00: the $3.00 back is a credit lot (the
    receivable owes nothing). Its reversal was a $3.00 cash refund out of usage revenue's credit."""
    period = period_of(datetime.now(UTC), CYCLE)
    await _book(client, "sys-rr", "v1", "2026-01-01T00:00:00Z", {"price": "10"})
    await _customer(client, "rr", "sys-rr", "postpaid")
    await _usage(client, "rr", [1_000_000])
    [closed] = (await close_early(client, ADMIN, "rr", period))["closed"]
    paid = await client.post(f"/v1/invoices/{closed['invoice_id']}/payments", headers=ADMIN,
                             json={"amount": "10.00", "reference": "wire-1"})
    assert paid.status_code == 201, paid.text
    await _book(client, "sys-rr", "v2", utc(period.start), {"price": "7"})
    applied = await client.post("/v1/rerate", headers=ADMIN, json={
        "price_book": "sys-rr", "version": "v2", "from": utc(period.start), "to": utc(period.end), "mode": "apply"})
    assert applied.status_code == 200, applied.text
    [lot] = (await client.get("/v1/customers/rr/wallet", headers=ADMIN)).json()["grants"]
    assert (lot["kind"], lot["remaining"]) == ("topup", "3.00")
    await _refused(client, "rr", lot, "rerate_adjustment")


async def test_a_volume_true_up_s_credit_is_not_refunded_as_cash(client) -> None:
    """Prepaid, no credit: 2M tokens rated graduated $10/M then $8/M are $18.00 on the receivable;
    a $100.00 top-up pays them ($82.00 left in its lot). At close all at the $8/M tier reached,
    $16.00: $2.00 back of usage the receivable paid, which the customer owes nothing of, so it is a
    credit lot. A paid top-up's refund is still a refund. (The top-up paid the usage itself before:
    the true-up's money goes back to the lot that paid the usage now.)"""
    period = period_of(datetime.now(UTC), CYCLE)
    await _book(client, "sys-vol", "v1", "2026-01-01T00:00:00Z", {
        "tier_mode": "volume", "tiers": [{"up_to": 1_000_000, "price": "10"}, {"up_to": None, "price": "8"}]})
    await _customer(client, "vol", "sys-vol", "prepaid")
    await _usage(client, "vol", [1_000_000, 1_000_000])
    topped = await client.post("/v1/customers/vol/topups", headers=ADMIN, json={"amount": "100.00"})
    assert topped.status_code == 201, topped.text
    await close_early(client, ADMIN, "vol", period)
    grants = (await client.get("/v1/customers/vol/wallet", headers=ADMIN)).json()["grants"]
    assert sorted(g["remaining"] for g in grants) == ["2.00", "82.00"]
    [lot] = [g for g in grants if g["id"] != topped.json()["grant_id"]]
    assert (lot["kind"], lot["remaining"]) == ("topup", "2.00")
    await _refused(client, "vol", lot, "volume_true_up")
    refund = await client.post(f"/v1/customers/vol/grants/{topped.json()['grant_id']}/reverse", headers=ADMIN,
                               json={"amount": "5.00"})
    assert refund.status_code == 201 and refund.json()["reversal"] == "refund", refund.text

"""Cash a customer or an operator enters is in whole minor units of its currency: no payment can
be half a yen or a tenth of a cent. Before, a top-up of "100.5" to a JPY wallet was accepted (so
were a grant of half a yen, a USD top-up of "10.001", a KWD one of "1.2345", an invoice payment of
"4.5" yen and an overdraft limit of "100.5" yen). Now each is 422 `invalid_amount`, naming the
field, the currency and its decimals, and nothing is written. Prices, holds, thresholds, charge
caps and budget limits are not cash: they keep their fractions (a token of a cheap model costs a
fraction of a yen). An asset the ISO table does not list (a credit) keeps its atomic unit."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from api.client import AsyncClient, InvalidAmount, ValidationFailed
from tests.api.apps import api_app, api_client, currency_books
from wallets.periods import Cycle, period_of

KEY = "minor-admin"
ADMIN = {"Authorization": f"Bearer {KEY}"}
# Per 1M tokens: 1,500 yen; 0.465 dinar; $10; 0.3 yen (a price finer than a yen is a price, not cash)
PRICES = {"JPY": "1500", "KWD": "0.465", "USD": "10", "XCR": "1", "XAU": "1"}


@pytest.fixture
async def app(scratch_url):
    return api_app(scratch_url, admin=KEY)


@pytest.fixture
async def client(app):
    async with api_client(app=app, admin=KEY, books=currency_books(PRICES, "input", "output")) as c:
        yield c


async def _customer(client, cid: str, currency: str, billing: str = "prepaid", **extra) -> str:
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": cid, "currency": currency, "price_book": f"book-{currency}", "billing": billing, **extra})
    assert created.status_code == 201, created.text
    return cid


def _refused(answer: httpx.Response, currency: str, decimals: int, field: str = "amount") -> dict:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    said = f"{currency} amounts have no decimals" if decimals == 0 else f"{currency} amounts have {decimals} decimals"
    assert body["code"] == "invalid_amount" and said in body["detail"], body
    assert body["currency"] == currency and body["decimals"] == decimals
    assert body["fields"] == [{"field": field, "message": body["fields"][0]["message"]}]
    assert said in body["fields"][0]["message"]
    return body


async def _wallet(client, cid: str) -> dict:
    return (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()


@pytest.mark.parametrize(("currency", "decimals", "finer", "whole"), [
    ("JPY", 0, "100.5", "100"), ("USD", 2, "10.001", "10.010"), ("KWD", 3, "1.2345", "1.234")])
async def test_a_top_up_or_grant_finer_than_the_minor_unit_is_refused_and_writes_nothing(
        client, currency, decimals, finer, whole) -> None:
    cid = await _customer(client, f"cash-{currency.lower()}", currency)
    before = await _wallet(client, cid)
    topped = await client.post(f"/v1/customers/{cid}/topups", headers=ADMIN, json={"amount": finer, "reference": "p"})
    _refused(topped, currency, decimals)
    granted = await client.post(f"/v1/customers/{cid}/grants", headers=ADMIN, json={"amount": finer})
    _refused(granted, currency, decimals)
    assert await _wallet(client, cid) == before  # no lot, no entry
    # whole minor units (trailing zeros included) are taken, to the atomic unit
    topped = await client.post(f"/v1/customers/{cid}/topups", headers=ADMIN, json={"amount": whole, "reference": "q"})
    assert topped.status_code == 201, topped.text
    granted = await client.post(f"/v1/customers/{cid}/grants", headers=ADMIN, json={"amount": whole})
    assert granted.status_code == 201, granted.text
    assert len((await _wallet(client, cid))["grants"]) == 2


async def test_a_refused_top_up_under_an_idempotency_key_stays_refused_and_a_corrected_one_is_new(client) -> None:
    cid = await _customer(client, "cash-keyed", "JPY")
    key = {**ADMIN, "Idempotency-Key": "topup-1"}
    first = await client.post(f"/v1/customers/{cid}/topups", headers=key, json={"amount": "0.5", "reference": "p"})
    again = await client.post(f"/v1/customers/{cid}/topups", headers=key, json={"amount": "0.5", "reference": "p"})
    _refused(first, "JPY", 0)
    assert again.status_code == 422 and again.json()["code"] == "invalid_amount"
    fixed = await client.post(f"/v1/customers/{cid}/topups", headers={**ADMIN, "Idempotency-Key": "topup-2"},
                              json={"amount": "1", "reference": "p"})
    assert fixed.status_code == 201 and fixed.json()["wallet"]["available"] == "1", fixed.text


async def test_an_overdraft_limit_finer_than_a_yen_is_refused_and_no_customer_is_made(client) -> None:
    made = await client.post("/v1/customers", headers=ADMIN, json={
        "id": "cash-limit", "currency": "JPY", "price_book": "book-JPY", "billing": "postpaid",
        "overdraft_limit": "100.5"})
    _refused(made, "JPY", 0, "overdraft_limit")
    assert (await client.get("/v1/customers/cash-limit", headers=ADMIN)).status_code == 404
    await _customer(client, "cash-limit", "JPY", "postpaid", overdraft_limit="100")


async def test_what_is_not_cash_keeps_its_fractions(client) -> None:
    """A hold, a low-balance threshold and a charge cap are compared with charges, which are
    exact atomic units (1,000 tokens at 1,500 yen per 1M cost 1.5 yen): not cash, not refused."""
    cid = await _customer(client, "cash-not", "JPY", low_balance_threshold="10.5", max_charge_per_request="50.5")
    assert (await client.post(f"/v1/customers/{cid}/topups", headers=ADMIN,
                              json={"amount": "100", "reference": "p"})).status_code == 201
    held = await client.post("/v1/reservations", headers=ADMIN, json={
        "customer_id": cid, "request_id": "r1", "model": "model-a", "amount": "2.5"})
    assert held.status_code == 201 and held.json()["amount"] == "2.5", held.text
    budget = await client.post("/v1/budgets", headers=ADMIN, json={
        "customer_id": cid, "name": "daily", "metric": "money", "window": "day", "limit": "99.5"})
    assert budget.status_code == 201, budget.text


async def test_a_credit_asset_outside_the_iso_table_keeps_its_atomic_unit(client) -> None:
    cid = await _customer(client, "cash-credits", "XCR")
    topped = await client.post(f"/v1/customers/{cid}/topups", headers=ADMIN,
                               json={"amount": "0.000000001", "reference": "p"})
    assert topped.status_code == 201, topped.text
    assert (await client.post(f"/v1/customers/{cid}/grants", headers=ADMIN,
                              json={"amount": "1.5"})).status_code == 201


async def _invoice(client, cid: str, tokens: int) -> dict:
    now = datetime.now(UTC)
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": "e1", "customer_id": cid, "model": "model-a", "timestamp": now.isoformat(),
         "usage": {"input_tokens": tokens, "output_tokens": 0}}])
    assert sent.json()["accepted"] == 1, sent.text
    period = period_of(now, Cycle("UTC", None))
    closed = await client.post("/v1/billing/close", headers=ADMIN, json={
        "until": (period.end + timedelta(hours=1, seconds=1)).isoformat(), "customer_id": cid, "early": True})
    assert closed.status_code == 200, closed.text
    [one] = closed.json()["closed"]
    return (await client.get(f"/v1/invoices/{one['invoice_id']}", headers=ADMIN)).json()


async def test_an_invoice_payment_finer_than_a_yen_is_refused(client) -> None:
    cid = await _customer(client, "cash-pay", "JPY", "postpaid")
    invoice = await _invoice(client, cid, 4000)  # 6 yen at 1,500 yen per 1M
    assert invoice["amount_due"] == "6"
    paid = await client.post(f"/v1/invoices/{invoice['id']}/payments", headers=ADMIN,
                             json={"amount": "5.5", "reference": "wire-1", "currency": "JPY"})
    _refused(paid, "JPY", 0)
    after = (await client.get(f"/v1/invoices/{invoice['id']}", headers=ADMIN)).json()
    assert after["amount_paid"] == "0" and after["payments"] == []


async def test_the_sdk_raises_invalid_amount_a_kind_of_validation_failure(app, client) -> None:
    cid = await _customer(client, "cash-sdk", "JPY")
    async with AsyncClient("http://sdk.test", KEY, transport=httpx.ASGITransport(app=app)) as tt:
        with pytest.raises(InvalidAmount) as raised:
            await tt.post(f"/v1/customers/{cid}/topups", {"amount": "100.5", "reference": "p"})
    assert isinstance(raised.value, ValidationFailed)
    assert raised.value.status == 422 and raised.value.code == "invalid_amount"
    assert "JPY amounts have no decimals" in raised.value.detail


async def test_a_top_up_finer_than_two_decimals_in_an_asset_outside_the_table_is_kept_and_shown_exactly(
        client) -> None:
    """Gold (XAU: no minor unit in ISO 4217) and a credit (XCR: no ISO code) keep their atomic unit,
    and show at least 2 decimals (`SHOWN_DECIMALS`: an overdraft of 0 is "0.00"), more where an
    amount has them: a top-up of "1.001" is kept as 1.001 (1,001,000,000 units of 10^-9) and shown
    "1.001" wherever it is read, never rounded to "1.00": available 1.001, its lot 1.001 of 1.001."""
    for currency in ("XAU", "XCR"):
        cid = await _customer(client, f"cash-fine-{currency.lower()}", currency)
        topped = await client.post(f"/v1/customers/{cid}/topups", headers=ADMIN,
                                   json={"amount": "1.001", "reference": "p"})
        assert topped.status_code == 201, topped.text
        wallet = await _wallet(client, cid)
        assert (wallet["available"], wallet["overdraft_limit"]) == ("1.001", "0.00"), wallet
        assert [(g["granted"], g["remaining"]) for g in wallet["grants"]] == [("1.001", "1.001")], wallet


async def test_a_threshold_finer_than_the_atomic_unit_is_refused_as_any_amount_is(client) -> None:
    """A threshold keeps fractions of the minor unit (above: "10.5" yen; $0.001 is 1,000,000
    atomic units of 10^-9), but one finer than the atomic unit cannot be held: 422
    validation_error naming the field, and no customer made. A top-up of the same figure is cash,
    told its currency's limit as 0.001 dollars is: 422 invalid_amount "USD amounts have 2 decimals"
    (it was validation_error, the 9 decimals only amounts that are not cash are told)."""
    tiny = "0.0000000001"  # 10^-10: a tenth of the atomic unit
    refused = await client.post("/v1/customers", headers=ADMIN, json={
        "id": "cash-tiny-low", "currency": "USD", "price_book": "book-USD", "low_balance_threshold": tiny})
    assert refused.status_code == 422 and refused.json()["code"] == "validation_error", refused.text
    assert [f["field"] for f in refused.json()["fields"]] == ["low_balance_threshold"]
    assert (await client.get("/v1/customers/cash-tiny-low", headers=ADMIN)).status_code == 404
    cid = await _customer(client, "cash-tiny-top", "USD", low_balance_threshold="0.001")
    topup = await client.post(f"/v1/customers/{cid}/topups", headers=ADMIN, json={"amount": tiny, "reference": "t"})
    assert topup.status_code == 422 and topup.json()["code"] == "invalid_amount", topup.text
    assert topup.json()["detail"] == f"amount: USD amounts have 2 decimals: {tiny}", topup.text
    shown = (await client.get(f"/v1/customers/{cid}", headers=ADMIN)).json()["low_balance_threshold"]
    assert shown == "0.001", shown

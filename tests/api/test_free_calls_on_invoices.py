"""A wholly free call (a 100 % discount, a free allowance that pays all of it, a contract price of
0) moves no money, so it posts no journal entry; it is still metered usage, and the invoice and
the usage report list it: its quantity and list amount, the discount or allowance line, a net of
0. Replays add nothing. Book: model-a input $10/M, output $20/M, $0.01 a call."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.api.apps import api_client
from tests.api.closing import utc
from wallets.periods import Cycle, period_of

ADMIN = {"Authorization": "Bearer free-admin"}
BOOK = f"free-{uuid.uuid4().hex[:8]}"
RULES = [{"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"},
         {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
         {"id": "call", "token_type": "request", "price": "0.01"}]


@pytest.fixture(scope="module")
async def client(database_url):
    async with api_client(database_url, admin="free-admin", books=[
            {"id": BOOK, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": RULES}]) as c:
        yield c


async def customer(client, overrides: dict, top_up: str | None = None) -> str:
    """A customer of the book with `overrides` in force; without a top-up, its periods have no
    entry at all when its calls are free."""
    cid = f"free-{uuid.uuid4().hex[:10]}"
    made = await client.post("/v1/customers", headers=ADMIN, json={"id": cid, "currency": "USD", "price_book": BOOK})
    assert made.status_code == 201, made.text
    if top_up is not None:
        topped = await client.post(f"/v1/customers/{cid}/topups", headers=ADMIN, json={"amount": top_up})
        assert topped.status_code == 201, topped.text
    put = await client.put(f"/v1/customers/{cid}/price-overrides", headers=ADMIN, json={
        **overrides, "effective_from": utc(datetime.now(UTC) - timedelta(hours=1))})
    assert put.status_code == 201, put.text
    return cid


def events(cid: str, count: int, tag: str) -> list[dict]:
    at = datetime.now(UTC) - timedelta(minutes=30)
    return [{"event_id": f"{tag}-{i}", "customer_id": cid, "model": "model-a",
             "timestamp": utc(at + timedelta(seconds=i)), "usage": {"input_tokens": 100_000}} for i in range(count)]


def lines(invoice: dict) -> list[tuple]:
    return sorted((ln["kind"], ln["token_type"], ln["quantity"], ln["amount"]) for ln in invoice["lines"])


async def upcoming(client, cid: str) -> dict:
    got = await client.get(f"/v1/customers/{cid}/invoices/upcoming", headers=ADMIN)
    assert got.status_code == 200, got.text
    return got.json()


async def usage_by_kind(client, cid: str) -> dict:
    now = datetime.now(UTC)
    got = await client.get(f"/v1/customers/{cid}/usage", headers=ADMIN, params={
        "from": utc(now - timedelta(days=1)), "to": utc(now + timedelta(minutes=1)), "group_by": "kind,token_type"})
    assert got.status_code == 200, got.text
    return {(r["kind"], r["token_type"]): (r["quantity"], r["amount"]) for r in got.json()["rows"]}


async def verified(client) -> None:
    report = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]


async def close(client, cid: str) -> dict:
    period = period_of(datetime.now(UTC) - timedelta(minutes=30), Cycle())
    closed = await client.post("/v1/billing/close", headers=ADMIN, json={
        "until": utc(period.end + timedelta(hours=1, seconds=1)), "customer_id": cid, "early": True})
    assert closed.status_code == 200, closed.text
    [invoice] = closed.json()["closed"]
    return (await client.get(f"/v1/invoices/{invoice['invoice_id']}", headers=ADMIN)).json()


async def test_calls_a_full_discount_makes_free_are_on_the_invoice_and_the_usage_report(client) -> None:
    cid = await customer(client, {"discounts": [{"id": "all-off", "model": "model-a", "percent": "100"}]})
    calls = events(cid, 3, "d")
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=calls)
    assert sent.json()["accepted"] == 3, sent.text
    # each call: 100,000 input x $10/M = 1.00 and the call fee 0.01, both 100 % off
    expected = [("discount", "input", 300_000, "-3.00"), ("discount", "request", 3, "-0.03"),
                ("request", "request", 3, "0.03"), ("usage", "input", 300_000, "3.00")]
    assert lines(await upcoming(client, cid)) == expected
    assert (await upcoming(client, cid))["total"] == "0.00"
    assert await usage_by_kind(client, cid) == {
        ("usage", "input"): (300_000, "3.00"), ("usage", "request"): (3, "0.03"),
        ("discount", "input"): (300_000, "-3.00"), ("discount", "request"): (3, "-0.03")}
    again = await client.post("/v1/usage-events", headers=ADMIN, json=calls)
    assert again.json()["duplicates"] == 3, again.text  # a replay adds nothing
    assert lines(await upcoming(client, cid)) == expected
    await verified(client)
    final = await close(client, cid)
    assert lines(final) == expected and final["total"] == "0.00" and final["amount_due"] == "0.00"
    await verified(client)


async def test_every_call_is_on_the_invoice_whether_the_free_allowance_paid_all_part_or_none_of_it(client) -> None:
    cid = await customer(client, {"free_allowances": [{"id": "free-5", "amount": "5.00"}]}, top_up="20.00")
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=events(cid, 10, "a"))
    assert sent.json()["accepted"] == 10, sent.text
    # ten calls of 1.01: the allowance pays the first four whole and 0.96 of the fifth
    invoice = await upcoming(client, cid)
    assert [ln[::3] for ln in lines(invoice)] == [("free_allowance", "-5.00"), ("request", "0.10"),
                                                   ("usage", "10.00")]
    assert [ln[2] for ln in lines(invoice) if ln[0] in ("usage", "request")] == [10, 1_000_000]
    assert invoice["total"] == "5.10"
    report = await usage_by_kind(client, cid)
    assert report[("usage", "input")] == (1_000_000, "10.00") and report[("usage", "request")] == (10, "0.10")
    await verified(client)
    final = await close(client, cid)
    assert lines(final) == lines(invoice) and final["total"] == "5.10"
    await verified(client)


async def test_a_reservation_settled_at_contract_prices_of_zero_is_on_the_invoice(client) -> None:
    cid = await customer(client, {"contract_prices": [
        {"id": "z-in", "model": "model-a", "token_type": "input", "price": "0"},
        {"id": "z-out", "model": "model-a", "token_type": "output", "price": "0"},
        {"id": "z-call", "model": "model-a", "token_type": "request", "price": "0"}]})
    held = await client.post("/v1/reservations", headers=ADMIN, json={
        "customer_id": cid, "request_id": "z-1", "model": "model-a",
        "estimate": {"input_tokens": 1000, "max_output_tokens": 500}})
    assert held.status_code == 201 and held.json()["amount"] == "0.00", held.text
    settle = {"usage": {"input_tokens": 2000, "output_tokens": 300}, "final": True}
    settled = await client.post(f"/v1/reservations/{held.json()['id']}/settle", headers=ADMIN, json=settle)
    assert settled.status_code == 200 and settled.json()["charged"] == "0.00", settled.text
    again = await client.post(f"/v1/reservations/{held.json()['id']}/settle", headers=ADMIN, json=settle)
    assert again.status_code == 200 and again.json()["charged"] == "0.00", again.text  # replayed, once
    expected = [("request", "request", 1, "0.00"), ("usage", "input", 2000, "0.00"),
                ("usage", "output", 300, "0.00")]
    assert lines(await upcoming(client, cid)) == expected
    await verified(client)
    assert lines(await close(client, cid)) == expected
    await verified(client)


async def test_a_customer_a_full_discount_makes_free_may_reserve_its_calls_without_credit(client) -> None:
    """A hold leaves out what only lowers a bill, but a discount of every line of a model (no token
    type) lowers each line the call can have by its share: the hold takes it off too. A prepaid
    customer on 100 % off, with no credit, was refused every reservation (402) for calls it would
    never pay for."""
    cid = await customer(client, {"discounts": [{"id": "all-off", "model": "model-a", "percent": "100"}]})
    held = await client.post("/v1/reservations", headers=ADMIN, json={
        "customer_id": cid, "request_id": "d-1", "model": "model-a",
        "estimate": {"input_tokens": 1000, "max_output_tokens": 500}})
    assert held.status_code == 201 and held.json()["amount"] == "0.00", held.text
    settled = await client.post(f"/v1/reservations/{held.json()['id']}/settle", headers=ADMIN, json={
        "usage": {"input_tokens": 2000, "output_tokens": 300}, "final": True})
    assert settled.status_code == 200 and settled.json()["charged"] == "0.00", settled.text
    invoice = await upcoming(client, cid)
    assert [ln[:3] for ln in lines(invoice) if ln[0] == "usage"] == [("usage", "input", 2000), ("usage", "output", 300)]
    assert invoice["total"] == "0.00"


async def test_a_half_discount_of_a_model_halves_its_hold_and_one_of_a_token_type_does_not(client) -> None:
    # 1,000 input x $10/M = 0.01, 500 output x $20/M = 0.01, the call fee 0.01: 0.03 at the book's prices
    for discount, hold in (({"model": "model-a", "percent": "50"}, "0.015"),
                           ({"model": "model-a", "token_type": "output", "percent": "50"}, "0.03")):
        cid = await customer(client, {"discounts": [{"id": "half", **discount}]}, top_up="1.00")
        held = await client.post("/v1/reservations", headers=ADMIN, json={
            "customer_id": cid, "request_id": "h-1", "model": "model-a",
            "estimate": {"input_tokens": 1000, "max_output_tokens": 500}})
        assert held.status_code == 201 and held.json()["amount"] == hold, (discount, held.text)

"""The invoice routes end to end: a customer's cycle set at creation, a close through the admin
endpoint, the invoice and its payments (idempotent, never above the amount due, in its own
currency only), and the events they leave in the outbox."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from sqlalchemy import text

from ledger.db import connect
from tests.api.apps import api_client
from tests.api.closing import close_invoice
from wallets.periods import Cycle, period_of

ADMIN = {"Authorization": "Bearer inv-admin"}
SEED = {"id": "seed", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"},
    {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
    {"id": "call", "token_type": "request", "price": "0.01"}]}


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="inv-admin", books=[SEED]) as c:
        yield c


async def _closed_invoice(client, cid: str, **cycle) -> dict:
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": cid, "currency": "USD", "price_book": "seed", "billing": "postpaid", **cycle})
    assert created.status_code == 201, created.text
    now = datetime.now(UTC)
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": f"e{i}", "customer_id": cid, "model": "model-a", "timestamp": now.isoformat(),
         "usage": {"input_tokens": 1000, "output_tokens": 500}} for i in range(5)])
    assert sent.json()["accepted"] == 5, sent.text
    period = period_of(now, Cycle(cycle.get("time_zone", "UTC"), cycle.get("billing_anchor_day")))
    closed = await client.post("/v1/billing/close", headers=ADMIN, json={
        "until": (period.end + timedelta(hours=1, seconds=1)).isoformat(), "customer_id": cid, "early": True})
    assert closed.status_code == 200, closed.text
    [one] = closed.json()["closed"]
    return (await client.get(f"/v1/invoices/{one['invoice_id']}", headers=ADMIN)).json()


async def test_a_customer_cycle_is_set_at_creation_and_shapes_its_invoice(client) -> None:
    invoice = await _closed_invoice(client, "berlin", time_zone="Europe/Berlin", billing_anchor_day=15,
                                    payment_terms_days=14)
    customer = (await client.get("/v1/customers/berlin", headers=ADMIN)).json()
    assert customer["time_zone"] == "Europe/Berlin" and customer["billing_anchor_day"] == 15
    assert customer["grace_period_seconds"] == 3600 and customer["payment_terms_days"] == 14
    period = period_of(datetime.now(UTC), Cycle("Europe/Berlin", 15))
    assert invoice["period"]["start"] == period.start.isoformat().replace("+00:00", "Z")
    assert period.start.astimezone(ZoneInfo("Europe/Berlin")).day == 15
    assert customer["current_period_start"] == period.end.isoformat().replace("+00:00", "Z")
    assert invoice["total"] == "0.15" and invoice["amount_due"] == "0.15"  # 5 x ($0.01 + $0.01 + $0.01)
    assert invoice["number"].startswith("INV-") and invoice["payment_status"] == "open"


async def test_a_customer_made_without_an_anchor_day_answers_the_1st_in_force(client) -> None:
    # POST without billing_anchor_day answered "billing_anchor_day": null, while its periods start on
    # the 1st (README: default the 1st); the 1st is what is in force, and the same customer posted
    # again with the 1st spelt out is the same definition (200), not another one (409)
    body = {"id": "first", "currency": "USD", "price_book": "seed", "billing": "postpaid"}
    created = await client.post("/v1/customers", headers=ADMIN, json=body)
    assert created.status_code == 201 and created.json()["billing_anchor_day"] == 1, created.text
    read = (await client.get("/v1/customers/first", headers=ADMIN)).json()
    assert read["billing_anchor_day"] == 1
    # a period of this cycle from 2026-03-10: 2026-03-01 to 2026-04-01 UTC, the 1st at midnight
    period = period_of(datetime(2026, 3, 10, tzinfo=UTC), Cycle("UTC", None))
    assert (period.start, period.end) == (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    again = await client.post("/v1/customers", headers=ADMIN, json={**body, "billing_anchor_day": 1})
    assert again.status_code == 200 and again.json()["billing_anchor_day"] == 1, again.text
    other = await client.post("/v1/customers", headers=ADMIN, json={**body, "billing_anchor_day": 2})
    assert other.status_code == 409, other.text


@pytest.mark.parametrize("time_zone", ["Mars/Olympus", "localtime", "posixrules", "right/America/New_York",
                                       "posix/Europe/Berlin", "America", "Etc",
                                       "Factory"])  # a directory was a 500; Factory is tzdata's "no zone" ("-00")
async def test_an_unknown_time_zone_is_a_validation_error(client, time_zone) -> None:
    # localtime is the host's own zone (periods would differ from host to host), right/ zones count
    # leap seconds (December's midnight in right/America/New_York fell at 04:00 UTC, not 05:00)
    response = await client.post("/v1/customers", headers=ADMIN, json={
        "id": "nowhere", "currency": "USD", "price_book": "seed", "time_zone": time_zone})
    assert response.status_code == 422 and response.json()["code"] == "validation_error", response.text
    assert response.json()["fields"][0]["field"] == "time_zone"


async def test_payments_are_idempotent_and_never_exceed_the_amount_due(client, scratch_url) -> None:
    invoice = await _closed_invoice(client, "payer")
    path = f"/v1/invoices/{invoice['id']}/payments"
    too_much = await client.post(path, headers=ADMIN, json={"amount": "0.16", "reference": "wire-0"})
    assert too_much.status_code == 422 and too_much.json()["code"] == "overpayment", too_much.text
    euros = await client.post(path, headers=ADMIN, json={"amount": "0.05", "reference": "wire-0", "currency": "EUR"})
    assert euros.status_code == 422 and euros.json()["code"] == "currency_mismatch", euros.text
    keyed = {**ADMIN, "Idempotency-Key": "pay-1"}
    first = await client.post(path, headers=keyed, json={"amount": "0.05", "reference": "wire-1"})
    assert first.status_code == 201, first.text
    assert first.json()["payment_status"] == "partially_paid" and first.json()["amount_paid"] == "0.05"
    assert (first.json()["amount_due"], first.json()["amount_remaining"]) == ("0.15", "0.10")  # as issued; still owed
    partly = (await client.get(path.removesuffix("/payments"), headers=ADMIN)).json()
    assert (partly["amount_due"], partly["amount_paid"], partly["amount_remaining"]) == ("0.15", "0.05", "0.10")
    again = await client.post(path, headers=keyed, json={"amount": "0.05", "reference": "wire-1"})
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    same_reference = await client.post(path, headers=ADMIN, json={"amount": "0.05", "reference": "wire-1"})
    assert same_reference.status_code == 200 and same_reference.json()["amount_paid"] == "0.05"
    # the same payment answered again: the entry the first posted, not null (as the invoice lists it)
    assert same_reference.json()["entry_id"] == first.json()["entry_id"] == partly["payments"][0]["entry_id"]
    other_amount = await client.post(path, headers=ADMIN, json={"amount": "0.06", "reference": "wire-1"})
    assert other_amount.status_code == 409, other_amount.text
    rest = await client.post(path, headers=ADMIN, json={"amount": "0.10", "reference": "wire-2"})
    assert rest.status_code == 201 and rest.json()["payment_status"] == "paid", rest.text
    assert rest.json()["amount_remaining"] == "0.00"
    view = (await client.get(path.removesuffix("/payments"), headers=ADMIN)).json()
    assert view["payment_status"] == "paid" and [p["amount"] for p in view["payments"]] == ["0.05", "0.10"]
    after = ("payment_status", "amount_paid", "amount_remaining", "payments")  # the rest is frozen
    assert {k: view[k] for k in invoice if k not in after} == {k: invoice[k] for k in invoice if k not in after}
    wallet = (await client.get("/v1/customers/payer/wallet", headers=ADMIN)).json()
    assert wallet["receivable"] == "0.00"
    db = connect(scratch_url, pool_size=1)
    try:
        topics = await db.read(lambda conn: _topics(conn, "payer"))
    finally:
        await db.dispose()
    assert topics == ["invoice.finalized", "invoice.paid"]
    verified = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verified["ok"], [c for c in verified["checks"] if not c["ok"]]


async def _topics(conn, customer_id: str) -> list[str]:
    rows = await conn.execute(text("SELECT topic FROM outbox WHERE customer_id = :c AND topic LIKE 'invoice.%' "
                                   "ORDER BY id"), {"c": customer_id})
    return [r.topic for r in rows]


async def test_an_invoice_with_nothing_due_is_paid_at_issue_and_says_so_with_invoice_paid(client, scratch_url) -> None:
    """A prepaid customer whose credit paid all its usage gets an invoice of 0.00 due, `paid` from
    its issue (its view and the close say so), and the webhook receiver that marks invoices paid
    on `invoice.paid` never heard of it: the outbox held `invoice.finalized` alone. Now it holds
    `invoice.paid` too (`amount_paid` 0.00), as for an invoice a top-up paid before its close."""
    created = await client.post("/v1/customers", headers=ADMIN, json={"id": "funded", "price_book": "seed"})
    assert created.status_code == 201, created.text
    assert (await client.post("/v1/customers/funded/topups", headers=ADMIN, json={"amount": "1.00"})).status_code == 201
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": "f1", "customer_id": "funded", "model": "model-a", "timestamp": datetime.now(UTC).isoformat(),
         "usage": {"input_tokens": 1000, "output_tokens": 500}}])
    assert sent.json()["accepted"] == 1, sent.text
    invoice = await close_invoice(client, ADMIN, "funded")
    assert (invoice["total"], invoice["amount_due"], invoice["payment_status"]) == ("0.03", "0.00", "paid"), invoice
    with psycopg.connect(scratch_url, autocommit=True) as conn:
        events = [(topic, payload.get("invoice_id"), payload.get("amount_paid")) for topic, payload in conn.execute(
            "SELECT topic, payload FROM outbox WHERE customer_id = 'funded' AND topic LIKE 'invoice.%' ORDER BY id")]
    assert events == [("invoice.finalized", invoice["id"], None), ("invoice.paid", invoice["id"], "0.00")]


async def test_a_close_that_also_flags_a_low_balance_advances_the_period(client, scratch_url) -> None:
    """The close's period advance and the low-balance flag it raises update one customers row:
    written as two UPDATEs in one statement, one was lost, the period stayed open, and the next
    close of it broke the invoices' unique (customer, period) with a 500 (found by schemathesis)."""
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": "low-close", "price_book": "seed", "billing_anchor_day": 12, "low_balance_threshold": "1.00"})
    assert created.status_code == 201, created.text
    first = period_of(datetime.now(UTC), Cycle("UTC", 12))
    third = period_of(first.end + timedelta(days=40), Cycle("UTC", 12))
    closed = await client.post("/v1/billing/close", headers=ADMIN, json={
        "until": (third.end + timedelta(hours=2)).isoformat(), "customer_id": "low-close", "early": True})
    assert closed.status_code == 200, closed.text
    labels = [c["period"] for c in closed.json()["closed"]]
    assert len(labels) == 3 and len(set(labels)) == 3
    customer = (await client.get("/v1/customers/low-close", headers=ADMIN)).json()
    assert customer["current_period_start"] == third.end.isoformat().replace("+00:00", "Z")
    db = connect(scratch_url, pool_size=1)
    try:
        flagged = await db.read(lambda conn: conn.execute(text(
            "SELECT low_balance_alerted FROM customers WHERE id = 'low-close'")))
        assert flagged.scalar_one() is True  # both updates landed
    finally:
        await db.dispose()
    again = await client.post("/v1/billing/close", headers=ADMIN, json={
        "until": (third.end + timedelta(hours=2)).isoformat(), "customer_id": "low-close", "early": True})
    assert again.status_code == 200 and again.json()["closed"] == []


async def test_a_close_until_a_future_time_is_refused_unless_early(client) -> None:
    """An `until` in the future would finalize and number invoices before their periods end:
    422 naming `until`, and nothing closed; `early: true` closes them on purpose."""
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": "too-soon", "currency": "USD", "price_book": "seed", "billing": "postpaid"})
    assert created.status_code == 201, created.text
    period = period_of(datetime.now(UTC), Cycle())
    until = (period.end + timedelta(hours=2)).isoformat()
    refused = await client.post("/v1/billing/close", headers=ADMIN, json={"until": until, "customer_id": "too-soon"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "validation_error" and refused.json()["fields"][0]["field"] == "until"
    customer = (await client.get("/v1/customers/too-soon", headers=ADMIN)).json()
    assert customer["current_period_start"] == period.start.isoformat().replace("+00:00", "Z")
    a_minute_ahead = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()  # clocks differ a little
    skewed = await client.post("/v1/billing/close", headers=ADMIN, json={"until": a_minute_ahead,
                                                                         "customer_id": "too-soon"})
    assert skewed.status_code == 200 and skewed.json()["closed"] == [], skewed.text
    early = await client.post("/v1/billing/close", headers=ADMIN, json={"until": until, "customer_id": "too-soon",
                                                                        "early": True})
    assert early.status_code == 200 and len(early.json()["closed"]) == 1, early.text


async def test_an_early_close_past_the_period_s_end_is_issued_and_numbered_at_its_until(client) -> None:
    """`until` is the close's clock, early or not: December 2026 closed early `until` 01:00:01 on
    January 1st 2027 (its end, 00:00, plus the 3,600 s grace window, plus 1 s: the first second it
    is due) is issued then and numbered in 2027, the year of issue, as the scheduled close would
    number it at that moment: INV-2027-000001, the issuer's first of 2027 in this database."""
    wallets = client.app.state.services.wallets
    december = datetime(2026, 12, 5, 23, 0, tzinfo=UTC)  # the server's clock: a month before the until
    wallets.clock = wallets.engine.clock = lambda: december
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": "new-year", "currency": "USD", "price_book": "seed", "billing": "postpaid"})
    assert created.status_code == 201, created.text
    until = "2027-01-01T01:00:01Z"
    closed = await client.post("/v1/billing/close", headers=ADMIN, json={
        "until": until, "customer_id": "new-year", "early": True})
    assert closed.status_code == 200, closed.text
    [one] = closed.json()["closed"]
    invoice = (await client.get(f"/v1/invoices/{one['invoice_id']}", headers=ADMIN)).json()
    assert invoice["period"]["label"] == "2026-12" and invoice["period"]["end"] == "2027-01-01T00:00:00Z"
    assert invoice["issued_at"] == until and invoice["number"] == "INV-2027-000001"


async def test_a_close_until_within_the_clock_skew_closes_no_period_before_its_end(client) -> None:
    """An `until` up to 60 s past the server's clock is taken as the clock (clocks differ a
    little), never as a time to come: a period that ends in 30 s, of a customer with no grace
    window, is not closed by a close `until` its end, and usage of its last 30 s stays on it."""
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": "skew-edge", "currency": "USD", "price_book": "seed", "billing": "postpaid",
        "grace_period_seconds": 0})
    assert created.status_code == 201, created.text
    period = period_of(datetime.now(UTC), Cycle())
    wallets = client.app.state.services.wallets
    almost = period.end - timedelta(seconds=30)  # the server's clock: the period ends in 30 s
    wallets.clock = wallets.engine.clock = lambda: almost
    closing = await client.post("/v1/billing/close", headers=ADMIN, json={
        "until": period.end.isoformat(), "customer_id": "skew-edge"})
    assert closing.status_code == 200 and closing.json()["closed"] == [], closing.text
    customer = (await client.get("/v1/customers/skew-edge", headers=ADMIN)).json()
    assert customer["current_period_start"] == period.start.isoformat().replace("+00:00", "Z")
    assert (await client.get("/v1/customers/skew-edge/invoices", headers=ADMIN)).json()["invoices"] == []


async def _owing_prepaid(client, cid: str, events: int) -> None:
    """A prepaid customer whose `events` calls ($0.03 each: $0.01 input, $0.01 output, $0.01 the
    request) were paid by its receivable (overdraft up to $1.00), in the current period."""
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": cid, "currency": "USD", "price_book": "seed", "overdraft_limit": "1.00"})
    assert created.status_code == 201, created.text
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": f"{cid}-{i}", "customer_id": cid, "model": "model-a", "timestamp": datetime.now(UTC).isoformat(),
         "usage": {"input_tokens": 1000, "output_tokens": 500}} for i in range(events)])
    assert sent.json()["accepted"] == events, sent.text


async def test_a_top_up_that_paid_the_receivable_before_the_close_pays_the_invoice(client, scratch_url) -> None:
    """A prepaid customer's top-up pays what its receivable owes; when that usage was not
    invoiced yet, the invoice finalized later must count that money as paid: it showed the
    whole amount open, refused its payment as an overpayment (the receivable owed less), and
    asked the customer for money it had paid already."""
    await _owing_prepaid(client, "early", 5)  # $0.15 on the receivable
    topped = await client.post("/v1/customers/early/topups", headers=ADMIN, json={"amount": "0.10"})
    assert topped.status_code == 201 and topped.json()["applied_to_receivable"] == "0.10", topped.text
    lot_id, entry_id = topped.json()["grant_id"], topped.json()["entry_id"]
    invoice = await close_invoice(client, ADMIN, "early")
    assert invoice["amount_due"] == "0.15"  # the document: what the period's usage put on the receivable
    assert (invoice["payment_status"], invoice["amount_paid"]) == ("partially_paid", "0.10"), invoice
    [paid] = invoice["payments"]
    assert (paid["amount"], paid["reference"], paid["entry_id"]) == ("0.10", f"topup:{lot_id}", entry_id)
    path = f"/v1/invoices/{invoice['id']}/payments"
    too_much = await client.post(path, headers=ADMIN, json={"amount": "0.06", "reference": "wire-1"})
    assert too_much.status_code == 422 and too_much.json()["code"] == "overpayment", too_much.text
    rest = await client.post(path, headers=ADMIN, json={"amount": "0.05", "reference": "wire-1"})
    assert rest.status_code == 201 and rest.json()["payment_status"] == "paid", rest.text
    wallet = (await client.get("/v1/customers/early/wallet", headers=ADMIN)).json()
    assert wallet["receivable"] == "0.00"
    verified = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verified["ok"], [c for c in verified["checks"] if not c["ok"]]


async def test_a_top_up_that_paid_all_before_the_close_leaves_the_invoice_paid(client, scratch_url) -> None:
    await _owing_prepaid(client, "settled", 5)
    topped = await client.post("/v1/customers/settled/topups", headers=ADMIN, json={"amount": "1.00"})
    assert topped.json()["applied_to_receivable"] == "0.15", topped.text
    invoice = await close_invoice(client, ADMIN, "settled")
    assert (invoice["payment_status"], invoice["amount_paid"]) == ("paid", "0.15"), invoice
    assert [p["amount"] for p in invoice["payments"]] == ["0.15"]
    refused = await client.post(f"/v1/invoices/{invoice['id']}/payments", headers=ADMIN,
                                json={"amount": "0.01", "reference": "wire-1"})
    assert refused.status_code == 422 and refused.json()["code"] == "overpayment", refused.text
    db = connect(scratch_url, pool_size=1)
    try:
        topics = await db.read(lambda conn: _topics(conn, "settled"))
    finally:
        await db.dispose()
    assert topics == ["invoice.finalized", "invoice.paid"]
    verified = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verified["ok"], [c for c in verified["checks"] if not c["ok"]]


async def test_an_invoice_s_payments_spell_their_time_as_every_answer_does(client, scratch_url) -> None:
    """A payment's `created_at` came out as PostgreSQL's jsonb spells a timestamptz
    ('2026-11-03T10:00:10.24185+00:00': +00:00, trailing zeros dropped) where every other time of
    the API is RFC 3339 in UTC with Z and six decimals ('2026-11-03T10:00:10.241850Z', none when
    whole: '2026-11-03T10:00:00Z', as a reservation's, a charge's or a grant's)."""
    invoice = await _closed_invoice(client, "stamped")
    path = f"/v1/invoices/{invoice['id']}/payments"
    for amount, reference in (("0.05", "wire-a"), ("0.04", "wire-b")):
        paid = await client.post(path, headers=ADMIN, json={"amount": amount, "reference": reference})
        assert paid.status_code == 201, paid.text
    with psycopg.connect(scratch_url, autocommit=True) as conn:  # two known instants, one with a fraction
        conn.execute("SET session_replication_role = replica")  # past the payments' append-only guard
        for reference, at in (("wire-a", "2026-11-03 10:00:10.24185+00"), ("wire-b", "2026-11-03 11:00:00+01")):
            conn.execute("UPDATE invoice_payments SET created_at = %s WHERE invoice_id = %s AND reference = %s",
                         (at, invoice["id"], reference))
    expected = [("wire-b", "2026-11-03T10:00:00Z"), ("wire-a", "2026-11-03T10:00:10.241850Z")]  # oldest first
    view = (await client.get(path.removesuffix("/payments"), headers=ADMIN)).json()
    assert [(p["reference"], p["created_at"]) for p in view["payments"]] == expected
    listed = (await client.get("/v1/customers/stamped/invoices", headers=ADMIN)).json()
    [one] = listed["invoices"]
    assert [(p["reference"], p["created_at"]) for p in one["payments"]] == expected


README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_invoice() -> dict:
    """The README's invoice example (Billing, **The invoice**), its elided lines ("…]") left out."""
    after = README.read_text().split("**The invoice** (`GET /v1/invoices/{id}`", 1)[1]
    return json.loads(after.split("```json\n", 1)[1].split("```", 1)[0].replace(", …]", "]"))


def _shape(value: Any) -> Any:
    """The fields of a JSON value at every level (a list by its first item), without the values."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return None


async def test_the_readme_s_invoice_example_is_a_real_invoice_s_fields_and_figures(client) -> None:
    """README (Billing, The invoice) shows GET /v1/invoices/{id}'s answer: the same fields at every
    level, and, for the same usage, the same figures. 5 calls, each 1,000 input tokens x $10/M
    ($0.01) + 500 output x $20/M ($0.01) + the call's $0.01: usage $0.10, requests $0.05, total
    $0.15; postpaid, so all of it charged to the account: $0.15 due, receivable $0.15, nothing paid,
    $0.15 remaining. The example lacked `amount_remaining`, which every invoice has."""
    invoice = await _closed_invoice(client, "readme")
    example = _readme_invoice()
    assert _shape(example) == _shape(invoice)
    who_and_when = {"id", "number", "customer_id", "customer_name", "period", "issued_at", "due_at", "lines",
                    "content_hash"}
    assert {k: v for k, v in example.items() if k not in who_and_when} == {
        k: v for k, v in invoice.items() if k not in who_and_when}
    assert (invoice["total"], invoice["amount_due"], invoice["amount_remaining"]) == ("0.15", "0.15", "0.15")


async def test_an_early_close_s_entry_is_dated_when_written_and_listed_in_that_window(client, scratch_url) -> None:
    """Time is an entry's occurred_at, the moment the ledger recorded it (README, The journal), and
    the journal's and the export's windows select on it. An early close ran at its `until` (this
    period's end, the grace window and 1 s: weeks ahead) and dated its entry then: the rounding of
    5 events of $0.01 and 1 input token each ($10.00 per 1M: $0.00001 each, $0.05005 in all, due
    $0.05 once rounded half to even, $0.00005 off) was listed in no window up to the time it was written, but in
    one weeks ahead. It is dated when written (the server's clock), the invoice still issued and
    numbered at `until`, and `tokentill audit verify` passes."""
    import asyncio
    import os
    import subprocess
    import sys

    now = datetime.now(UTC)
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": "early-dated", "currency": "USD", "price_book": "seed", "billing": "postpaid"})
    assert created.status_code == 201, created.text
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": f"early-dated-{i}", "customer_id": "early-dated", "model": "model-a",
         "timestamp": now.isoformat(), "usage": {"input_tokens": 1}} for i in range(5)])
    assert sent.json()["accepted"] == 5, sent.text
    period = period_of(now, Cycle())
    until = period.end + timedelta(hours=1, seconds=1)
    closed = await client.post("/v1/billing/close", headers=ADMIN, json={
        "until": until.isoformat(), "customer_id": "early-dated", "early": True})
    [one] = closed.json()["closed"]
    written = datetime.now(UTC)
    invoice = (await client.get(f"/v1/invoices/{one['invoice_id']}", headers=ADMIN)).json()
    assert invoice["issued_at"] == until.isoformat().replace("+00:00", "Z") and invoice["amount_due"] == "0.05"
    window = {"customer": "early-dated", "from": now.isoformat().replace("+00:00", "Z"),
              "to": written.isoformat().replace("+00:00", "Z")}
    listed = (await client.get("/v1/journal", headers=ADMIN, params={**window, "kind": "invoice_rounding"})).json()
    [rounding] = listed["entries"]  # was []: dated `until`, weeks past the window
    assert rounding["metadata"]["period"] == period.label
    assert now <= datetime.fromisoformat(rounding["occurred_at"]) <= written
    env = {**os.environ, "TOKENTILL_DATABASE_URL": scratch_url}
    verify = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "api.cli", "audit", "verify"], env=env,
                                     capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr

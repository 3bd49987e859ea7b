"""POST /v1/rerate end to end: a preview, an apply under an Idempotency-Key (and again: the same
answer, nothing more posted), the credit note of the closed invoice read by admin and by the
customer's own key only, and every refusal as problem+json with its stable code."""
from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pypdf import PdfReader

from tests.api.apps import api_client
from tests.api.closing import utc
from wallets.periods import Cycle, period_of

ADMIN = {"Authorization": "Bearer rr-admin"}


def book(version: str, effective_from: str, a_in: str) -> dict:
    return {"id": "rrb", "version": version, "currency": "USD", "effective_from": effective_from, "rules": [
        {"id": "a-in", "model": "model-a", "token_type": "input", "price": a_in},
        {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
        {"id": "call", "token_type": "request", "price": "0.01"}]}


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="rr-admin", books=[book("v1", "2026-01-01T00:00:00Z", "10.00")]) as c:
        yield c


async def key_of(client, scope: str) -> dict[str, str]:
    made = await client.post("/v1/api-keys", headers=ADMIN, json={"scope": scope})
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['key']}"}


async def test_preview_apply_and_the_credit_note_over_http(client) -> None:
    for cid in ("rr-a", "rr-b"):
        created = await client.post("/v1/customers", headers=ADMIN, json={
            "id": cid, "currency": "USD", "price_book": "rrb", "billing": "postpaid"})
        assert created.status_code == 201, created.text
    now = datetime.now(UTC)
    period = period_of(now, Cycle())
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": f"e{i}", "customer_id": "rr-a", "model": "model-a", "timestamp": now.isoformat(),
         "usage": {"input_tokens": 100_000, "output_tokens": 500}} for i in range(5)])
    assert sent.json()["accepted"] == 5, sent.text
    closed = await client.post("/v1/billing/close", headers=ADMIN, json={
        "until": utc(period.end + timedelta(hours=1, seconds=1)), "customer_id": "rr-a", "early": True})
    [invoice] = closed.json()["closed"]
    # the fix: model-a input was $6/M, not $10/M, all period long
    fixed = await client.post("/v1/price-books", headers=ADMIN, json=book("v2", utc(period.start), "6.00"))
    assert fixed.status_code == 201, fixed.text
    body = {"price_book": "rrb", "version": "v2", "from": utc(period.start), "to": utc(period.end)}

    seen = await client.post("/v1/rerate", headers=ADMIN, json={**body, "mode": "preview"})
    assert seen.status_code == 200, seen.text
    # by hand: 5 x 100,000 input tokens: $5.00 at $10/M, $3.00 at $6/M; the five charges stood at
    # 5 x ($1.00 + 500 output tokens at $20/M $0.01 + the call's $0.01) = $5.10, and stand at
    # 5 x $0.62 = $3.10 (the output and fee lines, as they were, counted but not listed)
    assert seen.json()["customers"] == [{
        "customer_id": "rr-a", "charges": 5, "old_amount": "5.10", "new_amount": "3.10", "delta": "-2.00",
        "lines": [{"model": "model-a", "token_type": "input", "old_amount": "5.00", "new_amount": "3.00",
                   "delta": "-2.00"}]}]

    applied = await client.post("/v1/rerate", headers={**ADMIN, "Idempotency-Key": "fix-v2"},
                                json={**body, "mode": "apply"})
    assert applied.status_code == 200, applied.text
    done = applied.json()
    assert [{k: v for k, v in c.items() if k != "entry_ids"} for c in done["customers"]] == seen.json()["customers"]
    [note] = done["credit_notes"]
    assert note["kind"] == "credit" and note["total"] == "-2.00" and note["invoice_id"] == invoice["invoice_id"]
    again = await client.post("/v1/rerate", headers={**ADMIN, "Idempotency-Key": "fix-v2"},
                              json={**body, "mode": "apply"})
    assert again.json() == done

    # the audit trace follows a charge to its adjustment and the entry that moved it
    trace = (await client.get("/v1/audit/charges/e0?customer_id=rr-a", headers=ADMIN)).json()
    [adjustment] = trace["charges"][0]["adjustments"]
    assert adjustment["corrected_version"] == "v2" and adjustment["credit_note"] == note["number"]
    assert (adjustment["old_amount"], adjustment["new_amount"]) == ("1.02", "0.62")  # $0.60 + $0.01 + $0.01
    assert adjustment["entry_id"] in [e["id"] for e in trace["entries"]]
    assert adjustment["entry_id"] in done["customers"][0]["entry_ids"]

    own, other = await key_of(client, "customer:rr-a"), await key_of(client, "customer:rr-b")
    read = await client.get(f"/v1/credit-notes/{note['id']}", headers=own)
    assert read.status_code == 200 and read.json()["number"] == note["number"]
    assert read.json()["invoice_number"] == invoice["number"] and read.json()["total"] == "-2.00"
    refused = await client.get(f"/v1/credit-notes/{note['id']}", headers=other)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    page = await client.get(f"/v1/credit-notes/{note['id']}", headers={**own, "Accept": "text/html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f"Credit note {note['number']}" in page.text and "-2.00" in page.text and invoice["number"] in page.text
    printed = await client.get(f"/v1/credit-notes/{note['id']}", headers={**own, "Accept": "application/pdf"})
    text_of_pdf = "".join(p.extract_text() for p in PdfReader(io.BytesIO(printed.content)).pages)
    assert f"Credit note {note['number']}" in text_of_pdf and "-2.00" in text_of_pdf
    assert (await client.get(f"/v1/credit-notes/{note['id']}",
                             headers={**own, "Accept": "text/csv"})).json()["code"] == "not_acceptable"
    listed = await client.get("/v1/customers/rr-a/credit-notes", headers=own)
    assert [n["id"] for n in listed.json()["credit_notes"]] == [note["id"]]
    assert (await client.get("/v1/customers/rr-a/credit-notes", headers=other)).status_code == 403
    assert (await client.post("/v1/rerate", headers=own, json={**body, "mode": "preview"})).status_code == 403

    verified = await client.post("/v1/audit/verify", headers=ADMIN)
    assert verified.json()["ok"], [c for c in verified.json()["checks"] if not c["ok"]]


@pytest.mark.parametrize(("change", "status", "code"), [
    ({"price_book": "nope"}, 404, "unknown_price_book"),
    ({"version": "v9"}, 404, "unknown_price_version"),
    ({"from": "2026-12-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, 422, "invalid_range"),
    ({"to": "2026-11-01T00:00:00Z"}, 422, "invalid_range"),
    ({"from": "2025-12-01T00:00:00Z"}, 422, "version_not_in_force"),
    ({"customer_id": "nobody"}, 404, "not_found"),
    ({"mode": "undo"}, 422, "validation_error"),
    ({"from": "yesterday"}, 422, "validation_error"),
    # a misspelt customer_id must not widen an apply to every customer of the book
    ({"customer": "nobody"}, 422, "validation_error"),
])
async def test_bad_rerates_are_problems_with_stable_codes(client, change, status, code) -> None:
    body = {"price_book": "rrb", "version": "v1", "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z",
            "mode": "apply", **change}
    answer = await client.post("/v1/rerate", headers=ADMIN, json=body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == code


async def test_the_same_range_in_another_utc_offset_is_the_same_re_rate(client) -> None:
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": "rr-tz", "currency": "USD", "price_book": "rrb", "billing": "postpaid"})
    assert created.status_code == 201, created.text
    now = datetime.now(UTC)
    period = period_of(now, Cycle())
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": "tz0", "customer_id": "rr-tz", "model": "model-a", "timestamp": now.isoformat(),
         "usage": {"input_tokens": 100_000, "output_tokens": 0}}])
    assert sent.json()["accepted"] == 1, sent.text
    fixed = await client.post("/v1/price-books", headers=ADMIN, json=book("v2", utc(period.start), "6.00"))
    assert fixed.status_code == 201, fixed.text
    body = {"price_book": "rrb", "version": "v2", "customer_id": "rr-tz", "mode": "apply"}
    tokyo = timezone(timedelta(hours=9))
    first = await client.post("/v1/rerate", headers=ADMIN, json={
        **body, "from": utc(period.start), "to": utc(period.end)})
    assert first.status_code == 200, first.text
    assert first.json()["delta"] == "-0.40" and first.json()["from"] == utc(period.start)  # $1.00 -> $0.60
    # the same instants, written at +09:00: the same re-rate, answered as the first, nothing moved again
    again = await client.post("/v1/rerate", headers=ADMIN, json={
        **body, "from": period.start.astimezone(tokyo).isoformat(), "to": period.end.astimezone(tokyo).isoformat()})
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    seen = await client.post("/v1/rerate", headers=ADMIN, json={
        **body, "mode": "preview", "from": period.start.astimezone(tokyo).isoformat(),
        "to": period.end.astimezone(tokyo).isoformat()})
    assert seen.json()["rerate_id"] == first.json()["rerate_id"] and seen.json()["from"] == utc(period.start)
    assert seen.json()["customers"] == []  # already re-rated to v2: nothing left to move


async def test_a_to_a_fraction_of_a_microsecond_after_a_charge_re_rates_it(client) -> None:
    """Usage is kept to the microsecond; a `to` may carry 9 digits. One event of 100,000 input
    tokens at T0 (.xxxxxx): $1.00 at $10/M, $0.60 at $6/M, delta -0.40 (the charge, its $0.01 call
    fee with it: $1.01 -> $0.61). T = T0 + 100 ns is after
    it, so [period start, T) holds it. The digits past the microsecond were dropped: T was read as
    T0, and the range left the charge out (no customer)."""
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": "rr-ns", "currency": "USD", "price_book": "rrb", "billing": "postpaid"})
    assert created.status_code == 201, created.text
    now = datetime.now(UTC)
    period = period_of(now, Cycle())
    t0 = now.replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": "ns0", "customer_id": "rr-ns", "model": "model-a", "timestamp": t0 + "Z",
         "usage": {"input_tokens": 100_000, "output_tokens": 0}}])
    assert sent.json()["accepted"] == 1, sent.text
    fixed = await client.post("/v1/price-books", headers=ADMIN, json=book("v2", utc(period.start), "6.00"))
    assert fixed.status_code == 201, fixed.text
    body = {"price_book": "rrb", "version": "v2", "customer_id": "rr-ns", "mode": "preview", "from": utc(period.start)}
    at_t0 = await client.post("/v1/rerate", headers=ADMIN, json={**body, "to": t0 + "Z"})
    assert at_t0.status_code == 200 and at_t0.json()["customers"] == [], at_t0.text  # [start, T0): not in it
    seen = await client.post("/v1/rerate", headers=ADMIN, json={**body, "to": t0 + "100Z"})
    assert seen.status_code == 200, seen.text
    assert [(c["customer_id"], c["old_amount"], c["new_amount"], c["delta"]) for c in seen.json()["customers"]] == [
        ("rr-ns", "1.01", "0.61", "-0.40")]

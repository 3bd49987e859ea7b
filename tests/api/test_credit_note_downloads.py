"""A credit note's PDF is not kept by a browser or a shared cache, as its printable page and every
invoice rendering are not (`Cache-Control: private, no-store`, `X-Content-Type-Options: nosniff`):
the invoice's PDF and CSV say so (then api.routes.invoices.NOT_KEPT, now renderings.NOT_KEPT), the note's page too
(renderings.HTML_HEADERS), but the note's PDF said nothing, so a customer's note, with its name,
its invoice's number and what it was charged, stayed in the browser's cache past a sign-out."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.api.apps import api_client
from tests.api.test_invoice_renderings import SEED
from wallets.periods import Cycle, period_of

ADMIN = {"Authorization": "Bearer note-dl-admin"}


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="note-dl-admin", books=[SEED]) as c:
        yield c


async def _credit_note(client) -> str:
    """acme's 1,000 input tokens at $10/M ($0.01) and 500 output at $20/M ($0.01), closed, then
    the input re-rated to $5/M: a credit note of -$0.005."""
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": "acme", "currency": "USD", "price_book": "seed", "billing": "postpaid", "name": "Acme Inc."})
    assert created.status_code == 201, created.text
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": "acme-1", "customer_id": "acme", "model": "model-a", "timestamp": datetime.now(UTC).isoformat(),
         "usage": {"input_tokens": 1000, "output_tokens": 500}}])
    assert sent.json()["accepted"] == 1, sent.text
    period = period_of(datetime.now(UTC), Cycle("UTC", None))
    closed = await client.post("/v1/billing/close", headers=ADMIN, json={
        "until": (period.end + timedelta(hours=1, seconds=1)).isoformat(), "customer_id": "acme", "early": True})
    assert closed.status_code == 200 and len(closed.json()["closed"]) == 1, closed.text
    start, end = (at.isoformat().replace("+00:00", "Z") for at in (period.start, period.end))
    fixed = {**SEED, "version": "v2", "effective_from": start,
             "rules": [{**r, "price": "5.00"} if r["id"] == "a-in" else r for r in SEED["rules"]]}
    assert (await client.post("/v1/price-books", headers=ADMIN, json=fixed)).status_code == 201
    applied = await client.post("/v1/rerate", headers=ADMIN, json={
        "price_book": "seed", "version": "v2", "from": start, "to": end, "mode": "apply"})
    assert applied.status_code == 200, applied.text
    [note] = applied.json()["credit_notes"]
    assert note["total"] == "-0.005", note
    return note["id"]


async def test_a_credit_notes_renderings_are_not_kept_as_an_invoices_are_not(client) -> None:
    note = await _credit_note(client)
    for accept in ("application/pdf", "text/html"):
        answer = await client.get(f"/v1/credit-notes/{note}", headers={**ADMIN, "Accept": accept})
        assert answer.status_code == 200, answer.text[:300]
        assert answer.headers.get("cache-control") == "private, no-store", (accept, dict(answer.headers))
        assert answer.headers.get("x-content-type-options") == "nosniff", (accept, dict(answer.headers))

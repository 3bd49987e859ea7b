"""A credit note's PDF is not kept by a browser or a shared cache, as its printable page and every
invoice rendering are not (`Cache-Control: private, no-store`, `X-Content-Type-Options: nosniff`):
the invoice's PDF and CSV say so (then api.routes.invoices.NOT_KEPT, now renderings.NOT_KEPT), the
note's page too (renderings.HTML_HEADERS), but the note's PDF said nothing, so a customer's note,
with its name, its invoice's number and what it was credited, stayed in the browser's cache past a
sign-out."""
from __future__ import annotations

from tests.api.test_invoice_bill_to import ADMIN, _close, _customer_with_usage, client, rerated_note

__all__ = ["client"]  # the fixture, shared


async def test_a_credit_notes_renderings_are_not_kept_as_an_invoices_are_not(client) -> None:
    """acme's 1,000 input tokens at $10/M ($0.01) and 500 output at $20/M ($0.01), closed, then
    the input re-rated to $5/M: a credit note of 1,000 x -$5/M = -$0.005."""
    await _customer_with_usage(client, "acme", "Acme Inc.")
    await _close(client, "acme")
    note = await rerated_note(client)
    assert note["total"] == "-0.005", note
    for accept in ("application/pdf", "text/html"):
        answer = await client.get(f"/v1/credit-notes/{note['id']}", headers={**ADMIN, "Accept": accept})
        assert answer.status_code == 200, answer.text[:300]
        assert answer.headers.get("cache-control") == "private, no-store", (accept, dict(answer.headers))
        assert answer.headers.get("x-content-type-options") == "nosniff", (accept, dict(answer.headers))

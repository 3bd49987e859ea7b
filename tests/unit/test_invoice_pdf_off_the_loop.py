"""A PDF of a long invoice renders in a worker thread: fpdf2 took 1.25 s for 1,000 lines, and on
the event loop every other request of the process (reserves and settles included) waited."""
from __future__ import annotations

import asyncio
import gc
import time

from api.renderings import PDF
from api.routes.invoices import rendered
from api.server import tune_gc

LINE = {"kind": "usage", "model": "model-a", "token_type": "input", "quantity": 1000, "unit_price": "10.00",
        "amount": "0.01"}
ZERO = {"credits": "0.00", "reserved": "0.00", "receivable": "0.00"}
DOCUMENT = {"number": "INV-2026-000001", "customer_id": "acme", "billing": "postpaid", "currency": "USD",
            "period": {"label": "2026-11", "start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z",
                       "time_zone": "UTC"},
            "issued_at": "2026-12-01T01:00:00Z", "due_at": "2026-12-31T00:00:00Z",
            "lines": [LINE] * 1000, "total": "10.00",
            "credits_applied": {"promotional": "0.00", "paid": "0.00", "total": "0.00"},
            "charged_to_account": "10.00", "top_ups": "0.00", "grants": "0.00", "expired": "0.00",
            "payments_received": "0.00", "opening_balance": ZERO, "closing_balance": ZERO, "amount_due": "10.00",
            "content_hash": "0" * 64}


async def test_a_long_invoice_pdf_renders_without_stalling_the_event_loop() -> None:
    """In a process tuned as a server is (tune_gc: what start-up made is frozen out of the
    collector's way); untuned, a full collection in the render's thread, over every object pytest
    and its plugins made, held the GIL and stalled the loop 0.1-0.6 s under load whatever thread
    rendered."""
    thresholds = gc.get_threshold()
    tune_gc()
    try:
        await _render_while_ticking()
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def _render_while_ticking() -> None:
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    answer = await rendered(PDF, DOCUMENT)
    await asyncio.sleep(0.05)  # the ticker wakes and records the gap a stall left
    ticking.cancel()
    assert bytes(answer.content).startswith(b"%PDF-")
    assert max(gaps) < 0.25, f"the loop stalled {max(gaps):.2f} s while the PDF rendered"

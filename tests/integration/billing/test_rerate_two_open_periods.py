"""A re-rate applied in a period's grace window corrects charges billed in two periods not closed
yet, the one that ended (awaiting late usage) and the current one: an entry each, both billed in
the current period, neither with a credit note (no invoice carried their charges), so both name
the money they give back `rerate:<id>`. When that period's close finds more given back than the
period owes, it pays the older open invoices with it, source by source; two sources of one
re-rate on one invoice were two payments of one invoice under one reference, which
`UNIQUE (invoice_id, reference)` refused: the close failed, and every later one of the customer."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from billing_kit import BillingKit

from ledger.audit import verify
from wallets import rerating
from wallets.audit import WALLET_CHECKS

DAYS_7 = 7 * 86_400


def book(version: str, effective_from: str, a_in: str) -> dict:
    return {
        "id": "fix",
        "version": version,
        "currency": "USD",
        "effective_from": effective_from,
        "rules": [
            {"id": "a-in", "model": "model-a", "token_type": "input", "price": a_in},
            {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
        ],
    }


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


async def test_two_entries_of_one_rerate_pay_one_older_invoice(fresh_db) -> None:
    bk = BillingKit(fresh_db)
    await bk.add_book(book("v1", "2026-01-01T00:00:00Z", "10.00"))
    cid = await bk.customer("grace", billing_mode="postpaid", book="fix", grace_seconds=DAYS_7)
    await bk.event(cid, "model-a", 2_000_000, 0, at=utc(2026, 11, 23))  # November: 20.00
    await bk.close(utc(2026, 12, 9))
    await bk.event(cid, "model-a", 1_000_000, 0, at=utc(2026, 12, 15))  # December: 10.00
    bk.clock.now = utc(2027, 1, 2)  # December has ended and waits in its grace window
    await bk.event(cid, "model-a", 100_000, 0)  # January: 1.00
    # the fix, on January 3rd: model-a input was free from November on
    await bk.add_book(book("v2", "2026-11-01T00:00:00Z", "0"))
    bk.clock.now = utc(2027, 1, 3)
    open_periods = await rerating.apply(
        bk.db, bk.service.engine, rerating.RerateSpec("fix", "v2", utc(2026, 12, 1), bk.clock.now, cid), None
    )  # December's and January's: 2 entries
    november = await rerating.apply(
        bk.db, bk.service.engine, rerating.RerateSpec("fix", "v2", utc(2026, 11, 1), utc(2026, 12, 1), cid), None
    )  # a credit note of November's
    assert len(open_periods["customers"][0]["entry_ids"]) == 2 and not open_periods["credit_notes"]
    assert [n["total"] for n in november["credit_notes"]] == ["-20.00"]
    # December closes as it was billed (10.00); January, 1.00 of usage less 31.00 given back,
    # pays the 30.00 over to November's invoice and December's
    await bk.close(utc(2027, 1, 9))
    closed = await bk.close(utc(2027, 2, 9))
    assert [c.period for c in closed] == ["2027-01"], closed
    invoices = {i["period"]["label"]: i for i in await bk.invoices(cid)}
    assert {label: i["payment_status"] for label, i in invoices.items()} == {
        "2026-11": "paid",
        "2026-12": "paid",
        "2027-01": "paid",
    }
    rr = open_periods["rerate_id"]
    paid = sorted((p["reference"], p["amount"]) for i in invoices.values() for p in i["payments"])
    assert sum(Decimal(a) for _, a in paid) == Decimal("30.00") and all(
        r.startswith((f"rerate:{rr}", "credit-note:")) for r, _ in paid
    ), paid
    assert (await bk.service.wallet(cid)).receivable == 0
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]

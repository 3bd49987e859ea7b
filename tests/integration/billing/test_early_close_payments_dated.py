"""An early close (`until` a time to come, `written` the caller's clock) dates its entries when
written (4820692); the payments it records against invoices (a correction's money back applied
to an older invoice, the rounding's part of it: apply_corrections) and the lot the rounding's
credit opens are dated so too, not at `until` (created_at in the future)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from billing_kit import BillingKit
from sqlalchemy import text
from test_rerate import DEC_1_GRACE_OVER, DEC_2, V1, V2, spec, verified, wallet

from wallets import billing, rerating

JAN_1_GRACE_OVER = datetime(2027, 1, 1, 1, 0, tzinfo=UTC)


@pytest.fixture
async def fixed(fresh_db) -> BillingKit:
    kit = BillingKit(fresh_db)
    await kit.add_book(V1)
    return kit


async def _payments(bk: BillingKit, cid: str) -> list[tuple[str, datetime]]:
    rows = await bk.db.read(
        lambda conn: conn.execute(
            text("SELECT reference, created_at FROM invoice_payments WHERE customer_id = :c ORDER BY id"), {"c": cid}
        )
    )
    return [(r, at) for r, at in rows.all()]


async def test_an_early_close_s_payments_of_older_invoices_are_dated_when_written(fixed: BillingKit) -> None:
    """test_rerate's money back the close rounds up, December closed early on December 2nd: 2,501
    input tokens on November 10th ($0.03501, due $0.04); the fix ($8/M) on December 1st 00:30 gives
    $0.005002 back, billed in December; December closed early `until` January 1st 01:00 rounds it
    to $0.01 ($0.004998 from the rounding account) and pays November's invoice with both: those two
    payments were dated at `until`, a month after they were written."""
    bk = fixed
    cid = await bk.customer("early-pay", billing_mode="postpaid", book="fix")
    await bk.event(cid, "model-a", 2_501, 0, at=datetime(2026, 11, 10, tzinfo=UTC))
    await bk.add_book(V2)
    bk.clock.now = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)  # in November's grace: billed in December
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    assert done["credit_notes"] == [] and done["delta"] == "-0.005002"
    await bk.close(DEC_1_GRACE_OVER)  # November, on time
    written = datetime(2026, 12, 2, tzinfo=UTC)
    bk.clock.now = written
    [closed] = await billing.close_due(bk.db, JAN_1_GRACE_OVER, customers=[cid], written=written)
    assert closed.period == "2026-12"
    november, december = await bk.invoices(cid)
    assert (december["amount_due"], december["amount_due_rounding"]) == ("0.00", "-0.004998")
    assert [(p["amount"], p["reference"]) for p in november["payments"]] == [
        ("0.005002", f"rerate:{done['rerate_id']}"),
        ("0.004998", "rounding:2026-12"),
    ]
    paid = await _payments(bk, cid)
    assert [r for r, _ in paid] == [f"rerate:{done['rerate_id']}", "rounding:2026-12"]
    assert all(at <= written for _, at in paid), paid  # were JAN_1_GRACE_OVER, `until`
    assert (await wallet(bk, cid)).receivable == 30_000_000  # $0.04 - $0.01
    await verified(bk)


async def test_an_early_close_s_rounding_credit_lot_is_opened_when_written(fixed: BillingKit) -> None:
    """test_rerate's money back before the close, November closed early: a postpaid customer's $0.01
    top-up is credit; one input token on November 10th costs $0.01001 ($0.01 from the credit,
    $0.00001 to account); the fix on December 1st 00:10 gives $0.000002 back: $0.000008 owed.
    November closed at 00:20, `until` 01:00 (its grace's end), rounds $0.00001 due down to $0.00:
    $0.000008 off the receivable, $0.000002 credit in a lot of its own, which was created at `until`."""
    bk = fixed
    cid = await bk.customer("early-lot", billing_mode="postpaid", book="fix")
    bk.clock.now = datetime(2026, 11, 10, tzinfo=UTC)
    await bk.top_up(cid, "0.01")
    await bk.event(cid, "model-a", 1, 0)
    await bk.add_book(V2)
    bk.clock.now = datetime(2026, 12, 1, 0, 10, tzinfo=UTC)
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    assert done["delta"] == "-0.000002"
    written = datetime(2026, 12, 1, 0, 20, tzinfo=UTC)
    bk.clock.now = written
    [_closed] = await billing.close_due(bk.db, DEC_1_GRACE_OVER, customers=[cid], written=written)
    [november] = await bk.invoices(cid)
    assert (november["amount_due"], november["amount_due_rounding"]) == ("0.00", "-0.00001")
    lots = (
        await bk.db.read(
            lambda conn: conn.execute(
                text(
                    "SELECT granted, created_at FROM lots"
                    " WHERE customer_id = :c AND reference = 'invoice rounding 2026-11'"
                ),
                {"c": cid},
            )
        )
    ).all()
    assert [g for g, _ in lots] == [2_000], lots  # $0.000002 in atomic units of 10^-9
    assert lots[0][1] <= written, lots  # was DEC_1_GRACE_OVER, `until`
    after = await wallet(bk, cid)
    assert (after.receivable, after.available) == (0, 2_000)
    await verified(bk)


async def test_an_early_close_then_the_period_s_end_closes_once_and_a_re_rate_corrects_it(fixed: BillingKit) -> None:
    """(guard) November closed early on November 20th (`until` its grace's end): the scheduled close
    at the end finds nothing due, so one invoice and one rounding entry, dated when written; a re-rate
    of November after it issues a credit note against that invoice, and verify (the rollups, the
    invoices' tie-out) passes. By hand: 2,501 input tokens on November 10th, $0.02501 + $0.01 =
    $0.03501, due $0.04 ($0.00499 rounding); the fix ($8/M) gives $0.005002 back: the note -$0.005002."""
    bk = fixed
    cid = await bk.customer("early-once", billing_mode="postpaid", book="fix")
    await bk.event(cid, "model-a", 2_501, 0, at=datetime(2026, 11, 10, tzinfo=UTC))
    written = datetime(2026, 11, 20, tzinfo=UTC)
    bk.clock.now = written
    [early] = await billing.close_due(bk.db, DEC_1_GRACE_OVER, customers=[cid], written=written)
    assert (early.period, early.customer_id) == ("2026-11", cid)
    assert [c for c in await bk.close(DEC_1_GRACE_OVER) if c.customer_id == cid] == []
    [november] = await bk.invoices(cid)
    assert (november["total"], november["amount_due"], november["amount_due_rounding"]) == (
        "0.03501",
        "0.04",
        "0.00499",
    )
    rows = await bk.db.read(
        lambda conn: conn.execute(
            text(
                "SELECT kind, occurred_at FROM journal_entries WHERE customer_id = :c AND metadata->>'period' = "
                "'2026-11' AND kind IN ('invoice_rounding', 'volume_true_up')"
            ),
            {"c": cid},
        )
    )
    assert [tuple(r) for r in rows.all()] == [("invoice_rounding", written)]
    await verified(bk)
    await bk.add_book(V2)
    bk.clock.now = DEC_2
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    [note] = done["credit_notes"]
    assert (note["total"], note["invoice_id"]) == ("-0.005002", november["id"])
    await verified(bk)


async def _events(bk: BillingKit, cid: str) -> list[tuple[str, str, str | None]]:
    rows = await bk.db.read(
        lambda conn: conn.execute(
            text(
                "SELECT topic, payload->>'created_at', payload->>'invoice_id' FROM outbox"
                " WHERE customer_id = :c AND topic LIKE 'invoice.%' ORDER BY id"
            ),
            {"c": cid},
        )
    )
    return [tuple(r) for r in rows.all()]


async def test_an_early_close_s_events_are_dated_when_written(fixed: BillingKit) -> None:
    """The first test's December, closed early on December 2nd (`until` January 1st 01:00): its
    invoice asks $0.00 (the $0.005002 back rounded to $0.01 paid November's), so the close writes
    `invoice.finalized` and `invoice.paid` ($0.00) for it. Their `data.created_at` (README, Webhooks:
    the time its rules decided it) said 2027-01-01T01:00:00Z, a month after the close ran and after
    the delivery's own `timestamp`; now 2026-12-02T00:00:00Z. The invoice's `issued_at` stays
    `until`, the end of the period it bills (README, Billing periods: its number's year too)."""
    bk = fixed
    cid = await bk.customer("early-events", billing_mode="postpaid", book="fix")
    await bk.event(cid, "model-a", 2_501, 0, at=datetime(2026, 11, 10, tzinfo=UTC))
    await bk.add_book(V2)
    bk.clock.now = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
    await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    await bk.close(DEC_1_GRACE_OVER)  # November, on time: its events at DEC_1_GRACE_OVER
    written = datetime(2026, 12, 2, tzinfo=UTC)
    bk.clock.now = written
    await billing.close_due(bk.db, JAN_1_GRACE_OVER, customers=[cid], written=written)
    november, december = await bk.invoices(cid)
    assert december["amount_due"] == "0.00"
    assert december["issued_at"] == "2027-01-01T01:00:00Z"
    assert await _events(bk, cid) == [
        ("invoice.finalized", "2026-12-01T01:00:00Z", november["id"]),
        ("invoice.finalized", "2026-12-02T00:00:00Z", december["id"]),
        ("invoice.paid", "2026-12-02T00:00:00Z", december["id"]),
    ]

"""Invoices of closed periods, worked by hand: the seed example of the issue, late usage, and
the figures that must tie out to the postings."""
from __future__ import annotations

from datetime import UTC, datetime

from billing_kit import NOV_23, BillingKit

from ledger.audit import verify
from tests.integration.wallets.wallet_kit import usd
from wallets.audit import WALLET_CHECKS
from wallets.commands import Settle

DEC_1_GRACE_OVER = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
JAN_1_GRACE_OVER = datetime(2027, 1, 1, 1, 0, tzinfo=UTC)


def lines_of(invoice: dict) -> list[tuple]:
    return [(ln["kind"], ln["model"], ln["token_type"], ln["quantity"], ln["unit_price"], ln["amount"],
             ln["original_period"]) for ln in invoice["lines"]]


async def test_the_seed_example_invoice_matches_a_hand_calculation(bk: BillingKit) -> None:
    cid = await bk.customer("acme", billing_mode="postpaid")
    # model-a: three calls of 1,000 input and 500 output tokens, as usage events
    for _ in range(3):
        await bk.event(cid, "model-a", 1000, 500)
    # model-b: two reserved calls of 2,000 input and 1,000 output tokens
    for _ in range(2):
        rid = await bk.reserve(cid, "model-b", "1.00")
        await bk.settle(cid, rid, 2000, 1000)
    closed = await bk.close(DEC_1_GRACE_OVER)
    assert [c.number for c in closed] == ["INV-2026-000001"]
    [invoice] = await bk.invoices(cid)
    # By hand: model-a input 3,000 x $10/M = $0.03; output 1,500 x $20/M = $0.03; 3 requests x $0.01;
    # model-b input 4,000 x $5/M = $0.02; output 2,000 x $10/M = $0.02; 2 requests x $0.01.
    assert lines_of(invoice) == [
        ("usage", "model-a", "input", 3000, "10.00", "0.03", None),
        ("usage", "model-a", "output", 1500, "20.00", "0.03", None),
        ("request", "model-a", "request", 3, "0.01", "0.03", None),
        ("usage", "model-b", "input", 4000, "5.00", "0.02", None),
        ("usage", "model-b", "output", 2000, "10.00", "0.02", None),
        ("request", "model-b", "request", 2, "0.01", "0.02", None),
    ]
    assert invoice["total"] == "0.15"
    assert invoice["subtotals"]["usage"] == "0.10" and invoice["subtotals"]["requests"] == "0.05"
    assert invoice["charged_to_account"] == "0.15" and invoice["amount_due"] == "0.15"
    assert invoice["credits_applied"] == {"promotional": "0.00", "paid": "0.00", "total": "0.00"}
    assert invoice["opening_balance"] == {"credits": "0.00", "reserved": "0.00", "receivable": "0.00"}
    assert invoice["closing_balance"] == {"credits": "0.00", "reserved": "0.00", "receivable": "0.15"}
    assert invoice["period"] == {"label": "2026-11", "start": "2026-11-01T00:00:00Z",
                                 "end": "2026-12-01T00:00:00Z", "time_zone": "UTC"}
    assert invoice["due_at"] == "2026-12-31T00:00:00Z"
    assert invoice["payment_status"] == "open"
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]


async def test_a_prepaid_invoice_splits_credits_applied_by_lot_kind(bk: BillingKit) -> None:
    cid = await bk.customer("pre")
    await bk.grant(cid, "0.05")  # priority 50: spent first
    await bk.top_up(cid, "1.00")
    for _ in range(3):
        await bk.event(cid, "model-a", 1000, 500)  # $0.03 each
    await bk.close(DEC_1_GRACE_OVER)
    [invoice] = await bk.invoices(cid)
    assert invoice["total"] == "0.09"
    assert invoice["credits_applied"] == {"promotional": "0.05", "paid": "0.04", "total": "0.09"}
    assert invoice["charged_to_account"] == "0.00" and invoice["amount_due"] == "0.00"
    assert invoice["top_ups"] == "1.00" and invoice["grants"] == "0.05"
    assert invoice["closing_balance"]["credits"] == "0.96"
    assert invoice["payment_status"] == "paid"


async def test_late_usage_bills_on_the_next_invoice_and_leaves_the_closed_one_unchanged(bk: BillingKit) -> None:
    cid = await bk.customer("late", billing_mode="postpaid")
    await bk.event(cid, "model-a", 1000, 500)  # $0.03 in November
    await bk.close(DEC_1_GRACE_OVER)
    [november] = await bk.invoices(cid)
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    await bk.event(cid, "model-b", 2000, 1000, at=NOV_23)  # November usage, after November closed: $0.03
    await bk.event(cid, "model-b", 2000, 0)  # December usage: $0.01 + $0.01
    upcoming = await bk.upcoming(cid)
    assert upcoming["status"] == "upcoming" and upcoming["total"] == "0.05"
    await bk.close(JAN_1_GRACE_OVER)
    november_again, december = await bk.invoices(cid)
    assert november_again == november  # byte for byte: same content, same hash
    assert december["number"] == "INV-2027-000001"
    assert lines_of(december) == [
        ("usage", "model-b", "input", 2000, "5.00", "0.01", None),
        ("request", "model-b", "request", 1, "0.01", "0.01", None),
        ("usage", "model-b", "input", 2000, "5.00", "0.01", "2026-11"),
        ("usage", "model-b", "output", 1000, "10.00", "0.01", "2026-11"),
        ("request", "model-b", "request", 1, "0.01", "0.01", "2026-11"),
    ]
    assert december["total"] == "0.05" and december["amount_due"] == "0.05"
    assert december["opening_balance"]["receivable"] == "0.03"
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]


async def test_a_late_capture_months_after_its_period_closed_bills_in_the_open_period(bk: BillingKit) -> None:
    """A capture that arrives after its reservation closed (migration 0010) has no cut-off: months
    later, after its period and the next ones were closed and invoiced, it is charged all the same,
    rated at the reservation's time and billed on the open period's invoice with its
    `original_period`, as any late usage; the closed invoices stay as they were."""
    cid = await bk.customer("latecap", billing_mode="postpaid")
    rid = await bk.reserve(cid, "model-a", "1.00")
    await bk.settle(cid, rid, 1000, 500)  # November: $0.01 + $0.01 + the request's $0.01
    closed = []
    for until in (DEC_1_GRACE_OVER, JAN_1_GRACE_OVER, datetime(2027, 2, 1, 1, tzinfo=UTC),
                  datetime(2027, 3, 1, 1, tzinfo=UTC)):
        await bk.close(until)
        closed = await bk.invoices(cid)
    assert [i["total"] for i in closed] == ["0.03", "0.00", "0.00", "0.00"], [i["total"] for i in closed]
    bk.clock.now = datetime(2027, 3, 15, tzinfo=UTC)
    tokens = {"input": 3000, "output": 0}
    late = await bk.service.submit(Settle(customer_id=cid, reservation_id=rid, request_hash=b"late-capture",
                                          tokens=tokens, usage=tokens, final=False, capture_id="cap-late"))
    assert late.charged == usd("0.03")  # 3,000 x $10/M at November's prices; no second request fee
    await bk.close(datetime(2027, 4, 1, 1, tzinfo=UTC))
    *again, march = await bk.invoices(cid)
    assert again == closed  # byte for byte: same content, same hash
    assert march["period"]["start"].startswith("2027-03"), march["period"]
    assert lines_of(march) == [("usage", "model-a", "input", 3000, "10.00", "0.03", "2026-11")]
    assert march["total"] == "0.03" and march["amount_due"] == "0.03"
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]


async def test_lines_round_to_the_cent_and_a_rounding_line_ties_them_to_the_exact_total(bk: BillingKit) -> None:
    cid = await bk.customer("cents", billing_mode="postpaid")
    await bk.event(cid, "model-a", 1340, 670)  # input 1,340 x $10/M = $0.0134; output 670 x $20/M = $0.0134
    await bk.event(cid, "model-b", 2680, 0)  # input 2,680 x $5/M = $0.0134; one request each: $0.01
    upcoming = await bk.upcoming(cid)
    await bk.close(DEC_1_GRACE_OVER)
    [invoice] = await bk.invoices(cid)
    # By hand: each $0.0134 line shows $0.01; the exact total is 3 x 0.0134 + 2 x 0.01 = $0.0602, so the
    # rounding line is 0.0602 - 0.05 = $0.0102.
    assert lines_of(invoice) == [
        ("usage", "model-a", "input", 1340, "10.00", "0.01", None),
        ("usage", "model-a", "output", 670, "20.00", "0.01", None),
        ("request", "model-a", "request", 1, "0.01", "0.01", None),
        ("usage", "model-b", "input", 2680, "5.00", "0.01", None),
        ("request", "model-b", "request", 1, "0.01", "0.01", None),
        ("rounding", None, None, None, None, "0.0102", None),
    ]
    assert invoice["total"] == "0.0602" and invoice["charged_to_account"] == "0.0602"  # exact, as posted
    # what is due is whole cents: $0.0602 half to even is $0.06, the $0.0002 taken off at the close
    assert invoice["amount_due"] == "0.06" and invoice["amount_due_rounding"] == "-0.0002"
    assert upcoming["amount_due"] == "0.06"
    assert invoice["line_rounding"] == {"decimals": 2, "mode": "half_even"}
    assert invoice["subtotals"] == {"usage": "0.03", "requests": "0.02", "discounts": "0.00",
                                    "free_allowances": "0.00", "true_ups": "0.00", "adjustments": "0.00",
                                    "rounding": "0.0102"}
    assert lines_of(upcoming) == lines_of(invoice) and upcoming["total"] == "0.0602"
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]


async def test_lines_round_half_to_even_and_need_no_rounding_line_when_they_tie(bk: BillingKit) -> None:
    cid = await bk.customer("even", billing_mode="postpaid")
    await bk.event(cid, "model-a", 1500, 0)  # $0.015 -> $0.02
    await bk.event(cid, "model-b", 5000, 0)  # $0.025 -> $0.02
    await bk.close(DEC_1_GRACE_OVER)
    [invoice] = await bk.invoices(cid)
    assert [(ln["kind"], ln["amount"]) for ln in invoice["lines"]] == [
        ("usage", "0.02"), ("request", "0.01"), ("usage", "0.02"), ("request", "0.01")]
    assert invoice["total"] == "0.06" and invoice["subtotals"]["rounding"] == "0.00"


async def test_verify_finds_a_line_of_a_rounded_invoice_that_is_not_rounded(bk: BillingKit) -> None:
    cid = await bk.customer("unround", billing_mode="postpaid")
    await bk.event(cid, "model-a", 1340, 0)  # $0.0134 shown as $0.01, rounding $0.0034
    await bk.close(DEC_1_GRACE_OVER)
    [invoice] = await bk.invoices(cid)

    async def forge(conn) -> None:  # the same document under another number, its first line left exact
        await conn.exec_driver_sql("""
            INSERT INTO invoices (id, lane, customer_id, period, period_start, period_end, issuer, year, seq, number,
                                  currency, total, amount_due, due_at, content, content_hash, finalized_at)
            SELECT 'inv_forged', i.lane, i.customer_id, '2026-10', i.period_start - interval '1 month',
                   i.period_start, 'FORGE', i.year, 1, 'FORGE-2026-000001', i.currency, i.total, i.amount_due,
                   i.due_at, f.content, sha256(convert_to(f.content::text, 'UTF8')), i.finalized_at
              FROM invoices i, LATERAL (SELECT jsonb_set(jsonb_set(jsonb_set(i.content, '{id}', '"inv_forged"'),
                   '{number}', '"FORGE-2026-000001"'), '{lines,0,amount}', '"0.0134"') AS content) f
             WHERE i.id = %s""", (invoice["id"],))
    await bk.db.run(forge)
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    [failed] = [c for c in report.checks if not c.ok]
    assert "invoice FORGE-2026-000001: its usage line of 0.0134 is not rounded to 2 decimals" in failed.problems

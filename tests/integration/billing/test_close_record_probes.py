"""Guard (review of ce3a83a): the record a close keeps of what it posted each account beyond its
payer rows (`beyond_payer_rows`) on honest ledgers: closes whose amount due rounds down or up,
prepaid and postpaid, USD and JPY, an early close, a close with no true-up (an invoice_rounding
entry, no record). Each verifies in the database and as a jsonl export offline, and neither the
upcoming invoice (closing() builds it too) nor the invoice shows the record.

By hand. Book `vol` (test_rerate_volume_true_up.vol): model-v output $20/M up to 100,000, $10/M
beyond; `yen` the same in yen x 100 (¥2,000/M, ¥1,000/M). Usage (each customer, noon):
- 60,003 on the 5th: 60,003 x $20/M = $1.20006; 70,004 on the 20th: 39,997 x $20/M = $0.79994 +
  30,007 x $10/M = $0.30007 = $1.10001; $2.30007 charged. The close: 130,007 x $10/M = $1.30007,
  true-up -$1.00000 (revenue debited $1.00, beyond every payer's rows). Postpaid, the amount due
  $1.30007 is $1.30: -$0.00007 (70,000 units) from the rounding account to the receivable, beyond
  its rows. In yen ¥100 back, ¥130.007 due ¥130: ¥0.007 (7,000,000 units).
- round-up customer: 60,300 ($1.206) and 70,400 (39,700 x $20/M = $0.794 + 30,700 x $10/M = $0.307,
  $1.101): $2.307; the close 130,700 x $10/M = $1.307, -$1.000; due $1.307 is $1.31: the receivable
  debited $0.003 (3,000,000 units) beside its rows, the rounding account credited it.
- prepaid customers: what they get back goes to their lots, each by a row: revenue's -$1.00 alone
  beyond the rows (a prepaid amount due keeps its figure: no rounding here).
- December (early close of December on the 15th): 130,011 on the 3rd: 100,000 x $20/M + 30,011 x
  $10/M = $2.30011; the close 130,011 x $10/M = $1.30011, -$1.00; postpaid due $1.30011 is $1.30."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from billing_kit import BillingKit
from sqlalchemy import text
from test_close_true_up_funding import _lot
from test_rerate_volume_true_up import CLOSED, verified, vol
from test_true_up_payers_record_probes import _offline_verified, _sealed

from ledger.accounts import ensure_asset
from wallets import billing, chart
from wallets.service import CustomerSpec

DOLLAR = 1_000_000_000  # atomic units (9 decimals) of $1 (and of ¥1)
USAGE, ROUNDING = chart.revenue_account("USD"), chart.rounding_account("USD")


async def _records(bk: BillingKit, cid: str) -> list[tuple[str, dict | None]]:
    """The customer's close entries: (kind, its `beyond_payer_rows` or None), in order."""
    rows = await bk.db.read(
        lambda conn: conn.execute(
            text(
                "SELECT kind, metadata FROM journal_entries WHERE customer_id = :c AND kind IN "
                "('volume_true_up', 'invoice_rounding') ORDER BY id"
            ),
            {"c": cid},
        )
    )
    return [(kind, meta.get("beyond_payer_rows")) for kind, meta in rows]


async def test_honest_closes_of_every_shape_verify_and_show_no_record(fresh_db, scratch_url, tmp_path: Path) -> None:
    bk = BillingKit(fresh_db)
    await bk.add_book(vol("v1", "2026-01-01T00:00:00Z", "20", "10"))
    await bk.add_book(bk.SEED)
    await bk.db.run(lambda conn: ensure_asset(conn, "JPY", 9))
    await bk.add_book({**vol("y1", "2026-01-01T00:00:00Z", "2000", "1000"), "id": "yen", "currency": "JPY"})
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    post, up, pre, mixed = "cr-post", "cr-up", "cr-pre", "cr-mixed"
    yen, yen_pre, flat = "cr-yen", "cr-yenpre", "cr-flat"
    for cid in (post, up):
        await bk.customer(cid, billing_mode="postpaid", book="vol")
    await bk.customer(pre, book="vol")
    await bk.top_up(pre, "5.00")
    await bk.customer(mixed, book="vol", overdraft="10.00")  # a $1.00 grant, then the overdraft
    await bk.grant(mixed, "1.00")
    await bk.customer(flat, billing_mode="postpaid")
    await bk.service.create_customer(CustomerSpec(yen, yen, "JPY", "postpaid", "yen", None, None))
    await bk.service.create_customer(CustomerSpec(yen_pre, yen_pre, "JPY", "prepaid", "yen", 0, None))
    await _lot(bk, yen_pre, "topup", "1000")
    for day, tokens, up_tokens in ((5, 60_003, 60_300), (20, 70_004, 70_400)):
        bk.clock.now = datetime(2026, 11, day, 12, tzinfo=UTC)
        for cid in (post, pre, mixed, yen, yen_pre):
            await bk.event(cid, "model-v", 0, tokens)
        await bk.event(up, "model-v", 0, up_tokens)
        await bk.event(flat, "model-a", 1_234, 567)
    everyone = (post, up, pre, mixed, flat, yen, yen_pre)
    bk.clock.now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    upcoming = {cid: await bk.upcoming(cid) for cid in everyone}
    await bk.close(CLOSED)
    for cid in everyone:
        [invoice] = await bk.invoices(cid)
        assert invoice["total"] == upcoming[cid]["total"], cid
        assert "beyond_payer_rows" not in json.dumps(upcoming[cid], default=str), cid
        assert "beyond_payer_rows" not in json.dumps(invoice, default=str), cid
    receivable = chart.receivable_account
    assert await _records(bk, post) == [
        ("volume_true_up", {USAGE: -DOLLAR, ROUNDING: -70_000, receivable(post): 70_000})
    ]
    assert await _records(bk, up) == [
        ("volume_true_up", {USAGE: -DOLLAR, ROUNDING: 3_000_000, receivable(up): -3_000_000})
    ]
    assert await _records(bk, pre) == [("volume_true_up", {USAGE: -DOLLAR})]
    assert await _records(bk, yen) == [
        (
            "volume_true_up",
            {
                chart.revenue_account("JPY"): -100 * DOLLAR,
                chart.rounding_account("JPY"): -7_000_000,
                receivable(yen): 7_000_000,
            },
        )
    ]
    assert await _records(bk, yen_pre) == [("volume_true_up", {chart.revenue_account("JPY"): -100 * DOLLAR})]
    assert [kind for kind, record in await _records(bk, flat)] == ["invoice_rounding"]
    assert (await _records(bk, flat))[0][1] is None
    assert (await _records(bk, mixed))[0][1][USAGE] == -DOLLAR
    await verified(bk)
    # December closed early, on the 15th
    bk.clock.now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    for cid in (post, pre, yen):
        await bk.event(cid, "model-v", 0, 130_011)
    bk.clock.now = datetime(2026, 12, 15, tzinfo=UTC)
    closed = await billing.close_due(bk.db, datetime(2027, 1, 2, tzinfo=UTC), customers=[post, pre, yen])
    assert [(c.customer_id, c.period, c.total, c.amount_due) for c in closed] == [
        (post, "2026-12", 1_300_110_000, 1_300_000_000),
        (pre, "2026-12", 1_300_110_000, 0),
        (yen, "2026-12", 130_011_000_000, 130 * DOLLAR),
    ]
    assert (await _records(bk, post))[-1] == (
        "volume_true_up",
        {USAGE: -DOLLAR, ROUNDING: -110_000, receivable(post): 110_000},
    )
    await verified(bk)
    await _sealed(bk)
    await verified(bk)
    assert "seals intact" in _offline_verified(scratch_url, tmp_path)

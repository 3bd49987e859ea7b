"""Migration 0040: each charge keeps the billing period it is billed in. The write path stores
the period the rollups got; the backfill computes the same for charges already written (free
calls, no entry, included), before and after a close moved late usage to the next period."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from billing_kit import BillingKit
from sqlalchemy import text
from test_period_deltas import FREE, failed_checks


def label(at: datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}"


async def periods(bk: BillingKit) -> list[tuple[str, bool, str]]:
    rows = await bk.db.read(lambda conn: conn.execute(text(
        "SELECT customer_id, entry_id IS NULL AS free, period FROM charges ORDER BY id")))
    return [tuple(r) for r in rows.all()]


async def test_the_backfill_bills_each_charge_in_the_period_the_code_billed_it_in(bk: BillingKit,
                                                                                  migrating) -> None:
    # wall-clock times: the backfill orders a charge and a close by when each was recorded
    early = datetime.now(UTC) - timedelta(days=40)
    bk.clock.now = early
    await bk.add_book(FREE)
    free = await bk.customer("cfree", billing_mode="postpaid", book="free", grace_seconds=3600)
    paid = await bk.customer("cpaid", billing_mode="postpaid", grace_seconds=3600)
    for cid, model in ((free, "model-f"), (paid, "model-a")):
        await bk.event(cid, model, 1000, 500)
    await bk.close(datetime.now(UTC))  # closes the month of `early` (and the next, if over)
    # every month that ended an hour (its grace) before the close is closed: the open one is this
    open_now = label(bk.clock.now - timedelta(hours=1))
    assert next(i["period"]["label"] for i in await bk.invoices(free)) == label(early) != open_now
    for cid, model in ((free, "model-f"), (paid, "model-a")):
        await bk.event(cid, model, 1000, 500, at=early)  # late: its month is closed
        await bk.event(cid, model, 2000, 500)
    written = await periods(bk)
    assert written == [(free, True, label(early)), (paid, False, label(early)),
                       (free, True, open_now), (free, True, open_now),
                       (paid, False, open_now), (paid, False, open_now)]
    assert await failed_checks(bk) == {}

    conn, config = migrating
    command.downgrade(config, "0039")
    conn.commit()
    assert conn.execute(text("SELECT count(*) FROM pg_attribute WHERE attrelid = 'charges'::regclass "
                             "AND attname = 'period' AND NOT attisdropped")).scalar() == 0
    command.upgrade(config, "head")
    conn.commit()
    assert await periods(bk) == written
    assert await failed_checks(bk) == {}

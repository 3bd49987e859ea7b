"""A re-rate moves what a money budget's current window counted of the charges it corrects: a call
charged $10.01 re-rated to $8.01 leaves $8.01 spent there (and the room a hard cap has), one
re-rated upward crosses the thresholds it now passes; a window already over keeps what it counted."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from billing_kit import BillingKit
from sqlalchemy import text
from test_rerate import NOV_2, V1, V2, V3, book, spec, units, verified

from ledger.audit import verify
from migrations.earlier import migration
from wallets import rerating
from wallets.audit import WALLET_CHECKS
from wallets.budgets import BudgetSpec
from wallets.errors import BudgetExceededError

V9 = book("v9", "2026-11-03T00:00:00Z", "10.00")  # $10/M from the 3rd: a call of 1M input tokens $10.01


async def _customer(bk: BillingKit, cid: str, first: dict = V1) -> str:
    """`cid` on book `fix` (`first` added now), with $100.00 of credit."""
    await bk.add_book(first)
    await bk.customer(cid, book="fix")
    await bk.top_up(cid, "100.00")
    return cid


async def _call(bk: BillingKit, cid: str) -> None:
    """A $12.00 hold settled for 1M model-a input tokens: $10.00 + $0.01 the call under v1 ($10/M)."""
    rid = await bk.reserve(cid, "model-a", "12.00")
    await bk.settle(cid, rid, 1_000_000, 0)


async def _month(bk: BillingKit, cid: str, limit: str = "15.00", **budget: object):
    """A month money budget of `limit` (hard unless `budget` says otherwise)."""
    return await bk.service.budgets.create(BudgetSpec(customer_id=cid, window="month", metric="money",
                                                      limit=units(limit), **budget))


async def _used(bk: BillingKit, made) -> int:
    return (await bk.service.budgets.get(made.budget.id)).used


async def _applied(bk: BillingKit, rerate: rerating.RerateSpec) -> dict:
    return await rerating.apply(bk.db, bk.service.engine, rerate, None)


async def _alerts(bk: BillingKit, cid: str) -> list[tuple[str, str]]:
    """The customer's budget.threshold_crossed events: (threshold, used), oldest first."""
    rows = await bk.db.read(lambda conn: conn.execute(text(
        "SELECT payload->>'threshold', payload->>'used' FROM outbox WHERE customer_id = :c "
        "AND topic = 'budget.threshold_crossed' ORDER BY id"), {"c": cid}))
    return [tuple(r) for r in rows]


async def _upgraded_0063(bk: BillingKit) -> None:
    """0063's backfill, run now."""
    async def upgrade(conn) -> None:
        await conn.exec_driver_sql(migration("0063_budget_seeded_through_backfill").BACKFILL)

    await bk.db.run(upgrade)


async def test_a_rerate_moves_what_the_current_money_window_counted_both_ways(fresh_db) -> None:
    bk = BillingKit(fresh_db)
    cid = await _customer(bk, "rb")
    made = await _month(bk, cid, thresholds=(60,))
    other = await _month(bk, cid, model="model-b")
    await _call(bk, cid)  # $10.00 + $0.01 the call, under v1 ($10/M input)
    assert await _used(bk, made) == units("10.01")
    try:
        await bk.reserve(cid, "model-a", "6.99")  # 10.01 + 6.99 > 15.00
    except BudgetExceededError:
        pass
    else:
        raise AssertionError("a hold past the limit was taken")
    await bk.add_book(V2)  # the fix: $8/M from November 1st
    done = await _applied(bk, spec("v2"))
    assert done["delta"] == "-2.00" and done["errors"] == []
    # the window counts the charge as it now stands: 8.01, where it kept 10.01 and refused 6.99
    assert await _used(bk, made) == units("8.01")
    assert await _used(bk, other) == 0  # model-b's never counted it
    await bk.reserve(cid, "model-a", "6.99")  # to the limit exactly
    # a second fix, upward ($9/M from the 2nd): +1.00, to 9.01 used + 6.99 held; the 60 % mark (9.00)
    # was passed by the hold already, so it alerted once, then
    await bk.add_book(V3)
    second = spec("v3", datetime(2026, 11, 2, tzinfo=UTC))
    again = await _applied(bk, second)
    assert again["delta"] == "1.00"
    now = await bk.service.budgets.get(made.budget.id)
    assert (now.used, now.held) == (units("9.01"), units("6.99"))
    await _applied(bk, second)  # again: moves nothing more
    assert await _used(bk, made) == units("9.01")
    await verified(bk)
    # verify ties each re-rate row to its adjustment: one grown by hand (and its window with it) is named
    async def grow(conn) -> None:
        await conn.execute(text("UPDATE reservation_budgets SET used = used + 1 "
                                "WHERE reservation_id LIKE 'rerate:%' AND used > 0"))
        await conn.execute(text("UPDATE budget_windows SET used = used + 1 WHERE budget_id = :b"),
                           {"b": made.budget.id})

    await bk.db.run(grow)
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    [failed] = [c for c in report.checks if not c.ok]
    assert failed.name == "budgets" and "re-rate row rerate:" in failed.detail


async def test_an_upward_rerate_alerts_the_thresholds_it_passes(fresh_db) -> None:
    bk = BillingKit(fresh_db)
    cid = await _customer(bk, "ru", V2)
    made = await _month(bk, cid, "10.00", mode="soft", thresholds=(85, 100))
    await bk.event(cid, "model-a", 1_000_000, 0, at=datetime(2026, 11, 10, tzinfo=UTC))  # $8.01 under v2
    await bk.add_book(V9)  # the event was $10.01
    await _applied(bk, spec("v9", datetime(2026, 11, 3, tzinfo=UTC)))
    assert await _used(bk, made) == units("10.01")
    assert await _alerts(bk, cid) == [("85", "10.01"), ("100", "10.01")]
    await verified(bk)


async def test_a_rerate_whose_budget_move_fails_writes_neither_and_applying_it_again_moves_both(fresh_db) -> None:
    # the budget moves are part of the adjustments' transaction: a failure between the two (here the
    # database refusing the re-rate row, as a crash would leave it) leaves no adjustment behind whose
    # budget did not move; a $10.01 call re-rated to $8.01 stayed 10.01 in the window with the -2.00
    # adjustment posted, until the same re-rate was applied again
    bk = BillingKit(fresh_db)
    cid = await _customer(bk, "rf")
    made = await _month(bk, cid)
    await _call(bk, cid)  # $10.01
    await bk.add_book(V2)

    async def refuse(conn) -> None:
        await conn.execute(text("""CREATE FUNCTION refuse_rerate_rows() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'crash between the adjustments and the budgets'; END $$"""))
        await conn.execute(text("""CREATE TRIGGER refuse_rerate_rows BEFORE INSERT ON reservation_budgets
            FOR EACH ROW WHEN (NEW.reservation_id LIKE 'rerate:%') EXECUTE FUNCTION refuse_rerate_rows()"""))

    await bk.db.run(refuse)
    try:
        await _applied(bk, spec("v2"))
    except Exception:  # the failure may be raised or listed: what landed is what counts
        pass

    async def posted(conn) -> int:
        return (await conn.execute(text("SELECT count(*) FROM charge_adjustments WHERE customer_id = :c"),
                                   {"c": cid})).scalar_one()

    assert await bk.db.read(posted) == 0  # nothing of the re-rate landed: its budget move could not
    assert await _used(bk, made) == units("10.01")
    await verified(bk)

    async def allow(conn) -> None:
        await conn.execute(text("DROP TRIGGER refuse_rerate_rows ON reservation_budgets"))

    await bk.db.run(allow)
    done = await _applied(bk, spec("v2"))
    assert done["delta"] == "-2.00" and done["errors"] == []
    assert await bk.db.read(posted) == 1
    assert await _used(bk, made) == units("8.01")
    await verified(bk)


async def test_a_budget_made_after_a_rerate_counts_the_charges_as_corrected(fresh_db) -> None:
    # a call charged $10.01 under v1 and re-rated to $8.01 (1M input tokens at $8/M + $0.01) before
    # the month's $15.00 hard budget was made: the budget counted the $10.01 first charged, so it
    # refused a $6.99 hold that a budget made before the re-rate takes
    bk = BillingKit(fresh_db)
    cid = await _customer(bk, "ra")
    await _call(bk, cid)  # $10.01, closed: counted in the budget's before: row
    await bk.add_book(V2)
    done = await _applied(bk, spec("v2"))
    assert done["delta"] == "-2.00" and done["errors"] == []
    made = await _month(bk, cid)
    assert await _used(bk, made) == units("8.01")
    await bk.reserve(cid, "model-a", "6.99")  # to the limit exactly
    await verified(bk)


async def test_a_rerate_after_a_budget_made_mid_month_moves_the_calls_closed_before_it(fresh_db) -> None:
    # a call charged $10.01 and closed before the month's $15.00 hard budget was made (counted in its
    # before: row), then re-rated to $8.01 (1M input tokens at $8/M + $0.01): the budget kept 10.01
    # and refused a $6.99 hold, where one made before the call, or after the re-rate, counts 8.01
    bk = BillingKit(fresh_db)
    cid = await _customer(bk, "rm")
    await _call(bk, cid)  # $10.01
    made = await _month(bk, cid)
    other = await _month(bk, cid, model="model-b")
    assert await _used(bk, made) == units("10.01")
    await bk.add_book(V2)
    done = await _applied(bk, spec("v2"))
    assert done["delta"] == "-2.00" and done["errors"] == []
    assert await _used(bk, made) == units("8.01")  # 10.01 - 2.00
    assert await _used(bk, other) == 0  # model-b's never counted it
    # a budget made after the re-rate counts 8.01 already: the same re-rate applied again moves
    # neither budget a second time
    after = await _month(bk, cid)
    assert await _used(bk, after) == units("8.01")
    await _applied(bk, spec("v2"))
    assert await _used(bk, made) == units("8.01")
    assert await _used(bk, after) == units("8.01")
    await bk.reserve(cid, "model-a", "6.99")  # to the limit exactly: refused at 10.01
    await verified(bk)


async def test_an_upward_rerate_of_an_event_a_budget_counted_before_it_was_made_moves_it_and_alerts(
        fresh_db) -> None:
    # an $8.01 usage event of November 10th, then a soft $10.00 month budget made (8.01 in its
    # before: row, under its 85 % mark), then the event re-rated to $10.01: the budget counts 10.01
    # and alerts 85 and 100 %, as one made before the event does
    bk = BillingKit(fresh_db)
    cid = await _customer(bk, "rv", V2)
    await bk.event(cid, "model-a", 1_000_000, 0, at=datetime(2026, 11, 10, tzinfo=UTC))  # $8.01 under v2
    made = await _month(bk, cid, "10.00", mode="soft", thresholds=(85, 100))
    assert await _used(bk, made) == units("8.01")
    await bk.add_book(V9)  # the event was $10.01
    await _applied(bk, spec("v9", datetime(2026, 11, 3, tzinfo=UTC)))
    assert await _used(bk, made) == units("10.01")
    assert await _alerts(bk, cid) == [("85", "10.01"), ("100", "10.01")]
    await verified(bk)


async def test_a_budget_made_before_0058_is_seeded_through_the_rerates_it_counted_and_later_ones_move_it(
        fresh_db) -> None:
    # 0058 left seeded_through NULL on every budget made before it, so no re-rate ever moved their
    # before: rows. A call charged $10.01, re-rated to $8.01 (v2, -2.00) before the month's $15.00 hard
    # budget was made (its before: row 8.01), then to $9.01 (v3, +1.00): the budget stayed 8.01 and took
    # a $6.99 hold, where one made since 0058 counts 9.01. 0063 seeds it through the adjustments made
    # before it (v2's, so that v2 applied again would move nothing), and v3 applied again moves +1.00
    bk = BillingKit(fresh_db)
    cid = await _customer(bk, "rb")
    await _call(bk, cid)  # $10.01
    await bk.add_book(V2)
    assert (await _applied(bk, spec("v2")))["delta"] == "-2.00"
    made = await _month(bk, cid)
    assert await _used(bk, made) == units("8.01")

    async def as_before_0058(conn) -> None:
        await conn.exec_driver_sql("UPDATE budgets SET seeded_through = NULL WHERE id = %s", (made.budget.id,))

    await bk.db.run(as_before_0058)
    await bk.add_book(V3)
    assert (await _applied(bk, spec("v3", start=NOV_2)))["delta"] == "1.00"
    assert await _used(bk, made) == units("8.01")  # not moved: no seeded_through

    await _upgraded_0063(bk)

    async def seeded(conn) -> tuple:  # seeded through v2's adjustment (the first), not v3's (made after it)
        return tuple((await conn.exec_driver_sql(
            "SELECT b.seeded_through, min(a.id), max(a.id) FROM budgets b, charge_adjustments a "
            "WHERE b.id = %s AND a.customer_id = b.customer_id GROUP BY 1", (made.budget.id,))).one())

    through, v2_adjustment, v3_adjustment = await bk.db.read(seeded)
    assert through == v2_adjustment < v3_adjustment
    await _applied(bk, spec("v3", start=NOV_2))  # fills in its +1.00
    assert await _used(bk, made) == units("9.01")
    with pytest.raises(BudgetExceededError):
        await bk.reserve(cid, "model-a", "6.99")  # 9.01 + 6.99 > 15.00
    await bk.reserve(cid, "model-a", "5.99")  # to the limit exactly
    await verified(bk)


async def test_0063_upgrades_a_database_holding_a_deleted_budget_made_before_0058(fresh_db) -> None:
    # A budget is deleted by marking it, and the database refuses any change to one marked
    # (budgets_guard, 0014: restrict_violation). 0063 updated every money budget made before 0058
    # with a before: row, deleted ones too, so one such budget deleted made the whole upgrade fail.
    # Two $15.00 months made after a $10.01 call ($8.01 once re-rated to v2): one kept, one deleted;
    # both as before 0058 (no seeded_through). The upgrade seeds the kept one through v2's adjustment
    # and leaves the deleted one as it is (a re-rate moves no deleted budget's rows).
    bk = BillingKit(fresh_db)
    cid = await _customer(bk, "rd")
    await _call(bk, cid)  # $10.01
    await bk.add_book(V2)
    assert (await _applied(bk, spec("v2")))["delta"] == "-2.00"
    kept, gone = [await _month(bk, cid) for _ in range(2)]

    async def as_before_0058(conn) -> None:
        await conn.exec_driver_sql("UPDATE budgets SET seeded_through = NULL WHERE id IN (%s, %s)",
                                   (kept.budget.id, gone.budget.id))

    await bk.db.run(as_before_0058)
    await bk.service.budgets.delete(gone.budget.id)

    await _upgraded_0063(bk)

    async def seeded(conn) -> dict:
        rows = await conn.exec_driver_sql("SELECT id, seeded_through FROM budgets WHERE customer_id = %s", (cid,))
        return dict(rows.all())

    adjustment = (await bk.db.read(lambda conn: conn.exec_driver_sql(
        "SELECT max(id) FROM charge_adjustments WHERE customer_id = %s", (cid,)))).scalar_one()
    assert await bk.db.read(seeded) == {kept.budget.id: adjustment, gone.budget.id: None}
    await verified(bk)

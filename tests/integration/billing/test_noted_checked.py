"""verify (period_rollups) ties a period rollup's `noted` (the credit and debit notes' money that
the close's rounding of the amount due leaves out, commit 28d7d9b2) to the postings it summarises:
each note's entry billed in the period, what it posted the customer's receivable, where that is
whole minor units. A `noted` changed by raw SQL would change the next close's rounding unseen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from billing_kit import BillingKit
from sqlalchemy import text
from test_credit_note_not_rounded_again import YEN, _book, november_due_4, yen  # noqa: F401 (fixture)
from test_period_deltas import fold
from test_rerate import DEC_1, DEC_1_GRACE_OVER, DEC_2, NOV_1, verified

from wallets import rerating
from wallets.audit import period_rollups_match_postings
from wallets.service import CustomerSpec

CID = "yen-noted"


async def _problems(bk: BillingKit, *sqls: str) -> list[str]:
    """The period_rollups check's problems once `sqls` ran past the triggers, rolled back after."""

    async def run(conn: Any) -> list[str]:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        for sql in sqls:
            await conn.execute(text(sql))
        await conn.execute(text("SET LOCAL session_replication_role = origin"))
        found = await period_rollups_match_postings(conn)
        await conn.rollback()
        return sorted(found.problems)

    return await bk.db.read(run)


# By hand (test_credit_note_not_rounded_again): postpaid JPY, 3 x 1,000 tokens at 1,500 yen/M in
# November are 4.5 yen, due 4; re-rated to 1,000 yen/M (3 yen): a note of total -1.5 moving
# round(3) - 4 = -1 yen, billed in December. December's `noted` is that -1 yen, what the note's
# entry credited the receivable: -1,000,000,000 atomic units.
async def test_a_rollup_s_noted_changed_by_raw_sql_is_named(yen: BillingKit) -> None:  # noqa: F811
    bk = yen
    await november_due_4(bk, CID)
    await bk.add_book(_book("v2", "2026-11-01T00:00:00Z", "1000"))
    bk.clock.now = DEC_2
    done = await rerating.apply(bk.db, bk.service.engine, rerating.RerateSpec("yen", "v2", NOV_1, DEC_1), None)
    assert len(done["credit_notes"]) == 1
    await fold(bk, CID)
    where = f"WHERE customer_id = '{CID}' AND period = '2026-12' AND item = 'noted'"
    assert await _problems(bk) == []  # guard: as written, it ties
    said = f"customer {CID}, period 2026-12: rollup says noted (the notes' whole money, left out of the close's "
    assert await _problems(bk, f"UPDATE period_rollups SET amount = 0 {where}") == [
        said + "rounding) 0; the notes' entries posted the receivable -1000000000"
    ]
    assert await _problems(bk, f"UPDATE period_rollups SET amount = {-2 * YEN} {where}") == [
        said + "rounding) -2000000000; the notes' entries posted the receivable -1000000000"
    ]
    # a rollup's noted where no note was billed (the November rollup, its close's period)
    assert await _problems(
        bk,
        f"""INSERT INTO period_rollups (lane, customer_id, period, item, quantity, amount)
                                   SELECT lane, customer_id, '2026-11', 'noted', 0, {YEN}
                                     FROM period_rollups {where}""",
    ) == [
        f"customer {CID}, period 2026-11: rollup says noted (the notes' whole money, left out of the close's "
        "rounding) 1000000000; the notes' entries posted the receivable 0"
    ]
    await verified(bk)


# By hand (test_credit_note_noted_whole_shares): three notes billed in December, in the order
# written: -1.5 yen (issued as before notes were rounded), -0.5 yen (a fraction), -1 yen (whole).
# Today's batch keeps `noted` -1 (the whole one alone). A batch between 28d7d9b2 and 9ae9c3bd kept
# every note's share it wrote: -0.5 - 1 = -1.5 yen (the first note, of before 28d7d9b2, none), and a
# period open at 28d7d9b2 whose first two notes came before it kept only the third's, -1: honest
# books, no problem. -2 yen no code ever wrote (the sums are -1, -1.5, -1.5 - 1 = -2.5 with the
# first note's fraction, -3 all three): named, with what the notes' whole money is, -1 yen.
async def test_a_noted_written_by_the_code_of_before_is_not_a_problem(yen: BillingKit, monkeypatch) -> None:  # noqa: F811
    from test_credit_note_noted_whole_shares import _NotANote

    from wallets import batch
    from wallets.core import rerating as core_rerating

    bk, cid = yen, "yen-noted-old"
    await november_due_4(bk, cid)
    bk.clock.now = DEC_2
    for n, price in enumerate(("1000", "500", "300"), start=2):
        at = NOV_1 + timedelta(seconds=n)
        await bk.add_book(_book(f"v{n}", at.isoformat().replace("+00:00", "Z"), price))
        with monkeypatch.context() as patched:
            if n == 2:
                patched.setattr(core_rerating, "note_money", lambda net, *_: net)
                patched.setattr(batch, "CreditNoteIssued", _NotANote)
            await rerating.apply(bk.db, bk.service.engine, rerating.RerateSpec("yen", f"v{n}", at, DEC_1), None)
    await fold(bk, cid)
    where = f"WHERE customer_id = '{cid}' AND period = '2026-12' AND item = 'noted'"
    assert await _problems(bk) == []  # guard: today's -1
    assert await _problems(bk, f"UPDATE period_rollups SET amount = {-1_500_000_000} {where}") == []
    assert await _problems(bk, f"UPDATE period_rollups SET amount = {-2 * YEN} {where}") == [
        f"customer {cid}, period 2026-12: rollup says noted (the notes' whole money, left out of the close's "
        "rounding) -2000000000; the notes' entries posted the receivable -1000000000"
    ]


# By hand (the first test's): two customers, each a note of -1 yen billed in December (round(3) - 4),
# each period's `noted` -1 yen (-1,000,000,000). A period's `noted` row deleted by hand was not seen
# (the check read only the periods keeping one: before 28d7d9b2 none was kept). Now a note recorded
# more than NOTED_SETTLED (1 day) after the latest note of a period keeping a `noted` was written by
# code that keeps one: its period's missing row reads `noted` 0, where the notes posted -1 yen.
async def test_a_deleted_noted_row_is_named_once_a_note_came_a_day_after_one_kept(yen: BillingKit) -> None:  # noqa: F811
    bk, first, second = yen, "yen-noted-kept", "yen-noted-deleted"
    for cid in (first, second):  # as november_due_4, both closed at once: each due 4
        await bk.service.create_customer(CustomerSpec(cid, cid, "JPY", "postpaid", "yen", None, None))
        for _ in range(3):
            await bk.event(cid, "model-a", 1_000, 0, at=datetime(2026, 11, 10, tzinfo=UTC))
    await bk.close(DEC_1_GRACE_OVER)
    for cid in (first, second):
        [november] = await bk.invoices(cid)
        assert (november["amount_due"], november["amount_due_rounding"]) == ("4", "-0.5")
    await bk.add_book(_book("v2", "2026-11-01T00:00:00Z", "1000"))
    bk.clock.now = DEC_2
    done = await rerating.apply(bk.db, bk.service.engine, rerating.RerateSpec("yen", "v2", NOV_1, DEC_1), None)
    assert len(done["credit_notes"]) == 2
    for cid in (first, second):
        await fold(bk, cid)
    found = list(
        await bk.db.read(
            lambda conn: conn.execute(
                text("SELECT customer_id, entry_id FROM credit_notes WHERE customer_id IN (:a, :b)"),
                {"a": first, "b": second},
            )
        )
    )
    entries = {cid: entry_id for cid, entry_id in found}
    deleted = f"DELETE FROM period_rollups WHERE customer_id = '{second}' AND period = '2026-12' AND item = 'noted'"
    earlier = f"UPDATE journal_entries SET recorded_at = recorded_at - interval '2 days' WHERE id = {entries[first]}"
    assert await _problems(bk) == []  # guard: as written
    # the notes written within seconds of each other: the margin for a deploy, not seen
    assert await _problems(bk, deleted) == []
    # the first customer's note written two days before the second's: the second's row was kept
    (named,) = await _problems(bk, earlier, deleted)
    assert named.startswith(
        f"customer {second}, period 2026-12: rollup says noted (the notes' whole money, left out of the close's "
        "rounding) 0; the notes' entries posted the receivable -1000000000 (it keeps no noted row, yet note entry "
        f"{entries[second]}, recorded "
    ), named
    assert named.endswith(", came more than 1 day after a note whose period keeps one: the code of its day kept it)")
    assert await _problems(bk, earlier) == []  # guard: the rows kept, no problem
    await verified(bk)

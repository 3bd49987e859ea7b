"""Neighbours of test_credit_note_not_rounded_again (review of 28d7d9b2): the close of the period a
note's entry is billed in rounds the amount due without the notes' money (`noted`), in another
currency, with two notes, closed early, and with a note larger than the period's usage."""

from __future__ import annotations

from datetime import UTC, datetime

from billing_kit import BillingKit
from test_period_deltas import _scalar, fold
from test_rerate import DEC_1, DEC_1_GRACE_OVER, DEC_2, NOV_1, verified, wallet

from wallets import billing, rerating
from wallets.service import CustomerSpec

NOV_1_1S = datetime(2026, 11, 1, 0, 0, 1, tzinfo=UTC)  # v3's effective_from: v2's is taken
DEC_3 = datetime(2026, 12, 3, tzinfo=UTC)
JAN_1_GRACE_OVER = datetime(2027, 1, 1, 1, 0, tzinfo=UTC)
UNIT = 10**9  # atomic units of a yen, or of a dollar


def _book(currency: str, version: str, price: str) -> dict:
    return {
        "id": currency.lower(),
        "version": version,
        "currency": currency,
        "effective_from": {"v1": "2026-01-01T00:00:00Z", "v2": "2026-11-01T00:00:00Z"}.get(
            version, "2026-11-01T00:00:01Z"
        ),
        "rules": [{"id": "a-in", "model": "model-a", "token_type": "input", "price": price}],
    }


async def _november(bk: BillingKit, cid: str, currency: str, price: str) -> None:
    await bk.add_book(_book(currency, "v1", price))
    await bk.service.create_customer(CustomerSpec(cid, cid, currency, "postpaid", currency.lower(), None, None))
    for _ in range(3):
        await bk.event(cid, "model-a", 1_000, 0, at=datetime(2026, 11, 10, tzinfo=UTC))
    await bk.close(DEC_1_GRACE_OVER)


async def _rerate(bk: BillingKit, currency: str, version: str, price: str, at: datetime) -> dict:
    await bk.add_book(_book(currency, version, price))
    bk.clock.now = at
    spec = rerating.RerateSpec(currency.lower(), version, NOV_1 if version == "v2" else NOV_1_1S, DEC_1)
    [note] = (await rerating.apply(bk.db, bk.service.engine, spec, None))["credit_notes"]
    return note


async def _noted_yen(bk: BillingKit, cid: str, tokens: int) -> str:
    """The yen case: November 4.5 yen due 4, re-rated to 3 (a note of -1 billed in December), and
    `tokens` at 1,000 yen/M on December 10th."""
    await _november(bk, cid, "JPY", "1500")
    await _rerate(bk, "JPY", "v2", "1000", DEC_2)
    await bk.event(cid, "model-a", tokens, 0, at=datetime(2026, 12, 10, tzinfo=UTC))
    return cid


# By hand, USD as the yen case in cents: 3,000 tokens at $15/M are $0.045, due $0.04 (rounding
# -0.005); at $10/M $0.03: a note of total -0.015, money round(3 c) - 4 c = -1 cent. December's
# 10,500 tokens at $10/M are $0.105, rounded once 10 c (half to even); due 10 - 1 = 9 c (rounding
# $0.09 - $0.095 = -0.005); owed 3 + 10 = 13 c. Rounding 9.5 c again would be 10 c due, 14 c owed.
async def test_usd_a_later_close_does_not_round_a_note_s_cents_again(fresh_db) -> None:
    bk = BillingKit(fresh_db)
    cid = "usd-post"
    await _november(bk, cid, "USD", "15")
    note = await _rerate(bk, "USD", "v2", "10", DEC_2)
    assert note["total"] == "-0.015"
    await bk.event(cid, "model-a", 10_500, 0, at=datetime(2026, 12, 10, tzinfo=UTC))
    await bk.close(JAN_1_GRACE_OVER)
    _, december = await bk.invoices(cid)
    assert (december["amount_due"], december["amount_due_rounding"]) == ("0.09", "-0.005"), december
    assert (await wallet(bk, cid)).receivable == 13 * UNIT // 100
    await verified(bk)


# By hand, two notes billed in December: November 4.5 yen due 4 (-0.5). v2 at 1,000 yen/M: 3 yen,
# a note of -1 (round(3) - 4). v3 at 3,000 yen/M: 9 yen, net +6 from v2: money
# round(-1.5 + 6 + 0.5) - (-1) = 5 + 1 = +6 (4 - 1 + 6 = 9, the corrected 9 rounded once); noted
# -1 + 6 = 5 (odd). December's 3,500 tokens at 3,000/M are 10.5 yen, rounded once 10: due
# 10 + 5 = 15 (rounding 15 - 15.5 = -0.5); owed 9 + 10 = 19. Rounding 15.5 again: 16 due, 20 owed.
async def test_two_notes_billed_in_one_period_are_not_rounded_again(fresh_db) -> None:
    bk = BillingKit(fresh_db)
    cid = "yen-two"
    await _november(bk, cid, "JPY", "1500")
    assert (await _rerate(bk, "JPY", "v2", "1000", DEC_2))["total"] == "-1.5"
    assert (await _rerate(bk, "JPY", "v3", "3000", DEC_3))["total"] == "6"
    assert (await wallet(bk, cid)).receivable == 9 * UNIT
    await bk.event(cid, "model-a", 3_500, 0, at=datetime(2026, 12, 10, tzinfo=UTC))
    await bk.close(JAN_1_GRACE_OVER)
    _, december = await bk.invoices(cid)
    assert (december["amount_due"], december["amount_due_rounding"]) == ("15", "-0.5"), december
    assert (await wallet(bk, cid)).receivable == 19 * UNIT
    await verified(bk)


# By hand, the yen case of test_credit_note_not_rounded_again closed early on December 20th
# (`until` January 1st 01:00): 10,500 tokens (10.5 yen) less the note's 1: due 9 (-0.5); owed 13.
async def test_a_note_billed_in_a_period_closed_early_is_not_rounded_again(fresh_db) -> None:
    bk = BillingKit(fresh_db)
    cid = await _noted_yen(bk, "yen-early", 10_500)
    written = datetime(2026, 12, 20, tzinfo=UTC)
    bk.clock.now = written
    await billing.close_due(bk.db, JAN_1_GRACE_OVER, customers=[cid], written=written)
    _, december = await bk.invoices(cid)
    assert (december["amount_due"], december["amount_due_rounding"]) == ("9", "-0.5"), december
    assert (await wallet(bk, cid)).receivable == 13 * UNIT
    await verified(bk)


# By hand, a note larger than December's usage: the note's -1 yen (November 4 re-rated to 3, still
# owed) beside December's 500 tokens at 1,000/M (0.5 yen): funded -0.5, money back that pays
# November's. December's usage rounded once is 0 (half to even), so December adds nothing and
# 3 yen are owed (November corrected, rounded once); rounding -0.5 again (round(-0.5) = 0, +0.5)
# left 0 back and 4 owed, the note's yen taken back.
async def test_a_note_larger_than_the_period_s_usage_is_not_rounded_again(fresh_db) -> None:
    bk = BillingKit(fresh_db)
    cid = await _noted_yen(bk, "yen-back", 500)
    await bk.close(JAN_1_GRACE_OVER)
    november, december = await bk.invoices(cid)
    assert (await wallet(bk, cid)).receivable == 3 * UNIT, (november, december)
    await verified(bk)


# By hand, a database of before `noted` (guard: the rollup of a note billed in a period still open
# when the close learnt to leave notes out has no `noted` item): the yen case's December, its rollup
# without `noted`, is rounded with the note's money in it as before: round(10.5 - 1) = round(9.5)
# = 10 due (rounding +0.5), owed 3 + 11 = 14; verify stays ok (it does not check `noted`).
async def test_a_rollup_without_noted_closes_as_before(fresh_db) -> None:
    """guard: the close of before 28d7d9b2 for a rollup with no `noted` (a note billed before it)."""
    bk = BillingKit(fresh_db)
    cid = await _noted_yen(bk, "yen-old", 10_500)
    await fold(bk, cid)  # the period deltas into period_rollups
    gone = await bk.db.run(
        lambda conn: _scalar(
            conn,
            "WITH d AS (DELETE FROM period_rollups WHERE customer_id = :c AND item = 'noted' RETURNING 1)"
            " SELECT count(*) FROM d",
            c=cid,
        )
    )
    assert gone == 1  # the note's `noted`, as 28d7d9b2 keeps it: gone, as in a rollup of before
    await bk.close(JAN_1_GRACE_OVER)
    _, december = await bk.invoices(cid)
    assert (december["amount_due"], december["amount_due_rounding"]) == ("10", "0.5"), december
    assert (await wallet(bk, cid)).receivable == 14 * UNIT
    await verified(bk)

"""A credit note's money is whole minor units, rounded once (rerating.note_money); the close of
the period its entry is billed in rounds that period's amount due again, and must not round the
note's money a second time: half to even, an exact half of the period's usage shifted by a note's
odd whole yen rounds the other way (9.5 yen to 10 where 10.5 yen is 10), and the customer paid
a yen more (or less) than its usage rounded once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from billing_kit import BillingKit
from test_rerate import DEC_1, DEC_1_GRACE_OVER, DEC_2, NOV_1, verified, wallet

from wallets import rerating
from wallets.service import CustomerSpec

JAN_1_GRACE_OVER = datetime(2027, 1, 1, 1, 0, tzinfo=UTC)
YEN = 10**9  # atomic units of a yen


def _book(version: str, effective_from: str, price: str) -> dict:
    return {"id": "yen", "version": version, "currency": "JPY", "effective_from": effective_from,
            "rules": [{"id": "a-in", "model": "model-a", "token_type": "input", "price": price}]}


@pytest.fixture
async def yen(fresh_db) -> BillingKit:
    kit = BillingKit(fresh_db)
    await kit.add_book(_book("v1", "2026-01-01T00:00:00Z", "1500"))
    return kit


async def november_due_4(bk: BillingKit, cid: str) -> None:
    """Postpaid JPY customer `cid`: 3 calls of 1,000 tokens on November 10th at 1,500 yen per 1M
    (4.5 yen), closed: due 4, the close's rounding -0.5."""
    await bk.service.create_customer(CustomerSpec(cid, cid, "JPY", "postpaid", "yen", None, None))
    for _ in range(3):
        await bk.event(cid, "model-a", 1_000, 0, at=datetime(2026, 11, 10, tzinfo=UTC))
    await bk.close(DEC_1_GRACE_OVER)
    [november] = await bk.invoices(cid)
    assert (november["amount_due"], november["amount_due_rounding"]) == ("4", "-0.5")


async def december_closed(bk: BillingKit, cid: str, tokens: int) -> dict:
    """`tokens` model-a input tokens on December 10th, December closed: its invoice."""
    await bk.event(cid, "model-a", tokens, 0, at=datetime(2026, 12, 10, tzinfo=UTC))
    await bk.close(JAN_1_GRACE_OVER)
    _, december = await bk.invoices(cid)
    return december


# By hand, postpaid, model-a input at 1,500 yen per 1M: 3 calls of 1,000 tokens on November 10th
# are 4.5 yen, due 4 (the close's rounding -0.5). v2 (1,000 yen per 1M from November 1st) makes
# them 3 yen: a note of total -1.5, amount round(3) - 4 = -1 (0.5 yen to rounding), billed in
# December. December's usage at v2: 10,500 tokens are 10.5 yen, rounded once (half to even) 10;
# less the note's 1 yen its invoice carries: due 9 (rounding 9 - 9.5 = -0.5); owed 3 + 10 = 13.
# Before, the close rounded 10.5 - 1 = 9.5 to 10 (+0.5): 14 owed, the note's yen taken back.
# 11,500 tokens are 11.5 yen, rounded 12, due 11 (rounding +0.5); owed 3 + 12 = 15. Before,
# round(10.5) = 10 (-0.5): 14 owed.
@pytest.mark.parametrize(("tokens", "due", "rounding", "owed"), [
    (10_500, "9", "-0.5", 13),
    (11_500, "11", "0.5", 15),
])
async def test_a_later_close_does_not_round_a_credit_note_s_money_again(
        yen: BillingKit, tokens: int, due: str, rounding: str, owed: int) -> None:
    bk = yen
    cid = "yen-post"
    await november_due_4(bk, cid)
    await bk.add_book(_book("v2", "2026-11-01T00:00:00Z", "1000"))
    bk.clock.now = DEC_2
    done = await rerating.apply(bk.db, bk.service.engine, rerating.RerateSpec("yen", "v2", NOV_1, DEC_1), None)
    [note] = done["credit_notes"]
    assert note["total"] == "-1.5"
    assert (await wallet(bk, cid)).receivable == 3 * YEN  # 4 - 1: the note moved -1
    december = await december_closed(bk, cid, tokens)
    assert (december["amount_due"], december["amount_due_rounding"]) == (due, rounding), december
    assert (await wallet(bk, cid)).receivable == owed * YEN
    await verified(bk)

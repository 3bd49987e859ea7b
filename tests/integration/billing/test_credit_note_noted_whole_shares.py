"""The close rounds a period's amount due without its notes' money (`noted`, rollup item: whole
minor units, rounded once by each note; billing.whole_rounding leaves out none of it where it is a
fraction). A note issued after one of before notes were rounded moves a fraction (it makes the
invoice's running figure whole again: rerating.note_money), and summed with a whole note's money
in the same period's `noted` it made the whole sum a fraction: the whole note's money was rounded
again with the period's usage. Only whole notes' money is `noted` now (the batch's `_billed`)."""

from __future__ import annotations

from datetime import timedelta

from billing_kit import BillingKit
from test_credit_note_not_rounded_again import YEN, _book, december_closed, november_due_4, yen  # noqa: F401 (fixture)
from test_rerate import DEC_1, DEC_2, NOV_1, verified, wallet

from wallets import batch, rerating
from wallets.core import rerating as core_rerating


class _NotANote:
    """In place of CreditNoteIssued in the batch: a note of before `noted` was kept adds none."""


# By hand, postpaid JPY, model-a input, per 1M tokens; 3 calls of 1,000 tokens on November 10th:
# v1 1,500 yen: 4.5 yen, due 4 (the close's rounding -0.5); owed 4.
# v2 1,000 yen: 3 yen, a note of -1.5 issued as before notes were rounded (it moves its exact total,
#   and the batch of then kept no `noted`): owed 2.5.
# v3 500 yen: 1.5 yen, a note of 1.5 - 3 = -1.5: round(-1.5 - 1.5 + 0.5) = round(-2.5) = -2 (half
#   to even), less the -1.5 moved: -0.5 (a fraction); owed 2 = round(1.5).
# v4 300 yen: 0.9 yen, a note of 0.9 - 1.5 = -0.6: round(-3 - 0.6 + 0.5) = round(-3.1) = -3, less
#   the -2 moved: -1 (whole); owed 1 = round(0.9).
# All three billed in December. December's 15,000 tokens at v4 are 4.5 yen, rounded once 4 (half to
# even): owed 1 + 4 = 5. December's funded:receivable is 4.5 - 1.5 - 0.5 - 1 = 1.5; `noted` only the
# whole note's -1: round(1.5 + 1) - 1 = round(2.5) - 1 = 2 - 1 = 1 due (rounding 1 - 1.5 = -0.5).
# Before, `noted` was -0.5 - 1 = -1.5, a fraction, so none of it was left out: round(1.5) = 2 due
# (+0.5), owed 6: the -1 note's yen rounded again with December's usage.
async def test_a_fraction_moved_after_an_exact_note_does_not_round_a_whole_note_again(
    yen: BillingKit,  # noqa: F811 (fixture)
    monkeypatch,
) -> None:
    bk = yen
    cid = "yen-frac"
    await november_due_4(bk, cid)
    bk.clock.now = DEC_2
    owed = []
    for n, price in enumerate(("1000", "500", "300"), start=2):
        at = NOV_1 + timedelta(seconds=n)
        await bk.add_book(_book(f"v{n}", at.isoformat().replace("+00:00", "Z"), price))
        with monkeypatch.context() as patched:
            if n == 2:  # as before notes were rounded: the note moves its exact total, no `noted` kept
                patched.setattr(core_rerating, "note_money", lambda net, *_: net)
                patched.setattr(batch, "CreditNoteIssued", _NotANote)
            done = await rerating.apply(bk.db, bk.service.engine, rerating.RerateSpec("yen", f"v{n}", at, DEC_1), None)
        assert len(done["credit_notes"]) == 1, done
        owed.append((await wallet(bk, cid)).receivable)
    assert owed == [2_500_000_000, 2 * YEN, 1 * YEN]
    december = await december_closed(bk, cid, 15_000)
    assert (december["amount_due"], december["amount_due_rounding"]) == ("1", "-0.5"), december
    assert (await wallet(bk, cid)).receivable == 5 * YEN
    await verified(bk)

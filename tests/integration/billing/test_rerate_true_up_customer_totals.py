"""Guard (review of 6bd335f): a re-rate correcting a closed period's volume true-up answers a
customer's old_amount and new_amount, its charges and the true-up counted, alike in its preview,
its apply and the apply replayed; new - old is its delta.

By hand. Book `vol` v1: model-v output $20/M up to 100,000, $10/M beyond; book `two` v1: rules a
(model-x) and b (model-y) alike. Postpaid, 60,000 on the 5th ($1.20) and 70,000 on the 20th (40,000
x $20/M + 30,000 x $10/M = $1.10): $2.30; the close: 130,000 x $10/M = $1.30, true-up -$1.00: $1.30.
Re-rated to $16/M and $8/M: 60,000 x $16/M = $0.96, 40,000 x $16/M + 30,000 x $8/M = $0.88: $1.84;
130,000 x $8/M = $1.04, true-up -$0.80: $1.04; delta -$0.26 (output -$0.46, true-up +$0.20). In
book `two` rule a alone is re-rated: model-y's charges and true-up are not corrected (not counted)."""

from __future__ import annotations

from datetime import UTC, datetime

from billing_kit import BillingKit
from test_rerate_volume_true_up import CLOSED, DEC_1, NOV_1, applied, previewed, two_models, verified, vol

from wallets import rerating


def _customers(answer: dict) -> list[dict]:
    return [{k: v for k, v in c.items() if k != "entry_ids"} for c in answer["customers"]]


async def test_a_true_up_s_re_rate_answers_the_same_customer_totals_in_preview_apply_and_replay(fresh_db) -> None:
    bk = BillingKit(fresh_db)
    await bk.add_book(vol("v1", "2026-01-01T00:00:00Z", "20", "10"))
    await bk.add_book(two_models("v1", "2026-01-01T00:00:00Z", "10"))
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    await bk.customer("rt-vol", billing_mode="postpaid", book="vol")
    await bk.customer("rt-two", billing_mode="postpaid", book="two")
    for day, tokens in ((5, 60_000), (20, 70_000)):
        bk.clock.now = datetime(2026, 11, day, 12, tzinfo=UTC)
        await bk.event("rt-vol", "model-v", 0, tokens)
        await bk.event("rt-two", "model-x", 0, tokens)
        await bk.event("rt-two", "model-y", 0, tokens)
    await bk.close(CLOSED)
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    await bk.add_book(vol("v2", "2026-11-01T00:00:00Z", "16", "8"))
    two = two_models("v2", "2026-11-01T00:00:00Z", "10")
    two["rules"][0]["tiers"] = [{"up_to": 100_000, "price": "16"}, {"up_to": None, "price": "8"}]
    await bk.add_book(two)
    for book, cid, model in (("vol", "rt-vol", "model-v"), ("two", "rt-two", "model-x")):
        spec = rerating.RerateSpec(book, "v2", NOV_1, DEC_1, cid)
        expected = [
            {
                "customer_id": cid,
                "charges": 2,
                "old_amount": "1.30",
                "new_amount": "1.04",
                "delta": "-0.26",
                "lines": [
                    {
                        "model": model,
                        "token_type": "output",
                        "old_amount": "2.30",
                        "new_amount": "1.84",
                        "delta": "-0.46",
                    },
                    {
                        "model": model,
                        "token_type": "volume_true_up",
                        "old_amount": "-1.00",
                        "new_amount": "-0.80",
                        "delta": "0.20",
                    },
                ],
            }
        ]
        assert _customers(await previewed(bk, spec)) == expected
        assert _customers(await applied(bk, spec)) == expected
        assert _customers(await applied(bk, spec)) == expected  # replayed
    await verified(bk)

"""A re-rate whose customers fall in two lanes, the second lane's transaction failing after the
first's committed (Engine.execute gives that lane's commands the error as their outcome since
7688acd): the failed customer is listed in `errors` as a re-rate's other failures are, but an
unexpected error's text (a database error's, which may show internals) stays in the server log,
as a close's does (billing.UNEXPECTED), with a stable code."""
from __future__ import annotations

from datetime import UTC, datetime

from billing_kit import BillingKit
from test_rerate import DEC_2, V1, V2, spec, wallet

from ledger.lanes import lane_count, lane_of
from wallets import rerating
from wallets.billing import UNEXPECTED
from wallets.core.commands import RerateCharges
from wallets.core.decide import RULES


async def test_a_rerate_lane_failing_unexpectedly_after_another_committed_lists_it_without_its_internals(
        fresh_db, monkeypatch) -> None:
    bk = BillingKit(fresh_db)
    await bk.add_book(V1)
    lanes = await bk.db.read(lane_count)
    assert lanes > 1
    first = await bk.customer("rr-lane-first", billing_mode="postpaid", book="fix")
    n = 0
    while lane_of(f"rr-lane-second{n}", lanes) <= lane_of(first, lanes):
        n += 1
    second = await bk.customer(f"rr-lane-second{n}", billing_mode="postpaid", book="fix")
    at = datetime(2026, 11, 20, tzinfo=UTC)
    for cid in (first, second):  # 1,000,000 input tokens at $10/M + $0.01: $10.01 each
        await bk.event(cid, "model-a", 1_000_000, 0, at=at)
    await bk.add_book(V2)
    bk.clock.now = DEC_2

    real = RULES[RerateCharges]
    internals = 'duplicate key value violates unique constraint "charge_adjustments_pkey" DETAIL: Key (id)=(42)'

    def rule(state, cmd, now, book):
        if cmd.customer_id == second:
            raise RuntimeError(internals)
        return real(state, cmd, now, book)

    monkeypatch.setitem(RULES, RerateCharges, rule)
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    # by hand: the first customer's $10.00 of input at $8/M is $8.00: -2.00, the second's untouched
    assert [(c["customer_id"], c["delta"]) for c in done["customers"]] == [(first, "-2.00")]
    assert (await wallet(bk, first)).receivable == 8_010_000_000
    assert (await wallet(bk, second)).receivable == 10_010_000_000
    assert done["errors"] == [{"customer_id": second, "period": done["errors"][0]["period"],
                               "code": "internal_error", "detail": UNEXPECTED}]

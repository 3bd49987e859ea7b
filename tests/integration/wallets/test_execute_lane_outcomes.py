"""`Engine.execute` runs one transaction per lane, lane by lane. A lane that failed after an
earlier one had committed raised, and the caller (a re-rate, the jobs) saw an error for the
whole call although part of it had landed. Now the call raises only when nothing committed;
otherwise each command of a failed lane has the lane's error as its outcome, and the others
their results."""
from __future__ import annotations

import pytest
from sqlalchemy import text
from wallet_kit import Kit, usd

from ledger.lanes import lane_count, lane_of
from wallets.commands import TopUp
from wallets.core.decide import RULES
from wallets.engine import Engine


async def _two_lanes(kit: Kit) -> tuple[str, str]:
    """Two new customers, the first in a lower lane than the second (lanes run in order). The
    first is never in the last lane: no second could be above it (the loop below ran forever, and
    hung the suite, whenever the tag put `first` there: 1 run in `lanes`)."""
    lanes = await kit.db.read(lane_count)
    assert lanes > 1
    m = 0
    while lane_of(f"first{m}-{kit.tag}", lanes) == lanes - 1:
        m += 1
    first = await kit.customer(f"first{m}")
    assert lane_of(first, lanes) < lanes - 1
    n = 0
    while lane_of(f"second{n}-{kit.tag}", lanes) <= lane_of(first, lanes):
        n += 1
    return first, await kit.customer(f"second{n}")


def _breaking(customer_id: str, error: Exception, monkeypatch) -> None:
    """TopUp's rule fails with `error` (not a domain refusal) for `customer_id` only."""
    real = RULES[TopUp]

    def rule(state, cmd, now, book):
        if cmd.customer_id == customer_id:
            raise error
        return real(state, cmd, now, book)

    monkeypatch.setitem(RULES, TopUp, rule)


async def _topped_up(kit: Kit, *customers: str) -> dict[str, int]:
    rows = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT customer_id, count(*) AS n FROM lots WHERE customer_id = ANY(:c) GROUP BY 1"), {"c": list(customers)}))
    return {r.customer_id: r.n for r in rows}


@pytest.mark.parametrize("each", [False, True])
async def test_a_lane_failing_after_another_committed_is_its_commands_outcome(kit: Kit, monkeypatch, each):
    first, second = await _two_lanes(kit)
    # each=True halves a failing lane but lets an unavailable database raise: a lost connection
    error = RuntimeError("broken for the test") if not each else ConnectionError("connection lost for the test")
    _breaking(second, error, monkeypatch)
    engine = Engine(kit.db)
    outcomes = await engine.execute([TopUp(customer_id=second, amount=usd("2.00")),
                                     TopUp(customer_id=first, amount=usd("1.00"))], each=each)
    assert outcomes[0] is error  # the second customer's lane ran after the first's had committed
    assert outcomes[1].grant.granted == 1_000_000_000 and outcomes[1].wallet.customer_id == first
    assert await _topped_up(kit, first, second) == {first: 1}


async def test_a_first_lane_failing_raises_and_nothing_is_written(kit: Kit, monkeypatch):
    first, second = await _two_lanes(kit)
    _breaking(first, RuntimeError("broken for the test"), monkeypatch)
    with pytest.raises(RuntimeError, match="broken for the test"):
        await Engine(kit.db).execute([TopUp(customer_id=first, amount=usd("1.00")),
                                      TopUp(customer_id=second, amount=usd("2.00"))])
    assert await _topped_up(kit, first, second) == {}


async def test_with_each_a_half_failing_after_the_other_half_committed_is_its_commands_outcome(kit: Kit,
                                                                                              monkeypatch):
    """Within one lane: a top-up of $4.00 breaks the batch of four (halved: $1 and $2 commit), then
    the connection is lost under the $3 and $4 half. That half's two commands have the error as
    their outcome; the call raised, though $1 and $2 had landed."""
    customer = await kit.customer("halves")
    lost = ConnectionError("connection lost for the test")
    seen = []
    real = RULES[TopUp]

    def rule(state, cmd, now, book):
        if cmd.amount == usd("4.00"):
            seen.append(cmd)
            raise RuntimeError("broken for the test") if len(seen) == 1 else lost
        return real(state, cmd, now, book)

    monkeypatch.setitem(RULES, TopUp, rule)
    outcomes = await Engine(kit.db).execute([TopUp(customer_id=customer, amount=usd(f"{n}.00")) for n in (1, 2, 3, 4)],
                                            each=True)
    assert [o.grant.granted for o in outcomes[:2]] == [1_000_000_000, 2_000_000_000]
    assert outcomes[2:] == [lost, lost]
    assert await _topped_up(kit, customer) == {customer: 2}

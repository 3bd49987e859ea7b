"""money_back's sharing rules, pure: each charge's overcharge goes back to what paid that charge
first; a lot's room bounds what it gets over all charges. Amounts in atomic units (10**9 a dollar).

The true-up line: 130,000 output tokens at the tier reached, $10/M, -$1.00 back. Charge 1: 60,000
tokens charged $1.20 (costs $0.60 at $10/M: $0.60 overcharged); charge 2: 70,000 charged $1.10
(costs $0.70: $0.40 overcharged)."""
from __future__ import annotations

from wallets.core.money_back import each_charge_first, share

CENT = 10_000_000
REC = "asset:customer:c:receivable"
TOPUP, GRANT = "liability:customer:c:lot:t", "liability:customer:c:lot:g"
LINE = {"amount_units": -100 * CENT, "unit_price": "10", "token_type": "output"}


def order(account: str) -> tuple[int, str]:
    return ({TOPUP: 0, GRANT: 1}.get(account, 2), account)  # the top-up consumed last: given back first


def test_each_charge_s_overcharge_goes_to_the_lot_that_paid_that_charge_not_the_last_consumed() -> None:
    shares: dict[str, int] = {REC: 0}
    paid = ((1, TOPUP, 120 * CENT, 60_000, 120 * CENT), (2, GRANT, 110 * CENT, 70_000, 110 * CENT))
    need, rest = each_charge_first(shares, {}, LINE, paid, REC, order)
    assert (need, shares) == (0, {REC: 0, TOPUP: 60 * CENT, GRANT: 40 * CENT})
    assert rest == {(1, TOPUP): 120 * CENT, (2, GRANT): 110 * CENT}


def test_the_receivable_gets_its_charge_s_overcharge_and_leaves_the_rest_sharing() -> None:
    shares: dict[str, int] = {REC: 0}
    paid = ((1, None, 120 * CENT, 60_000, 120 * CENT), (2, GRANT, 110 * CENT, 70_000, 110 * CENT))
    need, rest = each_charge_first(shares, {}, LINE, paid, REC, order)
    assert (need, shares) == (0, {REC: 60 * CENT, GRANT: 40 * CENT})
    assert rest == {(2, GRANT): 110 * CENT}  # the receivable's payment of charge 1 is bounded above


def test_a_re_rated_charge_has_no_overcharge_of_its_own_and_is_shared_as_before() -> None:
    shares: dict[str, int] = {REC: 0}
    paid = ((1, TOPUP, 120 * CENT, None, None), (2, GRANT, 110 * CENT, 70_000, 110 * CENT))
    need, rest = each_charge_first(shares, {}, LINE, paid, REC, order)
    assert (need, shares) == (60 * CENT, {REC: 0, GRANT: 40 * CENT})
    taken = {(2, GRANT): 40 * CENT}
    assert share(shares, taken, rest, need, REC, order) == 0
    assert shares == {REC: 0, GRANT: 40 * CENT, TOPUP: 60 * CENT}


def test_a_lot_s_room_bounds_what_it_gets_over_all_charges_and_the_next_payer_takes_the_rest() -> None:
    shares: dict[str, int] = {REC: 0}
    room = {TOPUP: 0, GRANT: 200 * CENT}  # the top-up got back all it paid already
    paid = {(2, TOPUP): 30 * CENT, (1, GRANT): 120 * CENT, (2, GRANT): 80 * CENT}
    assert share(shares, {}, paid, 65 * CENT, REC, order, room) == 0
    assert shares == {REC: 0, GRANT: 65 * CENT} and room == {TOPUP: 0, GRANT: 135 * CENT}

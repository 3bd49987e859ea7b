"""What a cash refund of overpaid credit may pay back, worked by hand against the pure rule (no
database): the credit corrections gave back, at most the customer's cash spent, in whole cents."""
from __future__ import annotations

from datetime import UTC, datetime

from wallets import chart
from wallets.core.refunds import refundable, taken_from
from wallets.model import Customer, Lot, Wallet

NOW = datetime(2026, 12, 5, tzinfo=UTC)
CENT = 10_000_000  # atomic units (10^-9) of a cent


def _wallet(*lots: tuple[str, int, str], receivable: int = 0, reserved: int = 0, held_on_credit: int = 0) -> Wallet:
    customer = Customer("c", "", "USD", "postpaid", None, None, None, False, False, NOW)
    made = {}
    for i, (kind, balance, opened_by) in enumerate(lots):
        code = chart.lot_account("c", f"l{i}")
        made[code] = Lot(f"l{i}", code, kind, balance, 100, None, NOW, balance, opened_by=opened_by)
    return Wallet(customer, made, reserved, receivable, credit_held=held_on_credit)


def test_a_re_rate_s_credit_of_an_invoice_paid_by_wire_is_refundable_in_whole() -> None:
    # $10.00 wired, re-rated to $7.00: $3.00 of credit, all of it cash spent on usage
    assert refundable(_wallet(("topup", 300 * CENT, "rerate_adjustment")), 1000 * CENT, NOW) == 300 * CENT


def test_credit_without_cash_behind_it_is_not_refundable() -> None:
    # a correction's $2.00 of credit with no cash in (as a close's true-up of usage a grant paid left
    # it before the true-up gave such money back to the grant)
    w = _wallet(("grant", 8200 * CENT, "grant"), ("topup", 200 * CENT, "volume_true_up"))
    assert refundable(w, 0, NOW) == 0


def test_cash_still_in_a_paid_top_up_is_not_counted_as_spent() -> None:
    # $82.00 topped up and unspent, a $10.00 invoice paid by wire and re-rated to $8.00: $2.00
    # refundable here, the top-up's $82.00 through its own reversal
    w = _wallet(("topup", 8200 * CENT, "topup"), ("topup", 200 * CENT, "rerate_adjustment"))
    assert refundable(w, 9200 * CENT, NOW) == 200 * CENT
    # a top-up lot whose opener was not loaded counts as cash still in it
    w = _wallet(("topup", 8200 * CENT, None), ("topup", 200 * CENT, "rerate_adjustment"))
    assert refundable(w, 8300 * CENT, NOW) == 100 * CENT


def test_what_is_owed_and_held_is_taken_off() -> None:
    # $3.00 of credit, $10.00 wired, but $8.50 owed (less $0.50 of it held on credit) and $1.00 held
    w = _wallet(("topup", 300 * CENT, "rerate_adjustment"), receivable=850 * CENT, held_on_credit=50 * CENT,
                reserved=100 * CENT)
    assert refundable(w, 1000 * CENT, NOW) == 100 * CENT  # 10.00 - 8.00 owed - 1.00 held


def test_a_fraction_of_a_cent_stays_credit() -> None:
    assert refundable(_wallet(("topup", 300 * CENT + 4_999_999, "invoice_rounding")), 1000 * CENT, NOW) == 300 * CENT


def test_a_refund_takes_the_credit_lots_in_their_order() -> None:
    w = _wallet(("topup", 100 * CENT, "rerate_adjustment"), ("topup", 200 * CENT, "volume_true_up"))
    lots = sorted(w.lots.values(), key=lambda lot: lot.id)
    assert [(lot.id, part) for lot, part in taken_from(lots, 250 * CENT)] == [("l0", 100 * CENT), ("l1", 150 * CENT)]


def test_the_bound_is_the_cash_spent_in_all_not_each_correction_s_cash_share() -> None:
    # $10.00 of a period's $28.00 paid in cash (its invoice, by wire), $18.00 by a grant; a re-rate
    # gives $2.00 back of the wire-paid charges, one paid lot (nothing owed): all $2.00 is
    # refundable (less than the $10.00 spent in all), not 10/28 of it
    w = _wallet(("grant", 8200 * CENT, "grant"), ("topup", 200 * CENT, "rerate_adjustment"))
    assert refundable(w, 1000 * CENT, NOW) == 200 * CENT

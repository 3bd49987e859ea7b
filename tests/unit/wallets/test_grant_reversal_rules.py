"""Reversing a lot, worked by hand against the pure wallet rules (no database): a top-up's
reversal is a refund (lot -> platform cash), a grant's a revocation (lot -> platform promotions),
of what is left of the lot and not held; the refusals each with their code."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from wallet_memory import CID, T0, MemoryWallet, usd

from wallets import chart
from wallets.commands import ExpireLot, ReverseGrant
from wallets.core.billing import entry_rollup
from wallets.errors import (
    ExceedsRemainingError,
    GrantClosedError,
    GrantNotReversibleError,
    NotFoundError,
    SubMinorAmountError,
    WalletValidationError,
)


def reverse(m: MemoryWallet, lot: Any, amount: str | None = None, **kw: Any) -> Any:
    lot_id = lot if isinstance(lot, str) else lot.grant.id
    return m.run(
        ReverseGrant(
            customer_id=kw.pop("customer_id", CID), lot_id=lot_id, amount=None if amount is None else usd(amount), **kw
        )
    )


def test_a_top_up_is_refunded_from_its_lot_back_to_the_platform_cash():
    m = MemoryWallet()
    paid = m.top_up("10.00", reference="pi_1")
    result = reverse(m, paid, "4.00", reason="customer asked", reference="re_1")
    assert (result.code, result.kind, result.amount) == ("reversed", "refund", usd("4.00"))
    assert m.lot(paid) == usd("6.00") and m.platform("cash") == usd("6.00")
    entry = m.entries[-1]
    assert entry.kind == "grant_reversal" and entry.customer_id == CID
    assert {p.account: p.amount for p in entry.postings} == {
        chart.lot_account(CID, paid.grant.id): usd("4.00"),
        chart.cash_account("USD"): -usd("4.00"),
    }
    assert entry.metadata["reference"] == "re_1" and entry.metadata["reversal"] == "refund"
    assert result.grant.remaining == usd("6.00") and result.wallet.available == usd("6.00")


def test_a_grant_is_revoked_back_to_the_promotions_expense_all_that_is_left_without_an_amount():
    m = MemoryWallet()
    promo = m.grant("5.00", reason="welcome")
    m.settle(m.reserve("1.50").reservation.id, input_tokens=1500)  # $1.50 spent from the grant
    result = reverse(m, promo, reason="abuse")
    assert (result.kind, result.amount) == ("revocation", usd("3.50"))
    assert m.lot(promo) == 0 and m.platform("promotions") == usd("1.50")  # 5.00 given, 3.50 taken back
    assert result.wallet.grants == ()  # an emptied lot is no longer among the live ones


def test_only_the_unheld_remainder_can_be_reversed_and_what_is_held_comes_back_to_the_lot():
    m = MemoryWallet()
    paid = m.top_up("10.00")
    r = m.reserve("3.00").reservation
    refused = reverse(m, paid, "7.01")
    assert isinstance(refused, ExceedsRemainingError) and refused.code == "exceeds_remaining"
    assert refused.context["available"] == "7.00" and refused.context["asked"] == "7.01"
    assert m.lot(paid) == usd("7.00") and m.platform("cash") == usd("10.00")  # nothing moved
    assert reverse(m, paid).amount == usd("7.00")
    m.release(r.id)  # the hold goes back to the lot: it may be reversed in its turn
    assert m.lot(paid) == usd("3.00") and reverse(m, paid).amount == usd("3.00")
    assert m.platform("cash") == 0 and m.lot(paid) == 0


def test_an_emptied_lot_and_an_expired_one_are_refused_as_closed():
    m = MemoryWallet()
    paid = m.top_up("2.00")
    reverse(m, paid)
    emptied = reverse(m, paid, "1.00")
    assert isinstance(emptied, GrantClosedError) and emptied.context["state"] == "emptied"
    promo = m.grant("5.00", expires_at=T0 + timedelta(minutes=30))
    m.advance(minutes=31)
    due = reverse(m, promo)  # past its expiry, the job has not swept it yet: breakage's, not ours
    assert isinstance(due, GrantClosedError) and due.context["state"] == "expired"
    m.run(ExpireLot(customer_id=CID, lot_id=promo.grant.id))
    swept = reverse(m, promo)
    assert isinstance(swept, GrantClosedError) and swept.context["state"] == "expired"
    assert m.platform("breakage") == usd("5.00") and m.platform("promotions") == usd("5.00")


def test_an_unknown_lot_is_not_found_and_bad_amounts_are_refused():
    m = MemoryWallet()
    paid = m.top_up("10.00")
    assert isinstance(reverse(m, "lot_nope"), NotFoundError)
    assert isinstance(reverse(m, paid, "0.001"), SubMinorAmountError)  # finer than a cent: invalid_amount
    zero = m.run(ReverseGrant(customer_id=CID, lot_id=paid.grant.id, amount=0))
    assert isinstance(zero, WalletValidationError)
    assert m.lot(paid) == usd("10.00") and len(m.entries) == 1


def test_each_reversal_is_its_own_entry():  # (a repeated Idempotency-Key: tests/api, its engine keeps answers)
    m = MemoryWallet()
    paid = m.top_up("10.00")
    reverse(m, paid, "1.00")
    reverse(m, paid, "1.00")
    assert m.lot(paid) == usd("8.00") and len({e.key for e in m.entries}) == 3


def test_a_reversal_is_its_own_rollup_item_and_the_wallet_event_says_what_went_back():
    m = MemoryWallet()
    paid, promo = m.top_up("10.00"), m.grant("5.00")
    reverse(m, paid, "2.50", reference="re_9")
    refund = m.entries[-1]
    reverse(m, promo, "1.00")
    revocation = m.entries[-1]
    customer = m.wallet.customer
    kinds = {lot.code: lot.kind for lot in m.wallet.lots.values()}
    assert entry_rollup(customer, refund, kinds) == {"refunds": (0, usd("2.50")), "lots": (0, -usd("2.50"))}
    assert entry_rollup(customer, revocation, kinds) == {"revoked": (0, usd("1.00")), "lots": (0, -usd("1.00"))}
    events = [e for e in m.outbox if e["topic"] == "grant.reversed"]
    assert [(e["payload"]["reversal"], e["payload"]["amount"], e["payload"]["remaining"]) for e in events] == [
        ("refund", "2.50", "7.50"),
        ("revocation", "1.00", "4.00"),
    ]
    assert events[0]["payload"]["reference"] == "re_9" and events[0]["payload"]["grant_id"] == paid.grant.id


def test_a_whole_refund_gives_back_whole_minor_units_and_leaves_the_fraction_in_the_lot():
    """Cash moves in whole cents, but a lot spent by usage holds fractions of one ($10.00 less a
    call of $0.001): asked for all of it, the refund gives back $9.99 and the lot keeps $0.009 for
    usage; it was refused as finer than a cent, so no top-up with usage on it could be refunded
    whole without working out the cents by hand."""
    m = MemoryWallet()
    paid = m.top_up("10.00")
    m.settle(m.reserve("0.01").reservation.id, input_tokens=1)
    assert m.lot(paid) == usd("9.999")
    result = reverse(m, paid)
    assert (result.kind, result.amount) == ("refund", usd("9.99"))
    assert m.lot(paid) == usd("0.009") and m.platform("cash") == usd("0.01")


def test_a_revocation_takes_back_fractions_of_a_cent_too():
    """A revocation moves no cash (the lot goes back to the promotions expense): all that is left
    goes, fractions of a cent included."""
    m = MemoryWallet()
    promo = m.grant("5.00")
    m.settle(m.reserve("0.01").reservation.id, input_tokens=1)
    result = reverse(m, promo)
    assert (result.kind, result.amount) == ("revocation", usd("4.999"))
    assert m.lot(promo) == 0


def test_a_whole_refund_of_a_lot_with_less_than_a_cent_left_is_refused_as_emptied():
    m = MemoryWallet()
    paid = m.top_up("0.01")
    m.settle(m.reserve("0.01").reservation.id, input_tokens=1)
    assert isinstance(reverse(m, paid), GrantClosedError) and m.lot(paid) == usd("0.009")


def test_a_lot_a_correction_opened_is_not_reversible_and_nothing_moves():
    """A re-rate's, a true-up's or a close's rounding credit has a top-up's kind, but no cash came
    in as it: refused, where it was refunded to the platform's cash."""
    m = MemoryWallet()
    paid = m.top_up("3.00")
    code = chart.lot_account(CID, paid.grant.id)
    assert m.wallet.lots[code].opened_by == "topup"  # a top-up's own: refundable
    for opened_by in ("rerate_adjustment", "volume_true_up", "invoice_rounding"):
        m.wallet.lots[code] = replace(m.wallet.lots[code], opened_by=opened_by)
        refused = reverse(m, paid, "1.00")
        assert isinstance(refused, GrantNotReversibleError) and refused.code == "grant_not_reversible"
        assert refused.context == {"grant_id": paid.grant.id, "opened_by": opened_by}
    assert m.lot(paid) == usd("3.00") and m.platform("cash") == usd("3.00")
    assert [e.kind for e in m.entries] == ["topup"]


def test_what_comes_back_to_a_grant_revoked_in_whole_is_revoked_again_and_a_refunded_top_up_takes_it():
    m = MemoryWallet()
    promo = m.grant("5.00")
    released, settled = m.reserve("1.00").reservation.id, m.reserve("2.00").reservation.id
    assert reverse(m, promo, reason="abuse").amount == usd("2.00")
    m.release(released)
    m.settle(settled, input_tokens=500)  # $0.50 of its $2.00
    assert m.lot(promo) == 0 and m.wallet.available(m.now) == 0
    assert m.platform("promotions") == usd("0.50")  # 5.00 given, 4.50 revoked: only the spent 0.50 is the platform's
    closed = reverse(m, promo)
    assert isinstance(closed, GrantClosedError) and closed.context["state"] == "revoked"
    promotions = chart.promotions_account("USD")
    back = [entry_rollup(m.wallet.customer, e, {}).get("revoked") for e in m.entries[-2:]]
    assert back == [(0, usd("1.00")), (0, usd("1.50"))] and all(
        any(p.account == promotions for p in e.postings) for e in m.entries[-2:])
    # a top-up refunded in whole: what comes back is the customer's, who paid for the usage
    paid = m.top_up("3.00")
    held = m.reserve("1.00").reservation.id
    reverse(m, paid)
    m.release(held)
    assert m.lot(paid) == usd("1.00")

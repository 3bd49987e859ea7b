"""Every row of DESIGN.md's operations table, worked by hand against the pure wallet rules (no
database). model-x costs $1.00 per 1,000 input tokens and $2.00 per 1,000 output tokens."""
from __future__ import annotations

import copy
from datetime import timedelta
from typing import get_args

from wallet_memory import CID, T0, MemoryWallet, usd

from ledger.model import Posting
from wallets import chart
from wallets.commands import ExpireLot, ExpireReservation, Reserve
from wallets.core import State, decide
from wallets.core.decision import AnswerKept, Effect, OutboxEvent, ReservationChanged, ReservationOpened
from wallets.errors import ConflictError, ImplausibleUsageError, InsufficientFundsError, ReservationClosedError


def test_a_paid_top_up_debits_cash_and_credits_a_new_lot():
    m = MemoryWallet()
    result = m.top_up("10.00")
    assert result.code == "credited"
    assert m.lot(result) == usd("10.00") and m.platform("cash") == usd("10.00")
    assert result.grant.priority == 100 and result.grant.expires_at is None
    assert result.wallet.available == usd("10.00") and result.applied_to_receivable == 0


def test_a_top_up_of_a_prepaid_customer_first_pays_off_its_receivable():
    m = MemoryWallet(overdraft="5.00")
    r = m.reserve("3.00").reservation  # all of it on credit
    m.settle(r.id, input_tokens=3000)  # $3.00 owed
    assert m.receivable == usd("3.00")
    result = m.top_up("10.00")
    assert result.applied_to_receivable == usd("3.00")
    assert m.lot(result) == usd("7.00") and m.receivable == 0 and m.platform("cash") == usd("10.00")


def test_a_top_up_never_pays_off_what_open_reservations_hold_on_credit():
    m = MemoryWallet(overdraft="5.00")
    m.reserve("2.00")  # held on the receivable, not owed yet
    m.wallet.credit_held = usd("2.00")  # what the shell loads for a top-up
    result = m.top_up("1.00")
    assert result.applied_to_receivable == 0 and m.lot(result) == usd("1.00")


def test_a_promotional_grant_is_paid_by_the_promotions_expense():
    m = MemoryWallet()
    result = m.grant("5.00", expires_at=T0 + timedelta(days=30), reason="welcome")
    assert m.lot(result) == usd("5.00") and m.platform("promotions") == usd("5.00")
    assert result.grant.priority == 50 and result.grant.reason == "welcome"


def test_a_reserve_holds_from_the_lots_in_consumption_order():
    m = MemoryWallet()
    paid = m.top_up("10.00")  # priority 100
    never = m.grant("2.00")  # priority 50, no expiry
    soon = m.grant("5.00", expires_at=T0 + timedelta(days=1))  # priority 50, expires first
    result = m.reserve("6.00")
    assert result.code == "reserved"
    assert (m.lot(soon), m.lot(never), m.lot(paid)) == (0, usd("1.00"), usd("10.00"))
    assert m.reserved == usd("6.00")


def test_a_reserve_draws_on_the_overdraft_headroom_after_the_lots():
    m = MemoryWallet(overdraft="5.00")
    lot = m.top_up("3.00")
    m.reserve("6.00")
    assert (m.lot(lot), m.receivable, m.reserved) == (0, usd("3.00"), usd("6.00"))


def test_a_reserve_past_what_the_wallet_can_draw_is_refused_and_the_refusal_is_kept_for_replays():
    m = MemoryWallet(overdraft="1.00")
    m.top_up("2.00")
    refusal = m.reserve("3.01", request_id="r1")
    assert isinstance(refusal, InsufficientFundsError)
    assert refusal.detail == ("a hold of 3.01 USD exceeds what wallet acme can draw: 2.00 available "
                              "plus 1.00 of overdraft")
    assert m.reserved == 0 and m.entries[-1].kind == "topup"
    m.top_up("5.00")
    again = m.reserve("3.01", request_id="r1")  # the same request: the same answer, however rich now
    assert isinstance(again, InsufficientFundsError) and again.detail == refusal.detail
    assert isinstance(m.reserve("1.00", request_id="r1"), ConflictError)


def test_the_same_request_id_again_answers_the_first_reservation():
    m = MemoryWallet()
    m.top_up("5.00")
    first = m.reserve("1.00", request_id="r1")
    again = m.reserve("1.00", request_id="r1")
    assert again.code == "replayed" and again.reservation == first.reservation
    assert m.reserved == usd("1.00")


def test_the_same_request_id_again_answers_its_reservation_as_it_is_now():
    """A request id's replay answered the first answer, "held", after its reservation was released,
    settled or expired: a caller retrying it believed it still held credit. It answers the
    reservation as it is now (its hold's amount, its status and expiry), still replayed: nothing
    is held again."""
    m = MemoryWallet()
    m.top_up("5.00")
    released = m.reserve("1.00", request_id="r1").reservation
    m.release(released.id)
    settled = m.reserve("2.00", request_id="r2").reservation
    m.settle(settled.id, input_tokens=500)  # $0.50 of the $2.00
    lapsed = m.reserve("1.00", request_id="r3", ttl_seconds=60).reservation
    m.advance(seconds=61)  # past its expiry, the job not yet run: the hold is still reserved
    answers = {rid: m.reserve(amount, request_id=rid) for rid, amount in (("r1", "1.00"), ("r2", "2.00"),
                                                                          ("r3", "1.00"))}
    assert {rid: (a.code, a.reservation.status, a.reservation.amount) for rid, a in answers.items()} == {
        "r1": ("replayed", "released", usd("1.00")), "r2": ("replayed", "settled", usd("2.00")),
        "r3": ("replayed", "expired", usd("1.00"))}
    assert [a.reservation.id for a in answers.values()] == [released.id, settled.id, lapsed.id]
    assert m.reserved == usd("1.00")  # r3's, until the job gives it back; nothing held again
    assert m.balances[chart.lot_account(CID, m.wallet.live_lots(m.now)[0].id)] == -usd("3.50")


def test_a_blocked_wallet_refuses_new_holds():
    m = MemoryWallet(overdraft="1.00")
    r = m.reserve("1.00").reservation
    m.settle(r.id, input_tokens=2500)  # $2.50: $1.50 past the limit
    assert m.wallet.blocked and m.wallet.customer.blocked
    assert [e["topic"] for e in m.outbox] == ["wallet.blocked"]
    m.top_up("10.00")  # pays the $2.50 off first: unblocked
    refusal = m.reserve("0.01") if m.wallet.blocked else None
    assert refusal is None and [e["topic"] for e in m.outbox] == ["wallet.blocked", "wallet.unblocked"]
    blocked = MemoryWallet(overdraft="1.00")
    r = blocked.reserve("1.00").reservation
    blocked.settle(r.id, input_tokens=2500)
    assert "is blocked" in str(blocked.reserve("0.01"))


def test_settle_below_the_hold_charges_the_cost_and_returns_the_rest_to_the_lots_it_came_from():
    m = MemoryWallet()
    lot = m.top_up("10.00")
    r = m.reserve("3.00").reservation
    result = m.settle(r.id, input_tokens=1000)  # $1.00
    assert result.code == "settled" and (result.charged, result.released) == (usd("1.00"), usd("2.00"))
    assert (m.lot(lot), m.reserved, m.platform("revenue")) == (usd("9.00"), 0, usd("1.00"))
    assert m.charges[-1]["from_hold"] == usd("1.00") and m.charges[-1]["released"] == usd("2.00")


def test_settle_above_the_hold_takes_the_rest_from_the_lots_then_the_receivable():
    m = MemoryWallet()
    first, second = m.top_up("1.50"), m.top_up("1.00")
    r = m.reserve("1.00").reservation  # from the first lot
    result = m.settle(r.id, input_tokens=2000, output_tokens=1000)  # $2.00 + $2.00 = $4.00
    assert result.charged == usd("4.00") and result.released == 0
    assert (m.lot(first), m.lot(second)) == (0, 0)
    assert m.receivable == usd("1.50")  # 4.00 - 1.00 hold - 0.50 - 1.00 from the lots: settle never refuses
    assert m.charges[-1]["from_lots"] == usd("1.50") and m.charges[-1]["from_receivable"] == usd("1.50")
    assert m.platform("revenue") == usd("4.00") and m.reserved == 0


def test_a_capture_keeps_the_hold_open_and_the_final_settle_gives_back_the_rest():
    m = MemoryWallet()
    lot = m.top_up("10.00")
    r = m.reserve("5.00").reservation
    capture = m.settle(r.id, input_tokens=1000, final=False, capture_id="c1")
    assert capture.code == "captured" and capture.status == "capturing" and m.reserved == usd("4.00")
    assert m.settle(r.id, input_tokens=1000, final=False, capture_id="c1").code == "replayed"
    final = m.settle(r.id, input_tokens=2000)
    assert (final.charged, final.released, final.status) == (usd("2.00"), usd("2.00"), "settled")
    assert (m.lot(lot), m.reserved, m.platform("revenue")) == (usd("7.00"), 0, usd("3.00"))
    assert m.settle(r.id, input_tokens=2000).code == "replayed"  # the same final settle again
    assert isinstance(m.settle(r.id, input_tokens=1), ReservationClosedError)


def test_release_gives_the_whole_hold_back_to_the_lots_it_came_from():
    m = MemoryWallet(overdraft="2.00")
    lot = m.top_up("1.00")
    r = m.reserve("2.50").reservation  # $1.00 from the lot, $1.50 on credit
    result = m.release(r.id)
    assert (result.code, result.released) == ("released", usd("2.50"))
    assert (m.lot(lot), m.receivable, m.reserved) == (usd("1.00"), 0, 0)
    assert m.release(r.id).code == "replayed"


def test_a_reservation_expires_once_giving_its_hold_back():
    m = MemoryWallet()
    lot = m.top_up("4.00")
    r = m.reserve("3.00", ttl_seconds=60).reservation
    assert m.run(ExpireReservation(customer_id=CID, reservation_id=r.id)) is None  # not yet due
    m.advance(seconds=61)
    result = m.run(ExpireReservation(customer_id=CID, reservation_id=r.id))
    assert (result.code, result.released, m.lot(lot), m.reserved) == ("expired", usd("3.00"), usd("4.00"), 0)
    assert m.outbox[-1]["topic"] == "reservation.expired" and m.outbox[-1]["payload"]["released"] == "3.00"
    assert m.run(ExpireReservation(customer_id=CID, reservation_id=r.id)) is None
    late = m.settle(r.id, input_tokens=500)  # a late settle is still charged, from the lots
    assert late.charged == usd("0.50") and m.lot(lot) == usd("3.50")


def test_grant_expiry_sends_the_unheld_remainder_to_breakage_and_the_held_part_when_given_back():
    m = MemoryWallet()
    grant = m.grant("5.00", expires_at=T0 + timedelta(minutes=30))
    r = m.reserve("3.00", ttl_seconds=86400).reservation
    m.advance(minutes=31)
    result = m.run(ExpireLot(customer_id=CID, lot_id=grant.grant.id))
    assert (result.code, result.amount) == ("lot_expired", usd("2.00"))
    assert m.platform("breakage") == usd("2.00") and m.lot(grant) == 0
    assert m.run(ExpireLot(customer_id=CID, lot_id=grant.grant.id)) is None  # exactly once
    m.settle(r.id, input_tokens=1000)  # $1.00 of the hold charged, $2.00 given back: to breakage
    assert m.platform("breakage") == usd("4.00") and m.platform("revenue") == usd("1.00") and m.lot(grant) == 0


def test_postpaid_usage_is_charged_to_the_receivable_once_per_event():
    m = MemoryWallet(billing="postpaid", overdraft=None)
    result = m.usage_event("e1", input_tokens=1000, output_tokens=500)  # $1.00 + $1.00
    assert (result.code, result.charged) == ("usage_recorded", usd("2.00"))
    assert m.receivable == usd("2.00") and m.platform("revenue") == usd("2.00")
    assert m.usage_event("e1", input_tokens=1000, output_tokens=500).code == "duplicate"
    assert isinstance(m.usage_event("e1", input_tokens=1), ConflictError)
    assert m.receivable == usd("2.00")


def test_usage_events_are_paid_from_the_lots_before_the_receivable():
    m = MemoryWallet(overdraft="0")
    lot = m.top_up("1.00")
    m.usage_event("e1", input_tokens=1500)
    assert (m.lot(lot), m.receivable) == (0, usd("0.50"))


def test_usage_past_the_customer_maximum_charge_is_refused_unless_forced():
    m = MemoryWallet(max_charge="1.00")
    m.top_up("10.00")
    r = m.reserve("1.00").reservation
    refusal = m.settle(r.id, input_tokens=1001)
    assert isinstance(refusal, ImplausibleUsageError) and refusal.context["source"] == "customer"
    assert m.reserved == usd("1.00") and not m.charges  # nothing charged: the hold stays open
    forced = m.settle(r.id, input_tokens=1001, forced_by="key_admin")
    assert forced.charged == usd("1.001")
    assert m.charges[-1]["usage"]["forced"]["by"] == "key_admin"
    assert isinstance(m.usage_event("e1", input_tokens=2000), ImplausibleUsageError)


def test_a_hold_past_the_customer_maximum_charge_is_refused_before_anything_is_held():
    """A settle past the maximum is refused, so a hold past it would start a call that could not be
    charged: $1.01 (or an estimate's $2.00: 1,000 input at $1.00 and 500 output at $2.00 per 1,000)
    against the customer's $1.00 is refused as the settle is, nothing held, nothing kept for a
    replay; $1.00 itself is held."""
    m = MemoryWallet(max_charge="1.00")
    m.top_up("10.00")
    refusal = m.reserve("1.01", request_id="r1")
    assert isinstance(refusal, ImplausibleUsageError) and refusal.code == "implausible_usage"
    assert {k: refusal.context[k] for k in ("limit", "maximum", "value", "source")} == {
        "limit": "max_charge_per_request", "maximum": "1.00", "value": "1.01", "source": "customer"}
    estimated = m.reserve(input_tokens=1000, max_output_tokens=500)
    assert isinstance(estimated, ImplausibleUsageError) and estimated.context["value"] == "2.00"
    assert m.reserved == 0 and len(m.entries) == 1  # the top-up's entry alone
    held = m.reserve("1.00", request_id="r1")  # the refusal was not kept: the request id is free
    assert held.code == "reserved" and m.reserved == usd("1.00")


def test_a_low_balance_alert_fires_once_per_crossing():
    m = MemoryWallet(low="1.00")
    m.top_up("1.50")
    r = m.reserve("1.00").reservation
    assert [e["topic"] for e in m.outbox] == ["balance.low"]
    m.reserve("0.10")
    assert len(m.outbox) == 1  # still low: no second alert
    m.release(r.id)
    m.reserve("1.00")
    assert [e["topic"] for e in m.outbox] == ["balance.low", "balance.low"]  # recovered, crossed again


def test_an_estimate_is_held_at_its_upper_bound():
    m = MemoryWallet()
    m.top_up("10.00")
    result = m.reserve(input_tokens=1000, max_output_tokens=500)  # $1.00 + $1.00
    assert result.reservation.amount == usd("2.00")


def test_deciding_changes_nothing_it_is_given():
    m = MemoryWallet()
    m.top_up("10.00")
    wallet = m.wallet
    before = copy.deepcopy(wallet)
    command = Reserve(customer_id=CID, request_id="r", request_hash=b"h", model="model-x", ttl_seconds=60,
                      amount=usd("4.00"))
    decision = decide(State(CID, wallet, ids=lambda prefix: f"{prefix}_1"), command, T0, m.book)
    assert wallet == before
    assert decision.outcome.code == "reserved" and decision.entry is not None
    assert sorted(decision.entry.postings, key=lambda p: p.account) == sorted([
        Posting(next(iter(wallet.lots)), usd("4.00"), "USD"),
        Posting(chart.reserved_account(CID), -usd("4.00"), "USD")], key=lambda p: p.account)
    assert [type(e) for e in decision.effects] == [ReservationOpened, AnswerKept]
    assert decision.effects[0].reservation_id == "res_1"


def test_every_effect_of_a_decision_is_a_frozen_value():
    m = MemoryWallet()
    m.top_up("10.00")
    r = m.reserve("1.00", ttl_seconds=1).reservation
    m.advance(seconds=2)
    decision = decide(State(CID, m.wallet), ExpireReservation(customer_id=CID, reservation_id=r.id), m.now)
    assert [type(e) for e in decision.effects] == [ReservationChanged, OutboxEvent]
    for effect in decision.effects:
        try:
            effect.customer_id = "other"  # type: ignore[misc]
        except AttributeError:
            continue
        raise AssertionError(f"{type(effect).__name__} is mutable")
    assert all(kind.__struct_config__.frozen for kind in get_args(Effect))  # every kind, not only these two


def test_a_capture_that_arrives_after_its_reservation_closed_is_charged_once_as_late_usage():
    # The SDK spooled a capture (a 500, or its deadline passed) and its block's exit then released
    # the hold: the capture's usage happened, so it is charged when it arrives, from the lots.
    m = MemoryWallet()
    lot = m.top_up("10.00")
    r = m.reserve("3.00").reservation
    assert m.release(r.id).code == "released" and m.lot(lot) == usd("10.00")
    late = m.settle(r.id, input_tokens=500, final=False, capture_id="c-1")
    assert (late.code, late.status, late.charged) == ("captured", "released", usd("0.50"))  # it stays released
    assert m.lot(lot) == usd("9.50") and m.platform("revenue") == usd("0.50")
    assert m.settle(r.id, input_tokens=500, final=False, capture_id="c-1").code == "replayed"
    assert m.lot(lot) == usd("9.50")  # once, by its id
    # A final settle after the release, or a capture with no id of its own, is still refused.
    assert isinstance(m.settle(r.id, input_tokens=1), ReservationClosedError)
    assert isinstance(m.settle(r.id, input_tokens=1, final=False), ReservationClosedError)


def test_a_capture_that_arrives_after_the_final_settle_is_charged_too():
    m = MemoryWallet()
    lot = m.top_up("10.00")
    r = m.reserve("3.00").reservation
    assert m.settle(r.id, input_tokens=1000).charged == usd("1.00")
    late = m.settle(r.id, output_tokens=250, final=False, capture_id="c-early")
    assert late.charged == usd("0.50") and m.lot(lot) == usd("8.50") and m.reserved == 0


def test_events_of_one_batch_share_its_time_and_their_ids_sort_in_the_order_they_happened():
    """Commands of one batch are decided at the batch's one `now`, so a settle that blocks the
    wallet and a top-up that unblocks it, batched together, give wallet.blocked and
    wallet.unblocked the same `created_at`: a receiver told to order by it alone cannot tell
    which came last. Their ids sort by when they were made (README: order by created_at, then
    id)."""
    m = MemoryWallet(overdraft="1.00")  # every command at the same now, as in one batch
    r = m.reserve("1.00").reservation
    m.settle(r.id, input_tokens=2500)
    m.top_up("10.00")
    events = [e["payload"] for e in m.outbox]
    assert [e["type"] for e in events] == ["wallet.blocked", "wallet.unblocked"]
    assert events[0]["created_at"] == events[1]["created_at"]
    ordered = sorted(reversed(events), key=lambda e: (e["created_at"], e["id"]))
    assert [e["type"] for e in ordered] == ["wallet.blocked", "wallet.unblocked"]

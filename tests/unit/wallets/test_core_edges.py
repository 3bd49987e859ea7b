"""Edge cases of the wallet rules against DESIGN.md, worked by hand (no database)."""
from __future__ import annotations

from datetime import timedelta, timezone

from wallet_memory import CID, T0, MemoryWallet, usd

from wallets.commands import ExpireLot, ExpireReservation
from wallets.errors import InsufficientFundsError


def test_lots_of_equal_priority_are_consumed_by_the_earliest_expiry_whatever_its_utc_offset():
    m = MemoryWallet()
    pacific = timezone(timedelta(hours=-8))
    later = m.grant("1.00", expires_at=(T0 + timedelta(days=2, hours=8)).astimezone(pacific))  # 12:00-08:00
    sooner = m.grant("1.00", expires_at=T0 + timedelta(days=2, hours=5))  # 17:00Z: three hours earlier
    m.reserve("1.00")
    assert (m.lot(sooner), m.lot(later)) == (0, usd("1.00"))


def test_lots_of_equal_priority_and_expiry_are_consumed_oldest_first():
    m = MemoryWallet()
    expiry = T0 + timedelta(days=1)
    older = m.grant("1.00", expires_at=expiry)
    m.advance(seconds=1)
    newer = m.grant("1.00", expires_at=expiry)
    m.reserve("1.50")
    assert (m.lot(older), m.lot(newer)) == (0, usd("0.50"))


def test_a_release_after_partial_captures_returns_only_the_unused_pieces_in_hold_order():
    m = MemoryWallet()
    first = m.grant("3.00")  # priority 50: held first
    second = m.top_up("10.00")  # priority 100
    r = m.reserve("5.00").reservation  # 3.00 from the grant, 2.00 from the top-up
    m.settle(r.id, input_tokens=1000, final=False, capture_id="c1")
    m.settle(r.id, input_tokens=3000, final=False, capture_id="c2")  # 4.00 captured: the grant, then 1.00
    result = m.release(r.id)
    assert (result.code, result.released) == ("released", usd("1.00"))
    assert (m.lot(first), m.lot(second), m.reserved) == (0, usd("9.00"), 0)
    assert m.platform("revenue") == usd("4.00")


def test_a_capture_above_what_is_left_of_the_hold_takes_the_rest_from_the_lots_and_keeps_it_open():
    m = MemoryWallet()
    lot = m.top_up("10.00")
    r = m.reserve("1.00").reservation
    capture = m.settle(r.id, input_tokens=1500, final=False, capture_id="c1")
    assert (capture.status, capture.charged, m.reserved, m.lot(lot)) == ("capturing", usd("1.50"), 0, usd("8.50"))
    assert m.release(r.id).released == 0 and m.lot(lot) == usd("8.50")


def test_a_reservation_expiring_while_capturing_gives_back_only_what_was_not_captured():
    m = MemoryWallet()
    lot = m.top_up("10.00")
    r = m.reserve("3.00", ttl_seconds=60).reservation
    m.settle(r.id, input_tokens=1000, final=False, capture_id="c1")
    m.advance(seconds=61)
    expired = m.run(ExpireReservation(customer_id=CID, reservation_id=r.id))
    assert (expired.code, expired.released, m.reserved, m.lot(lot)) == ("expired", usd("2.00"), 0, usd("9.00"))
    late = m.settle(r.id, input_tokens=500)  # the final settle, late: charged from the lots
    assert (late.status, late.charged, late.released, m.lot(lot)) == ("settled", usd("0.50"), 0, usd("8.50"))
    assert m.settle(r.id, input_tokens=500).code == "replayed" and m.lot(lot) == usd("8.50")


def test_a_hold_from_a_lot_expired_but_not_yet_swept_returns_to_it_and_the_sweep_takes_it_all():
    m = MemoryWallet()
    grant = m.grant("5.00", expires_at=T0 + timedelta(minutes=30))
    paid = m.top_up("5.00")
    r = m.reserve("3.00", ttl_seconds=86400).reservation
    m.advance(minutes=31)  # the grant expired, the job has not run yet
    settled = m.settle(r.id, input_tokens=1000)  # $1.00 from the hold, $2.00 back to the grant
    assert (settled.charged, settled.released, m.lot(grant), m.lot(paid)) == (usd("1.00"), usd("2.00"),
                                                                              usd("4.00"), usd("5.00"))
    r2 = m.reserve("1.00").reservation  # the expired grant is not drawn on any more
    assert m.lot(grant) == usd("4.00") and m.lot(paid) == usd("4.00")
    swept = m.run(ExpireLot(customer_id=CID, lot_id=grant.grant.id))
    assert swept.amount == usd("4.00") and m.platform("breakage") == usd("4.00") and m.lot(grant) == 0
    m.release(r2.id)
    assert m.lot(paid) == usd("5.00")


def test_a_settle_above_a_hold_from_a_swept_lot_takes_the_rest_from_live_lots_only():
    m = MemoryWallet()
    grant = m.grant("2.00", expires_at=T0 + timedelta(minutes=30))
    paid = m.top_up("5.00")
    r = m.reserve("2.00", ttl_seconds=86400).reservation  # all from the grant
    m.advance(minutes=31)
    m.run(ExpireLot(customer_id=CID, lot_id=grant.grant.id))  # nothing unheld to sweep
    assert m.platform("breakage") == 0
    settled = m.settle(r.id, input_tokens=3000)  # $3.00: $2.00 from the hold, $1.00 from the top-up
    assert (settled.charged, settled.released) == (usd("3.00"), 0)
    assert (m.lot(grant), m.lot(paid), m.reserved, m.platform("revenue")) == (0, usd("4.00"), 0, usd("3.00"))


def test_settle_above_the_hold_may_reach_the_overdraft_limit_and_new_holds_still_come_from_the_lots():
    m = MemoryWallet(overdraft="1.00")
    r = m.reserve("0.50").reservation  # on credit
    m.settle(r.id, input_tokens=1000)  # $1.00: the receivable is exactly at the limit
    assert m.receivable == usd("1.00") and not m.wallet.blocked
    assert isinstance(m.reserve("0.000000001"), InsufficientFundsError)  # no headroom left
    m.grant("1.00")
    assert m.reserve("1.00").code == "reserved"  # from the grant


def test_one_atomic_unit_past_the_overdraft_limit_blocks_new_holds_even_when_lots_could_cover_them():
    m = MemoryWallet(overdraft="0.999999999")
    r = m.reserve("0.50").reservation  # on credit
    m.settle(r.id, input_tokens=1000)  # $1.00: one atomic unit past the limit
    assert m.receivable == usd("1.00") and m.wallet.blocked
    m.grant("5.00")
    refusal = m.reserve("0.01")
    assert isinstance(refusal, InsufficientFundsError) and "is blocked" in refusal.detail
    m.top_up("0.01")  # pays off a cent, the unit past the limit with it: unblocked (cash is whole cents)
    assert m.receivable == usd("0.99") and m.reserve("0.01").code == "reserved"


def test_a_zero_token_final_settle_charges_nothing_and_returns_the_whole_hold():
    m = MemoryWallet()
    lot = m.top_up("2.00")
    r = m.reserve("1.00").reservation
    result = m.settle(r.id)
    assert (result.code, result.charged, result.released, m.lot(lot), m.reserved) == (
        "settled", 0, usd("1.00"), usd("2.00"), 0)
    assert m.platform("revenue") == 0 and m.charges[-1]["charged"] == 0


def test_a_zero_token_capture_posts_nothing_and_keeps_the_hold():
    m = MemoryWallet()
    lot = m.top_up("2.00")
    r = m.reserve("1.00").reservation
    n = len(m.entries)
    result = m.settle(r.id, final=False, capture_id="c0")
    assert (result.code, result.charged, m.reserved, m.lot(lot)) == ("captured", 0, usd("1.00"), usd("1.00"))
    assert len(m.entries) == n
    assert m.settle(r.id, input_tokens=1000).released == 0


def test_a_release_or_expiry_after_the_grant_was_swept_gives_the_held_part_to_breakage():
    m = MemoryWallet()
    grant = m.grant("5.00", expires_at=T0 + timedelta(minutes=30))
    released = m.reserve("1.00", ttl_seconds=86400).reservation
    expiring = m.reserve("2.00", ttl_seconds=3600).reservation
    m.advance(minutes=31)
    assert m.run(ExpireLot(customer_id=CID, lot_id=grant.grant.id)).amount == usd("2.00")
    assert m.release(released.id).released == usd("1.00")
    m.advance(minutes=60)
    assert m.run(ExpireReservation(customer_id=CID, reservation_id=expiring.id)).released == usd("2.00")
    assert (m.lot(grant), m.reserved, m.platform("breakage"), m.platform("revenue")) == (0, 0, usd("5.00"), 0)


def test_a_charge_too_large_for_one_posting_is_refused_cleanly_and_leaves_the_hold_open():
    m = MemoryWallet(overdraft=None)
    lot = m.top_up("10.00")
    r = m.reserve("1.00").reservation
    refusal = m.settle(r.id, input_tokens=10**13)  # $10 billion: past a posting's 63 bits
    assert refusal.code == "validation_error" and not m.charges
    assert (m.reserved, m.lot(lot), m.wallet.reservations[r.id].status) == (usd("1.00"), usd("9.00"), "held")
    assert m.settle(r.id, input_tokens=1000).charged == usd("1.00")


def test_a_per_request_fee_priced_only_at_some_hours_is_charged_at_those_hours_as_it_is_held():
    from pricing.parse import parse_book

    # a $0.01 per-call surcharge from 16:00 to 20:00 UTC only, beside $1.00 per 1,000 input tokens
    book = parse_book({"id": "book-x", "currency": "USD", "versions": [{
        "effective_from": "2026-01-01T00:00:00Z", "format": 2, "rules": [
            {"id": "x-in", "model": "model-x", "token_type": "input", "price": "1000"},
            {"id": "peak", "model": "model-x", "token_type": "request", "price": "0.01",
             "hours": {"from": "16:00", "to": "20:00"}}]}]})
    m = MemoryWallet(book=book)
    m.top_up("10.00")
    m.advance(hours=5)  # 17:00
    r = m.reserve(input_tokens=1000).reservation
    assert r.amount == usd("1.01")  # the hold counts the fee in force at 17:00
    assert m.settle(r.id, input_tokens=1000).charged == usd("1.01")  # was 1.00: the fee never charged
    m.advance(hours=4)  # 21:00: no fee
    assert m.usage_event("late", input_tokens=1000).charged == usd("1.00")

"""The `grant.expired` webhook event says what expired: a grant that had nothing left at its expiry
(spent, or revoked in whole) is closed all the same, but sends no event for nothing."""

from __future__ import annotations

from datetime import timedelta

from wallet_memory import CID, T0, MemoryWallet, usd

from wallets.commands import ExpireLot, ReverseGrant


def expired_events(m: MemoryWallet) -> list[dict]:
    return [row for row in m.outbox if row["topic"] == "grant.expired"]


def test_a_grant_with_a_remainder_at_its_expiry_sends_grant_expired_with_that_remainder():
    m = MemoryWallet()
    promo = m.grant("5.00", expires_at=T0 + timedelta(minutes=30))
    m.settle(m.reserve("1.50").reservation.id, input_tokens=1500)
    m.advance(minutes=31)
    assert m.run(ExpireLot(customer_id=CID, lot_id=promo.grant.id)).amount == usd("3.50")
    (event,) = expired_events(m)
    assert (event["payload"]["grant_id"], event["payload"]["expired"]) == (promo.grant.id, "3.50")


def test_a_grant_revoked_in_whole_before_its_expiry_sends_no_grant_expired_event():
    m = MemoryWallet()
    promo = m.grant("5.00", expires_at=T0 + timedelta(minutes=30))
    m.run(ReverseGrant(customer_id=CID, lot_id=promo.grant.id, amount=None, reason="abuse"))
    m.advance(minutes=31)
    before = len(m.entries)
    m.run(ExpireLot(customer_id=CID, lot_id=promo.grant.id))
    assert expired_events(m) == [] and len(m.entries) == before
    m.run(ExpireLot(customer_id=CID, lot_id=promo.grant.id))  # swept once: nothing due again
    assert expired_events(m) == []


def test_a_grant_spent_in_full_before_its_expiry_sends_no_grant_expired_event():
    m = MemoryWallet()
    promo = m.grant("2.00", expires_at=T0 + timedelta(minutes=30))
    m.settle(m.reserve("2.00").reservation.id, input_tokens=2000)
    assert m.lot(promo) == 0
    m.advance(minutes=31)
    m.run(ExpireLot(customer_id=CID, lot_id=promo.grant.id))
    assert expired_events(m) == [] and m.platform("breakage") == 0

"""Extending a reservation's expiry (a call that runs longer than its TTL), worked against the
pure wallet rules (no database)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wallet_memory import CID, MemoryWallet, usd

from wallets import chart
from wallets.commands import MAX_TTL_SECONDS, ExpireReservation, Extend
from wallets.core import State, decide
from wallets.core.decision import ReservationExtended
from wallets.core.reservations import status_at
from wallets.errors import (
    ExtensionTooShortError,
    NotFoundError,
    ReservationClosedError,
    WalletValidationError,
)


def _extend(m: MemoryWallet, rid: str, ttl_seconds: int):
    return m.run(Extend(customer_id=CID, reservation_id=rid, ttl_seconds=ttl_seconds))


def _expire(m: MemoryWallet, rid: str):
    return m.run(ExpireReservation(customer_id=CID, reservation_id=rid))


def test_an_extension_moves_only_the_expiry_and_the_expiry_job_then_waits_for_the_new_one():
    m = MemoryWallet()
    lot = m.top_up("4.00")
    r = m.reserve("3.00", ttl_seconds=60).reservation
    m.advance(seconds=40)
    entries = len(m.entries)
    result = _extend(m, r.id, 60)
    assert (result.code, result.status) == ("extended", chart.HELD)
    assert result.expires_at == (m.now + timedelta(seconds=60)).isoformat()  # from now: T0 + 100 s
    assert m.wallet.reservations[r.id].expires_at == m.now + timedelta(seconds=60)
    assert len(m.entries) == entries and m.reserved == usd("3.00")  # nothing posted: the hold is as it was
    m.advance(seconds=30)  # T0 + 70 s: past the old expiry, before the new one
    assert _expire(m, r.id) is None and m.reserved == usd("3.00")
    m.advance(seconds=31)  # T0 + 101 s: past the new one
    expired = _expire(m, r.id)
    assert (expired.code, expired.released, m.lot(lot), m.reserved) == ("expired", usd("3.00"), usd("4.00"), 0)


def test_a_capturing_reservation_may_be_extended_and_settles_exactly_after_its_first_ttl():
    m = MemoryWallet()
    lot = m.top_up("10.00")
    r = m.reserve("5.00", ttl_seconds=60).reservation
    m.settle(r.id, input_tokens=1000, final=False, capture_id="c1")  # $1.00 captured
    for _ in range(3):  # a call of three minutes, renewed every 30 s for a minute
        m.advance(seconds=30)
        assert _extend(m, r.id, 60).status == chart.CAPTURING
        assert _expire(m, r.id) is None
    m.advance(seconds=30)
    settled = m.settle(r.id, input_tokens=0, output_tokens=1000)  # $2.00 more, from the hold
    assert (settled.status, settled.charged, settled.released) == (chart.SETTLED, usd("2.00"), usd("2.00"))
    assert m.lot(lot) == usd("7.00") and m.reserved == 0 and m.receivable == 0


def test_an_extension_must_end_later_than_the_current_expiry():
    m = MemoryWallet()
    m.top_up("4.00")
    r = m.reserve("1.00", ttl_seconds=600).reservation
    m.advance(seconds=10)
    for ttl in (60, 590):  # T0 + 70 s, T0 + 600 s: not later than T0 + 600 s
        refusal = _extend(m, r.id, ttl)
        assert isinstance(refusal, ExtensionTooShortError) and refusal.code == "extension_too_short"
        assert datetime.fromisoformat(refusal.context["expires_at"]) == m.now - timedelta(seconds=10) + timedelta(
            seconds=600)
    assert m.wallet.reservations[r.id].expires_at == m.now + timedelta(seconds=590)
    assert _extend(m, r.id, 591).code == "extended"


def test_an_extension_is_bounded_by_the_reserves_maximum_ttl():
    m = MemoryWallet()
    m.top_up("4.00")
    r = m.reserve("1.00", ttl_seconds=60).reservation
    for ttl in (0, MAX_TTL_SECONDS + 1):
        assert isinstance(_extend(m, r.id, ttl), WalletValidationError)
    assert _extend(m, r.id, MAX_TTL_SECONDS).expires_at == (m.now + timedelta(days=7)).isoformat()


def test_a_closed_expired_or_unknown_reservation_is_not_extended():
    m = MemoryWallet()
    m.top_up("10.00")
    settled, released, expired, due = (m.reserve("1.00", ttl_seconds=60).reservation for _ in range(4))
    m.settle(settled.id, input_tokens=100)
    m.release(released.id)
    m.advance(seconds=61)
    _expire(m, expired.id)
    for r, status in ((settled, "settled"), (released, "released"), (expired, "expired"),
                      (due, "expired")):  # `due`: past its expiry, the job has not run yet
        refusal = _extend(m, r.id, 300)
        assert isinstance(refusal, ReservationClosedError), r.id
        assert refusal.code == "reservation_closed" and refusal.context["reservation_status"] == status
    assert m.wallet.reservations[due.id].status == chart.HELD  # the refusal changed nothing
    assert _expire(m, due.id).code == "expired"
    assert isinstance(_extend(m, "res_unknown", 300), NotFoundError)


def test_the_extension_decision_is_one_effect_and_no_entry():
    m = MemoryWallet()
    m.top_up("4.00")
    r = m.reserve("1.00", ttl_seconds=60).reservation
    decision = decide(State(CID, m.wallet), Extend(customer_id=CID, reservation_id=r.id, ttl_seconds=90), m.now)
    assert decision.entry is None
    assert decision.effects == (ReservationExtended(CID, r.id, m.now + timedelta(seconds=90)),)


def test_an_open_reservation_reads_expired_from_its_expiry_on_as_extend_refuses_it():
    at = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    assert [status_at(s, at, at - timedelta(microseconds=1)) for s in ("held", "capturing")] == ["held", "capturing"]
    assert [status_at(s, at, at) for s in ("held", "capturing")] == ["expired", "expired"]  # extend's boundary
    assert [status_at(s, at, at + timedelta(days=1)) for s in ("settled", "released", "expired")] == \
        ["settled", "released", "expired"]

"""The stateful model of tests/integration/wallets/test_wallet_stateful.py, driven against the
pure wallet rules in memory (no database), so it runs hundreds of random histories in seconds:
top-ups, grants, holds, captures, settles above and below the hold, releases, expiries and
time jumps, each account compared with a deliberately simple reference after every step."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule
from wallet_memory import CID, MemoryWallet

from tests.wallet_reference import CENT, Ref, RefLot
from wallets import chart
from wallets.commands import ExpireLot, ExpireReservation
from wallets.errors import InsufficientFundsError, ReservationClosedError

_ids = itertools.count()


class WalletModel(RuleBasedStateMachine):
    reservations = Bundle("reservations")

    @initialize(limit=st.sampled_from([0, 0, 500 * CENT]))
    def open_wallet(self, limit: int) -> None:
        self.m = MemoryWallet(overdraft=f"{limit // CENT / 100:.2f}")
        self.ref = Ref(CID, limit)

    def _lot(self, result, priority: int, expires_at: datetime | None) -> None:
        code = chart.lot_account(CID, result.grant.id)
        self.ref.lots[code] = RefLot(code, result.grant.granted, priority, expires_at, len(self.ref.lots))

    @rule(cents=st.integers(1, 5000), priority=st.sampled_from([100, 100, 30]))
    def top_up(self, cents: int, priority: int) -> None:
        amount, ref = cents * CENT, self.ref
        held_on_credit = ref.held_on_credit()
        paid = min(amount, max(0, ref.receivable - held_on_credit))
        self.m.wallet.credit_held = held_on_credit  # what the shell loads for a top-up
        result = self.m.top_up(f"{cents / 100:.2f}", priority=priority)
        assert result.applied_to_receivable == paid
        ref.cash += amount
        ref.receivable -= paid
        self._lot(result, priority, None)

    @rule(cents=st.integers(1, 2000), priority=st.integers(0, 100), minutes=st.none() | st.integers(1, 120),
          offset=st.sampled_from([0, 0, -8, 9]))
    def grant(self, cents: int, priority: int, minutes: int | None, offset: int = 0) -> None:
        """A grant; its expiry, an instant, is given with any UTC offset (the API keeps the caller's)."""
        expires_at = None if minutes is None else self.m.now + timedelta(minutes=minutes)
        if expires_at is not None:
            expires_at = expires_at.astimezone(timezone(timedelta(hours=offset)))
        result = self.m.grant(f"{cents / 100:.2f}", priority=priority, expires_at=expires_at)
        self.ref.promotions += cents * CENT
        self._lot(result, priority, expires_at)

    @rule(target=reservations, cents=st.integers(0, 3000), ttl=st.sampled_from([60, 3600, 86400]))
    def reserve(self, cents: int, ttl: int) -> str:
        ref, now = self.ref, self.m.now
        pieces, left, empty = ref.draw(cents * CENT, now)
        result = self.m.reserve(f"{cents / 100:.2f}", request_id=f"r{next(_ids)}", ttl_seconds=ttl)
        if isinstance(result, InsufficientFundsError):
            assert left > 0 or ref.receivable > ref.limit or empty, "refused although the model could hold it"
            return "refused"
        assert left == 0 and ref.receivable <= ref.limit and not empty, "held although the model could not"
        rid = result.reservation.id
        ref.hold(rid, pieces, now + timedelta(seconds=ttl))
        return rid

    @rule(target=reservations, cents=st.integers(1, 500), offset=st.sampled_from([0, -8, 9]))
    def hold_from_a_grant_about_to_expire(self, cents: int, offset: int) -> str:
        """The awkward case: a grant expires while part of it is held by a long reservation."""
        self.grant(cents, 0, 30, offset)
        return self.reserve(cents // 2, 86400)

    @rule(rid=reservations, tokens=st.integers(0, 3000).map(lambda t: t * 10), final=st.booleans())
    def settle(self, rid: str, tokens: int, final: bool) -> None:
        ref = self.ref
        r = ref.reservations.get(rid)
        if r is None:
            return
        replay = r.status == "settled" and final and r.final_tokens == tokens
        result = self.m.settle(rid, input_tokens=tokens, final=final)
        if isinstance(result, ReservationClosedError):
            assert r.status in ("settled", "released") and not replay
            return
        assert r.status != "released" and (r.status != "settled" or replay), result
        if replay:
            assert result.code == "replayed"
            return
        ref.settle(r, tokens, final, self.m.now)

    @rule(rid=reservations)
    def release(self, rid: str) -> None:
        r = self.ref.reservations.get(rid)
        if r is None:
            return
        result = self.m.release(rid)
        if isinstance(result, ReservationClosedError):
            assert r.status in ("settled", "expired")
            return
        if r.status == "released":
            assert result.code == "replayed"
            return
        self.ref.release(r)

    @rule(minutes=st.sampled_from([1, 30, 90, 1500]))
    def time_passes(self, minutes: int) -> None:
        self.m.advance(minutes=minutes)

    @rule()
    def jobs_run(self) -> None:
        ref, now = self.ref, self.m.now
        for rid, r in ref.reservations.items():
            self.m.run(ExpireReservation(customer_id=CID, reservation_id=rid))
            ref.expire(r, now)
        for lot in ref.lots.values():
            self.m.run(ExpireLot(customer_id=CID, lot_id=lot.code.rsplit(":", 1)[1]))
            ref.sweep(lot, now)

    @invariant()
    def every_account_agrees_with_the_model(self) -> None:
        if not hasattr(self, "ref"):
            return
        ref, m = self.ref, self.m
        lots = {code: -m.balances[code] for code in ref.lots}
        assert lots == {code: lot.remaining for code, lot in ref.lots.items()}
        assert (m.reserved, m.receivable) == (ref.reserved, ref.receivable)
        assert {k: m.platform(k) for k in ("cash", "promotions", "revenue", "breakage")} == {
            "cash": ref.cash, "promotions": ref.promotions, "revenue": ref.revenue, "breakage": ref.breakage}
        assert all(v >= 0 for v in lots.values()) and m.reserved >= 0 and m.receivable >= 0  # the bounds
        assert sum(m.balances.values()) == 0  # the trial balance
        w = m.wallet  # the shell's cached state follows the postings
        assert {code: lot.balance for code, lot in w.lots.items()} == lots
        assert (w.reserved, w.receivable) == (m.reserved, m.receivable)


def test_a_wallet_agrees_with_the_reference_model_through_random_histories():
    machine = settings(max_examples=300, stateful_step_count=35, deadline=None,
                       suppress_health_check=list(HealthCheck))(WalletModel)
    machine.TestCase().runTest()

"""A Hypothesis state machine drives one wallet through random top-ups, grants, holds, captures,
settles above and below the hold, releases, expiries and time jumps, and compares every account
with a deliberately simple reference model after each step. Bounds and the trial balance hold."""
from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule
from wallet_kit import Clock, Kit

from ledger.audit import bounds_hold, trial_balance_zero
from ledger.db import connect
from tests.wallet_reference import CENT, Ref, RefLot
from wallets import chart
from wallets.errors import InsufficientFundsError, ReservationClosedError
from wallets.expiry import expire_grants, expire_reservations

_ids = itertools.count()


class WalletMachine(RuleBasedStateMachine):
    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db = connect(URL[0], pool_size=2)
        self.clock = Clock()
        self.kit = Kit(self.db, f"sm{next(_ids)}-{TAG[0]}", self.clock)

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        # The jobs sweep every customer: leave nothing due for the next example's jobs to find.
        end = self.clock.now + timedelta(days=3650)
        self.run(expire_reservations(self.db, end))
        self.run(expire_grants(self.db, end))
        self.run(self.db.dispose())
        self.loop.close()

    @initialize(limit=st.sampled_from([0, 0, 500 * CENT]))
    def open_wallet(self, limit: int) -> None:
        self.kit.book = BOOK[0]
        cid = self.run(self.kit.customer("w", overdraft=f"{limit // CENT / 100:.2f}"))
        self.ref = Ref(cid, limit)
        self.platform0 = self.platform()

    def platform(self) -> dict[str, int]:
        found = self.run(self.kit.balances(self.ref.customer))
        return {k: found.get(k, 0) for k in ("cash", "promotions", "revenue", "breakage")}

    def _lot(self, result, priority: int, expires_at: datetime | None) -> None:
        code = chart.lot_account(self.ref.customer, result.grant.id)
        self.ref.lots[code] = RefLot(code, result.grant.granted, priority, expires_at, len(self.ref.lots))

    @rule(cents=st.integers(1, 5000), priority=st.sampled_from([100, 100, 30]))
    def top_up(self, cents: int, priority: int) -> None:
        amount, ref = cents * CENT, self.ref
        paid = min(amount, max(0, ref.receivable - ref.held_on_credit()))
        result = self.run(self.kit.top_up(ref.customer, f"{cents / 100:.2f}", priority=priority))
        assert result.applied_to_receivable == paid
        ref.cash += amount
        ref.receivable -= paid
        self._lot(result, priority, None)

    @rule(cents=st.integers(1, 2000), priority=st.integers(0, 100), minutes=st.none() | st.integers(1, 120))
    def grant(self, cents: int, priority: int, minutes: int | None) -> None:
        expires_at = None if minutes is None else self.clock.now + timedelta(minutes=minutes)
        result = self.run(self.kit.grant(self.ref.customer, f"{cents / 100:.2f}", priority=priority,
                                         expires_at=expires_at))
        self.ref.promotions += cents * CENT
        self._lot(result, priority, expires_at)

    @rule(target=reservations, cents=st.integers(0, 3000), ttl=st.sampled_from([60, 3600, 86400]))
    def reserve(self, cents: int, ttl: int) -> str:
        ref, now, amount = self.ref, self.clock.now, cents * CENT
        pieces, left, empty = ref.draw(amount, now)
        try:
            result = self.run(self.kit.reserve(ref.customer, f"r{next(_ids)}", amount=f"{cents / 100:.2f}",
                                               ttl_seconds=ttl))
        except InsufficientFundsError:
            assert left > 0 or ref.receivable > ref.limit or empty, "refused although the model could hold it"
            return "refused"
        assert left == 0 and ref.receivable <= ref.limit and not empty, "held although the model could not"
        rid = result.reservation.id
        ref.hold(rid, pieces, now + timedelta(seconds=ttl))
        return rid

    @rule(target=reservations, cents=st.integers(1, 500))
    def hold_from_a_grant_about_to_expire(self, cents: int) -> str:
        """The awkward case: a grant expires while part of it is held by a long reservation."""
        self.grant(cents, 0, 30)
        return self.reserve(cents // 2, 86400)

    @rule(rid=reservations, tokens=st.integers(0, 3000).map(lambda t: t * 10), final=st.booleans())
    def settle(self, rid: str, tokens: int, final: bool) -> None:
        ref = self.ref
        r = ref.reservations.get(rid)
        if r is None:
            return
        replay = r.status == "settled" and final and r.final_tokens == tokens
        try:
            self.run(self.kit.settle(ref.customer, rid, input_tokens=tokens, final=final))
        except ReservationClosedError:
            assert r.status in ("settled", "released") and not replay
            return
        assert r.status not in ("released",) and (r.status != "settled" or replay)
        if replay:
            return
        ref.settle(r, tokens, final, self.clock.now)

    @rule(rid=reservations)
    def release(self, rid: str) -> None:
        r = self.ref.reservations.get(rid)
        if r is None:
            return
        try:
            self.run(self.kit.release(self.ref.customer, rid))
        except ReservationClosedError:
            assert r.status in ("settled", "expired")
            return
        if r.status == "released":
            return  # a replay
        self.ref.release(r)

    @rule(minutes=st.sampled_from([1, 30, 90, 1500]))
    def time_passes(self, minutes: int) -> None:
        self.clock.advance(minutes=minutes)

    @rule()
    def jobs_run(self) -> None:
        ref, now = self.ref, self.clock.now
        self.run(expire_reservations(self.db, now))
        for r in ref.reservations.values():
            ref.expire(r, now)
        self.run(expire_grants(self.db, now))
        for lot in ref.lots.values():
            ref.sweep(lot, now)

    @invariant()
    def every_account_agrees_with_the_model(self) -> None:
        if not hasattr(self, "ref"):
            return
        ref = self.ref
        found = self.run(self.kit.balances(ref.customer))
        expected = {code: lot.remaining for code, lot in ref.lots.items()}
        expected.update({"w.reserved": ref.reserved, "w.receivable": ref.receivable})
        actual = {self.kit_name(k): v for k, v in found.items() if k not in self.platform0}
        assert actual == {self.kit_name(k): v for k, v in expected.items()}
        moved = {k: found[k] - self.platform0[k] for k in self.platform0}
        assert moved == {"cash": ref.cash, "promotions": ref.promotions, "revenue": ref.revenue,
                         "breakage": ref.breakage}
        assert self.run(self.db.read(bounds_hold)).ok
        assert self.run(self.db.read(trial_balance_zero)).ok

    def kit_name(self, code: str) -> str:
        for full, short in self.kit.names.items():
            if code in (full, short):
                return short
        return code


URL: list[str] = []
TAG: list[str] = []
BOOK: list[str] = []


def test_a_wallet_agrees_with_the_reference_model_through_random_histories(scratch_url: str, tag: str):
    URL[:], TAG[:] = [scratch_url], [tag]

    async def setup():
        db = connect(scratch_url, pool_size=1)
        kit = Kit(db, tag)
        await kit.setup_book()
        await db.dispose()
        return kit.book

    BOOK[:] = [asyncio.run(setup())]
    machine = settings(max_examples=40, stateful_step_count=35, deadline=None,
                       suppress_health_check=list(HealthCheck))(WalletMachine)
    machine.TestCase().runTest()
    db_ok = asyncio.run(_verify(scratch_url))
    assert db_ok.ok, [c for c in db_ok.checks if not c.ok]


async def _verify(url: str):
    from wallets.audit import full_verify

    db = connect(url, pool_size=1)
    try:
        return await db.read(full_verify)
    finally:
        await db.dispose()



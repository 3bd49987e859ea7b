"""Worked examples of DESIGN.md's operations table, with every account's balance after each step.

Prices (model-x): $1.00 per 1,000 input tokens, $2.00 per 1,000 output tokens.
Balances are normal balances: what a lot holds, what the customer owes, what the platform earned.
"""
from __future__ import annotations

import pytest
from sqlalchemy import text
from wallet_kit import Kit, amounts, usd

from wallets import books
from wallets.errors import InsufficientFundsError, ReservationClosedError
from wallets.expiry import expire_grants, expire_reservations

ZERO = amounts(reserved="0", receivable="0")


async def test_prepaid_top_up_grant_reserve_settle_release_and_grant_expiry(kit: Kit):
    acme = await kit.customer("acme")
    clock = kit.clock

    # paid top-up: platform cash -> a new lot T (priority 100, no expiry)
    topup = await kit.top_up(acme, "100.00", name="T", reference="payment-123")
    assert topup.entry_id is not None
    assert await kit.balances(acme) == amounts(
        T="100.00", acme__reserved="0", acme__receivable="0", cash="100.00", promotions="0", revenue="0",
        breakage="0")

    # promotional grant: promotions expense -> lot G (priority 10: spent first), expires in a day
    await kit.grant(acme, "5.00", name="G", priority=10, expires_at=clock.now.replace(day=24))
    assert await kit.balances(acme) == amounts(
        T="100.00", G="5.00", acme__reserved="0", acme__receivable="0", cash="100.00", promotions="5.00",
        revenue="0", breakage="0")

    # reserve 1,200 input + 500 output tokens: 1.20 + 1.00 = 2.20, held from G
    r1 = await kit.reserve(acme, "req-1", input_tokens=1200, max_output_tokens=500)
    assert r1.reservation.amount == amounts(x="2.20")["x"]
    assert await kit.balances(acme) == amounts(
        T="100.00", G="2.80", acme__reserved="2.20", acme__receivable="0", cash="100.00", promotions="5.00",
        revenue="0", breakage="0")

    # settle below the hold: 1,000 in + 350 out = 1.00 + 0.70 = 1.70; 0.50 goes back to G
    s1 = await kit.settle(acme, r1.reservation.id, input_tokens=1000, output_tokens=350)
    assert (s1.status, s1.charged, s1.released) == ("settled", amounts(x="1.70")["x"], amounts(x="0.50")["x"])
    assert await kit.balances(acme) == amounts(
        T="100.00", G="3.30", acme__reserved="0", acme__receivable="0", cash="100.00", promotions="5.00",
        revenue="1.70", breakage="0")

    # reserve 4.00 given directly: G's 3.30 first, then 0.70 of T
    r2 = await kit.reserve(acme, "req-2", amount="4.00")
    assert await kit.balances(acme) == amounts(
        T="99.30", G="0", acme__reserved="4.00", acme__receivable="0", cash="100.00", promotions="5.00",
        revenue="1.70", breakage="0")

    # settle above the hold: 3,000 in + 1,000 out = 5.00: the 4.00 hold, then 1.00 more from T
    s2 = await kit.settle(acme, r2.reservation.id, input_tokens=3000, output_tokens=1000)
    assert (s2.charged, s2.released) == (amounts(x="5.00")["x"], 0)
    assert await kit.balances(acme) == amounts(
        T="98.30", G="0", acme__reserved="0", acme__receivable="0", cash="100.00", promotions="5.00",
        revenue="6.70", breakage="0")

    # release: the whole hold goes back where it came from
    r3 = await kit.reserve(acme, "req-3", amount="10.00")
    assert (await kit.balances(acme))["T"] == amounts(x="88.30")["x"]
    released = await kit.release(acme, r3.reservation.id)
    assert (released.status, released.released) == ("released", amounts(x="10.00")["x"])
    assert await kit.balances(acme) == amounts(
        T="98.30", G="0", acme__reserved="0", acme__receivable="0", cash="100.00", promotions="5.00",
        revenue="6.70", breakage="0")

    # a grant partly held when it expires: the unheld 1.00 goes to breakage at expiry; the held
    # 2.00 goes to breakage when the hold is given back
    await kit.grant(acme, "3.00", name="G2", expires_at=clock.now.replace(hour=13))
    r4 = await kit.reserve(acme, "req-4", amount="2.00", ttl_seconds=86400)
    assert (await kit.balances(acme))["G2"] == amounts(x="1.00")["x"]
    clock.advance(hours=2)
    assert await expire_grants(kit.db, clock.now) == 1
    assert await expire_grants(kit.db, clock.now) == 0  # exactly once
    assert await kit.balances(acme) == amounts(
        T="98.30", G="0", G2="0", acme__reserved="2.00", acme__receivable="0", cash="100.00",
        promotions="8.00", revenue="6.70", breakage="1.00")
    await kit.release(acme, r4.reservation.id)
    assert await kit.balances(acme) == amounts(
        T="98.30", G="0", G2="0", acme__reserved="0", acme__receivable="0", cash="100.00",
        promotions="8.00", revenue="6.70", breakage="3.00")
    assert (await kit.verify()).ok


async def test_reservation_expiry_releases_the_hold_and_a_late_settle_is_still_charged(kit: Kit):
    acme = await kit.customer("acme")
    await kit.top_up(acme, "10.00", name="T")
    r = await kit.reserve(acme, "req-late", amount="1.00", ttl_seconds=60)
    kit.clock.advance(seconds=59)
    assert await expire_reservations(kit.db, kit.clock.now) == 0
    kit.clock.advance(seconds=2)
    assert await expire_reservations(kit.db, kit.clock.now) == 1
    assert await expire_reservations(kit.db, kit.clock.now) == 0
    assert await kit.balances(acme) == amounts(
        T="10.00", acme__reserved="0", acme__receivable="0", cash="10.00", promotions="0", revenue="0",
        breakage="0")
    with pytest.raises(ReservationClosedError):
        await kit.release(acme, r.reservation.id)

    # the call did happen: 500 input tokens = 0.50, charged from the lots
    late = await kit.settle(acme, r.reservation.id, input_tokens=500)
    assert (late.status, late.charged, late.released) == ("settled", amounts(x="0.50")["x"], 0)
    assert await kit.balances(acme) == amounts(
        T="9.50", acme__reserved="0", acme__receivable="0", cash="10.00", promotions="0", revenue="0.50",
        breakage="0")
    topics = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT topic FROM outbox WHERE customer_id = :c ORDER BY id"), {"c": acme}))
    assert [t for (t,) in topics] == ["reservation.expired"]
    assert (await kit.verify()).ok


async def test_postpaid_usage_goes_to_the_receivable(kit: Kit):
    beta = await kit.customer("beta", billing="postpaid", overdraft=None)
    r = await kit.reserve(beta, "req-1", input_tokens=1000, max_output_tokens=500)  # 1.00 + 1.00
    assert await kit.balances(beta) == amounts(
        beta__reserved="2.00", beta__receivable="2.00", cash="0", promotions="0", revenue="0", breakage="0")
    await kit.settle(beta, r.reservation.id, input_tokens=1000, output_tokens=350)  # 1.70
    assert await kit.balances(beta) == amounts(
        beta__reserved="0", beta__receivable="1.70", cash="0", promotions="0", revenue="1.70", breakage="0")
    await kit.usage_event(beta, "evt-1", input_tokens=1000)  # post-hoc: 1.00
    assert await kit.balances(beta) == amounts(
        beta__reserved="0", beta__receivable="2.70", cash="0", promotions="0", revenue="2.70", breakage="0")
    assert (await kit.verify()).ok


async def test_overdraft_holds_on_the_receivable_then_blocks_and_a_top_up_pays_it_off(kit: Kit):
    acme = await kit.customer("acme", overdraft="3.00")
    await kit.top_up(acme, "1.00", name="T")
    r = await kit.reserve(acme, "req-1", amount="3.00")  # 1.00 from T, 2.00 on credit
    assert await kit.balances(acme, platform=False) == amounts(T="0", acme__reserved="3.00",
                                                              acme__receivable="2.00")
    # 5.00 used: the 3.00 hold, then 2.00 more on the receivable (settling never fails)
    await kit.settle(acme, r.reservation.id, input_tokens=5000)
    assert await kit.balances(acme) == amounts(
        T="0", acme__reserved="0", acme__receivable="4.00", cash="1.00", promotions="0", revenue="5.00",
        breakage="0")
    wallet = await kit.service.wallet(acme)
    assert wallet.blocked is True
    with pytest.raises(InsufficientFundsError, match="blocked"):
        await kit.reserve(acme, "req-2", amount="0.01")

    # a top-up first pays what is owed for settled usage, then the rest becomes a lot
    topup = await kit.top_up(acme, "10.00", name="T2")
    assert topup.applied_to_receivable == amounts(x="4.00")["x"]
    assert await kit.balances(acme) == amounts(
        T="0", T2="6.00", acme__reserved="0", acme__receivable="0", cash="11.00", promotions="0",
        revenue="5.00", breakage="0")
    assert (await kit.service.wallet(acme)).blocked is False
    topics = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT topic FROM outbox WHERE customer_id = :c ORDER BY id"), {"c": acme}))
    assert [t for (t,) in topics] == ["wallet.blocked", "wallet.unblocked"]
    assert (await kit.verify()).ok


async def test_captures_charge_the_hold_in_steps_and_the_final_one_returns_the_rest(kit: Kit):
    acme = await kit.customer("acme")
    await kit.top_up(acme, "10.00", name="T")
    r = await kit.reserve(acme, "agent-1", amount="5.00")
    c1 = await kit.settle(acme, r.reservation.id, input_tokens=1000, final=False, capture_id="step-1")
    c1_again = await kit.settle(acme, r.reservation.id, input_tokens=1000, final=False, capture_id="step-1")
    assert (c1.status, c1.charged, c1.released) == ("capturing", amounts(x="1.00")["x"], 0)
    assert c1_again.charged == c1.charged and c1_again.entry_id == c1.entry_id
    assert await kit.balances(acme, platform=False) == amounts(T="5.00", acme__reserved="4.00",
                                                              acme__receivable="0")
    c2 = await kit.settle(acme, r.reservation.id, output_tokens=1000, final=True)  # 2.00
    assert (c2.status, c2.charged, c2.released) == ("settled", amounts(x="2.00")["x"], amounts(x="2.00")["x"])
    assert await kit.balances(acme) == amounts(
        T="7.00", acme__reserved="0", acme__receivable="0", cash="10.00", promotions="0", revenue="3.00",
        breakage="0")
    assert (await kit.verify()).ok


async def test_low_balance_alert_fires_once_per_crossing(kit: Kit):
    acme = await kit.customer("acme", low="5.00")
    await kit.top_up(acme, "6.00")
    r = await kit.reserve(acme, "a", amount="2.00")  # available 4.00: low
    await kit.reserve(acme, "b", amount="1.00")  # still low: no second event
    await kit.release(acme, r.reservation.id)  # 5.00: not low any more (re-armed)
    await kit.reserve(acme, "c", amount="0.50")  # low again
    topics = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT topic, payload->>'available' FROM outbox WHERE customer_id = :c ORDER BY id"), {"c": acme}))
    assert [tuple(t) for t in topics] == [("balance.low", "4.00"), ("balance.low", "4.50")]


async def test_graduated_tiers_continue_from_the_customers_usage_earlier_in_the_month(kit: Kit):
    # input: the first 1,000 tokens of a month at $1,000 per million, the rest at $500 per million
    tiered = {"id": f"tiered-{kit.tag}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
        {"id": "x-in", "model": "model-x", "token_type": "input",
         "tiers": [{"up_to": 1000, "price": "1000"}, {"up_to": None, "price": "500"}]}]}
    await kit.db.run(lambda conn: books.add_version(conn, tiered))
    kit.book = tiered["id"]
    beta = await kit.customer("beta", billing="postpaid", overdraft=None)
    november = kit.clock.now
    first = await kit.usage_event(beta, "e1", input_tokens=800, at=november)  # 800 at 0.001
    second = await kit.usage_event(beta, "e2", input_tokens=800, at=november)  # 200 at 0.001 + 600 at 0.0005
    december = await kit.usage_event(beta, "e3", input_tokens=800, at=november.replace(month=12, day=1))
    assert [first.charged, second.charged, december.charged] == [usd("0.80"), usd("0.50"), usd("0.80")]
    assert (await kit.balances(beta))["beta.receivable"] == usd("2.10")
    r = await kit.reserve(beta, "r1", amount="1.00")  # a settle in November continues the tiers too
    settled = await kit.settle(beta, r.reservation.id, input_tokens=100)
    assert settled.charged == usd("0.05")
    assert (await kit.verify()).ok

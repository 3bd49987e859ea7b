"""Over HTTP, with the service's clock set: a re-rate after a close that corrects the close's volume
true-up up takes back what the close gave a lot closed since (a grant revoked in whole, a lot that
expired after the period's end and was swept) from where that lot's money went when it closed
(promotions, breakage), not from the customer's live top-up. The figures are those of
tests/integration/billing/test_closed_lot_take_backs.py, worked by hand there.

Book, model-v output volume-tiered: $20/M to 100,000 tokens, $10/M beyond. November: 60,000 tokens
on the 5th ($1.20), 70,000 on the 20th ($0.80 + $0.30 = $1.10). The close (December 1st): 130,000 x
$10/M = $1.30, true-up -$1.00: $0.60 of the 5th, $0.40 of the 20th, to what paid each."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from ledger.db import connect
from tests.api.apps import api_client
from tests.api.closing import utc
from wallets import chart
from wallets.expiry import expire_grants

ADMIN = {"Authorization": "Bearer tub-admin"}
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
PROMOTIONS, BREAKAGE, REVENUE = (chart.promotions_account("USD"), chart.breakage_account("USD"),
                                 chart.revenue_account("USD"))


class _Clock:
    def __init__(self, client) -> None:
        self.now = NOV_1
        wallets = client.app.state.services.wallets
        wallets.clock = wallets.engine.clock = lambda: self.now

    def at(self, month: int, day: int, hour: int = 12) -> None:
        self.now = datetime(2026, month, day, hour, tzinfo=UTC)


def _book(book: str, version: str, low: str, high: str) -> dict:
    """v1 in force since 2026-01-01; v2, the fix, from November 1st."""
    since = "2026-01-01T00:00:00Z" if version == "v1" else utc(NOV_1)
    return {"id": book, "version": version, "currency": "USD", "effective_from": since, "rules": [
        {"id": "v-out", "model": "model-v", "token_type": "output", "tier_mode": "volume",
         "tiers": [{"up_to": 100_000, "price": low}, {"up_to": None, "price": high}]}]}


async def _ok(answer, status: int = 201) -> dict:
    assert answer.status_code == status, answer.text
    return answer.json()


async def _event(c, clock: _Clock, cid: str, tokens: int) -> None:
    sent = await _ok(await c.post("/v1/usage-events", headers=ADMIN, json=[{
        "event_id": uuid.uuid4().hex, "customer_id": cid, "model": "model-v", "timestamp": utc(clock.now),
        "usage": {"input_tokens": 0, "output_tokens": tokens}}]), 200)
    assert sent["accepted"] == 1, sent


async def _balances(c) -> dict[str, Decimal]:
    """Every account's credits less debits (the trial balance's, balanced)."""
    trial = await _ok(await c.get("/v1/audit/trial-balance", headers=ADMIN, params={"currency": "USD"}), 200)
    assert trial["balanced"] and trial["total_debits"] == trial["total_credits"], trial
    out = {a["account"]: Decimal(a["credits"]) - Decimal(a["debits"]) for a in trial["accounts"]}
    assert sum(out.values()) == 0
    return out


def _moved(before: dict[str, Decimal], after: dict[str, Decimal], *accounts: str) -> tuple[str, ...]:
    return tuple(f"{after.get(a, Decimal(0)) - before.get(a, Decimal(0)):.2f}" for a in accounts)


async def _lots(c, cid: str) -> dict[str, tuple[str, str]]:
    wallet = await _ok(await c.get(f"/v1/customers/{cid}/wallet", headers=ADMIN), 200)
    return {g["id"]: (g["kind"], g["remaining"]) for g in wallet["grants"] if Decimal(g["remaining"])}


async def _verified(c) -> None:
    verify = await _ok(await c.post("/v1/audit/verify", headers=ADMIN), 200)
    assert verify["ok"], [x for x in verify["checks"] if not x["ok"]]


async def _rerated(c, clock: _Clock, book: str, low: str, high: str, day: int) -> dict:
    """November re-rated on December `day` to v2 of `book`: `low` $/M to 100,000, `high` beyond."""
    clock.at(12, day)
    await _ok(await c.post("/v1/price-books", headers=ADMIN, json=_book(book, "v2", low, high)))
    return await _ok(await c.post("/v1/rerate", headers=ADMIN, json={
        "price_book": book, "version": "v2", "from": utc(NOV_1), "to": "2026-12-01T00:00:00Z", "mode": "apply"}), 200)


async def _customer(c, cid: str) -> None:
    await _ok(await c.post("/v1/price-books", headers=ADMIN, json=_book(cid, "v1", "20", "10")))
    await _ok(await c.post("/v1/customers", headers=ADMIN, json={"id": cid, "currency": "USD", "price_book": cid}))


async def _close(c, clock: _Clock, cid: str) -> None:
    clock.at(12, 1, 1)
    closed = await _ok(await c.post("/v1/billing/close", headers=ADMIN, json={
        "until": utc(clock.now), "customer_id": cid}), 200)
    assert len(closed["closed"]) == 1, closed


async def test_a_revoked_grant_s_part_of_a_true_up_corrected_up_comes_from_its_revocation(scratch_url) -> None:
    """The top-up ($1.20) pays the 5th, a $5.00 grant (the 6th) the 20th; the close gives $0.60 back
    to the top-up and $0.40 to the grant ($4.30), revoked in whole on December 1st. Re-rated to $18/M
    and $12/M: the top-up $0.60 - $0.12 = $0.48, the grant's $0.16 less its $0.02 from promotions
    (-$0.14), revenue +$0.26. Before: the top-up $0.32, promotions +$0.02."""
    async with api_client(scratch_url, admin="tub-admin") as c:
        clock, cid = _Clock(c), "tub-revoked"
        await _customer(c, cid)
        top_up = (await _ok(await c.post(f"/v1/customers/{cid}/topups", headers=ADMIN, json={"amount": "1.20"})))
        clock.at(11, 5)
        await _event(c, clock, cid, 60_000)
        clock.at(11, 6)
        grant = await _ok(await c.post(f"/v1/customers/{cid}/grants", headers=ADMIN, json={"amount": "5.00"}))
        clock.at(11, 20)
        await _event(c, clock, cid, 70_000)
        await _close(c, clock, cid)
        assert await _lots(c, cid) == {top_up["grant_id"]: ("topup", "0.60"), grant["grant_id"]: ("grant", "4.30")}
        clock.at(12, 1)
        revoked = await _ok(await c.post(f"/v1/customers/{cid}/grants/{grant['grant_id']}/reverse", headers=ADMIN,
                                         json={"reason": "abuse"}))
        assert revoked["amount"] == "4.30", revoked
        before = await _balances(c)
        done = await _rerated(c, clock, cid, "18", "12", 2)
        assert done["delta"] == "0.26", done
        assert await _lots(c, cid) == {top_up["grant_id"]: ("topup", "0.48")}
        after = await _balances(c)
        assert _moved(before, after, PROMOTIONS, REVENUE, BREAKAGE) == ("-0.14", "0.26", "0.00")
        assert after.get(chart.lot_account(cid, grant["grant_id"]), Decimal(0)) == 0
        assert _moved(before, after, chart.lot_account(cid, top_up["grant_id"])) == ("-0.12",)
        await _verified(c)


async def test_what_a_lot_expired_after_the_close_swept_gives_back_a_true_up_corrected_up(scratch_url) -> None:
    """A $1.20 grant expiring December 10th pays the 5th; a $5.00 top-up (the 6th) the 20th ($3.90).
    The close: $0.60 to the grant (live), $0.40 to the top-up ($4.30). December 3rd, 10,000 tokens
    ($0.20) from the grant; swept December 10th with $0.40. Re-rated (the 12th) to $20/M and $15/M:
    the 20th +$0.15 and its $0.20 back from the top-up ($3.95), the 5th's $0.30 from breakage ($0.40
    - $0.30 = $0.10), revenue +$0.65. Before: the top-up $3.65, breakage kept $0.40."""
    async with api_client(scratch_url, admin="tub-admin") as c:
        clock, cid = _Clock(c), "tub-swept"
        await _customer(c, cid)
        await _ok(await c.post(f"/v1/customers/{cid}/grants", headers=ADMIN,
                               json={"amount": "1.20", "expires_at": "2026-12-10T00:00:00Z"}))
        clock.at(11, 5)
        await _event(c, clock, cid, 60_000)
        clock.at(11, 6)
        top_up = (await _ok(await c.post(f"/v1/customers/{cid}/topups", headers=ADMIN, json={"amount": "5.00"})))
        clock.at(11, 20)
        await _event(c, clock, cid, 70_000)
        await _close(c, clock, cid)
        clock.at(12, 3)
        await _event(c, clock, cid, 10_000)
        db = connect(scratch_url, pool_size=1)
        try:
            assert await expire_grants(db, now=datetime(2026, 12, 10, 12, tzinfo=UTC)) == 1
        finally:
            await db.dispose()
        before = await _balances(c)
        assert (await _lots(c, cid), before[BREAKAGE]) == ({top_up["grant_id"]: ("topup", "4.30")}, Decimal("0.40"))
        done = await _rerated(c, clock, cid, "20", "15", 12)
        assert done["delta"] == "0.65", done
        assert await _lots(c, cid) == {top_up["grant_id"]: ("topup", "3.95")}
        after = await _balances(c)
        assert _moved(before, after, BREAKAGE, REVENUE, PROMOTIONS) == ("-0.30", "0.65", "0.00")
        await _verified(c)

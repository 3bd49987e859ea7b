"""A grant revoked in whole is closed for good: what comes back to it afterwards (a re-rate's money
back, a hold released or settled below it) goes to the promotions account the revocation credited,
revoked again, never to the lot. Before, a grant revoked for abuse took a re-rate's money back and
a released hold's piece into the lot and was spendable again. A grant revoked in part stays open,
and a top-up refunded in whole takes back what is the customer's."""
from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import create_engine, text

from api.runtime import sync_url
from migrations import runner
from tests.api.apps import api_client
from wallets.periods import Cycle, period_of

ADMIN = {"Authorization": "Bearer rvk-admin"}
CYCLE = Cycle("UTC", None)


def utc(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def _book(c, version: str, effective_from: str, price: str) -> None:
    made = await c.post("/v1/price-books", headers=ADMIN, json={
        "id": "rvk", "version": version, "currency": "USD", "effective_from": effective_from,
        "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": price}]})
    assert made.status_code == 201, made.text


async def _setup(c, cid: str) -> None:
    created = await c.post("/v1/customers", headers=ADMIN, json={"id": cid, "currency": "USD", "price_book": "rvk"})
    assert created.status_code == 201, created.text


async def _credit(c, cid: str, what: str, amount: str) -> str:
    answer = await c.post(f"/v1/customers/{cid}/{what}", headers=ADMIN, json={"amount": amount})
    assert answer.status_code == 201, answer.text
    return answer.json()["grant_id"]


async def _reverse(c, cid: str, lot: str, body: dict | None = None):
    return await c.post(f"/v1/customers/{cid}/grants/{lot}/reverse", headers=ADMIN, json=body or {})


async def _available(c, cid: str) -> str:
    return (await c.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()["available"]


async def _verified(c) -> None:
    verify = (await c.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verify["ok"], [x for x in verify["checks"] if not x["ok"]]


async def test_a_re_rates_money_back_to_a_grant_revoked_in_whole_is_revoked_again(scratch_url) -> None:
    async with api_client(scratch_url, admin="rvk-admin") as c:
        period = period_of(datetime.now(UTC), CYCLE)
        await _book(c, "v1", "2026-01-01T00:00:00Z", "10")
        for cid in ("rvk-whole", "rvk-part"):
            await _setup(c, cid)
        whole = await _credit(c, "rvk-whole", "grants", "5.00")
        part = await _credit(c, "rvk-part", "grants", "5.00")
        for cid in ("rvk-whole", "rvk-part"):
            sent = await c.post("/v1/usage-events", headers=ADMIN, json=[{  # $1.00 from the grant
                "event_id": "e1", "customer_id": cid, "model": "model-a", "timestamp": utc(datetime.now(UTC)),
                "usage": {"input_tokens": 100_000, "output_tokens": 0}}])
            assert sent.json()["accepted"] == 1, sent.text
        revoked = await _reverse(c, "rvk-whole", whole, {"reason": "abuse"})
        assert revoked.status_code == 201 and revoked.json()["amount"] == "4.00", revoked.text
        kept = await _reverse(c, "rvk-part", part, {"amount": "3.00"})
        assert kept.status_code == 201, kept.text
        await _book(c, "v2", utc(period.start), "5")  # the $1.00 call re-rated to $0.50
        applied = await c.post("/v1/rerate", headers=ADMIN, json={
            "price_book": "rvk", "version": "v2", "from": utc(period.start), "to": utc(period.end), "mode": "apply"})
        assert applied.status_code == 200, applied.text
        # the revoked grant stays closed: nothing to spend, its money back revoked again
        assert await _available(c, "rvk-whole") in ("0", "0.00")
        upcoming = (await c.get("/v1/customers/rvk-whole/invoices/upcoming", headers=ADMIN)).json()
        assert (upcoming["grants"], upcoming["grants_revoked"]) == ("5.00", "4.50"), upcoming
        again = await _reverse(c, "rvk-whole", whole)
        assert (again.status_code, again.json()["code"]) == (409, "grant_closed"), again.text
        # revoked in part: still open, the money back is the lot's
        assert await _available(c, "rvk-part") == "1.50"
        upcoming = (await c.get("/v1/customers/rvk-part/invoices/upcoming", headers=ADMIN)).json()
        assert upcoming["grants_revoked"] == "3.00", upcoming
        await _verified(c)


async def test_a_hold_released_or_settled_below_it_after_a_whole_revocation_is_revoked_again(scratch_url) -> None:
    async with api_client(scratch_url, admin="rvk-admin") as c:
        await _book(c, "v1", "2026-01-01T00:00:00Z", "10")
        await _setup(c, "rvk-held")
        promo = await _credit(c, "rvk-held", "grants", "5.00")
        holds = []
        for request in ("r1", "r2"):
            held = await c.post("/v1/reservations", headers=ADMIN, json={
                "customer_id": "rvk-held", "request_id": request, "model": "model-a", "amount": "2.00"})
            assert held.status_code == 201, held.text
            holds.append(held.json()["id"])
        revoked = await _reverse(c, "rvk-held", promo, {"reason": "abuse"})
        assert revoked.status_code == 201 and revoked.json()["amount"] == "1.00", revoked.text
        released = await c.post(f"/v1/reservations/{holds[0]}/release", headers=ADMIN)
        assert released.status_code == 200, released.text
        settled = await c.post(f"/v1/reservations/{holds[1]}/settle", headers=ADMIN,
                               json={"usage": {"input_tokens": 50_000, "output_tokens": 0}})  # $0.50 of $2.00
        assert settled.status_code == 200, settled.text
        assert await _available(c, "rvk-held") in ("0", "0.00")
        again = await _reverse(c, "rvk-held", promo)
        assert (again.status_code, again.json()["code"]) == (409, "grant_closed"), again.text
        upcoming = (await c.get("/v1/customers/rvk-held/invoices/upcoming", headers=ADMIN)).json()
        assert (upcoming["grants"], upcoming["grants_revoked"]) == ("5.00", "4.50"), upcoming
        await _verified(c)


async def test_a_top_up_refunded_in_whole_takes_back_what_a_re_rate_gives_the_customer(scratch_url) -> None:
    async with api_client(scratch_url, admin="rvk-admin") as c:
        period = period_of(datetime.now(UTC), CYCLE)
        await _book(c, "v1", "2026-01-01T00:00:00Z", "10")
        await _setup(c, "rvk-paid")
        paid = await _credit(c, "rvk-paid", "topups", "5.00")
        sent = await c.post("/v1/usage-events", headers=ADMIN, json=[{
            "event_id": "e1", "customer_id": "rvk-paid", "model": "model-a", "timestamp": utc(datetime.now(UTC)),
            "usage": {"input_tokens": 100_000, "output_tokens": 0}}])
        assert sent.json()["accepted"] == 1, sent.text
        refunded = await _reverse(c, "rvk-paid", paid, {"reference": "re_1"})
        assert refunded.status_code == 201 and refunded.json()["amount"] == "4.00", refunded.text
        await _book(c, "v2", utc(period.start), "5")
        applied = await c.post("/v1/rerate", headers=ADMIN, json={
            "price_book": "rvk", "version": "v2", "from": utc(period.start), "to": utc(period.end), "mode": "apply"})
        assert applied.status_code == 200, applied.text
        assert await _available(c, "rvk-paid") == "0.50"  # the customer paid for that usage: theirs
        upcoming = (await c.get("/v1/customers/rvk-paid/invoices/upcoming", headers=ADMIN)).json()
        assert upcoming["refunds"] == "4.00", upcoming
        await _verified(c)



async def test_migration_0048_closes_the_grants_already_revoked_in_whole(scratch_url) -> None:
    async with api_client(scratch_url, admin="rvk-admin") as c:
        await _book(c, "v1", "2026-01-01T00:00:00Z", "10")
        await _setup(c, "rvk-old")
        whole = await _credit(c, "rvk-old", "grants", "5.00")
        held = await c.post("/v1/reservations", headers=ADMIN, json={
            "customer_id": "rvk-old", "request_id": "r1", "model": "model-a", "amount": "2.00"})
        assert held.status_code == 201, held.text
        part = await _credit(c, "rvk-old", "grants", "5.00")
        assert (await _reverse(c, "rvk-old", whole)).json()["amount"] == "3.00"
        assert (await _reverse(c, "rvk-old", part, {"amount": "3.00"})).status_code == 201
    engine = create_engine(sync_url(scratch_url))
    try:
        with engine.connect() as conn:  # the schema before 0048 recorded no revocation: 0048 finds it
            config = runner.alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0047")
            conn.commit()
            command.upgrade(config, "head")
            conn.commit()
            closed = conn.execute(text("SELECT id FROM lots WHERE revoked_at IS NOT NULL")).scalars().all()
    finally:
        engine.dispose()
    assert closed == [whole]
    async with api_client(scratch_url, admin="rvk-admin") as c:
        released = await c.post(f"/v1/reservations/{held.json()['id']}/release", headers=ADMIN)
        assert released.status_code == 200, released.text
        assert await _available(c, "rvk-old") == "2.00"  # the part revoked grant's; the hold was revoked again
        await _verified(c)

"""Two different calls on one customer at once: each sees the other's effect wholly or not at
all, as one run after the other would. Over real HTTP (the `live` server): litestar's
AsyncTestClient answers one request at a time (each call blocks the test's event loop until the
app has answered it), so asyncio.gather over it sends nothing at once."""
from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import psycopg
import pytest

from ledger.db import lock_key
from tests.advisory_locks import waiting_on_a_lock
from tests.api.closing import close_early
from tests.api.test_sdk_durability import ADMIN
from wallets.engine import customer_lock, lane_lock
from wallets.expiry import expire_grants

USAGE = {"input_tokens": 1000, "output_tokens": 400}  # $0.010 + $0.008 + $0.01 a call = $0.028


async def test_overrides_put_without_a_time_never_take_effect_before_a_call_already_charged_without_them(
        live: tuple[str, str], tag: str, database_url: str):
    """A PUT of a customer's overrides without `effective_from` takes effect "now". Here it waits
    for its transaction (another session holds the customer's lane lock, and the lock the PUT
    took alone before: "price-overrides:<customer>") while a call is reserved and settled: the
    call is charged as the version in force at its reservation says (100 % off once in force),
    whichever commits first. Before, the version took effect from when the PUT arrived, 60 ms
    before the call's reservation, and the call, charged before the version committed, paid
    full price ($0.028 for 0.00): a new version changed which version rated usage already
    charged, with nothing to tell a re-rate was due."""
    url, book = live
    cid = f"ovr-{tag}-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60) as client:
        await _race(client, cid, book, database_url)


async def _race(client: httpx.AsyncClient, cid: str, book: str, database_url: str) -> None:
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other:
        lane = (await (await other.execute("SELECT ledger_lane(%s)", (cid,))).fetchone())[0]
        held = [lane_lock(lane), lock_key("price-overrides:" + cid)]
        for key in held:
            await other.execute("SELECT pg_advisory_lock(%s)", (key,))
        put = asyncio.create_task(client.put(f"/v1/customers/{cid}/price-overrides",
                                             json={"discounts": [{"id": "all", "percent": "100"}]}))
        await waiting_on_a_lock(other)
        await other.execute("SELECT pg_advisory_unlock(%s)", (held[0],))
        reserved = await client.post("/v1/reservations", json={
            "customer_id": cid, "request_id": "r1", "model": "model-a", "amount": "0.10"})
        assert reserved.status_code == 201, reserved.text
        settled = await client.post(f"/v1/reservations/{reserved.json()['id']}/settle", json={"usage": USAGE})
        assert settled.status_code == 200, settled.text
        await other.execute("SELECT pg_advisory_unlock(%s)", (held[1],))
        answered = await asyncio.wait_for(put, 30)
    assert answered.status_code == 201, answered.text
    in_force_from = datetime.fromisoformat(answered.json()["effective_from"])
    reserved_at = datetime.fromisoformat((await client.get(f"/v1/reservations/{reserved.json()['id']}")).json()
                                         ["created_at"])
    expected = "0.00" if reserved_at >= in_force_from else "0.028"
    assert settled.json()["charged"] == expected, (in_force_from, reserved_at, settled.json()["charged"])


async def test_calls_sent_at_once_through_the_http_fixture_are_in_the_app_together(http, database_url: str):
    """What every race here stands on. Three PUTs of one customer's overrides, each waiting for the
    customer's locks (held by another session), are seen by PostgreSQL waiting together: three
    calls in the app at once. Through litestar's AsyncTestClient the first call blocks the test's
    event loop until it is answered, so the second is never sent (and here the first is never
    answered: the lock is released only after the wait)."""
    c, book = http
    cid = await _customer(c, book)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other:
        lane = (await (await other.execute("SELECT ledger_lane(%s)", (cid,))).fetchone())[0]
        held = [lane_lock(lane), customer_lock(cid)]
        for key in held:
            await other.execute("SELECT pg_advisory_lock(%s)", (key,))
        puts = [asyncio.create_task(c.put(f"/v1/customers/{cid}/price-overrides",
                                          json={"discounts": [{"id": "all", "percent": str(p)}]}))
                for p in (10, 20, 30)]
        await waiting_on_a_lock(other, sessions=3)
        for key in held:
            await other.execute("SELECT pg_advisory_unlock(%s)", (key,))
        answers = await asyncio.wait_for(asyncio.gather(*puts), 60)
    assert [a.status_code for a in answers] == [201] * 3, [a.text for a in answers]


async def _customer(c: httpx.AsyncClient, book: str, topup: str | None = "10.00", **extra: str) -> str:
    cid = f"race-{uuid.uuid4().hex[:10]}"
    assert (await c.post("/v1/customers", json={"id": cid, "price_book": book, **extra})).status_code == 201
    if topup:
        assert (await c.post(f"/v1/customers/{cid}/topups", json={"amount": topup})).status_code == 201
    return cid


async def _reserve(c: httpx.AsyncClient, cid: str, amount: str = "0.10") -> httpx.Response:
    return await c.post("/v1/reservations", json={"customer_id": cid, "request_id": uuid.uuid4().hex,
                                                  "model": "model-a", "amount": amount})


async def _verified(c: httpx.AsyncClient) -> None:
    checks = (await c.post("/v1/audit/verify")).json()["checks"]
    assert all(check["ok"] for check in checks), [check for check in checks if not check["ok"]]


async def test_a_release_a_settle_and_an_extension_of_one_reservation_at_once_close_it_once(http):
    c, book = http
    cid = await _customer(c, book)
    rids = [(await _reserve(c, cid)).json()["id"] for _ in range(20)]
    calls = []
    for i, rid in enumerate(rids):
        trio = [c.post(f"/v1/reservations/{rid}/release"),
                c.post(f"/v1/reservations/{rid}/settle", json={"usage": USAGE}),
                c.post(f"/v1/reservations/{rid}/extend", json={"ttl_seconds": 900})]
        calls += trio[i % 3:] + trio[:i % 3]  # each call first for some reservations
    answers = await asyncio.gather(*calls)
    assert {a.status_code for a in answers} <= {200, 409}, [a.text for a in answers if a.status_code not in (200, 409)]
    assert all(a.json()["code"] == "reservation_closed" for a in answers if a.status_code == 409)
    statuses = [(await c.get(f"/v1/reservations/{rid}")).json()["status"] for rid in rids]
    assert set(statuses) <= {"settled", "released"}
    closing = [a for a in answers if a.status_code == 200 and a.json().get("status") in ("settled", "released")]
    assert len(closing) == 20  # one release or settle each: the other is reservation_closed
    wallet = (await c.get(f"/v1/customers/{cid}/wallet")).json()
    assert Decimal(wallet["available"]) == Decimal("10.00") - statuses.count("settled") * Decimal("0.028")
    assert Decimal(wallet["reserved"]) == 0
    await _verified(c)


async def test_a_bulk_settle_and_single_settles_of_the_same_reservations_at_once_charge_each_once(http):
    c, book = http
    cid = await _customer(c, book)
    rids = [(await _reserve(c, cid)).json()["id"] for _ in range(30)]
    bulk = c.post("/v1/settlements", json=[{"reservation_id": r, "usage": USAGE} for r in rids])
    answers = await asyncio.gather(bulk, *(c.post(f"/v1/reservations/{r}/settle", json={"usage": USAGE}) for r in rids))
    for item, single in zip(answers[0].json()["results"], answers[1:], strict=True):
        assert (item["status"], single.status_code) == (200, 200), (item, single.text)  # one of them a replay
        assert item["body"] == single.json()
    wallet = (await c.get(f"/v1/customers/{cid}/wallet")).json()
    assert Decimal(wallet["available"]) == Decimal("10.00") - 30 * Decimal("0.028")
    await _verified(c)


@pytest.mark.parametrize("at", [5, 20])
async def test_a_budget_created_while_holds_are_taken_is_never_passed_by_those_after_it(http, at: int):
    c, book = http
    cid = await _customer(c, book, topup="100.00")
    calls = [_reserve(c, cid, "0.50") for _ in range(40)]
    calls.insert(at, c.post("/v1/budgets", json={"customer_id": cid, "window": "month", "metric": "money",
                                                 "limit": "3.00", "mode": "hard"}))
    answers = await asyncio.gather(*calls)
    budget = answers.pop(at)
    assert budget.status_code == 201, budget.text
    assert {a.status_code for a in answers} <= {201, 429}
    seen = (await c.get(f"/v1/budgets/{budget.json()['id']}")).json()
    # it counts every hold of its month, those taken before it too (README, Budgets), and those
    # after it only while they fit: past 3.00 only by what was held when it was made
    held = Decimal("0.50") * sum(a.status_code == 201 for a in answers)
    assert (Decimal(seen["held"]), Decimal(seen["used"])) == (held, 0), seen
    assert held <= max(Decimal("3.00"), Decimal(budget.json()["held"])), (seen, budget.json())
    await _verified(c)


async def test_two_budgets_made_at_once_while_calls_are_held_and_settled_each_count_every_call(http):
    # two budgets of the customer made at once while holds are taken and earlier ones settled: each
    # counts every call of its month once (the closed in its before: row, the open in their own,
    # whatever it was made between), none twice or missed, whichever order the lane ran them in
    c, book = http
    cid = await _customer(c, book, topup="100.00")
    early = [(await _reserve(c, cid, "0.50")).json()["id"] for _ in range(12)]
    for rid in early[:4]:  # closed before either budget
        assert (await c.post(f"/v1/reservations/{rid}/settle", json={"usage": USAGE})).status_code == 200
    calls = [_reserve(c, cid, "0.50") for _ in range(24)]
    calls[6:6] = [c.post(f"/v1/reservations/{rid}/settle", json={"usage": USAGE}) for rid in early[4:]]
    calls.insert(5, c.post("/v1/budgets", json={"customer_id": cid, "window": "month", "metric": "money",
                                                "limit": "50.00", "mode": "hard"}))
    calls.insert(20, c.post("/v1/budgets", json={"customer_id": cid, "window": "lifetime", "metric": "money",
                                                 "limit": "50.00"}))
    answers = await asyncio.gather(*calls)
    made = [answers.pop(20), answers.pop(5)]
    assert [m.status_code for m in made] == [201, 201], [m.text for m in made]
    assert {a.status_code for a in answers} == {200, 201}, {a.status_code for a in answers}
    for m in made:  # 12 calls settled at $0.028, 24 holds of $0.50 open
        seen = (await c.get(f"/v1/budgets/{m.json()['id']}")).json()
        assert (Decimal(seen["used"]), Decimal(seen["held"])) == (Decimal("0.336"), Decimal("12.00")), seen
    await _verified(c)


async def test_a_budget_lowered_then_deleted_while_holds_are_taken_refuses_only_past_its_limit(http):
    c, book = http
    cid = await _customer(c, book, topup="100.00")
    made = await c.post("/v1/budgets", json={"customer_id": cid, "window": "month", "metric": "money",
                                             "limit": "10.00", "mode": "hard"})
    bid = made.json()["id"]
    calls = [_reserve(c, cid, "0.50") for _ in range(40)]
    calls.insert(10, c.patch(f"/v1/budgets/{bid}", json={"limit": "2.00"}))
    answers = await asyncio.gather(*calls)
    assert answers.pop(10).status_code == 200
    assert {a.status_code for a in answers} <= {201, 429}
    held = Decimal((await c.get(f"/v1/budgets/{bid}")).json()["held"])
    assert held <= Decimal("10.00")
    calls = [_reserve(c, cid, "0.50") for _ in range(20)]
    calls.insert(5, c.delete(f"/v1/budgets/{bid}"))
    answers = await asyncio.gather(*calls)
    assert answers.pop(5).status_code == 200
    assert {a.status_code for a in answers} <= {201, 429}
    assert (await _reserve(c, cid, "0.50")).status_code == 201  # deleted: it refuses nothing more
    await _verified(c)


async def test_a_close_racing_usage_events_and_settles_bills_each_call_once_on_it_or_the_next(http):
    c, book = http
    cid = await _customer(c, book, topup=None, billing="postpaid")
    rids = [(await _reserve(c, cid)).json()["id"] for _ in range(15)]
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    calls = [c.post("/v1/usage-events", json=[{"event_id": f"e{i}", "customer_id": cid, "model": "model-a",
                                                "timestamp": now, "usage": USAGE}]) for i in range(15)]
    calls = [x for pair in zip(calls, (c.post(f"/v1/reservations/{r}/settle", json={"usage": USAGE})
                                       for r in rids), strict=True) for x in pair]
    answers = await asyncio.gather(*calls[:15], close_early(c, {}, cid), *calls[15:])
    answers.pop(15)
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    [invoice] = (await c.get(f"/v1/customers/{cid}/invoices")).json()["invoices"]
    upcoming = (await c.get(f"/v1/customers/{cid}/invoices/upcoming")).json()
    assert Decimal(invoice["total"]) + Decimal(upcoming["total"]) == 30 * Decimal("0.028")
    await _verified(c)


async def test_settles_and_releases_racing_the_grant_expiry_job_send_the_expired_grant_s_rest_to_breakage(http, db):
    c, book = http
    cid = await _customer(c, book, topup="1.00")
    # Expiring minutes away, so all 16 reservations are taken while the grant is live however slow
    # the box; the job is then run at the expiry (the clock it reads), raced against the calls.
    ends = datetime.now(UTC) + timedelta(minutes=5)
    granted = await c.post(f"/v1/customers/{cid}/grants", json={
        "amount": "2.00", "priority": 10, "expires_at": ends.isoformat().replace("+00:00", "Z")})
    assert granted.status_code == 201, granted.text
    rids = [(await _reserve(c, cid)).json()["id"] for _ in range(16)]
    wallet = (await c.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["reserved"]) == ("1.40", "1.60")  # 16 x 0.10 held from the grant's 2.00
    calls = [c.post(f"/v1/reservations/{r}/settle", json={"usage": USAGE}) if i % 2 else
             c.post(f"/v1/reservations/{r}/release") for i, r in enumerate(rids)]
    answers = await asyncio.gather(*calls[:8], expire_grants(db, now=ends), *calls[8:])
    assert answers.pop(8) >= 1  # this grant, and any other test's left due
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    wallet = (await c.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["reserved"]) == ("1.00", "0.00")  # the top-up only: the grant is gone
    await _verified(c)

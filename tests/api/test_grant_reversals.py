"""POST /v1/customers/{id}/grants/{grant_id}/reverse: a top-up refunded (lot -> platform cash), a
grant revoked (lot -> platform promotions), of what is left of the lot and not held. Before, there
was no way to: a Stripe refund left the customer its credit, and `audit reconcile` said clean."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from alembic import command
from sqlalchemy import NullPool, create_engine

from api.runtime import sync_url
from ledger.db import connect
from migrations import runner
from tests.api.apps import api_client
from tests.api.closing import close_invoice
from wallets import store
from wallets.expiry import expire_grants

# Webhook endpoints made here are deleted after each test (tests/conftest.py): left enabled on the
# session's database, every later file's events were handed to them, for hosts nothing here reaches.
pytestmark = pytest.mark.usefixtures("no_endpoint_left")


def _cid(prefix: str = "rev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def _customer(client, cid: str, headers: dict[str, str] | None = None, **extra) -> None:
    created = await client.post("/v1/customers", headers=headers, json={"id": cid, "price_book": None, **extra})
    assert created.status_code == 201, created.text


async def _credit(client, cid: str, what: str, amount: str, headers: dict[str, str] | None = None, **extra) -> str:
    answer = await client.post(f"/v1/customers/{cid}/{what}", headers=headers, json={"amount": amount, **extra})
    assert answer.status_code == 201, answer.text
    return answer.json()["grant_id"]


def _reverse(client, cid: str, lot: str, body: dict | None = None, **kw):
    return client.post(f"/v1/customers/{cid}/grants/{lot}/reverse", json=body or {}, **kw)


async def test_a_top_up_is_refunded_in_part_then_in_whole(client) -> None:
    cid = _cid()
    await _customer(client, cid)
    lot = await _credit(client, cid, "topups", "10.00", reference="pi_1")
    part = await _reverse(client, cid, lot, {"amount": "4.00", "reason": "asked", "reference": "re_1"})
    assert part.status_code == 201, part.text
    body = part.json()
    assert (body["grant_id"], body["reversal"], body["amount"], body["currency"]) == (lot, "refund", "4.00", "USD")
    assert (body["reason"], body["reference"]) == ("asked", "re_1") and isinstance(body["entry_id"], int)
    assert body["grant"]["remaining"] == "6.00" and body["wallet"]["available"] == "6.00"
    whole = await _reverse(client, cid, lot)
    assert whole.status_code == 201 and whole.json()["amount"] == "6.00", whole.text
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert wallet["available"] in ("0", "0.00") and wallet["grants"] == []
    journal = (await client.get(f"/v1/journal?customer={cid}")).json()["entries"]
    assert [e["kind"] for e in journal].count("grant_reversal") == 2


async def test_a_grant_is_revoked_and_the_wallet_answers_as_a_grant_call_does(client) -> None:
    cid = _cid()
    await _customer(client, cid)
    kept = await _credit(client, cid, "topups", "3.00")
    promo = await _credit(client, cid, "grants", "5.00", reason="welcome")
    answer = await _reverse(client, cid, promo, {"reason": "abuse"})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["reversal"], body["amount"], body["grant"]["kind"]) == ("revocation", "5.00", "grant")
    assert [g["id"] for g in body["wallet"]["grants"]] == [kept] and body["wallet"]["available"] == "3.00"


@pytest.mark.parametrize(
    ("amount", "status", "code"),
    [
        ("10.01", 409, "exceeds_remaining"),
        ("0.001", 422, "invalid_amount"),
        ("0", 422, "validation_error"),
        ("-1.00", 422, "validation_error"),
        ("abc", 422, "validation_error"),
    ],
)
async def test_a_bad_amount_is_refused_and_moves_nothing(client, amount, status, code) -> None:
    cid = _cid()
    await _customer(client, cid)
    lot = await _credit(client, cid, "topups", "10.00")
    refused = await _reverse(client, cid, lot, {"amount": amount})
    assert (refused.status_code, refused.json()["code"]) == (status, code), refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    if code == "exceeds_remaining":
        assert (refused.json()["available"], refused.json()["asked"]) == ("10.00", "10.01")
    assert (await client.get(f"/v1/customers/{cid}/wallet")).json()["available"] == "10.00"


async def test_only_what_is_not_held_can_be_reversed(client, live) -> None:
    cid = _cid()
    await _customer(client, cid, price_book=live[1])
    lot = await _credit(client, cid, "topups", "10.00")
    held = await client.post(
        "/v1/reservations", json={"customer_id": cid, "request_id": "r1", "model": "model-a", "amount": "3.00"}
    )
    assert held.status_code == 201, held.text
    refused = await _reverse(client, cid, lot, {"amount": "7.50"})
    assert refused.status_code == 409 and refused.json()["available"] == "7.00", refused.text
    assert (await _reverse(client, cid, lot)).json()["amount"] == "7.00"
    emptied = await _reverse(client, cid, lot)
    assert (emptied.status_code, emptied.json()["code"]) == (409, "grant_closed"), emptied.text
    released = await client.post(f"/v1/reservations/{held.json()['id']}/release")
    assert released.status_code == 200, released.text
    assert (await _reverse(client, cid, lot)).json()["amount"] == "3.00"  # the hold came back to the lot


async def test_an_unknown_lot_and_another_customers_lot_are_not_found(client) -> None:
    mine, theirs = _cid(), _cid()
    await _customer(client, mine)
    await _customer(client, theirs)
    their_lot = await _credit(client, theirs, "topups", "5.00")
    for cid, lot in ((mine, their_lot), (mine, "lot_unknown"), ("nobody-here", their_lot)):
        refused = await _reverse(client, cid, lot)
        assert (refused.status_code, refused.json()["code"]) == (404, "not_found"), refused.text
    assert (await client.get(f"/v1/customers/{theirs}/wallet")).json()["available"] == "5.00"


async def test_an_idempotency_key_replays_the_first_reversal_and_refuses_another_body(client) -> None:
    cid = _cid()
    await _customer(client, cid)
    lot = await _credit(client, cid, "topups", "10.00")
    key = {"Idempotency-Key": f"k-{cid}"}
    first = await _reverse(client, cid, lot, {"amount": "2.00"}, headers=key)
    again = await _reverse(client, cid, lot, {"amount": "2.00"}, headers=key)
    assert first.status_code == again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.content == first.content
    other = await _reverse(client, cid, lot, {"amount": "3.00"}, headers=key)
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict")
    assert (await client.get(f"/v1/customers/{cid}/wallet")).json()["available"] == "8.00"


async def test_a_refund_reference_sent_again_is_refunded_once(client) -> None:
    """A refund's `reference` is the processor's refund id (re_...): one refund is paid out once,
    as a top-up's payment reference is credited once and a cash refund's is paid once. A $10.00
    top-up refunded $3.00 under re_1, then re_1 again (a retried webhook, no Idempotency-Key):
    the second answers the first (200, its entry), the lot keeps $7.00 where $4.00 was left and
    $6.00 paid out; re_1 for $2.00 is 409 idempotency_conflict, and on another lot too."""
    cid = _cid()
    await _customer(client, cid)
    lot = await _credit(client, cid, "topups", "10.00", reference="pi_r1")
    other = await _credit(client, cid, "topups", "5.00", reference="pi_r2")
    first = await _reverse(client, cid, lot, {"amount": "3.00", "reference": "re_1"})
    assert first.status_code == 201, first.text
    again = await _reverse(client, cid, lot, {"amount": "3.00", "reference": "re_1"})
    assert again.status_code == 200, again.text
    assert (again.json()["entry_id"], again.json()["amount"], again.json()["grant"]["remaining"]) == (
        first.json()["entry_id"], "3.00", "7.00")
    for lot_id, amount in ((lot, "2.00"), (other, "3.00")):
        refused = await _reverse(client, cid, lot_id, {"amount": amount, "reference": "re_1"})
        assert (refused.status_code, refused.json()["code"]) == (409, "idempotency_conflict"), refused.text
    assert (await client.get(f"/v1/customers/{cid}/wallet")).json()["available"] == "12.00"
    journal = (await client.get(f"/v1/journal?customer={cid}&kind=grant_reversal")).json()["entries"]
    assert len(journal) == 1


async def test_an_admin_key_limited_to_customers_reverses_only_theirs(client) -> None:
    mine, theirs = _cid(), _cid()
    for cid in (mine, theirs):
        await _customer(client, cid)
    my_lot, their_lot = await _credit(client, mine, "topups", "5.00"), await _credit(client, theirs, "topups", "5.00")
    made = await client.post("/v1/api-keys", json={"scope": "admin", "customers": [mine]})
    assert made.status_code == 201, made.text
    limited = {"Authorization": f"Bearer {made.json()['key']}"}
    assert (await _reverse(client, mine, my_lot, {"amount": "1.00"}, headers=limited)).status_code == 201
    refused = await _reverse(client, theirs, their_lot, headers=limited)
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), refused.text
    for key in ("scope", "auditor"), ("scope", "inference"):
        other = await client.post("/v1/api-keys", json={key[0]: key[1], "customers": [mine]})
        denied = await _reverse(client, mine, my_lot, headers={"Authorization": f"Bearer {other.json()['key']}"})
        assert denied.status_code == 403, denied.text
    assert (await client.get(f"/v1/customers/{theirs}/wallet")).json()["available"] == "5.00"


async def test_a_webhook_endpoint_may_subscribe_to_reversals(client) -> None:
    made = await client.post(
        "/v1/webhook-endpoints", json={"url": "https://hooks.example.com/rev", "topics": ["grant.reversed"]}
    )
    assert made.status_code == 201, made.text


async def test_a_reversal_racing_reserves_on_the_same_lot_never_takes_it_below_zero(http) -> None:
    """Over real HTTP: 16 holds of $0.50 and two reversals (one of $5.00, one of all that is left)
    on a $10.00 lot, sent at once. Whatever order they commit in, the money adds up to the cent."""
    client, book = http
    cid = _cid("rev-race")
    await _customer(client, cid, price_book=book)
    lot = await _credit(client, cid, "topups", "10.00")
    holds = [
        client.post(
            "/v1/reservations", json={"customer_id": cid, "request_id": f"r{i}", "model": "model-a", "amount": "0.50"}
        )
        for i in range(16)
    ]
    answers = await asyncio.gather(
        *holds[:8], _reverse(client, cid, lot, {"amount": "5.00"}), *holds[8:], _reverse(client, cid, lot)
    )
    reversals = [answers[8], answers[-1]]
    reserves = answers[:8] + answers[9:-1]
    assert {a.status_code for a in reserves} <= {201, 402}, [a.text for a in reserves]
    assert {a.status_code for a in reversals} <= {201, 409}, [a.text for a in reversals]
    held = Decimal("0.50") * sum(a.status_code == 201 for a in reserves)
    given_back = sum(Decimal(a.json()["amount"]) for a in reversals if a.status_code == 201)
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert Decimal(wallet["available"]) >= 0 and Decimal(wallet["reserved"]) == held
    assert Decimal(wallet["available"]) + held + given_back == Decimal("10.00")
    assert given_back > 0  # the one asking for what is left always finds something, or took it all before
    journal = (await client.get(f"/v1/journal?customer={cid}")).json()["entries"]
    assert sum(e["kind"] == "grant_reversal" for e in journal) == sum(a.status_code == 201 for a in reversals)


ADMIN = {"Authorization": "Bearer rev-admin"}


@pytest.fixture
async def own(scratch_url):
    """A database of the test's own: verify looks at every customer, expiry at every lot."""
    async with api_client(scratch_url, admin="rev-admin", books=[{
            "id": "book-rev", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
            "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "1000"}]}]) as c:
        yield c, scratch_url


async def test_verify_is_ok_after_a_close_whose_period_has_a_refund_and_a_revocation(own) -> None:
    client, url = own
    cid = "rev-close"
    await _customer(client, cid, ADMIN, price_book="book-rev")
    paid = await _credit(client, cid, "topups", "10.00", ADMIN)
    promo = await _credit(client, cid, "grants", "5.00", ADMIN)
    used = await client.post(
        "/v1/usage-events",
        headers=ADMIN,
        json=[
            {  # $1.00, from the grant first
                "event_id": "e1",
                "customer_id": cid,
                "model": "model-a",
                "timestamp": datetime.now(UTC).isoformat(),
                "usage": {"input_tokens": 1000, "output_tokens": 0},
            }
        ],
    )
    assert used.json()["accepted"] == 1, used.text
    usage_before = (await client.get(f"/v1/customers/{cid}/usage", headers=ADMIN)).json()
    assert (
        await _reverse(client, cid, paid, {"amount": "2.50", "reference": "re_1"}, headers=ADMIN)
    ).status_code == 201
    assert (await _reverse(client, cid, promo, {"amount": "1.00"}, headers=ADMIN)).status_code == 201
    assert (await client.get(f"/v1/customers/{cid}/usage", headers=ADMIN)).json() == usage_before
    upcoming = (await client.get(f"/v1/customers/{cid}/invoices/upcoming", headers=ADMIN)).json()
    assert (upcoming["refunds"], upcoming["grants_revoked"]) == ("2.50", "1.00"), upcoming
    invoice = await close_invoice(client, ADMIN, cid)
    assert (invoice["top_ups"], invoice["grants"]) == ("10.00", "5.00")
    assert (invoice["refunds"], invoice["grants_revoked"], invoice["total"]) == ("2.50", "1.00", "1.00")
    # 15.00 in, 1.00 spent, 3.50 given back: 10.50 left
    assert invoice["closing_balance"]["credits"] == "10.50", invoice["closing_balance"]
    verify = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]
    # a grant past its expiry and swept: its remainder is breakage's, not to be given back
    soon = await _credit(
        client, cid, "grants", "2.00", ADMIN, expires_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
    )
    db = connect(url, pool_size=1)
    try:
        assert await expire_grants(db, now=datetime.now(UTC) + timedelta(hours=2)) == 1
    finally:
        await db.dispose()
    expired = await _reverse(client, cid, soon, headers=ADMIN)
    assert (expired.status_code, expired.json()["code"], expired.json()["state"]) == (409, "grant_closed", "expired")
    verify = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]
    # the lot's row still refuses any change by hand: its remaining is its account's balance alone
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RestrictViolation):
            await conn.execute("UPDATE lots SET granted = granted - 1 WHERE id = %s", (paid,))


async def test_one_refund_reference_sent_at_once_to_two_servers_is_paid_out_once(client, database_url) -> None:
    """Two apps (two servers: an engine each, their lanes apart in memory, one in the database) on one
    database, each sent the $3.00 refund under re_1 of a $10.00 top-up three times at once, with
    re_2's $2.00 refund of that lot and re_2 for $2.00 of another $5.00 top-up: one re_1 is 201, the
    five others 200 with its entry; one re_2 is 201 and the other 409 idempotency_conflict (another
    lot); $5.00 paid out in two entries: the lots keep 10.00 - 3.00 - 2.00 = 5.00 and 5.00, or
    10.00 - 3.00 = 7.00 and 5.00 - 2.00 = 3.00: 10.00 available in either case."""
    cid = _cid()
    await _customer(client, cid)
    lot = await _credit(client, cid, "topups", "10.00", reference="pi_c1")
    other = await _credit(client, cid, "topups", "5.00", reference="pi_c2")
    async with api_client(database_url, send_admin=True) as second:
        sends = [_reverse(c, cid, lot, {"amount": "3.00", "reference": "re_1"}) for c in (client, second) * 3]
        sends += [_reverse(client, cid, lot, {"amount": "2.00", "reference": "re_2"}),
                  _reverse(second, cid, other, {"amount": "2.00", "reference": "re_2"})]
        answers = await asyncio.wait_for(asyncio.gather(*sends), timeout=120)
    re_1, re_2 = answers[:6], answers[6:]
    assert sorted(a.status_code for a in re_1) == [200] * 5 + [201], [a.text for a in re_1]
    assert len({a.json()["entry_id"] for a in re_1}) == 1 and {a.json()["amount"] for a in re_1} == {"3.00"}
    assert sorted(a.status_code for a in re_2) == [201, 409], [a.text for a in re_2]
    refused = next(a for a in re_2 if a.status_code == 409).json()
    assert (refused["code"], refused["reference"]) == ("idempotency_conflict", "re_2")
    assert (await client.get(f"/v1/customers/{cid}/wallet")).json()["available"] == "10.00"
    journal = (await client.get(f"/v1/journal?customer={cid}&kind=grant_reversal")).json()["entries"]
    assert len(journal) == 2


def _migrate(url: str, to: str) -> None:
    """Migrate the database at `url` up or down to revision `to`, as `tokentill migrate` does."""
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            config = runner.alembic_config()
            config.attributes["connection"] = conn
            (command.upgrade if to == "head" else command.downgrade)(config, to)
            conn.commit()
    finally:
        engine.dispose()


async def test_a_refund_paid_twice_before_0088_upgrades_verifies_and_is_answered_once_after(own, monkeypatch):
    """A database below 0088 whose rule did not match refund references (store.load_reversals read
    nothing, as before ff7ed4d) paid re_1's $3.00 of a $10.00 top-up twice: the lot at 4.00. The
    upgrade to 0088 leaves the second entry out of its index (no failure), audit verify is ok, and
    re_1 sent again is answered with the first entry (200), nothing posted: still 4.00; down to
    0087 and up again holds as well."""
    client, url = own
    cid = "rev-m88"
    await _customer(client, cid, ADMIN)
    lot = await _credit(client, cid, "topups", "10.00", ADMIN, reference="pi_m88")
    body = {"amount": "3.00", "reference": "re_1"}
    first = await _reverse(client, cid, lot, body, headers=ADMIN)
    assert first.status_code == 201, first.text
    await asyncio.to_thread(_migrate, url, "0087")
    with monkeypatch.context() as before:
        before.setattr(store, "load_reversals", lambda conn, wanted: asyncio.sleep(0, {}))
        twice = await _reverse(client, cid, lot, body, headers=ADMIN)
    assert twice.status_code == 201 and twice.json()["grant"]["remaining"] == "4.00", twice.text
    for to in ("head", "0087", "head"):
        await asyncio.to_thread(_migrate, url, to)
    verify = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]
    again = await _reverse(client, cid, lot, body, headers=ADMIN)
    assert again.status_code == 200, again.text
    assert (again.json()["entry_id"], again.json()["grant"]["remaining"]) == (first.json()["entry_id"], "4.00")
    journal = (await client.get(f"/v1/journal?customer={cid}&kind=grant_reversal", headers=ADMIN)).json()["entries"]
    assert len(journal) == 2

"""POST /v1/customers/{id}/refunds: cash paid back of credit that is the customer's own cash, an
overpayment. A $10.00 invoice paid by wire and re-rated to $7.00 leaves $3.00 of credit (a paid lot
the re-rate opened); `grants/{id}/reverse` refuses such a lot on purpose (409
`grant_not_reversible`: no cash came in as it), so there was no way to record paying the $3.00 back.
Now a refund debits that credit and credits the platform's cash, one `credit_refund` entry, up to
what is the customer's cash: never credit promotions paid for, never what it owes."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime

import psycopg
import pytest

from ledger.db import connect, sqlstate_of
from ledger.model import JournalEntry, Posting
from ledger.posting import post_now
from tests.api.apps import api_client
from tests.api.closing import close_early, utc
from wallets.core.commands import RefundCredit, Reserve
from wallets.periods import Cycle, following, period_of

ADMIN = {"Authorization": "Bearer cr-admin"}
CYCLE = Cycle("UTC", None)
DOLLAR = 10**9  # atomic units


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="cr-admin") as c:
        yield c


async def _book(client, book: str, version: str, effective_from: str, rule: dict, headers=ADMIN) -> None:
    made = await client.post("/v1/price-books", headers=headers, json={
        "id": book, "version": version, "currency": "USD", "effective_from": effective_from,
        "rules": [{"id": "in", "model": "model-a", "token_type": "input", **rule}]})
    assert made.status_code == 201, made.text


async def _usage(client, cid: str, tokens: list[int], headers=ADMIN, tag: str = "") -> None:
    sent = await client.post("/v1/usage-events", headers=headers, json=[
        {"event_id": f"{cid}-{tag}{i}", "customer_id": cid, "model": "model-a", "timestamp": utc(datetime.now(UTC)),
         "usage": {"input_tokens": n, "output_tokens": 0}} for i, n in enumerate(tokens)])
    assert sent.json()["accepted"] == len(tokens), sent.text


async def _overpaid(client, cid: str, headers=ADMIN) -> dict:
    """$10.00 of usage (1M tokens at $10/M), invoiced, paid by wire (`wire-<cid>`), re-rated to
    $7/M: the $3.00 back is a credit lot, the receivable owing nothing. The invoice."""
    period = period_of(datetime.now(UTC), CYCLE)
    book = f"book-{cid}"
    await _book(client, book, "v1", "2026-01-01T00:00:00Z", {"price": "10"}, headers)
    created = await client.post("/v1/customers", headers=headers, json={
        "id": cid, "currency": "USD", "price_book": book, "billing": "postpaid"})
    assert created.status_code == 201, created.text
    await _usage(client, cid, [1_000_000], headers)
    [closed] = (await close_early(client, headers, cid, period))["closed"]
    paid = await client.post(f"/v1/invoices/{closed['invoice_id']}/payments", headers=headers,
                             json={"amount": "10.00", "reference": f"wire-{cid}"})
    assert paid.status_code == 201, paid.text
    await _book(client, book, "v2", utc(period.start), {"price": "7"}, headers)
    applied = await client.post("/v1/rerate", headers=headers, json={
        "price_book": book, "version": "v2", "from": utc(period.start), "to": utc(period.end), "mode": "apply"})
    assert applied.status_code == 200, applied.text
    [lot] = (await client.get(f"/v1/customers/{cid}/wallet", headers=headers)).json()["grants"]
    assert (lot["kind"], lot["remaining"]) == ("topup", "3.00")
    return (await client.get(f"/v1/invoices/{closed['invoice_id']}", headers=headers)).json()


def _refund(client, cid: str, body: dict, headers=ADMIN, key: str | None = None):
    return client.post(f"/v1/customers/{cid}/refunds", json=body,
                       headers={**headers, **({"Idempotency-Key": key} if key else {})})


async def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`tokentill audit ARGS` against the test's database, off the event loop."""
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "api.cli", "audit", *args], env=env,
                                   capture_output=True, text=True, timeout=120)


async def _refundable(client, cid: str) -> str:
    got = await client.get(f"/v1/customers/{cid}/refundable", headers=ADMIN)
    assert got.status_code == 200, got.text
    assert (got.json()["customer_id"], got.json()["currency"]) == (cid, "USD")
    return got.json()["refundable"]


async def _trial(client) -> dict[str, str]:
    tb = (await client.get("/v1/audit/trial-balance?currency=USD", headers=ADMIN)).json()
    return {a["account"]: a["balance"] for a in tb["accounts"]}


async def _verified(client) -> None:
    verify = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]


async def test_an_invoice_paid_by_wire_and_re_rated_down_pays_the_difference_back_in_cash(client, scratch_url,
                                                                                         tmp_path) -> None:
    invoice = await _overpaid(client, "cr")
    assert (invoice["amount_paid"], invoice["amount_remaining"]) == ("10.00", "0.00")
    [lot] = (await client.get("/v1/customers/cr/wallet", headers=ADMIN)).json()["grants"]
    assert (await _trial(client))["asset:platform:cash:USD"] == "10.00"
    assert await _refundable(client, "cr") == "3.00"

    done = await _refund(client, "cr", {"amount": "3.00", "reference": "wire-out-1", "reason": "re-rated to $7/M"})
    assert done.status_code == 201, done.text
    body = done.json()
    assert (body["customer_id"], body["amount"], body["currency"], body["reference"], body["reason"]) == (
        "cr", "3.00", "USD", "wire-out-1", "re-rated to $7/M")
    assert body["refundable"] == "0.00" and isinstance(body["entry_id"], int) and body["id"].startswith("rfd_")
    assert body["grants"] == [{"grant_id": lot["id"], "amount": "3.00"}]
    assert body["wallet"]["available"] in ("0", "0.00") and body["wallet"]["grants"] == []

    # trial balance: the cash went out, the lot is empty
    trial = await _trial(client)
    assert trial["asset:platform:cash:USD"] == "7.00"
    assert trial.get(f"liability:customer:cr:lot:{lot['id']}", "0.00") in ("0", "0.00")
    # journal and statement: one credit_refund entry, the lot debited, cash credited
    journal = (await client.get("/v1/journal?customer=cr&kind=credit_refund", headers=ADMIN)).json()["entries"]
    [entry] = journal
    assert entry["id"] == body["entry_id"]
    legs = {(p["account"], p["amount"]) for p in entry["postings"]}
    assert legs == {(f"liability:customer:cr:lot:{lot['id']}", "3.00"), ("asset:platform:cash:USD", "-3.00")}, legs
    statement = (await client.get(f"/v1/accounts/liability:customer:cr:lot:{lot['id']}/statement",
                                  headers=ADMIN)).json()
    assert statement["closing_balance"] in ("0", "0.00"), statement
    # the invoice of the period it happened in says so; the paid one still says paid
    upcoming = (await client.get("/v1/customers/cr/invoices/upcoming", headers=ADMIN)).json()
    assert (upcoming["refunds"], upcoming["closing_balance"]["credits"]) == ("3.00", "0.00"), upcoming
    again = (await client.get(f"/v1/invoices/{invoice['id']}", headers=ADMIN)).json()
    assert (again["payment_status"], again["amount_remaining"]) == ("paid", "0.00")
    # the ageing: nothing is owed, and its totals still tie to the receivables
    ageing = (await client.get("/v1/receivables/ageing", headers=ADMIN)).json()
    assert "cr" not in [c["customer_id"] for c in ageing["customers"]]
    # no more to give back
    assert await _refundable(client, "cr") == "0.00"
    more = await _refund(client, "cr", {"amount": "0.01", "reference": "wire-out-2"})
    assert more.status_code == 409, more.text
    assert (more.json()["code"], more.json()["refundable"], more.json()["asked"]) == (
        "exceeds_refundable", "0.00", "0.01")
    await _verified(client)

    # the webhook event
    with psycopg.connect(scratch_url, autocommit=True) as conn:
        events = [(topic, payload["amount"], payload["reference"], payload["refundable"]) for topic, payload in
                  conn.execute("SELECT topic, payload FROM outbox WHERE customer_id = 'cr' AND topic LIKE 'credit.%'")]
    assert events == [("credit.refunded", "3.00", "wire-out-1", "0.00")]

    # Beancount: the refund is a transaction of its own, and the books balance
    env = {**os.environ, "TOKENTILL_DATABASE_URL": scratch_url}
    out = tmp_path / "journal.beancount"
    exported = await _cli(env, "export", "--format", "beancount", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    text = out.read_text()
    assert '"cr" "credit_refund"' in text, text[-2000:]
    # reconcile: the wire in (10.00) and the refund out (-3.00) each match the processor's rows
    payments = tmp_path / "payments.csv"
    payments.write_text("reference,amount,currency\nwire-cr,10.00,USD\nwire-out-1,-3.00,USD\n")
    rec = await _cli(env, "reconcile", "--payments", str(payments))
    assert rec.returncode == 0, rec.stdout + rec.stderr
    # a refund the processor has not made is a difference
    payments.write_text("reference,amount,currency\nwire-cr,10.00,USD\n")
    rec = await _cli(env, "reconcile", "--payments", str(payments))
    assert rec.returncode == 1 and "ONLY IN LEDGER  reference wire-out-1: -3.00 USD" in rec.stdout, rec.stdout


async def test_the_invoice_of_the_period_a_refund_happened_in_bills_it_when_finalized(client) -> None:
    """The wire, the re-rate and the $3.00 paid back all happened in the period after the one
    invoiced; closed, its invoice says payments received 10.00, refunds 3.00, nothing due, credits
    0.00 at its opening (the re-rate's credit came in it) and its close; verify ties the rollup to
    the postings."""
    await _overpaid(client, "cr-next")
    assert (await _refund(client, "cr-next", {"amount": "3.00", "reference": "wire-out"})).status_code == 201
    [closed] = (await close_early(client, ADMIN, "cr-next", following(period_of(datetime.now(UTC), CYCLE),
                                                                       CYCLE)))["closed"]
    invoice = (await client.get(f"/v1/invoices/{closed['invoice_id']}", headers=ADMIN)).json()
    assert (invoice["refunds"], invoice["amount_due"], invoice["payments_received"]) == ("3.00", "0.00", "10.00")
    assert (invoice["opening_balance"]["credits"], invoice["closing_balance"]["credits"]) == ("0.00", "0.00")
    page = await client.get(f"/v1/invoices/{closed['invoice_id']}", headers={**ADMIN, "Accept": "text/html"})
    assert page.status_code == 200 and "Credit refunded in cash" in page.text, page.text[-3000:]
    await _verified(client)


async def test_more_than_the_overpaid_cash_is_refused_and_nothing_is_posted(client) -> None:
    await _overpaid(client, "cr-more")
    asked = await _refund(client, "cr-more", {"amount": "3.01", "reference": "x"})
    assert asked.status_code == 409 and asked.headers["content-type"].startswith("application/problem+json")
    assert (asked.json()["code"], asked.json()["refundable"], asked.json()["asked"]) == (
        "exceeds_refundable", "3.00", "3.01")
    part = await _refund(client, "cr-more", {"amount": "1.25", "reference": "part-1"})
    assert part.status_code == 201 and part.json()["refundable"] == "1.75", part.text
    journal = (await client.get("/v1/journal?customer=cr-more&kind=credit_refund", headers=ADMIN)).json()
    assert len(journal["entries"]) == 1
    assert (await _trial(client))["asset:platform:cash:USD"] == "8.75"
    await _verified(client)


async def _promotion_s_true_up(client, cid: str) -> None:
    """Prepaid, a $100.00 promotional grant and no cash: 2M tokens graduated $10/M then $8/M
    are $18.00 from the grant; the close's volume true-up ($16.00) gives $2.00 back to the grant,
    which paid the usage ($84.00; it was a paid lot of $2.00, no cash behind it)."""
    period = period_of(datetime.now(UTC), CYCLE)
    await _book(client, f"vol-{cid}", "v1", "2026-01-01T00:00:00Z", {
        "tier_mode": "volume", "tiers": [{"up_to": 1_000_000, "price": "10"}, {"up_to": None, "price": "8"}]})
    assert (await client.post("/v1/customers", headers=ADMIN, json={
        "id": cid, "currency": "USD", "price_book": f"vol-{cid}"})).status_code == 201
    granted = await client.post(f"/v1/customers/{cid}/grants", headers=ADMIN, json={"amount": "100.00"})
    assert granted.status_code == 201, granted.text
    await _usage(client, cid, [1_000_000, 1_000_000])
    await close_early(client, ADMIN, cid, period)
    lots = (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()["grants"]
    assert sorted((g["kind"], g["remaining"]) for g in lots) == [("grant", "84.00")]


async def test_credit_promotions_paid_for_is_not_refunded_as_cash(client) -> None:
    await _promotion_s_true_up(client, "promo")
    refused = await _refund(client, "promo", {"amount": "2.00", "reference": "x"})
    assert refused.status_code == 409, refused.text
    assert (refused.json()["code"], refused.json()["refundable"]) == ("exceeds_refundable", "0.00")
    assert await _refundable(client, "promo") == "0.00"
    assert (await _trial(client)).get("asset:platform:cash:USD", "0.00") in ("0", "0.00")


async def test_the_database_refuses_a_refund_entry_of_credit_without_cash_or_not_a_correction_s(
        client, scratch_url) -> None:
    """Posted by hand, past the wallet rule: credit a correction opened with no cash behind it paid
    out as cash, and a paid top-up's credit paid out as a credit refund (its refund is a reversal)
    are each refused at commit (check_violation, each by its own check), nothing posted. The close's
    true-up no longer opens credit of promotion-paid usage (it goes back to the grant); such a lot,
    as closes before that left them, is made by hand: the promotion's lot recorded as opened by the
    close's true-up entry."""
    await _promotion_s_true_up(client, "promo-db")
    [lot] = (await client.get("/v1/customers/promo-db/wallet", headers=ADMIN)).json()["grants"]
    legacy = psycopg.connect(scratch_url, autocommit=True)
    legacy.execute("SET session_replication_role = replica")  # past the lots' own guard, and back after
    [(opener,)] = legacy.execute("SELECT entry_id FROM lots WHERE customer_id = 'promo-db'").fetchall()
    legacy.execute("""UPDATE lots SET kind = 'topup', entry_id = (
                          SELECT id FROM journal_entries WHERE customer_id = 'promo-db' AND kind = 'volume_true_up')
                       WHERE customer_id = 'promo-db'""")
    made = await client.post("/v1/customers", headers=ADMIN, json={"id": "tu-db", "price_book": None})
    assert made.status_code == 201, made.text
    topped = await client.post("/v1/customers/tu-db/topups", headers=ADMIN, json={"amount": "10.00"})
    db = connect(scratch_url, pool_size=1)
    try:
        for cid, lot_id, amount, why in (("promo-db", lot["id"], 2, "more cash than it paid in"),
                                         ("tu-db", topped.json()["grant_id"], 2, "is not credit a correction gave")):
            entry = JournalEntry(f"by-hand:{cid}", "credit_refund", (
                Posting(f"liability:customer:{cid}:lot:{lot_id}", amount * DOLLAR, "USD"),
                Posting("asset:platform:cash:USD", -amount * DOLLAR, "USD")), customer_id=cid)
            with pytest.raises(Exception) as refused:
                await post_now(db, entry)
            assert sqlstate_of(refused.value) == "23514" and why in str(refused.value), refused.value
    finally:
        await db.dispose()
        legacy.execute("UPDATE lots SET kind = 'grant', entry_id = %s WHERE customer_id = 'promo-db'", (opener,))
        legacy.close()
    for cid in ("promo-db", "tu-db"):
        journal = (await client.get(f"/v1/journal?customer={cid}&kind=credit_refund", headers=ADMIN)).json()
        assert journal["entries"] == []
    await _verified(client)


async def test_the_database_refuses_a_refund_entry_paying_out_cash_still_in_a_top_up(client, scratch_url) -> None:
    """Net cash in is not the bound: what is still the customer's as its paid top-ups' credit, held
    or owed is not overpaid. The promotion's $2.00 lot made by hand as a close's (above), and a
    $10.00 top-up, unspent: $10.00 of cash in, all of it still in the top-up, so `refundable` is
    $0.00 (10.00 - 10.00). A $2.00 `credit_refund` of the lot posted by hand left net cash at
    $8.00 >= 0, and the database took it; now it is refused at commit (check_violation), nothing
    posted, as the API's bound refuses it."""
    await _promotion_s_true_up(client, "promo-cash")
    grant = (await client.get("/v1/customers/promo-cash/wallet", headers=ADMIN)).json()["grants"][0]["id"]
    topped = await client.post("/v1/customers/promo-cash/topups", headers=ADMIN, json={"amount": "10.00"})
    assert topped.status_code == 201, topped.text
    legacy = psycopg.connect(scratch_url, autocommit=True)
    legacy.execute("SET session_replication_role = replica")  # past the lots' own guard, and back after
    [(opener,)] = legacy.execute("SELECT entry_id FROM lots WHERE id = %s", (grant,)).fetchall()
    legacy.execute("""UPDATE lots SET kind = 'topup', entry_id = (
                          SELECT id FROM journal_entries WHERE customer_id = 'promo-cash' AND kind = 'volume_true_up')
                       WHERE id = %s""", (grant,))
    db = connect(scratch_url, pool_size=1)
    try:
        assert await _refundable(client, "promo-cash") == "0.00"
        entry = JournalEntry("by-hand:promo-cash", "credit_refund", (
            Posting(f"liability:customer:promo-cash:lot:{grant}", 2 * DOLLAR, "USD"),
            Posting("asset:platform:cash:USD", -2 * DOLLAR, "USD")), customer_id="promo-cash")
        with pytest.raises(Exception) as refused:
            await post_now(db, entry)
        assert sqlstate_of(refused.value) == "23514" and "still its own" in str(refused.value), refused.value
    finally:
        await db.dispose()
        legacy.execute("UPDATE lots SET kind = 'grant', entry_id = %s WHERE id = %s", (opener, grant))
        legacy.close()
    journal = (await client.get("/v1/journal?customer=promo-cash&kind=credit_refund", headers=ADMIN)).json()
    assert journal["entries"] == []
    await _verified(client)


async def test_the_database_refuses_a_refund_entry_taking_from_an_expired_lot(client, scratch_url) -> None:
    """0054 checked that a refund's lot is one a correction opened, not that it is live, as
    `refundable` counts it: the $3.00 a re-rate gave back of an invoice paid by wire, its lot
    past its expiry (not yet swept), is refundable 0.00, yet a $2.00 `credit_refund` of it posted
    by hand (net cash $8.00 in, nothing in top-ups, held or owed) was taken. Now it is refused at
    commit (check_violation, naming the lot), nothing posted."""
    await _overpaid(client, "cr-expired")
    assert await _refundable(client, "cr-expired") == "3.00"
    [lot] = (await client.get("/v1/customers/cr-expired/wallet", headers=ADMIN)).json()["grants"]
    legacy = psycopg.connect(scratch_url, autocommit=True)
    legacy.execute("SET session_replication_role = replica")  # past the lots' own guard, and back after
    legacy.execute("UPDATE lots SET expires_at = now() - interval '1 hour' WHERE id = %s", (lot["id"],))
    db = connect(scratch_url, pool_size=1)
    try:
        assert await _refundable(client, "cr-expired") == "0.00"
        entry = JournalEntry("by-hand:cr-expired", "credit_refund", (
            Posting(f"liability:customer:cr-expired:lot:{lot['id']}", 2 * DOLLAR, "USD"),
            Posting("asset:platform:cash:USD", -2 * DOLLAR, "USD")), customer_id="cr-expired")
        with pytest.raises(Exception) as refused:
            await post_now(db, entry)
        assert sqlstate_of(refused.value) == "23514" and "is not a live lot" in str(refused.value), refused.value
        assert f"lot:{lot['id']}" in str(refused.value)
    finally:
        await db.dispose()
        legacy.execute("UPDATE lots SET expires_at = NULL WHERE id = %s", (lot["id"],))
        legacy.close()
    journal = (await client.get("/v1/journal?customer=cr-expired&kind=credit_refund", headers=ADMIN)).json()
    assert journal["entries"] == []
    assert await _refundable(client, "cr-expired") == "3.00"
    await _verified(client)


async def test_credit_a_later_charge_spent_is_not_refunded(client) -> None:
    """The $3.00 back, then $3.50 more usage (500,000 tokens at $7/M): it spends the credit first and owes $0.50."""
    await _overpaid(client, "cr-spent")
    await _usage(client, "cr-spent", [500_000], tag="later-")
    refused = await _refund(client, "cr-spent", {"amount": "0.01", "reference": "x"})
    assert refused.status_code == 409, refused.text
    assert (refused.json()["code"], refused.json()["refundable"]) == ("exceeds_refundable", "0.00")


async def test_a_paid_top_up_s_cash_is_not_refunded_here_but_through_its_reversal(client) -> None:
    """A top-up is the customer's cash, but it has its own refund (grants/{id}/reverse, which
    reconciles against the processor's refund of that charge): this endpoint gives back only the
    credit corrections made of cash already spent."""
    assert (await client.post("/v1/customers", headers=ADMIN, json={"id": "tu", "price_book": None})).status_code == 201
    assert (await client.post("/v1/customers/tu/topups", headers=ADMIN, json={"amount": "10.00"})).status_code == 201
    refused = await _refund(client, "tu", {"amount": "1.00", "reference": "x"})
    assert (refused.status_code, refused.json()["code"], refused.json()["refundable"]) == (
        409, "exceeds_refundable", "0.00")


async def test_bad_refunds_are_clear_problems(client) -> None:
    await _overpaid(client, "cr-bad")
    cases = [({"amount": "0", "reference": "x"}, 422, "validation_error"),
             ({"amount": "-1.00", "reference": "x"}, 422, "validation_error"),
             ({"amount": "1.005", "reference": "x"}, 422, "invalid_amount"),
             ({"amount": "1.00"}, 422, "validation_error"),  # a refund names the payout (reconcile matches it)
             ({"amount": "1.00", "reference": "x", "currency": "EUR"}, 422, "currency_mismatch"),
             ({"amount": "1.00", "reference": "x", "colour": "red"}, 422, "validation_error")]
    for body, status, code in cases:
        answer = await _refund(client, "cr-bad", body)
        assert (answer.status_code, answer.json()["code"]) == (status, code), (body, answer.text)
    missing = await _refund(client, "nobody", {"amount": "1.00", "reference": "x"})
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    missing = await client.get("/v1/customers/nobody/refundable", headers=ADMIN)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    key = await client.post("/v1/api-keys", headers=ADMIN, json={"scope": "customer:cr-bad"})
    own = {"Authorization": f"Bearer {key.json()['key']}"}
    assert (await _refund(client, "cr-bad", {"amount": "1.00", "reference": "x"}, own)).status_code == 403
    wallet = (await client.get("/v1/customers/cr-bad/wallet", headers=ADMIN)).json()
    assert wallet["available"] == "3.00"  # nothing posted


async def test_a_refund_replays_by_its_idempotency_key(client) -> None:
    await _overpaid(client, "cr-idem")
    first = await _refund(client, "cr-idem", {"amount": "2.00", "reference": "wire-out"}, key="k-1")
    again = await _refund(client, "cr-idem", {"amount": "2.00", "reference": "wire-out"}, key="k-1")
    assert (first.status_code, again.status_code) == (201, 201) and first.json() == again.json()
    other = await _refund(client, "cr-idem", {"amount": "1.00", "reference": "wire-out"}, key="k-1")
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict")
    journal = (await client.get("/v1/journal?customer=cr-idem&kind=credit_refund", headers=ADMIN)).json()
    assert len(journal["entries"]) == 1
    assert (await _trial(client))["asset:platform:cash:USD"] == "8.00"


async def test_a_refund_in_another_currency_under_a_known_idempotency_key_is_refused_as_such(client) -> None:
    """$3.00 overpaid; $2.00 refunded under key k-1. The same refund in EUR under k-1 was 409
    idempotency_conflict (the key looked up in Batch.apply, which re-decided only a body refused
    as validation_error or invalid_amount); now 422 currency_mismatch, as under a new key. The
    first body again replays its 201; one refund entry, the cash 10.00 - 2.00 = 8.00."""
    await _overpaid(client, "cr-cur")
    body = {"amount": "2.00", "reference": "wire-out"}
    first = await _refund(client, "cr-cur", body, key="k-1")
    assert first.status_code == 201, first.text
    other = await _refund(client, "cr-cur", {**body, "currency": "EUR"}, key="k-1")
    assert (other.status_code, other.json()["code"]) == (422, "currency_mismatch"), other.text
    again = await _refund(client, "cr-cur", body, key="k-1")
    assert (again.status_code, again.headers.get("idempotent-replayed"), again.json()) == (201, "true", first.json())
    journal = (await client.get("/v1/journal?customer=cr-cur&kind=credit_refund", headers=ADMIN)).json()
    assert len(journal["entries"]) == 1
    assert (await _trial(client))["asset:platform:cash:USD"] == "8.00"


async def test_the_same_reference_again_is_the_same_refund(client, scratch_url) -> None:
    """As an invoice payment's: a payout sent again under its reference (a retry without an
    Idempotency-Key) answers the first refund, 200 with Idempotent-Replayed: true (a guard: so it
    was), nothing posted; another amount is a conflict.
    The database refuses a second refund entry under one reference of a customer (23505)."""
    await _overpaid(client, "cr-ref")
    body = {"amount": "2.00", "reference": "wire-out-9", "reason": "re-rated"}
    first, again = await _refund(client, "cr-ref", body), await _refund(client, "cr-ref", body)
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert (first.headers.get("idempotent-replayed"), again.headers.get("idempotent-replayed")) == (None, "true")
    keys = ("id", "entry_id", "amount", "reference", "reason", "grants", "refundable")
    assert [again.json()[k] for k in keys] == [first.json()[k] for k in keys]
    assert again.json()["refundable"] == "1.00"
    other = await _refund(client, "cr-ref", {"amount": "1.00", "reference": "wire-out-9"})
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict")
    journal = (await client.get("/v1/journal?customer=cr-ref&kind=credit_refund", headers=ADMIN)).json()
    assert len(journal["entries"]) == 1
    assert (await _trial(client))["asset:platform:cash:USD"] == "8.00"
    lot_id = first.json()["grants"][0]["grant_id"]
    db = connect(scratch_url, pool_size=1)
    try:
        entry = JournalEntry("by-hand:cr-ref", "credit_refund", (
            Posting(f"liability:customer:cr-ref:lot:{lot_id}", DOLLAR // 2, "USD"),
            Posting("asset:platform:cash:USD", -(DOLLAR // 2), "USD")), customer_id="cr-ref",
            metadata={"reference": "wire-out-9"})
        with pytest.raises(Exception) as refused:
            await post_now(db, entry)
        assert sqlstate_of(refused.value) == "23505", refused.value
    finally:
        await db.dispose()


async def test_two_refunds_of_the_last_three_dollars_at_once_one_wins(http) -> None:
    """Over real HTTP, sent together: the customer's lock queues them; the second finds nothing."""
    client, _ = http
    cid = f"cr-race-{datetime.now(UTC).strftime('%H%M%S%f')}"
    headers = dict(client.headers)
    await _overpaid(client, cid, headers)
    answers = await asyncio.gather(*(_refund(client, cid, {"amount": "3.00", "reference": f"race-{i}"}, headers)
                                     for i in range(2)))
    assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
    [lost] = [a for a in answers if a.status_code == 409]
    assert (lost.json()["code"], lost.json()["refundable"]) == ("exceeds_refundable", "0.00")
    journal = (await client.get(f"/v1/journal?customer={cid}&kind=credit_refund")).json()
    assert len(journal["entries"]) == 1
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert wallet["available"] in ("0", "0.00")


async def test_a_refund_and_a_hold_sent_together_ride_one_batch_and_are_both_right(client) -> None:
    """A cash refund was exclusive, alone among its customer's commands in a batch, so a reserve sent
    with it (a hold tightens what is refundable: held credit is not paid back) split the batch: two
    transactions. Now the refund is decided first among them, on the wallet as loaded (as alone), and
    the hold after it. $3.00 of overpaid credit: the refund pays 2.00 back (1.00 refundable left), then
    the $1.00 hold takes the 1.00 left of the lot; the platform's cash 10.00 - 2.00 = 8.00."""
    await _overpaid(client, "cr-batch")
    engine = client.app.state.services.wallets.engine
    sizes: list[int] = []
    run = engine.execute

    async def counted(commands, **kw):
        sizes.append(len(commands))
        return await run(commands, **kw)

    engine.execute = counted
    hold = Reserve(customer_id="cr-batch", request_id="r-together", request_hash=b"r-together", model="model-a",
                   ttl_seconds=300, amount=DOLLAR)
    refund = RefundCredit(customer_id="cr-batch", amount=2 * DOLLAR, reference="together")
    # Sent together: both queued before a flusher takes its batch. The hold first waits for its
    # book, a lookup when it was last found current over FRESH_SECONDS (1 s) ago, as on a loaded
    # box (made so here on any box), and meanwhile the refund's flusher took the refund alone
    # ([1, 1]); so every in-flight slot is held until both are in the lane's queue, as batches
    # under way would hold them.
    engine.books._current_at.clear()
    slots, taken = engine._slots, 0
    try:
        for _ in range(engine._in_flight):
            await slots.acquire()
            taken += 1
        together = asyncio.gather(engine.submit(hold), engine.submit(refund))
        for _ in range(100_000):  # the book's lookup: milliseconds, at most a minute or so on a loaded box
            if together.done() or sum(c.customer_id == "cr-batch" for q in engine._queues.values() for c, _ in q) == 2:
                break
            await asyncio.sleep(0.001)
    finally:
        for _ in range(taken):
            slots.release()
    held, refunded = await together
    assert sizes == [2]  # one batch (before: [1, 1])
    assert (refunded.amount, refunded.refundable) == (2 * DOLLAR, DOLLAR)
    assert (held.reservation.status, held.reservation.amount) == ("held", DOLLAR)
    wallet = (await client.get("/v1/customers/cr-batch/wallet", headers=ADMIN)).json()
    assert (wallet["available"], wallet["reserved"], wallet["receivable"]) == ("0.00", "1.00", "0.00")
    assert await _refundable(client, "cr-batch") == "0.00"
    assert (await _trial(client))["asset:platform:cash:USD"] == "8.00"
    await _verified(client)


async def test_one_refund_reference_is_one_payout_across_refunds_and_top_up_reversals(client, scratch_url) -> None:
    """A refund's reference names one payout at the processor or bank (`audit reconcile` matches
    it to one refund row, and two ledger entries under it are a duplicate), whichever way it was
    paid out: a refund of overpaid credit or a top-up's refund. $3.00 overpaid credit (a $10.00
    invoice paid by wire, re-rated to $7.00) and a $10.00 top-up: $1.00 refunded under re_x, then
    the top-up reversed for $2.00 under re_x is 409 idempotency_conflict naming `reference` (before:
    201, $2.00 more cash out under one refund id); the top-up reversed for $2.00 under re_y, then
    a $1.00 refund under re_y is 409 too. Cash: $10.00 wire + $10.00 top-up - $1.00 - $2.00 = 17.00.
    The database refuses a top-up refund entry by hand under re_x (23505)."""
    cid = "cr-cross"
    await _overpaid(client, cid)
    topped = await client.post(f"/v1/customers/{cid}/topups", headers=ADMIN,
                               json={"amount": "10.00", "reference": "pi_cross"})
    assert topped.status_code == 201, topped.text
    lot = topped.json()["grant_id"]

    def reverse(amount: str, reference: str):
        return client.post(f"/v1/customers/{cid}/grants/{lot}/reverse", headers=ADMIN,
                           json={"amount": amount, "reference": reference})

    assert (await _refund(client, cid, {"amount": "1.00", "reference": "re_x"})).status_code == 201
    refused = await reverse("2.00", "re_x")
    assert (refused.status_code, refused.json()["code"], refused.json().get("reference")) == (
        409, "idempotency_conflict", "re_x"), refused.text
    assert (await reverse("2.00", "re_y")).status_code == 201
    refused = await _refund(client, cid, {"amount": "1.00", "reference": "re_y"})
    assert (refused.status_code, refused.json()["code"], refused.json().get("reference")) == (
        409, "idempotency_conflict", "re_y"), refused.text
    assert (await _trial(client))["asset:platform:cash:USD"] == "17.00"
    db = connect(scratch_url, pool_size=1)
    try:
        entry = JournalEntry("by-hand:cr-cross", "grant_reversal", (
            Posting(f"liability:customer:{cid}:lot:{lot}", DOLLAR // 2, "USD"),
            Posting("asset:platform:cash:USD", -(DOLLAR // 2), "USD")), customer_id=cid,
            metadata={"lot_id": lot, "reversal": "refund", "reason": "", "reference": "re_x"})
        with pytest.raises(Exception) as refused_by_hand:
            await post_now(db, entry)
        assert sqlstate_of(refused_by_hand.value) == "23505", refused_by_hand.value
    finally:
        await db.dispose()
    await _verified(client)


async def test_a_refund_finer_than_a_cent_under_a_known_reference_is_invalid_not_a_conflict(client) -> None:
    """$3.00 overpaid ($10.00 paid by wire, re-rated to $7.00); $1.00 refunded under re_1. "3.001"
    under re_1 (more digits than the dollar's two) was 409 idempotency_conflict, the reference
    looked up before the amount was checked: now 422 invalid_amount naming amount. "1.00" under
    re_1 again is 200, the first refund; "2.00" under it 409. Refundable: 3.00 - 1.00 = 2.00."""
    await _overpaid(client, "cr-order")
    first = await _refund(client, "cr-order", {"amount": "1.00", "reference": "re_1"})
    assert first.status_code == 201, first.text
    finer = await _refund(client, "cr-order", {"amount": "3.001", "reference": "re_1"})
    assert (finer.status_code, finer.json()["code"], [f["field"] for f in finer.json()["fields"]]) == (
        422, "invalid_amount", ["amount"]), finer.text
    again = await _refund(client, "cr-order", {"amount": "1.00", "reference": "re_1"})
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"]), again.text
    other = await _refund(client, "cr-order", {"amount": "2.00", "reference": "re_1"})
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict"), other.text
    refundable = (await client.get("/v1/customers/cr-order/refundable", headers=ADMIN)).json()
    assert refundable["refundable"] == "2.00"

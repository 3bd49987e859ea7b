"""A volume tier's true-up at close re-prices the period's units at the tier they reached; a
customer's discount covers it as it covered the usage it trues up. Book: model-v output,
volume-tiered: up to 1M at $20/M, beyond at $10/M. 600,000 then 700,000 tokens are rated
graduated as they come (1M x $20/M + 300,000 x $10/M = $23.00); at close all 1.3M are at the
$10/M tier reached ($13.00): a true-up of -$10.00 at the book's price."""
from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.api.apps import api_client
from tests.api.closing import utc
from wallets.periods import Cycle, period_of

ADMIN = {"Authorization": "Bearer vol-admin"}
DOLLAR = 10 ** 9  # atomic units (9 decimals)
BOOK = f"vol-{uuid.uuid4().hex[:8]}"
RULES = [{"id": "v-out", "model": "model-v", "token_type": "output", "tier_mode": "volume",
          "tiers": [{"up_to": 1_000_000, "price": "20"}, {"up_to": None, "price": "10"}]}]
# dearer beyond 1M: 600,000 + 700,000 rated 1M x $10/M + 300,000 x $20/M = $16.00, at close all
# 1.3M at the $20/M tier reached ($26.00): a true-up of +$10.00
DEARER = f"vol-d-{uuid.uuid4().hex[:8]}"
DEARER_RULES = [{"id": "d-out", "model": "model-v", "token_type": "output", "tier_mode": "volume",
                 "tiers": [{"up_to": 1_000_000, "price": "10"}, {"up_to": None, "price": "20"}]}]


@pytest.fixture(scope="module")
async def client(database_url):
    async with api_client(database_url, admin="vol-admin", books=[
            {"id": BOOK, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": RULES},
            {"id": DEARER, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": DEARER_RULES}]) as c:
        yield c


async def add_book(client, book: str, rules: list[dict]) -> None:
    """A USD price book `book` of `rules`, in force since 2026-01-01."""
    made = await client.post("/v1/price-books", headers=ADMIN, json={
        "id": book, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": rules})
    assert made.status_code == 201, made.text


async def new_version(client, book: str, rules: list[dict]) -> int:
    """A version of `book` with `rules`, in force since 2026-01-02 (before the usage: a re-rate's
    target); its number."""
    v2 = await client.post("/v1/price-books", headers=ADMIN, json={
        "id": book, "currency": "USD", "effective_from": "2026-01-02T00:00:00Z", "rules": rules})
    assert v2.status_code == 201, v2.text
    return (await client.get(f"/v1/price-books/{book}", headers=ADMIN)).json()["versions"][-1]["version"]


async def new_customer(client, book: str) -> str:
    """A postpaid USD customer on `book`; its id."""
    cid = f"vol-{uuid.uuid4().hex[:10]}"
    made = await client.post("/v1/customers", headers=ADMIN, json={
        "id": cid, "currency": "USD", "price_book": book, "billing": "postpaid"})
    assert made.status_code == 201, made.text
    return cid


async def send(client, cid: str, event_id: str, model: str, at: datetime, output_tokens: int) -> None:
    """One usage event of `output_tokens` of `model` at `at`, accepted."""
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": event_id, "customer_id": cid, "model": model, "timestamp": utc(at),
         "usage": {"output_tokens": output_tokens}}])
    assert sent.json()["accepted"] == 1, sent.text


async def rerate_applied(client, book: str, version: int, cid: str, since: datetime, until: datetime):
    """`cid`'s charges from `since` to `until` re-rated to `book`'s `version`, applied without errors;
    the answer."""
    applied = await client.post("/v1/rerate", headers=ADMIN, json={
        "price_book": book, "version": version, "from": utc(since), "to": utc(until),
        "customer_id": cid, "mode": "apply"})
    assert applied.status_code == 200 and applied.json()["errors"] == [], applied.text
    return applied


async def wallet_of(client, cid: str) -> dict:
    return (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()


async def verified(client) -> None:
    """/v1/audit/verify passes, each failed check shown where not."""
    answer = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert answer["ok"], [c for c in answer["checks"] if not c["ok"]]


async def closed_invoice(client, overrides: dict, book: str = BOOK) -> tuple[dict, dict]:
    """The invoice of a postpaid customer with `overrides` in force, who used model-v as above,
    and its wallet after the close; the upcoming invoice just before the close showed the same."""
    cid = await new_customer(client, book)
    now = datetime.now(UTC)
    put = await client.put(f"/v1/customers/{cid}/price-overrides", headers=ADMIN, json={
        **overrides, "effective_from": utc(now - timedelta(hours=1))})
    assert put.status_code == 201, put.text
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": f"v-{i}", "customer_id": cid, "model": "model-v", "timestamp": utc(now - timedelta(minutes=m)),
         "usage": {"output_tokens": n}} for i, (m, n) in enumerate(((30, 600_000), (20, 700_000)))])
    assert sent.json()["accepted"] == 2, sent.text
    period = period_of(now - timedelta(minutes=30), Cycle())
    upcoming = (await client.get(f"/v1/customers/{cid}/invoices/upcoming", headers=ADMIN)).json()
    closed = await client.post("/v1/billing/close", headers=ADMIN, json={
        "until": utc(period.end + timedelta(hours=1, seconds=1)), "customer_id": cid, "early": True})
    assert closed.status_code == 200, closed.text
    [invoice] = closed.json()["closed"]
    final = (await client.get(f"/v1/invoices/{invoice['invoice_id']}", headers=ADMIN)).json()
    assert (kinds(upcoming), upcoming["total"]) == (kinds(final), final["total"])
    wallet = await wallet_of(client, cid)
    await verified(client)
    return final, wallet


def kinds(invoice: dict) -> list[tuple]:
    return sorted((ln["kind"], ln["amount"], ln["override_id"]) for ln in invoice["lines"])


async def test_a_half_discount_covers_the_volume_true_up_as_it_covered_the_usage(client) -> None:
    invoice, wallet = await closed_invoice(client, {"discounts": [{"id": "off", "model": "model-v", "percent": "50"}]})
    # usage 20.00 + 3.00, 50 % off each: -10.00, -1.50; the true-up -10.00, and the discount's 50 % of
    # it back, +5.00 (a true-up line carrying the discount's id): 13.00 at the tier reached, half of it
    assert kinds(invoice) == [
        ("discount", "-1.50", "off"), ("discount", "-10.00", "off"), ("usage", "20.00", None),
        ("usage", "3.00", None), ("volume_true_up", "-10.00", None), ("volume_true_up", "5.00", "off")]
    assert invoice["total"] == "6.50" and invoice["amount_due"] == "6.50"
    assert wallet["receivable"] == "6.50" and wallet["available"] == "0.00"


async def test_usage_a_full_discount_made_free_gets_no_money_from_its_volume_true_up(client) -> None:
    invoice, wallet = await closed_invoice(client, {"discounts": [{"id": "off", "model": "model-v", "percent": "100"}]})
    assert invoice["total"] == "0.00" and invoice["amount_due"] == "0.00", invoice["lines"]
    assert wallet["available"] == "0.00" and wallet["receivable"] == "0.00"  # no credit out of nothing
    # the true-up moves no money, and it is on the invoice all the same
    assert [x for x in kinds(invoice) if x[0] == "volume_true_up"] == [
        ("volume_true_up", "-10.00", None), ("volume_true_up", "10.00", "off")]


@pytest.mark.parametrize(("allowance", "lines", "total"), [
    # 23.00 all free; the true-up's 10.00 back is the allowance's, which paid 13.00 in the end
    ("30.00", [("free_allowance", "-23.00", "free"), ("free_allowance", "10.00", "free")], "0.00"),
    # 20.00 free, 3.00 paid: 3.00 back to the customer, 7.00 to the allowance (13.00 at the tier, all free)
    ("20.00", [("free_allowance", "-20.00", "free"), ("free_allowance", "7.00", "free")], "0.00"),
    # 5.00 free, 18.00 paid: the 10.00 back is all the customer's (13.00 at the tier, less 5.00)
    ("5.00", [("free_allowance", "-5.00", "free")], "8.00"),
])
async def test_a_volume_true_up_gives_back_to_a_free_allowance_what_the_customer_did_not_pay(
        client, allowance, lines, total) -> None:
    invoice, wallet = await closed_invoice(client, {"free_allowances": [{"id": "free", "amount": allowance}]})
    assert [x for x in kinds(invoice) if x[0] == "free_allowance"] == lines
    assert ("volume_true_up", "-10.00", None) in kinds(invoice)
    assert invoice["total"] == total and invoice["amount_due"] == total
    assert wallet["available"] == "0.00" and wallet["receivable"] == total  # no credit the customer never paid


@pytest.mark.parametrize(("allowance", "owed"), [
    # the allowance paid 13.00 of the period in the end: 17.00 left, the late 10.00 is free
    ("30.00", "0.00"),
    # it paid 13.00 of 20.00 in the end: 7.00 left, the customer pays 3.00 of the late 10.00
    ("20.00", "3.00"),
])
async def test_late_usage_of_a_closed_period_gets_what_its_true_up_gave_back_to_the_allowance(
        client, allowance, owed) -> None:
    invoice, wallet = await closed_invoice(client, {"free_allowances": [{"id": "free", "amount": allowance}]})
    assert wallet["receivable"] == "0.00"
    cid, now = invoice["customer_id"], datetime.now(UTC)
    # accepted after the close, its timestamp in the closed period: 1M tokens at the $10/M tier reached
    await send(client, cid, "v-late", "model-v", now - timedelta(minutes=25), 1_000_000)
    wallet = await wallet_of(client, cid)
    assert wallet["receivable"] == owed and wallet["available"] == "0.00"
    await verified(client)


@pytest.mark.parametrize(("allowance", "lines", "total", "owed_late"), [
    # 16.00 free as it came; 14.00 of it left pays the true-up's 10.00: 26.00 at the tier reached, all
    # free; 4.00 left for a late 1M tokens (20.00 at the tier reached): 16.00 charged
    ("30.00", [("free_allowance", "-10.00", "free"), ("free_allowance", "-16.00", "free")], "0.00", "16.00"),
    # 16.00 free, 4.00 left: it pays 4.00 of the true-up, the customer 6.00; the late 20.00 all charged
    ("20.00", [("free_allowance", "-16.00", "free"), ("free_allowance", "-4.00", "free")], "6.00", "26.00"),
    # 5.00 free, none left: the true-up's 10.00 is the customer's (26.00 at the tier, less 5.00)
    ("5.00", [("free_allowance", "-5.00", "free")], "21.00", "41.00"),
])
async def test_a_free_allowance_with_room_left_pays_a_dearer_tiers_true_up(
        client, allowance, lines, total, owed_late) -> None:
    invoice, wallet = await closed_invoice(client, {"free_allowances": [{"id": "free", "amount": allowance}]}, DEARER)
    assert [x for x in kinds(invoice) if x[0] == "free_allowance"] == lines
    assert ("volume_true_up", "10.00", None) in kinds(invoice)
    assert invoice["total"] == total and wallet["receivable"] == total
    cid, now = invoice["customer_id"], datetime.now(UTC)
    await send(client, cid, "v-late", "model-v", now - timedelta(minutes=25), 1_000_000)
    wallet = await wallet_of(client, cid)
    assert wallet["receivable"] == owed_late  # the allowance is spent as the close left it
    await verified(client)


async def allowance_counter(database_url: str, cid: str) -> int:
    """The free allowance `free`'s counter of the customer's period: its folded rows plus its queued deltas."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        found = await conn.execute(
            """SELECT coalesce(sum(q), 0)::bigint FROM (
                   SELECT quantity AS q FROM usage_counters WHERE customer_id = %(c)s AND rule_id = 'allowance:free'
                   UNION ALL
                   SELECT x.q FROM period_deltas d CROSS JOIN LATERAL unnest(d.rules, d.counts) AS x(r, q)
                    WHERE d.customer_id = %(c)s AND x.r = 'allowance:free') u""", {"c": cid})
        return int((await found.fetchone())[0])


@pytest.mark.parametrize(("allowance", "given_back"), [
    # 23.00 free; the close gives the allowance 10.00 back (counter 23.00 -> 13.00); the re-rate takes
    # 7.50 of it back (-7.50 + the true-up's +7.50: nothing moves)
    ("30.00", "10.00"),
    # 20.00 free, 3.00 paid; the close gives the allowance 7.00 back (counter 20.00 -> 13.00) and the
    # customer its 3.00; the re-rate takes 4.50 back from the allowance, and the customer's 3.00 charge
    # back (-3.00) offsets its part of the true-up's +7.50 (+3.00): nothing moves
    ("20.00", "7.00"),
])
async def test_a_downward_rerate_after_the_close_takes_back_the_allowances_share_and_keeps_its_counter_exact(
        client, database_url, allowance, given_back) -> None:
    """v2 of the book quarters the prices (up to 1M at $5/M, beyond at $2.50/M), re-rated after the
    close: 600,000 then 700,000 tokens are rated 3.00 + (400,000 x $5/M + 300,000 x $2.50/M = 2.75) =
    5.75 graduated, all of it free; at the $2.50/M tier reached 1.3M cost 3.25: the true-up goes
    -10.00 -> -2.50 (+7.50). The allowance pays what the period costs at the tier reached: 3.25, its
    true-up share 2.50 back (5.75 - 3.25), not `given_back`; the customer owes nothing.
    Before: the counter went 13.00 -> 13.00 - (23.00 - 5.75) = -4.25 (30.00) or 13.00 - (20.00 - 5.75)
    = -1.25 (20.00), below 0, and the +7.50 correction was charged to the customer (7.50 and 4.50 owed)."""
    book = f"vol-q-{uuid.uuid4().hex[:8]}"
    await add_book(client, book, RULES)
    invoice, wallet = await closed_invoice(client, {"free_allowances": [{"id": "free", "amount": allowance}]}, book)
    assert ("free_allowance", given_back, "free") in kinds(invoice) and wallet["receivable"] == "0.00"
    cid = invoice["customer_id"]
    assert await allowance_counter(database_url, cid) == 13 * 10**9
    cheaper = [{**RULES[0], "tiers": [{"up_to": 1_000_000, "price": "5"}, {"up_to": None, "price": "2.50"}]}]
    version = await new_version(client, book, cheaper)
    now = datetime.now(UTC)
    applied = await rerate_applied(client, book, version, cid, now - timedelta(hours=1), now)
    # the allowance paid 5.75 of the charges and has 2.50 of it back: 3.25 taken
    assert await allowance_counter(database_url, cid) == 3_250_000_000
    wallet = await wallet_of(client, cid)
    assert wallet["receivable"] == "0.00" and wallet["available"] == "0.00"
    assert applied.json()["credit_notes"] == []  # nothing moved: no note
    await verified(client)


async def test_a_rerate_that_moves_nothing_answers_what_it_corrected_as_its_preview_does(client, database_url) -> None:
    """The $20.00 allowance's period (600,000 + 700,000 tokens, 23.00 rated graduated, 20.00 of it
    free, 3.00 paid; closed: true-up -10.00, 7.00 back to the allowance and the customer's 3.00),
    re-rated to $5/M and $2.50/M: the charges go 12.00 + 11.00 = 23.00 -> 3.00 + 2.75 = 5.75 (-17.25),
    all of it free, where the allowance took 20.00 (+14.25; the customer's 3.00 back: -3.00); the true-up becomes
    1.3M x $2.50/M = 3.25 less 5.75 = -2.50 (-10.00 -> -2.50: +7.50); the allowance pays 3.25 at the
    tier reached, its share of the money back 5.75 - 3.25 = 2.50 where the close gave it 7.00
    (-4.50). -3.00 + 7.50 - 4.50 = 0.00: no entry, and the answer says so, line by line, as the
    preview does, applied once or again. Before, the answer read the true-ups only from an entry's
    metadata: delta -3.00 with the charges' row alone."""
    book = f"vol-z-{uuid.uuid4().hex[:8]}"
    await add_book(client, book, RULES)
    invoice, wallet = await closed_invoice(client, {"free_allowances": [{"id": "free", "amount": "20.00"}]}, book)
    assert wallet["receivable"] == "0.00" and wallet["available"] == "0.00"
    cid = invoice["customer_id"]
    cheaper = [{**RULES[0], "tiers": [{"up_to": 1_000_000, "price": "5"}, {"up_to": None, "price": "2.50"}]}]
    version = await new_version(client, book, cheaper)
    now = datetime.now(UTC)
    request = {"price_book": book, "version": version, "from": utc(now - timedelta(hours=1)), "to": utc(now),
               "customer_id": cid}
    lines = [  # (model, token type, old, new, delta), worked out above
        {"model": "", "token_type": "volume_true_up", "old_amount": "7.00", "new_amount": "2.50", "delta": "-4.50"},
        {"model": "model-v", "token_type": "free_allowance", "old_amount": "-20.00", "new_amount": "-5.75",
         "delta": "14.25"},
        {"model": "model-v", "token_type": "output", "old_amount": "23.00", "new_amount": "5.75", "delta": "-17.25"},
        {"model": "model-v", "token_type": "volume_true_up", "old_amount": "-10.00", "new_amount": "-2.50",
         "delta": "7.50"}]
    previewed = await client.post("/v1/rerate", headers=ADMIN, json={**request, "mode": "preview"})
    assert previewed.status_code == 200, previewed.text
    assert previewed.json()["delta"] == "0.00" and previewed.json()["customers"][0]["lines"] == lines
    answers = []
    for _ in range(2):  # the same re-rate applied again moves nothing more and answers the same
        applied = await client.post("/v1/rerate", headers=ADMIN, json={**request, "mode": "apply"})
        assert applied.status_code == 200 and applied.json()["errors"] == [], applied.text
        answers.append(applied.json())
    [customer] = answers[0]["customers"]
    # what the ledger moved: nothing (no entry, no note, the wallet as the close left it)
    assert (answers[0]["delta"], customer["delta"], customer["entry_ids"], answers[0]["credit_notes"]) == (
        "0.00", "0.00", [], [])
    assert (customer["old_amount"], customer["new_amount"], customer["charges"]) == ("0.00", "0.00", 2)
    assert customer["lines"] == lines
    assert answers[1] == answers[0]
    wallet = await wallet_of(client, cid)
    assert wallet["receivable"] == "0.00" and wallet["available"] == "0.00"
    # what the answer reads is kept once and cannot be changed
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        kept = await conn.execute("SELECT count(*) FROM rerate_true_ups WHERE customer_id = %s", (cid,))
        assert (await kept.fetchone())[0] == 1
        for sql in ("UPDATE rerate_true_ups SET true_ups = '[[\"x\"]]' WHERE customer_id = %s",
                    "DELETE FROM rerate_true_ups WHERE customer_id = %s"):
            with pytest.raises(psycopg.Error):
                await conn.execute(sql, (cid,))
        # and what the true-ups gave back of each charge its payers paid (true_up_charges, 0068; the
        # 600,000 tokens' 12.00 the allowance paid alone, which its own lines true up): the close 4.00
        # of the 700,000's 11.00 (7.00 at $10/M); the re-rate, at $2.50/M, 2.75 - 1.75 = 1.00 over,
        # 1.00 - 4.00: took back 3.00, kept though it posted no entry (before, kept nowhere: a later
        # re-rate counted the close's 4.00 given back of it where 1.00 is)
        given = await conn.execute(
            """SELECT rerate_id IS NULL, units FROM true_up_charges WHERE customer_id = %s
                ORDER BY rerate_id NULLS FIRST""", (cid,))
        assert [(closed, int(units)) for closed, units in await given.fetchall()] == [
            (True, 4 * DOLLAR), (False, -3 * DOLLAR)]
    await verified(client)


async def test_verify_ties_a_rerate_that_posted_no_entry_to_the_true_up_corrections_it_kept(scratch_url) -> None:
    """The re-rate above posts no entry: its charges move -3.00 (-17.25 on the output, +14.25 the
    allowance took of it) and the true-up corrections it keeps in rerate_true_ups +3.00 (+7.50 on
    the true-up, -4.50 on the allowance's share of its money back): -3.00 + 3.00 = 0, as an entry's
    charges and `true_ups` are checked against the revenue it posted (here none). A second row of
    the same corrections (the table takes inserts: only changes and deletes are refused) makes the
    answer say +3.00 moved where nothing did: verify must say so. Before, verify read the true-ups
    of entries alone and passed: rerate_true_ups was checked by nothing."""
    async with api_client(scratch_url, admin="vol-admin", books=[
            {"id": BOOK, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": RULES}]) as client:
        invoice, _ = await closed_invoice(client, {"free_allowances": [{"id": "free", "amount": "20.00"}]})
        cid = invoice["customer_id"]
        cheaper = [{**RULES[0], "tiers": [{"up_to": 1_000_000, "price": "5"}, {"up_to": None, "price": "2.50"}]}]
        version = await new_version(client, BOOK, cheaper)
        now = datetime.now(UTC)
        applied = await rerate_applied(client, BOOK, version, cid, now - timedelta(hours=1), now)
        assert (applied.json()["delta"], applied.json()["customers"][0]["entry_ids"]) == ("0.00", [])
        await verified(client)
        async with await psycopg.AsyncConnection.connect(scratch_url, autocommit=True) as conn:
            await conn.execute("""INSERT INTO rerate_true_ups (lane, rerate_id, customer_id, period, true_ups)
                                  SELECT lane, rerate_id, customer_id, period, true_ups FROM rerate_true_ups
                                   WHERE customer_id = %s""", (cid,))
        answer = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
        [failed] = [c for c in answer["checks"] if not c["ok"]]
        # in atomic units (10^9 a dollar): the charges -3.00, the corrections kept twice +6.00
        assert failed["name"] == "credit_notes" and f"customer {cid}" in failed["detail"], failed
        assert "charges moved -3000000000" in failed["detail"] and "true-ups 6000000000" in failed["detail"], failed


async def test_a_rerate_re_splits_the_allowances_share_over_the_period_s_usage_of_every_book(client) -> None:
    """Postpaid, two books without volume tiers (a customer may move between them mid-period): `w`
    (model-w output, $10/M) rates 400,000 tokens, 4.00, before the $20.00 allowance is in force, all
    the customer's own; then, on `v` (model-v output, $20/M flat), 600,000 tokens, 12.00 free, and
    700,000, 14.00: 8.00 free, 6.00 own. Closed: no true-up, 10.00 owed. The fix gives `v` the volume
    tiers it should have had ($20/M to 1M, $10/M beyond): the 700,000 are 8.00 + 3.00 = 11.00 (-3.00,
    the customer's own), and the closed period's true-up, 1.3M x $10/M = 13.00 less 23.00, -10.00
    where none stands. Of it, by the close's rule, what the customer did not pay of the period's usage
    goes back to the allowance: own 3.00 of `v` + 4.00 of `w` = 7.00, so 3.00 to it and 7.00 to the
    customer: -3.00 - 10.00 + 3.00 = -10.00, 0.00 owed, as a close with the fix in force would have
    made it (13.00 of `v` and 4.00 of `w`, the allowance 20.00 - 3.00). Before, the re-split counted
    `v`'s usage alone (own 3.00): 7.00 to the allowance, -6.00, 4.00 owed."""
    flat, vol = f"flat-{uuid.uuid4().hex[:8]}", f"vol-2b-{uuid.uuid4().hex[:8]}"
    for body in ({"id": flat, "rules": [{"id": "w-out", "model": "model-w", "token_type": "output", "price": "10"}]},
                 {"id": vol, "rules": [{"id": "v-out", "model": "model-v", "token_type": "output", "price": "20"}]}):
        await add_book(client, body["id"], body["rules"])
    cid = await new_customer(client, flat)
    now = datetime.now(UTC)
    await send(client, cid, "w-1", "model-w", now - timedelta(minutes=40), 400_000)
    moved = await client.patch(f"/v1/customers/{cid}", headers=ADMIN, json={"price_book": vol})
    assert moved.status_code == 200, moved.text
    put = await client.put(f"/v1/customers/{cid}/price-overrides", headers=ADMIN, json={
        "free_allowances": [{"id": "free", "amount": "20.00"}], "effective_from": utc(now - timedelta(minutes=35))})
    assert put.status_code == 201, put.text
    for i, tokens in enumerate((600_000, 700_000)):  # after the move, by the server's clock: rated by `v`
        await asyncio.sleep(0.01)
        await send(client, cid, f"v-{i}", "model-v", datetime.now(UTC), tokens)
    period = period_of(now - timedelta(minutes=40), Cycle())
    closed = await client.post("/v1/billing/close", headers=ADMIN, json={
        "until": utc(period.end + timedelta(hours=1, seconds=1)), "customer_id": cid, "early": True})
    assert closed.status_code == 200, closed.text
    wallet = await wallet_of(client, cid)
    assert wallet["receivable"] == "10.00", wallet
    version = await new_version(client, vol, RULES)
    applied = await rerate_applied(client, vol, version, cid, now - timedelta(hours=1), datetime.now(UTC))
    [customer] = applied.json()["customers"]
    assert [(ln["model"], ln["old_amount"], ln["new_amount"]) for ln in customer["lines"]
            if ln["token_type"] == "volume_true_up"] == [("", "0.00", "3.00"),
                                                         ("model-v", "0.00", "-10.00")], customer["lines"]
    assert customer["delta"] == "-10.00", customer
    wallet = await wallet_of(client, cid)
    assert wallet["receivable"] == "0.00" and wallet["available"] == "0.00", wallet
    await verified(client)


async def test_a_rerate_re_splits_what_the_allowance_pays_of_a_dearer_tiers_true_up(client, database_url) -> None:
    """Tiers $10/M to 1M, $20/M beyond; a $20.00 allowance: 600,000 + 700,000 tokens rated 6.00 +
    (4.00 + 6.00) = 16.00, all free; the close's true-up 1.3M x $20/M = 26.00 less 16.00, +10.00, of
    which the allowance pays its 4.00 left (-4.00), the customer 6.00 (owed). v2 halves the prices
    ($5/M, $10/M): the charges 3.00 + (2.00 + 3.00) = 8.00, still free; the true-up 1.3M x $10/M =
    13.00 less 8.00, +5.00 (-5.00). By the close's rule the allowance pays what is left of it, 20.00
    - 8.00 = 12.00, so all 5.00 (-5.00 where -4.00 stands: -1.00): -5.00 - 1.00 = -6.00, 0.00 owed,
    13.00 at the tier reached, all free, as a close with v2 in force would have made it; its counter
    20.00 - 8.00 + 1.00 = 13.00. Before, a share the allowance paid of a dearer tier stayed as the
    close made it: -5.00, 1.00 owed (its counter 12.00)."""
    book = f"vol-dr-{uuid.uuid4().hex[:8]}"
    await add_book(client, book, DEARER_RULES)
    invoice, wallet = await closed_invoice(client, {"free_allowances": [{"id": "free", "amount": "20.00"}]}, book)
    assert ("free_allowance", "-4.00", "free") in kinds(invoice) and wallet["receivable"] == "6.00"
    cid = invoice["customer_id"]
    halved = [{**DEARER_RULES[0], "tiers": [{"up_to": 1_000_000, "price": "5"}, {"up_to": None, "price": "10"}]}]
    version = await new_version(client, book, halved)
    now = datetime.now(UTC)
    applied = await rerate_applied(client, book, version, cid, now - timedelta(hours=1), now)
    [customer] = applied.json()["customers"]
    assert [(ln["model"], ln["old_amount"], ln["new_amount"]) for ln in customer["lines"]
            if ln["token_type"] == "volume_true_up"] == [("", "-4.00", "-5.00"),
                                                         ("model-v", "10.00", "5.00")], customer["lines"]
    assert customer["delta"] == "-6.00", customer
    wallet = await wallet_of(client, cid)
    assert wallet["receivable"] == "0.00" and wallet["available"] == "0.00", wallet
    assert await allowance_counter(database_url, cid) == 13 * DOLLAR
    await verified(client)


async def test_a_free_allowance_is_shared_by_the_books_of_its_period(client) -> None:
    """A $10.00 allowance is money per billing period, whatever book rates the usage. Postpaid: book
    `w` ($10/M) rates 400,000 tokens, 4.00, all free (6.00 left); the customer moves to book `v`
    ($20/M, both without volume tiers), where 600,000 tokens, 12.00, take the 6.00 left: 6.00 owed.
    Before, each book counted its own: `v`'s usage took a whole 10.00 again, 14.00 free of a 10.00
    allowance, 2.00 owed. A re-rate of `v` to a version of the same price moves nothing (its charges
    take what `w`'s left, as they were charged)."""
    flat, other = f"flat-{uuid.uuid4().hex[:8]}", f"flat2-{uuid.uuid4().hex[:8]}"
    v_rules = [{"id": "v-out", "model": "model-v", "token_type": "output", "price": "20"}]
    for body in ({"id": flat, "rules": [{"id": "w-out", "model": "model-w", "token_type": "output", "price": "10"}]},
                 {"id": other, "rules": v_rules}):
        await add_book(client, body["id"], body["rules"])
    cid = await new_customer(client, flat)
    now = datetime.now(UTC)
    put = await client.put(f"/v1/customers/{cid}/price-overrides", headers=ADMIN, json={
        "free_allowances": [{"id": "free", "amount": "10.00"}], "effective_from": utc(now - timedelta(minutes=50))})
    assert put.status_code == 201, put.text
    await send(client, cid, "w-1", "model-w", now - timedelta(minutes=40), 400_000)
    moved = await client.patch(f"/v1/customers/{cid}", headers=ADMIN, json={"price_book": other})
    assert moved.status_code == 200, moved.text
    await asyncio.sleep(0.01)  # after the move, by the server's clock: rated by `v`
    await send(client, cid, "v-1", "model-v", datetime.now(UTC), 600_000)
    wallet = await wallet_of(client, cid)
    assert wallet["receivable"] == "6.00", wallet
    upcoming = (await client.get(f"/v1/customers/{cid}/invoices/upcoming", headers=ADMIN)).json()
    assert sorted((ln["kind"], ln["amount"]) for ln in upcoming["lines"]) == [
        ("free_allowance", "-10.00"), ("usage", "12.00"), ("usage", "4.00")], upcoming["lines"]
    version = await new_version(client, other, v_rules)
    applied = await rerate_applied(client, other, version, cid, now - timedelta(hours=1), datetime.now(UTC))
    assert applied.json()["delta"] == "0.00", applied.text
    wallet = await wallet_of(client, cid)
    assert wallet["receivable"] == "6.00", wallet
    await verified(client)


async def test_a_rerate_to_the_same_prices_leaves_late_usage_what_the_close_gave_back_to_the_allowance(
        client, database_url) -> None:
    """A $20.00 allowance: 600,000 + 700,000 tokens, 12.00 + 11.00 (8.00 + 3.00) = 23.00, of which the
    allowance pays 20.00, the customer 3.00. The close's true-up, 1.3M x $10/M = 13.00 less 23.00,
    -10.00: the customer's own 3.00 back and 7.00 to the allowance (counter 20.00 - 7.00 = 13.00),
    0.00 owed. Then, accepted after the close with its timestamp in the closed period, 1M tokens at
    the $10/M tier reached, 10.00: the allowance pays the 7.00 it has left, the customer 3.00 (counter
    20.00, 3.00 owed). A re-rate of the period to a v2 of the same prices moves nothing: 3.00 owed,
    the counter 20.00. Before, the late charge (timestamped between the two) was re-rated second, by
    usage time, as if it had come before the 700,000 and the close: 400,000 x $20/M + 600,000 x $10/M
    = 14.00 (8.00 free), the 700,000 at $10/M 7.00 (none free, -4.00), the true-up -10.00 -> -6.00 and
    the allowance's share 7.00 -> 0.00: 9.00 owed."""
    book = f"vol-late-{uuid.uuid4().hex[:8]}"
    await add_book(client, book, RULES)
    invoice, wallet = await closed_invoice(client, {"free_allowances": [{"id": "free", "amount": "20.00"}]}, book)
    assert ("free_allowance", "7.00", "free") in kinds(invoice) and wallet["receivable"] == "0.00"
    cid, now = invoice["customer_id"], datetime.now(UTC)
    await send(client, cid, "v-late", "model-v", now - timedelta(minutes=25), 1_000_000)
    wallet = await wallet_of(client, cid)
    assert wallet["receivable"] == "3.00" and await allowance_counter(database_url, cid) == 20 * DOLLAR
    version = await new_version(client, book, RULES)
    applied = await rerate_applied(client, book, version, cid, now - timedelta(hours=1), now)
    wallet = await wallet_of(client, cid)
    assert (wallet["receivable"], wallet["available"]) == ("3.00", "0.00"), applied.json()["customers"]
    assert await allowance_counter(database_url, cid) == 20 * DOLLAR
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        found = await conn.execute("SELECT sum(debits) - sum(credits) FROM account_balances")
        assert (await found.fetchone())[0] == 0  # the trial balance sums to zero
    await verified(client)

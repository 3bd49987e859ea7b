"""A credit note moves whole minor units of its currency, as an invoice's amount due does. A
re-rate's correction is exact (its lines and total: 1.5 yen, $0.0225, 0.003702 dinars back), and
the money it gave back was that exact figure: the invoice it corrects was left with a fraction of
a yen, cent or fils to pay once the note counted on it (2.5 yen, $0.0575). Now the note rounds the
money it moves once, half to even, and posts the difference to the platform's rounding account in
its own entry (`amount`, `amount_rounding`); the invoice's amount remaining stays whole, paying
exactly that closes it, and the books balance."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.api.apps import api_client
from tests.api.closing import close_early, utc
from wallets.periods import Cycle, Period, following, period_of

ADMIN = {"Authorization": "Bearer cn-admin"}


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="cn-admin") as c:
        yield c


async def _book(client, currency: str, version: str, effective_from: str, price: str) -> None:
    made = await client.post("/v1/price-books", headers=ADMIN, json={
        "id": f"cn-{currency}", "version": version, "currency": currency, "effective_from": effective_from,
        "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": price}]})
    assert made.status_code == 201, made.text


async def _usage(client, cid: str, tokens: list[int], now: datetime) -> None:
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": f"e{i}", "customer_id": cid, "model": "model-a", "timestamp": now.isoformat(),
         "usage": {"input_tokens": n, "output_tokens": 0}} for i, n in enumerate(tokens)])
    assert sent.json()["accepted"] == len(tokens), sent.text


async def _rerated_to(client, currency: str, price: str, period: Period) -> dict:
    """Version v2 of the book at `price` from the period's start, and the period re-rated to it
    (applied): the one credit or debit note it issued, as GET /v1/credit-notes/{id} shows it."""
    await _book(client, currency, "v2", utc(period.start), price)
    applied = await client.post("/v1/rerate", headers=ADMIN, json={
        "price_book": f"cn-{currency}", "version": "v2", "from": utc(period.start), "to": utc(period.end),
        "mode": "apply"})
    assert applied.status_code == 200, applied.text
    [listed] = applied.json()["credit_notes"]
    return (await client.get(f"/v1/credit-notes/{listed['id']}", headers=ADMIN)).json()


async def _invoice(client, invoice_id: str) -> dict:
    return (await client.get(f"/v1/invoices/{invoice_id}", headers=ADMIN)).json()


async def _balanced_and_verified(client, currency: str) -> list[tuple[str, str]]:
    tb = (await client.get(f"/v1/audit/trial-balance?currency={currency}", headers=ADMIN)).json()
    assert tb["total_debits"] == tb["total_credits"]
    verify = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]
    rounding = f"income:platform:rounding:{currency}"
    return [(a["debits"], a["credits"]) for a in tb["accounts"] if a["account"] == rounding]


# By hand, per 1M input tokens, postpaid. A note moves what the corrected charges, rounded once,
# less what the invoice made due (its exact total plus the close's rounding) and the notes before:
# the invoice's due plus its notes is always the corrected total rounded once, half to even.
# JPY: 3 calls of 1,000 tokens at 1,500 yen are 4.5 yen, due 4 (the close's rounding -0.5); the fix
#   (1,000 yen) makes them 3 yen: -1.5 yen, and round(3) = 3, 3 - 4 = -1 moved (0.5 yen credited to
#   rounding); 3 left. Rounding: the close's 0.5 debited, the note's 0.5 credited.
# USD: 5 calls of 1,500 tokens at $10 are $0.075, due $0.08 (+$0.005); the fix ($7) makes them
#   $0.0525: -$0.0225, round($0.0525) = $0.05, $0.05 - $0.08 = -$0.03 moved ($0.0075 debited); $0.05
#   left. Rounding: the close's $0.005 credited, the note's $0.0075 debited.
# KWD: 1 call of 1,234 tokens at 10 dinars is 0.01234, due 0.012 (-0.00034); the fix (7) makes it
#   0.008638: -0.003702, round(0.008638) = 0.009, 0.009 - 0.012 = -0.003 moved (0.000702 credited);
#   0.009 left. Rounding: the close's 0.00034 debited, the note's 0.000702 credited.
# (Each note rounding its own total moved -2, -$0.02 and -0.004: 2 yen, $0.06 and 0.008 left, for
# usage of 3 yen, $0.0525 and 0.008638.)
CASES = [
    ("JPY", [1000] * 3, "1500", "1000", "4", "-1.5", "-1", "0.5", "3", [("0.5", "0.5")]),
    ("USD", [1500] * 5, "10", "7", "0.08", "-0.0225", "-0.03", "-0.0075", "0.05", [("0.0075", "0.005")]),
    ("KWD", [1234], "10", "7", "0.012", "-0.003702", "-0.003", "0.000702", "0.009", [("0.00034", "0.000702")]),
]


@pytest.mark.parametrize(("currency", "tokens", "v1", "v2", "due", "total", "amount", "rounding", "left", "rounded"),
                         CASES)
async def test_a_credit_note_moves_whole_minor_units_and_paying_what_is_left_closes_the_invoice(
        client, currency, tokens, v1, v2, due, total, amount, rounding, left, rounded) -> None:
    now = datetime.now(UTC)
    period = period_of(now, Cycle("UTC", None))
    await _book(client, currency, "v1", "2026-01-01T00:00:00Z", v1)
    cid = f"cn-{currency.lower()}"
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": cid, "name": "Yamada Shoten", "currency": currency, "price_book": f"cn-{currency}",
        "billing": "postpaid"})
    assert created.status_code == 201, created.text
    await _usage(client, cid, tokens, now)
    [closed] = (await close_early(client, ADMIN, cid, period))["closed"]
    invoice = await _invoice(client, closed["invoice_id"])
    assert invoice["amount_due"] == due
    note = await _rerated_to(client, currency, v2, period)
    # the correction stays exact; the money it moves is whole minor units
    assert note["total"] == total and sum(Decimal(x["amount"]) for x in note["lines"]) == Decimal(total)
    assert (note["amount"], note["amount_rounding"]) == (amount, rounding), note
    # the next close counts the money back on the corrected invoice: what is left is whole
    await close_early(client, ADMIN, cid, following(period, Cycle("UTC", None)))
    invoice = await _invoice(client, invoice["id"])
    assert invoice["amount_remaining"] == left and invoice["payment_status"] == "partially_paid", invoice
    wallet = (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()
    assert wallet["receivable"] == left
    paid = await client.post(f"/v1/invoices/{invoice['id']}/payments", headers=ADMIN,
                             json={"amount": left, "reference": "wire-1", "currency": currency})
    assert paid.status_code == 201, paid.text
    assert paid.json()["payment_status"] == "paid"
    wallet = (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()
    assert Decimal(wallet["receivable"]) == 0
    assert await _balanced_and_verified(client, currency) == rounded
    # the page and the PDF print what the note moved and its rounding
    page = await client.get(f"/v1/credit-notes/{note['id']}", headers={**ADMIN, "Accept": "text/html"})
    assert page.status_code == 200 and "Amount rounding" in page.text and amount in page.text


# Prepaid, by hand: a top-up of 1,000 yen (or $10) paid the calls, so the invoice asked nothing.
# JPY: 4.5 yen of calls, 1.5 yen back: the note moves 2 yen, all back to the lot that paid them
#   (995.5 + 2 = 997.5); it used to give that lot 1.5 yen and open no lot; rounded, it would have
#   opened a new lot of half a yen for the rest. USD: $0.075 of calls, $0.0225 back, $0.02 moved:
#   9.925 + 0.02 = 9.945.
PREPAID = [
    ("JPY", [1000] * 3, "1500", "1000", "1000", "-1.5", "-2", "995.5", "997.5"),
    ("USD", [1500] * 5, "10", "7", "10.00", "-0.0225", "-0.02", "9.925", "9.945"),
]


@pytest.mark.parametrize(("currency", "tokens", "v1", "v2", "top_up", "total", "amount", "before", "after"), PREPAID)
async def test_a_credit_note_to_a_prepaid_wallet_gives_whole_minor_units_back_to_the_lot_that_paid(
        client, currency, tokens, v1, v2, top_up, total, amount, before, after) -> None:
    now = datetime.now(UTC)
    period = period_of(now, Cycle("UTC", None))
    await _book(client, currency, "v1", "2026-01-01T00:00:00Z", v1)
    cid = f"cn-pre-{currency.lower()}"
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": cid, "currency": currency, "price_book": f"cn-{currency}", "billing": "prepaid"})
    assert created.status_code == 201, created.text
    topped = await client.post(f"/v1/customers/{cid}/topups", headers=ADMIN, json={"amount": top_up, "reference": "p1"})
    assert topped.status_code == 201, topped.text
    await _usage(client, cid, tokens, now)
    [closed] = (await close_early(client, ADMIN, cid, period))["closed"]
    assert Decimal((await _invoice(client, closed["invoice_id"]))["amount_due"]) == 0
    wallet = (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()
    assert [lot["remaining"] for lot in wallet["grants"]] == [before], wallet
    note = await _rerated_to(client, currency, v2, period)
    assert (note["total"], note["amount"]) == (total, amount), note
    wallet = (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()
    assert [lot["remaining"] for lot in wallet["grants"]] == [after], wallet  # no lot of a fraction
    await _balanced_and_verified(client, currency)


async def test_a_debit_note_charges_whole_minor_units_on_the_next_invoice(client) -> None:
    """By hand: 5 calls of 1,500 tokens at $10 per 1M are $0.075 (due $0.08, the close's rounding
    +$0.005); the fix is $12: $0.09, $0.015 more; round($0.09) = $0.09, less the $0.08 made due:
    the note charges $0.01 ($0.005 debited to rounding, which the close's $0.005 credit nets). The
    receivable pays it, so the next invoice asks $0.01 and its close rounds nothing: owed $0.09.
    (Rounding the note's own $0.015 charged $0.02: $0.10 owed for usage of $0.09.)"""
    now = datetime.now(UTC)
    period = period_of(now, Cycle("UTC", None))
    await _book(client, "USD", "v1", "2026-01-01T00:00:00Z", "10")
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": "dn-usd", "currency": "USD", "price_book": "cn-USD", "billing": "postpaid"})
    assert created.status_code == 201, created.text
    await _usage(client, "dn-usd", [1500] * 5, now)
    await close_early(client, ADMIN, "dn-usd", period)
    note = await _rerated_to(client, "USD", "12", period)
    moved = (note["kind"], note["total"], note["amount"], note["amount_rounding"])
    assert moved == ("debit", "0.015", "0.01", "-0.005")
    [closed] = (await close_early(client, ADMIN, "dn-usd", following(period, Cycle("UTC", None))))["closed"]
    december = await _invoice(client, closed["invoice_id"])
    assert (december["total"], december["amount_due"], december["amount_due_rounding"]) == ("0.015", "0.01", "0.00")
    wallet = (await client.get("/v1/customers/dn-usd/wallet", headers=ADMIN)).json()
    assert wallet["receivable"] == "0.09"  # $0.08 + $0.01
    assert await _balanced_and_verified(client, "USD") == [("0.005", "0.005")]


async def test_a_credit_note_after_an_earlier_note_s_rounding_gives_its_whole_amount_to_the_customer(client) -> None:
    """By hand, postpaid, 3 calls of 1,000 tokens at 1,500 yen per 1M: 4.5 yen, due 4 (the close's
    rounding -0.5). Each note moves the corrected total rounded once (half to even) less what the
    invoice made due and the notes before moved. v2 (1,000 yen): 3 yen, a note of -1.5; round(3) = 3,
    3 - 4 = -1 moved (0.5 yen credited to rounding): owed 3. v3 (3,000 yen): 9 yen, a debit note of
    +6; round(9) = 9, 9 - 3 = 6 moved: owed 9. v4 (1,499 yen): 3 x 1.499 = 4.497 yen, a note of
    -4.503; round(4.497) = 4, 4 - 9 = -5 moved (0.497 yen debited): owed 4, no lot opened, nothing
    to breakage. Each note rounding its own total moved -2, +6, -5: owed 3 for usage of 4.497 yen
    (and 2 after v2 alone for usage of 3), the rounding account 1.497 yen short, growing with each
    re-rate. (7cc7736: the third note's 0.003 yen the charges' funding could not place went to the
    rounding account as to a lot, then to breakage, and the customer got a 0.997 yen lot.)"""
    now = datetime.now(UTC)
    period = period_of(now, Cycle("UTC", None))
    await _book(client, "JPY", "v1", "2026-01-01T00:00:00Z", "1500")
    cid = "cn-jpy-thrice"
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": cid, "currency": "JPY", "price_book": "cn-JPY", "billing": "postpaid"})
    assert created.status_code == 201, created.text
    await _usage(client, cid, [1000] * 3, now)
    [closed] = (await close_early(client, ADMIN, cid, period))["closed"]
    assert closed["amount_due"] == "4"
    moved = []
    for n, price in enumerate(("1000", "3000", "1499"), start=2):
        await _book(client, "JPY", f"v{n}", utc(period.start + timedelta(seconds=n)), price)
        applied = await client.post("/v1/rerate", headers=ADMIN, json={
            "price_book": "cn-JPY", "version": f"v{n}", "from": utc(period.start + timedelta(seconds=n)),
            "to": utc(period.end), "mode": "apply"})
        assert applied.status_code == 200, applied.text
        [listed] = applied.json()["credit_notes"]
        note = (await client.get(f"/v1/credit-notes/{listed['id']}", headers=ADMIN)).json()
        moved.append((note["kind"], note["total"], note["amount"], note["amount_rounding"]))
    assert moved == [("credit", "-1.5", "-1", "0.5"), ("debit", "6", "6", "0"), ("credit", "-4.503", "-5", "-0.497")]
    wallet = (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()
    assert (wallet["receivable"], wallet["available"], wallet["grants"]) == ("4", "0", []), wallet
    tb = (await client.get("/v1/audit/trial-balance?currency=JPY", headers=ADMIN)).json()
    assert [a for a in tb["accounts"] if a["account"] == "income:platform:breakage:JPY"
            and Decimal(a["balance"])] == [], tb
    # rounding: the close's 0.5 and the last note's 0.497 debited, the first note's 0.5 credited: 0.497
    # net, round(4.497) - 4.497
    assert await _balanced_and_verified(client, "JPY") == [("0.997", "0.5")]

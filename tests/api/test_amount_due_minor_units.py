"""An invoice's amount due is whole minor units of its currency, so a customer can pay what the
invoice shows. Usage is charged exactly (a call can cost 1.5 yen or $0.015), and what the
receivable funded of it was the amount due as it stood: 4.5 yen, $0.075. Before, that was the
amount due: the customer could pay 4 yen (then 0.5 yen stayed open, `partially_paid`, for good)
or nothing it could pay in full. Now the close rounds the amount due once, half to even (DESIGN.md's
rule, as invoice lines), and posts the difference between the receivable and the platform's
rounding account (`income:platform:rounding:<cur>`), so the receivable owes what the invoice asks,
a payment of it marks the invoice paid, the books balance and verify stays ok."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.api.apps import api_client, currency_books
from tests.api.closing import close_invoice
from wallets import chart

ADMIN = {"Authorization": "Bearer due-admin"}
# Per 1M tokens: 1,500 yen, $10; 1,500 CFA francs (XOF, no decimals), 10 dirhams (AED, 2), 10
# Iraqi dinars (IQD, 3): ISO 4217 currencies the minor units table did not list.
PRICES = {"JPY": "1500", "USD": "10", "XOF": "1500", "AED": "10", "IQD": "10"}


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="due-admin", books=currency_books(PRICES, "input")) as c:
        yield c


async def _postpaid_usage(client, cid: str, currency: str, tokens: list[int]) -> None:
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": cid, "currency": currency, "price_book": f"book-{currency}", "billing": "postpaid"})
    assert created.status_code == 201, created.text
    now = datetime.now(UTC)
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": f"e{i}", "customer_id": cid, "model": "model-a", "timestamp": now.isoformat(),
         "usage": {"input_tokens": n, "output_tokens": 0}} for i, n in enumerate(tokens)])
    assert sent.json()["accepted"] == len(tokens), sent.text


# By hand: 3 calls of 1,000 tokens at 1,500 yen per 1M are 1.5 yen each, 4.5 yen: due 4 yen (half
# to even), 0.5 yen written off. 5 calls of 1,500 tokens at $10 per 1M are $0.015 each, $0.075:
# due $0.08 (7.5 cents, half to even), $0.005 more on the receivable. One call of 1,234 tokens is
# $0.01234: due $0.01.
CASES = [
    ("JPY", [1000] * 3, "4.5", "4", "-0.5", "0.5", "0"),
    ("USD", [1500] * 5, "0.075", "0.08", "0.005", "0.00", "0.005"),
    ("USD", [1234], "0.01234", "0.01", "-0.00234", "0.00234", "0.00"),
    # The same by ISO 4217's minor units: a CFA franc has none, a dirham 100 fils, an Iraqi dinar
    # 1,000 fils. Before, a currency not in the table kept its atomic unit: the invoices asked
    # 4.5 francs, 0.075 dirhams and 0.01234 dinars, which no payment could match.
    ("XOF", [1000] * 3, "4.5", "4", "-0.5", "0.5", "0"),
    ("AED", [1500] * 5, "0.075", "0.08", "0.005", "0.00", "0.005"),
    ("IQD", [1234], "0.01234", "0.012", "-0.00034", "0.00034", "0.000"),
]


@pytest.mark.parametrize(("currency", "tokens", "total", "due", "rounding", "debits", "credits"), CASES)
async def test_a_postpaid_invoice_asks_whole_minor_units_and_paying_them_pays_it(
        client, currency, tokens, total, due, rounding, debits, credits) -> None:
    cid = f"due-{currency.lower()}-{len(tokens)}"
    await _postpaid_usage(client, cid, currency, tokens)
    upcoming = (await client.get(f"/v1/customers/{cid}/invoices/upcoming", headers=ADMIN)).json()
    assert (upcoming["amount_due"], upcoming["amount_due_rounding"]) == (due, rounding), upcoming
    invoice = await close_invoice(client, ADMIN, cid)
    # the total is still the exact usage revenue; what is charged to account is exact too
    assert invoice["total"] == total and invoice["charged_to_account"] == total
    assert invoice["amount_due"] == due and invoice["amount_due_rounding"] == rounding
    assert invoice["amount_remaining"] == due and invoice["payment_status"] == "open"
    wallet = (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()
    assert wallet["receivable"] == due  # the receivable owes what the invoice asks
    assert invoice["closing_balance"]["receivable"] == due
    paid = await client.post(f"/v1/invoices/{invoice['id']}/payments", headers=ADMIN,
                             json={"amount": due, "reference": "wire-1", "currency": currency})
    assert paid.status_code == 201, paid.text
    assert paid.json()["payment_status"] == "paid" and paid.json()["amount_remaining"] in ("0", "0.00", "0.000")
    wallet = (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()
    assert wallet["receivable"] in ("0", "0.00", "0.000")
    # the difference is posted, not lost: on the platform's rounding account, and the books balance
    tb = (await client.get(f"/v1/audit/trial-balance?currency={currency}", headers=ADMIN)).json()
    rounding_rows = [a for a in tb["accounts"] if a["account"] == f"income:platform:rounding:{currency}"]
    assert [(a["debits"], a["credits"]) for a in rounding_rows] == [(debits, credits)], tb
    assert tb["total_debits"] == tb["total_credits"]
    verify = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]


async def test_a_whole_amount_due_posts_no_rounding(client) -> None:
    await _postpaid_usage(client, "due-whole", "JPY", [2000, 2000])  # 3 yen each: 6 yen
    invoice = await close_invoice(client, ADMIN, "due-whole")
    assert invoice["amount_due"] == "6" and invoice["amount_due_rounding"] == "0"
    journal = (await client.get("/v1/journal?customer=due-whole", headers=ADMIN)).json()
    assert "invoice_rounding" not in {entry["kind"] for entry in journal["entries"]}


async def test_a_currency_whose_customers_predate_the_rounding_account_gets_it_at_its_first_rounding(
        client, monkeypatch) -> None:
    """Customers created before this change have their currency's other platform accounts only:
    the close that first rounds an amount due in that currency opens the rounding account."""
    import wallets.accounts

    before = [s for s in chart.platform_specs("JPY") if s.code != chart.rounding_account("JPY")]
    monkeypatch.setattr(wallets.accounts, "platform_specs", lambda currency: before)
    await _postpaid_usage(client, "due-old", "JPY", [1000] * 3)  # 4.5 yen
    tb = (await client.get("/v1/audit/trial-balance?currency=JPY", headers=ADMIN)).json()
    assert chart.rounding_account("JPY") not in {a["account"] for a in tb["accounts"]}
    invoice = await close_invoice(client, ADMIN, "due-old")
    assert invoice["amount_due"] == "4" and invoice["amount_due_rounding"] == "-0.5"
    tb = (await client.get("/v1/audit/trial-balance?currency=JPY", headers=ADMIN)).json()
    assert [(a["debits"], a["credits"]) for a in tb["accounts"]
            if a["account"] == chart.rounding_account("JPY")] == [("0.5", "0")]
    verify = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]

"""A credit or debit note issued after one of before notes were rounded (which moved its exact
total, a fraction of the minor unit) moves, through the engine and over HTTP, what makes the
invoice's running figure whole again (a fraction if need be), and 0 where that would move money
against its own total's sign; the next note catches up. rerating.note_money was checked over plain
integers only (tests/unit/wallets/test_note_money.py).

A note of before has no `amount` (store.noted_so_far counts its exact total as moved). None can be
issued now, so the first note here is issued with note_money as it was then (the note moves its
exact total), which is what noted_so_far reads of such a note."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.api.apps import api_client
from tests.api.closing import close_early, utc
from wallets.core import rerating
from wallets.periods import Cycle, following, period_of

ADMIN = {"Authorization": "Bearer xn-admin"}
BOOK = "xn-JPY"


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="xn-admin") as c:
        yield c


async def _version(client, version: str, effective_from: datetime, price: str) -> None:
    made = await client.post(
        "/v1/price-books",
        headers=ADMIN,
        json={
            "id": BOOK,
            "version": version,
            "currency": "JPY",
            "effective_from": utc(effective_from),
            "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": price}],
        },
    )
    assert made.status_code == 201, made.text


async def _owed(client, cid: str) -> str:
    return (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()["receivable"]


async def test_notes_after_one_that_moved_its_exact_total_make_the_invoice_whole_again(client, monkeypatch) -> None:
    """By hand, postpaid, per 1M input tokens, 3 calls of 1,000 tokens:
    v1 1,500 yen: 4.5 yen, due 4 (the close's rounding -0.5); owed 4.
    v2 1,000 yen: 3 yen, a note of -1.5 issued as before notes were rounded: it moves -1.5, owed 2.5.
    v3 966 yen: 2.898 yen, a note of -0.102: the running figure round(-1.5 - 0.102 + 0.5) =
      round(-1.102) = -1, less the -1.5 moved: +0.5, against a credit note's sign: it moves 0 (0.102
      yen to the rounding account); owed 2.5.
    v4 500 yen: 1.5 yen, a note of 1.5 - 2.898 = -1.398: round(-1.5 - 0.102 - 1.398 + 0.5) =
      round(-2.5) = -2 (half to even), less -1.5 - 0: -0.5 moved (a fraction, making it whole:
      0.898 yen to the rounding account); owed 2 = round(1.5).
    v5 1,100 yen: 3.3 yen, a debit note of +1.8: round(-3 + 1.8 + 0.5) = round(-0.7) = -1, less -2:
      +1 moved (0.8 yen from the rounding account); owed 3 = round(3.3).
    December's close applies the notes' -1.5 + 0 - 0.5 + 1 = -1 to November's invoice: 3 of its 4
    left; paying 3 marks it paid and the receivable 0. The rounding account: the close's 0.5 and v5's
    0.8 debited (1.3), v3's 0.102 and v4's 0.898 credited (1), net 0.3 debited = 3 owed - 3.3 of usage."""
    now = datetime.now(UTC)
    cycle = Cycle("UTC", None)
    period = period_of(now, cycle)
    await _version(client, "v1", datetime(2026, 1, 1, tzinfo=UTC), "1500")
    cid = "xn-jpy"
    created = await client.post(
        "/v1/customers", headers=ADMIN, json={"id": cid, "currency": "JPY", "price_book": BOOK, "billing": "postpaid"}
    )
    assert created.status_code == 201, created.text
    sent = await client.post(
        "/v1/usage-events",
        headers=ADMIN,
        json=[
            {
                "event_id": f"xn{i}",
                "customer_id": cid,
                "model": "model-a",
                "timestamp": utc(now),
                "usage": {"input_tokens": 1000, "output_tokens": 0},
            }
            for i in range(3)
        ],
    )
    assert sent.json()["accepted"] == 3, sent.text
    [closed] = (await close_early(client, ADMIN, cid, period))["closed"]
    assert closed["amount_due"] == "4"
    seen = []
    for n, price in enumerate(("1000", "966", "500", "1100"), start=2):
        at = period.start + timedelta(seconds=n)
        await _version(client, f"v{n}", at, price)
        with monkeypatch.context() as patched:
            if n == 2:  # as before notes were rounded: the note moves its exact total
                patched.setattr(rerating, "note_money", lambda net, *_: net)
            applied = await client.post(
                "/v1/rerate",
                headers=ADMIN,
                json={"price_book": BOOK, "version": f"v{n}", "from": utc(at), "to": utc(period.end), "mode": "apply"},
            )
        assert applied.status_code == 200, applied.text
        [listed] = applied.json()["credit_notes"]
        note = (await client.get(f"/v1/credit-notes/{listed['id']}", headers=ADMIN)).json()
        seen.append((note["kind"], note["total"], note["amount"], note["amount_rounding"], await _owed(client, cid)))
    assert seen == [
        ("credit", "-1.5", "-1.5", "0", "2.5"),
        ("credit", "-0.102", "0", "0.102", "2.5"),
        ("credit", "-1.398", "-0.5", "0.898", "2"),
        ("debit", "1.8", "1", "-0.8", "3"),
    ], seen
    await close_early(client, ADMIN, cid, following(period, cycle))
    november = (await client.get(f"/v1/invoices/{closed['invoice_id']}", headers=ADMIN)).json()
    assert (november["amount_remaining"], november["payment_status"]) == ("3", "partially_paid"), november
    paid = await client.post(
        f"/v1/invoices/{closed['invoice_id']}/payments",
        headers=ADMIN,
        json={"amount": "3", "reference": "wire-xn", "currency": "JPY"},
    )
    assert paid.status_code == 201, paid.text
    assert paid.json()["payment_status"] == "paid"
    assert Decimal(await _owed(client, cid)) == 0
    tb = (await client.get("/v1/audit/trial-balance?currency=JPY", headers=ADMIN)).json()
    assert tb["total_debits"] == tb["total_credits"]
    [rounding] = [(a["debits"], a["credits"]) for a in tb["accounts"] if a["account"] == "income:platform:rounding:JPY"]
    assert rounding == ("1.3", "1"), rounding
    verify = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]

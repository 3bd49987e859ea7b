"""Neighbours of test_credit_note_minor_units.py's three notes after an earlier note's rounding
(commit 7cc7736): the same sequence for a prepaid customer whose charges a promotional grant and a
top-up paid, the same in a currency of three decimals (KWD, whose 0.0005 rounds half to even), and
notes that move less than the currency's minor unit. Each note gives the customer exactly the
money it moves (`amount`), nothing goes to breakage, and verify passes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.api.apps import api_client
from tests.api.closing import close_early, utc
from tests.api.test_credit_note_minor_units import ADMIN, _book, _usage
from wallets.periods import Cycle, period_of


@pytest.fixture
async def client(scratch_url):
    """An admin client of a database of the test's own (verify reads every customer's books)."""
    async with api_client(scratch_url, admin=ADMIN["Authorization"].removeprefix("Bearer ")) as c:
        yield c


async def _customer(client, cid: str, currency: str, billing: str) -> None:
    created = await client.post(
        "/v1/customers",
        headers=ADMIN,
        json={"id": cid, "currency": currency, "price_book": f"cn-{currency}", "billing": billing},
    )
    assert created.status_code == 201, created.text


async def _wallet(client, cid: str) -> tuple[Decimal, Decimal]:
    wallet = (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()
    return Decimal(wallet["available"]), Decimal(wallet["receivable"])


async def _rerates(client, cid: str, currency: str, prices: list[str], period) -> list[tuple]:
    """Versions v2, v3, ... of the book at `prices`, each from a second later into the period, each
    re-rated (applied) at once: per note (kind, total, amount, amount_rounding) as Decimals, and
    the customer's (available, receivable) after it."""
    seen = []
    for n, price in enumerate(prices, start=2):
        since = utc(period.start + timedelta(seconds=n))
        await _book(client, currency, f"v{n}", since, price)
        applied = await client.post(
            "/v1/rerate",
            headers=ADMIN,
            json={
                "price_book": f"cn-{currency}",
                "version": f"v{n}",
                "from": since,
                "to": utc(period.end),
                "mode": "apply",
            },
        )
        assert applied.status_code == 200, applied.text
        notes = []
        for listed in applied.json()["credit_notes"]:
            note = (await client.get(f"/v1/credit-notes/{listed['id']}", headers=ADMIN)).json()
            assert not (note["amount"].startswith("-") and Decimal(note["amount"]) == 0), note  # "0", not "-0"
            notes.append((note["kind"], *(Decimal(note[k]) for k in ("total", "amount", "amount_rounding"))))
        seen.append((notes, await _wallet(client, cid)))
    return seen


async def _no_breakage_and_verified(client, currency: str) -> None:
    tb = (await client.get(f"/v1/audit/trial-balance?currency={currency}", headers=ADMIN)).json()
    assert tb["total_debits"] == tb["total_credits"]
    breakage = [a for a in tb["accounts"] if a["account"] == f"income:platform:breakage:{currency}"]
    assert all(Decimal(a["balance"]) == 0 for a in breakage), breakage
    verify = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]


D = Decimal


async def test_a_prepaid_customer_paid_by_a_grant_and_a_top_up_gets_each_note_s_whole_amount(client) -> None:
    """By hand, prepaid JPY: a promotional grant of 2 yen (priority 50, spent first) and a top-up of
    1,000 yen; 3 calls of 1,000 tokens at 1,500 yen per 1M: 4.5 yen, 2 from the grant and 2.5 from
    the top-up: available 1,002 - 4.5 = 997.5, nothing owed. v2 (1,000 yen): 3 yen, a note of -1.5
    that moves -2 (half to even): 999.5. v3 (3,000 yen): 9 yen, +6 moved: 993.5. v4 (1,499 yen):
    4.497 yen, -4.503 that moves -5: 998.5. Nothing owed at any point, nothing to breakage."""
    now = datetime.now(UTC)
    period = period_of(now, Cycle("UTC", None))
    await _book(client, "JPY", "v1", "2026-01-01T00:00:00Z", "1500")
    cid = "cnn-pre-jpy"
    await _customer(client, cid, "JPY", "prepaid")
    granted = await client.post(f"/v1/customers/{cid}/grants", headers=ADMIN, json={"amount": "2", "reason": "promo"})
    assert granted.status_code == 201, granted.text
    topped = await client.post(f"/v1/customers/{cid}/topups", headers=ADMIN, json={"amount": "1000", "reference": "p1"})
    assert topped.status_code == 201, topped.text
    await _usage(client, cid, [1000] * 3, now)
    assert await _wallet(client, cid) == (D("997.5"), 0)
    [closed] = (await close_early(client, ADMIN, cid, period))["closed"]
    assert D(closed["amount_due"]) == 0, closed
    assert await _rerates(client, cid, "JPY", ["1000", "3000", "1499"], period) == [
        ([("credit", D("-1.5"), D("-2"), D("-0.5"))], (D("999.5"), 0)),
        ([("debit", D("6"), D("6"), D("0"))], (D("993.5"), 0)),
        ([("credit", D("-4.503"), D("-5"), D("-0.497"))], (D("998.5"), 0)),
    ]
    await _no_breakage_and_verified(client, "JPY")


async def test_the_three_notes_in_a_currency_of_three_decimals_round_half_to_even(client) -> None:
    """By hand, postpaid KWD (3 decimals): 3 calls of 1,000 tokens at 1.5 dinars per 1M: 0.0045,
    due 0.004 (half to even). v2 (1 dinar): 0.003, a note of -0.0015 that moves -0.002 (half to
    even; 0.0005 from rounding): owed 0.002. v3 (3): 0.009, +0.006 moved: owed 0.008. v4 (1.499):
    3 x 0.001499 = 0.004497, a note of -0.004503 that moves -0.005 (0.000497 from rounding): owed
    0.003, no lot opened, nothing to breakage."""
    now = datetime.now(UTC)
    period = period_of(now, Cycle("UTC", None))
    await _book(client, "KWD", "v1", "2026-01-01T00:00:00Z", "1.5")
    cid = "cnn-kwd-thrice"
    await _customer(client, cid, "KWD", "postpaid")
    await _usage(client, cid, [1000] * 3, now)
    [closed] = (await close_early(client, ADMIN, cid, period))["closed"]
    assert D(closed["amount_due"]) == D("0.004"), closed
    assert await _rerates(client, cid, "KWD", ["1", "3", "1.499"], period) == [
        ([("credit", D("-0.0015"), D("-0.002"), D("-0.0005"))], (0, D("0.002"))),
        ([("debit", D("0.006"), D("0.006"), D("0"))], (0, D("0.008"))),
        ([("credit", D("-0.004503"), D("-0.005"), D("-0.000497"))], (0, D("0.003"))),
    ]
    wallet = (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()
    assert wallet["grants"] == [], wallet
    await _no_breakage_and_verified(client, "KWD")


# By hand, JPY, 1 call of 1,000 tokens at 1,500 yen per 1M: 1.5 yen (postpaid: due 2, half to even).
# v2 at 1,400 yen: 1.4, a note of -0.1 that moves 0 yen; at 1,000 yen: 1.0, -0.5 that moves 0 (half
# to even: 0 is even). The customer gets back nothing (what the note moves), owes 2 still (postpaid)
# or keeps 1,000 - 1.5 = 998.5 (prepaid): the whole correction is the rounding's.
SMALL = [
    ("postpaid", "1400", "-0.1", (0, D("2"))),
    ("postpaid", "1000", "-0.5", (0, D("2"))),
    ("prepaid", "1400", "-0.1", (D("998.5"), 0)),
    ("prepaid", "1000", "-0.5", (D("998.5"), 0)),
]


@pytest.mark.parametrize(("billing", "price", "total", "after"), SMALL, ids=[f"{b}-{p}" for b, p, _, _ in SMALL])
async def test_a_note_smaller_than_the_minor_unit_moves_nothing_and_loses_nothing(
    client, billing, price, total, after
) -> None:
    now = datetime.now(UTC)
    period = period_of(now, Cycle("UTC", None))
    await _book(client, "JPY", "v1", "2026-01-01T00:00:00Z", "1500")
    cid = f"cnn-small-{billing}"
    await _customer(client, cid, "JPY", billing)
    if billing == "prepaid":
        topped = await client.post(f"/v1/customers/{cid}/topups", headers=ADMIN, json={"amount": "1000"})
        assert topped.status_code == 201, topped.text
    await _usage(client, cid, [1000], now)
    [closed] = (await close_early(client, ADMIN, cid, period))["closed"]
    assert D(closed["amount_due"]) == (2 if billing == "postpaid" else 0), closed
    [(notes, wallet)] = await _rerates(client, cid, "JPY", [price], period)
    assert wallet == after
    # a note, if one is issued, says its exact total and moves 0: all of it rounding
    assert notes in ([], [("credit", D(total), D(0), -D(total))]), notes
    await _no_breakage_and_verified(client, "JPY")

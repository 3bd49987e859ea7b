"""Neighbours of test_credit_note_minor_units.py's three notes after an earlier note's rounding
(commit 7cc7736): the same sequence for a prepaid customer whose charges a promotional grant and a
top-up paid, the same in a currency of three decimals (KWD, whose 0.0005 rounds half to even), and
notes that move less than the currency's minor unit. Each note gives the customer exactly the
money it moves (`amount`), nothing goes to breakage, and verify passes. Since the notes of one
invoice round their running total once (each moves the corrected total rounded, half to even, less
what the invoice made due and the notes before it moved), some figures of 69cf4a8 changed: they are
the sequences whose per-note rounding drifted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
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


async def _closed_postpaid(client, cid: str, currency: str, price: str, tokens: list[int], due: str):
    """A postpaid customer of book cn-<currency> (v1 at `price` per 1M input), its calls of `tokens`
    now, and its period closed early asking `due`: the period."""
    now = datetime.now(UTC)
    period = period_of(now, Cycle("UTC", None))
    await _book(client, currency, "v1", "2026-01-01T00:00:00Z", price)
    await _customer(client, cid, currency, "postpaid")
    await _usage(client, cid, tokens, now)
    [closed] = (await close_early(client, ADMIN, cid, period))["closed"]
    assert closed["amount_due"] == due, closed
    return period


async def test_a_prepaid_customer_paid_by_a_grant_and_a_top_up_gets_each_note_s_whole_amount(client) -> None:
    """By hand, prepaid JPY: a promotional grant of 2 yen (priority 50, spent first) and a top-up of
    1,000 yen; 3 calls of 1,000 tokens at 1,500 yen per 1M: 4.5 yen, 2 from the grant and 2.5 from
    the top-up: available 1,002 - 4.5 = 997.5, nothing owed, nothing rounded at the close. Prepaid,
    the lots paid the exact 4.5; the notes move, in whole yen, the corrected change rounded once:
    round(sum of the notes' totals) less what the notes before moved. v2 (1,000 yen): 3 yen, -1.5,
    round(-1.5) = -2 moved: 999.5. v3 (3,000 yen): 9 yen, +6; round(4.5) = 4, 4 + 2 = 6 moved: 993.5.
    v4 (1,499 yen): 4.497 yen, -4.503; round(-0.003) = 0, 0 - 4 = -4 moved (0.503 credited to
    rounding): 997.5, so the lots paid 4.5 for usage of 4.497 (within half a yen, for ever). Each
    note rounding its own total moved -5 there: 998.5, 3.5 paid for 4.497. Nothing owed at any
    point, nothing to breakage."""
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
        ([("credit", D("-4.503"), D("-4"), D("0.503"))], (D("997.5"), 0)),
    ]
    await _no_breakage_and_verified(client, "JPY")


async def test_the_three_notes_in_a_currency_of_three_decimals_round_half_to_even(client) -> None:
    """By hand, postpaid KWD (3 decimals): 3 calls of 1,000 tokens at 1.5 dinars per 1M: 0.0045,
    due 0.004 (half to even; the close's rounding -0.0005). v2 (1 dinar): 0.003, a note of -0.0015;
    round(0.003) = 0.003, 0.003 - 0.004 = -0.001 moved (0.0005 credited to rounding): owed 0.003.
    v3 (3): 0.009, +0.006; round(0.009) - 0.003 = 0.006 moved: owed 0.009. v4 (1.499): 3 x 0.001499
    = 0.004497, -0.004503; round(0.004497) = 0.004 (0.0045 would be half: 0.004497 is below),
    0.004 - 0.009 = -0.005 moved (0.000497 debited): owed 0.004, no lot opened, nothing to
    breakage. Each note rounding its own total moved -0.002, +0.006, -0.005: owed 0.003."""
    cid = "cnn-kwd-thrice"
    period = await _closed_postpaid(client, cid, "KWD", "1.5", [1000] * 3, "0.004")
    assert await _rerates(client, cid, "KWD", ["1", "3", "1.499"], period) == [
        ([("credit", D("-0.0015"), D("-0.001"), D("0.0005"))], (0, D("0.003"))),
        ([("debit", D("0.006"), D("0.006"), D("0"))], (0, D("0.009"))),
        ([("credit", D("-0.004503"), D("-0.005"), D("-0.000497"))], (0, D("0.004"))),
    ]
    wallet = (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()
    assert wallet["grants"] == [], wallet
    await _no_breakage_and_verified(client, "KWD")


# By hand, JPY, 1 call of 1,000 tokens at 1,500 yen per 1M: 1.5 yen (postpaid: due 2, half to even,
# the close's rounding +0.5). v2 at 1,400 yen: 1.4, a note of -0.1; at 1,000 yen: 1.0, -0.5.
# Postpaid, the note moves round(1.4) - 2 = -1 (0.9 yen debited to rounding), or round(1.0) - 2 = -1
# (0.5 debited): owed 1, what the corrected usage costs in whole yen (each note rounding its own
# total moved 0 and left 2 owed). Prepaid, the top-up paid the exact 1.5 and the note moves
# round(-0.1) = 0 or round(-0.5) = 0 (half to even: 0 is even): 1,000 - 1.5 = 998.5 kept, the whole
# correction is the rounding's.
SMALL = [
    ("postpaid", "1400", "-0.1", "-1", (0, D("1"))),
    ("postpaid", "1000", "-0.5", "-1", (0, D("1"))),
    ("prepaid", "1400", "-0.1", "0", (D("998.5"), 0)),
    ("prepaid", "1000", "-0.5", "0", (D("998.5"), 0)),
]


@pytest.mark.parametrize(
    ("billing", "price", "total", "amount", "after"), SMALL, ids=[f"{b}-{p}" for b, p, *_ in SMALL]
)
async def test_a_note_smaller_than_the_minor_unit_moves_what_the_rounded_total_moved(
    client, billing, price, total, amount, after
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
    # the note says its exact total and moves `amount`, the rest rounding
    assert notes == [("credit", D(total), D(amount), D(amount) - D(total))], notes
    await _no_breakage_and_verified(client, "JPY")


async def test_three_notes_in_dollars_leave_owed_the_corrected_usage_rounded_once(client, scratch_url) -> None:
    """By hand, postpaid USD: 5 calls of 1,500 tokens at $10 per 1M: $0.075, due $0.08 (half to even;
    the close's rounding +$0.005). v2 ($7): $0.0525, a note of -$0.0225; round($0.0525) = $0.05,
    $0.05 - $0.08 = -$0.03 moved ($0.0075 debited to rounding): owed $0.05. v3 ($13): $0.0975,
    +$0.045; round($0.0975) = $0.10, $0.10 - $0.05 = $0.05 moved ($0.005 credited): owed $0.10. v4
    ($9.99): 7,500 x $9.99/M = $0.074925, -$0.022575; round($0.074925) = $0.07, $0.07 - $0.10 = -$0.03
    moved ($0.007425 debited): owed $0.07. Each note rounding its own total moved -$0.02, +$0.04,
    -$0.02: owed $0.08 for usage of $0.074925. Rounding: the close's $0.005 and v3's $0.005
    credited, v2's $0.0075 and v4's $0.007425 debited: $0.004925 net debited, $0.074925 - $0.07."""
    cid = "cnn-usd-thrice"
    period = await _closed_postpaid(client, cid, "USD", "10", [1500] * 5, "0.08")
    assert await _rerates(client, cid, "USD", ["7", "13", "9.99"], period) == [
        ([("credit", D("-0.0225"), D("-0.03"), D("-0.0075"))], (0, D("0.05"))),
        ([("debit", D("0.045"), D("0.05"), D("0.005"))], (0, D("0.10"))),
        ([("credit", D("-0.022575"), D("-0.03"), D("-0.007425"))], (0, D("0.07"))),
    ]
    tb = (await client.get("/v1/audit/trial-balance?currency=USD", headers=ADMIN)).json()
    [rounding] = [a for a in tb["accounts"] if a["account"] == "income:platform:rounding:USD"]
    assert (D(rounding["debits"]), D(rounding["credits"])) == (D("0.014925"), D("0.01")), rounding
    await _no_breakage_and_verified(client, "USD")
    # verify still names a note whose amount is not its total and its rounding (raw SQL past the
    # notes' immutability, the content hash made to match): the last note said to move -$0.02
    [last] = (await client.get(f"/v1/customers/{cid}/credit-notes", headers=ADMIN)).json()["credit_notes"][-1:]
    with psycopg.connect(scratch_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            """UPDATE credit_notes n SET content = f.c, content_hash = sha256(convert_to(f.c::text, 'UTF8'))
                          FROM (SELECT id, jsonb_set(content, '{amount}', '"-0.02"') AS c FROM credit_notes) f
                         WHERE f.id = n.id AND n.id = %s""",
            (last["id"],),
        )
    verify = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    [check] = [c for c in verify["checks"] if c["name"] == "credit_notes"]
    assert not check["ok"] and f"credit note {last['number']}: total -0.022575, amount -0.02" in str(check), check

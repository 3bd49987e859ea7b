"""Accounts receivable ageing (`GET /v1/receivables/ageing`): per customer, what its receivable
owes at `at`, split into what no invoice asks yet (`unbilled`) and its open invoices by days past
due, with totals per currency that equal the receivable accounts of the trial balance at the same
instant. Worked by hand: prices per 1M input tokens; periods are the current UTC month, closed
early (the close's clock is the period's end + 1 h 1 s); an invoice is due 30 days after its
period's end."""
from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.api.apps import api_client, sign_in
from tests.api.closing import close_early, utc
from wallets.periods import Cycle, following, period_of

ADMIN = {"Authorization": "Bearer ar-admin"}
CYCLE = Cycle("UTC", None)


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="ar-admin") as c:
        yield c


async def _book(client, currency: str, price: str, version: str = "v1",
                effective_from: str = "2026-01-01T00:00:00Z") -> None:
    made = await client.post("/v1/price-books", headers=ADMIN, json={
        "id": f"ar-{currency}", "version": version, "currency": currency, "effective_from": effective_from,
        "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": price}]})
    assert made.status_code == 201, made.text


async def _postpaid(client, cid: str, currency: str, tokens: list[int], name: str | None = None) -> None:
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": cid, "currency": currency, "price_book": f"ar-{currency}", "billing": "postpaid",
        **({"name": name} if name else {})})
    assert created.status_code == 201, created.text
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": f"{cid}-{i}", "customer_id": cid, "model": "model-a", "timestamp": utc(datetime.now(UTC)),
         "usage": {"input_tokens": n, "output_tokens": 0}} for i, n in enumerate(tokens)])
    assert sent.json()["accepted"] == len(tokens), sent.text


async def _ageing(client, **query) -> dict:
    got = await client.get("/v1/receivables/ageing", headers=ADMIN,
                           params={k: utc(v) if isinstance(v, datetime) else v for k, v in query.items()})
    assert got.status_code == 200, got.text
    return got.json()


def _figures(row: dict) -> tuple[str, ...]:
    return tuple(row[k] for k in ("unbilled", "current", "days_1_30", "days_31_60", "days_61_90", "days_over_90",
                                  "total"))


async def _tied_to_trial_balance(client, report: dict) -> None:
    """Each currency's total is what the receivable accounts owe in the trial balance at `at`."""
    for totals in report["totals"]:
        cur = totals["currency"]
        tb = (await client.get("/v1/audit/trial-balance", headers=ADMIN,
                               params={"at": report["at"], "currency": cur})).json()
        owed = sum(Decimal(a["balance"]) for a in tb["accounts"]
                   if a["account"].startswith("asset:customer:") and a["account"].endswith(":receivable"))
        assert Decimal(totals["total"]) == owed, (totals, tb)
        assert Decimal(totals["total"]) == sum(Decimal(x) for x in _figures(totals)[:-1])
        rows = [r for r in report["customers"] if r["currency"] == cur]
        assert Decimal(totals["total"]) == sum(Decimal(r["total"]) for r in rows)


async def test_an_invoice_ages_through_the_buckets_and_a_partial_payment_counts_from_when_it_was_paid(
        client) -> None:
    await _book(client, "USD", "10")
    await _postpaid(client, "acme", "USD", [1_000_000], name="Acme Inc.")  # $10.00
    period = period_of(datetime.now(UTC), CYCLE)
    due = period.end + timedelta(days=30)
    # before the close: owed, but on no invoice yet
    before = await _ageing(client, at=period.end)
    [row] = before["customers"]
    assert (row["customer_id"], row["customer_name"], row["billing"]) == ("acme", "Acme Inc.", "postpaid")
    assert _figures(row) == ("10.00", "0.00", "0.00", "0.00", "0.00", "0.00", "10.00") and row["invoices"] == []
    await _tied_to_trial_balance(client, before)
    [closed] = (await close_early(client, ADMIN, "acme", period))["closed"]
    invoice = (await client.get(f"/v1/invoices/{closed['invoice_id']}", headers=ADMIN)).json()
    assert invoice["due_at"] == utc(due)
    # by days past due, rounded up: due at midnight, one second later is a day late
    for at, bucket, days in [(due - timedelta(days=1), "current", 0), (due, "current", 0),
                             (due + timedelta(seconds=1), "days_1_30", 1), (due + timedelta(days=30), "days_1_30", 30),
                             (due + timedelta(days=30, seconds=1), "days_31_60", 31),
                             (due + timedelta(days=60), "days_31_60", 60), (due + timedelta(days=61), "days_61_90", 61),
                             (due + timedelta(days=90), "days_61_90", 90),
                             (due + timedelta(days=90, hours=1), "days_over_90", 91)]:
        report = await _ageing(client, at=at)
        [row] = report["customers"]
        [aged] = row["invoices"]
        assert (aged["bucket"], aged["days_past_due"], aged["amount_outstanding"]) == (bucket, days, "10.00"), at
        assert row[bucket] == row["total"] == "10.00" and row["unbilled"] == "0.00"
        await _tied_to_trial_balance(client, report)
    # $4.00 paid 10 days after the due date
    wallets = client.app.state.services.wallets
    paid_at = due + timedelta(days=10)
    wallets.clock = wallets.engine.clock = lambda: paid_at
    paid = await client.post(f"/v1/invoices/{invoice['id']}/payments", headers=ADMIN,
                             json={"amount": "4.00", "reference": "wire-1"})
    assert paid.status_code == 201, paid.text
    earlier = await _ageing(client, at=paid_at - timedelta(seconds=1))  # an `at` before the payment
    [row] = earlier["customers"]
    assert (row["invoices"][0]["amount_paid"], row["days_1_30"], row["total"]) == ("0.00", "10.00", "10.00")
    await _tied_to_trial_balance(client, earlier)
    later = await _ageing(client, at=due + timedelta(days=75))
    [row] = later["customers"]
    assert (row["invoices"][0]["amount_paid"], row["invoices"][0]["amount_outstanding"]) == ("4.00", "6.00")
    assert _figures(row) == ("0.00", "0.00", "0.00", "0.00", "6.00", "0.00", "6.00")
    await _tied_to_trial_balance(client, later)
    # the default `at` is the server's clock; paid in full, the customer leaves the report
    assert (await _ageing(client))["at"] == utc(paid_at)
    rest = await client.post(f"/v1/invoices/{invoice['id']}/payments", headers=ADMIN,
                             json={"amount": "6.00", "reference": "wire-2"})
    assert rest.status_code == 201, rest.text
    settled = await _ageing(client, at=due + timedelta(days=75))
    assert settled["customers"] == [] and settled["totals"] == []


async def test_two_currencies_are_totalled_apart_and_a_rounded_amount_due_ages_as_invoiced(client) -> None:
    """4.5 yen of calls are due as 4 yen (the close rounds the receivable to whole yen); $10.00 and
    $2.50 of two customers add up in USD only."""
    await _book(client, "USD", "10")
    await _book(client, "JPY", "1500")
    await _postpaid(client, "us-1", "USD", [1_000_000])
    await _postpaid(client, "us-2", "USD", [250_000])
    await _postpaid(client, "jp-1", "JPY", [1000, 1000, 1000])
    period = period_of(datetime.now(UTC), CYCLE)
    open_report = await _ageing(client, at=period.end)
    assert [(t["currency"], t["customers"], t["unbilled"], t["total"]) for t in open_report["totals"]] == [
        ("JPY", 1, "4.5", "4.5"), ("USD", 2, "12.50", "12.50")]
    await _tied_to_trial_balance(client, open_report)
    for cid in ("us-1", "us-2", "jp-1"):
        await close_early(client, ADMIN, cid, period)
    at = period.end + timedelta(days=45)  # 15 days past due
    report = await _ageing(client, at=at)
    assert [(t["currency"], t["days_1_30"], t["total"]) for t in report["totals"]] == [
        ("JPY", "4", "4"), ("USD", "12.50", "12.50")]
    await _tied_to_trial_balance(client, report)
    only_yen = await _ageing(client, at=at, currency="JPY")
    assert [r["customer_id"] for r in only_yen["customers"]] == ["jp-1"] and len(only_yen["totals"]) == 1
    one = await _ageing(client, at=at, customer="us-2")
    assert [(r["customer_id"], r["days_1_30"]) for r in one["customers"]] == [("us-2", "2.50")]
    assert [(t["currency"], t["total"]) for t in one["totals"]] == [("USD", "2.50")]


async def test_a_credit_note_not_yet_applied_is_taken_off_the_oldest_invoice(client) -> None:
    """$10.00 invoiced, re-rated to $7.00: the credit note gives $3.00 back on the receivable at
    once, and the next close records it as a payment of the invoice. The ageing shows $7.00 owed
    on the invoice both before that close ($3.00 unapplied credit) and after it ($3.00 paid)."""
    await _book(client, "USD", "10")
    await _postpaid(client, "cn", "USD", [1_000_000])
    period = period_of(datetime.now(UTC), CYCLE)
    [closed] = (await close_early(client, ADMIN, "cn", period))["closed"]
    await _book(client, "USD", "7", version="v2", effective_from=utc(period.start))
    applied = await client.post("/v1/rerate", headers=ADMIN, json={
        "price_book": "ar-USD", "version": "v2", "from": utc(period.start), "to": utc(period.end), "mode": "apply"})
    assert applied.status_code == 200 and len(applied.json()["credit_notes"]) == 1, applied.text
    at = period.end + timedelta(days=10)
    before = await _ageing(client, at=at)
    [row] = before["customers"]
    [aged] = row["invoices"]
    assert (aged["invoice_id"], aged["amount_due"], aged["amount_paid"], aged["amount_outstanding"]) == (
        closed["invoice_id"], "10.00", "0.00", "7.00")
    assert (row["current"], row["unapplied_credit"], row["unbilled"], row["total"]) == ("7.00", "3.00", "0.00", "7.00")
    await _tied_to_trial_balance(client, before)
    await close_early(client, ADMIN, "cn", following(period, CYCLE))
    after = await _ageing(client, at=at)
    [row] = after["customers"]
    [aged] = row["invoices"]
    assert (aged["amount_paid"], aged["amount_outstanding"], row["unapplied_credit"]) == ("3.00", "7.00", "0.00")
    assert _figures(row) == _figures(before["customers"][0])
    await _tied_to_trial_balance(client, after)


async def test_pages_share_one_at_and_one_snapshot_and_the_totals_are_the_whole_report(client) -> None:
    await _book(client, "USD", "10")
    for cid in ("p1", "p2", "p3"):
        await _postpaid(client, cid, "USD", [100_000])  # $1.00 each
    first = await _ageing(client, limit=2)
    assert [r["customer_id"] for r in first["customers"]] == ["p1", "p2"] and first["next_cursor"]
    assert [(t["customers"], t["total"]) for t in first["totals"]] == [(3, "3.00")]
    await _postpaid(client, "p0", "USD", [100_000])  # after the first page: not in this report
    second = await _ageing(client, limit=2, cursor=first["next_cursor"])
    assert [r["customer_id"] for r in second["customers"]] == ["p3"] and second["next_cursor"] is None
    assert second["at"] == first["at"] and second["totals"] == first["totals"]
    assert [(t["customers"], t["total"]) for t in (await _ageing(client))["totals"]] == [(4, "4.00")]


@pytest.mark.parametrize(("query", "status", "code"), [
    ({"at": "yesterday"}, 422, "validation_error"),
    ({"at": "2026-12-01T00:00:00"}, 422, "validation_error"),  # no offset
    ({"limit": "0"}, 422, "validation_error"),
    ({"customer": "no such/id"}, 422, "validation_error"),
    ({"currency": "XXX"}, 404, "not_found"),
    ({"customer": "nobody"}, 404, "not_found"),
    ({"cursor": "bm90LWEtY3Vyc29y"}, 400, "invalid_cursor"),
])
async def test_bad_parameters_are_problems_with_a_code(client, query, status, code) -> None:
    got = await client.get("/v1/receivables/ageing", headers=ADMIN, params=query)
    assert got.status_code == status, got.text
    assert got.headers["content-type"].startswith("application/problem+json") and got.json()["code"] == code


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+00:00"])
async def test_a_cursor_whose_at_is_past_the_calendar_is_an_invalid_cursor(client, moment) -> None:
    """A next page's `at` is the cursor's: one edited to the last second of year 9999 (or the first of
    year 1) aged each open invoice in the customer's time zone past what a date can hold,
    and the page was a 500; it is 400 `invalid_cursor`, as any other cursor not made here."""
    await _book(client, "USD", "10")
    at = datetime.now(UTC) + timedelta(days=80)
    for cid, time_zone in (("east", "Pacific/Kiritimati"), ("west", "America/New_York")):
        created = await client.post("/v1/customers", headers=ADMIN, json={
            "id": cid, "currency": "USD", "price_book": "ar-USD", "billing": "postpaid", "time_zone": time_zone})
        assert created.status_code == 201, created.text
        sent = await client.post("/v1/usage-events", headers=ADMIN, json=[{
            "event_id": cid, "customer_id": cid, "model": "model-a", "timestamp": utc(datetime.now(UTC)),
            "usage": {"input_tokens": 100_000, "output_tokens": 0}}])  # $1.00
        assert sent.json()["accepted"] == 1, sent.text
        await close_early(client, ADMIN, cid, period_of(datetime.now(UTC), Cycle(time_zone, None)))
    first = await _ageing(client, limit=1, at=at)
    assert [r["invoices"][0]["amount_outstanding"] for r in first["customers"]] == ["1.00"]
    version, digest, snapshot, [_, last] = json.loads(base64.urlsafe_b64decode(first["next_cursor"] + "=="))
    edited = base64.urlsafe_b64encode(json.dumps([version, digest, snapshot, [moment, last]]).encode()).decode()
    got = await client.get("/v1/receivables/ageing", headers=ADMIN, params={
        "limit": 1, "at": utc(at), "cursor": edited.rstrip("=")})
    assert got.status_code == 400, got.text
    assert got.headers["content-type"].startswith("application/problem+json")
    assert got.json()["code"] == "invalid_cursor"


async def test_only_an_admin_reads_the_ageing(client) -> None:
    await _book(client, "USD", "10")
    await _postpaid(client, "mine", "USD", [100_000])
    for scope, customers in (("auditor", None), ("customer:mine", None), ("admin", ["mine"])):
        made = await client.post("/v1/api-keys", headers=ADMIN, json={
            "scope": scope, **({"customers": customers} if customers else {})})
        assert made.status_code == 201, made.text
        got = await client.get("/v1/receivables/ageing", headers={"Authorization": f"Bearer {made.json()['key']}"})
        assert got.status_code == 403 and got.json()["code"] == "forbidden", (scope, got.text)


async def test_the_console_shows_the_ageing_as_the_api_answers_it(scratch_url) -> None:
    """`/console/receivables` (admin): each currency's figures and each customer's row."""
    async with api_client(scratch_url, admin="ar-console", console=True) as c:
        admin = {"Authorization": "Bearer ar-console"}
        made = await c.post("/v1/price-books", headers=admin, json={
            "id": "ar-USD", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
            "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "10"}]})
        assert made.status_code == 201, made.text
        created = await c.post("/v1/customers", headers=admin, json={
            "id": "late", "name": "Late & Co", "currency": "USD", "price_book": "ar-USD", "billing": "postpaid"})
        assert created.status_code == 201, created.text
        sent = await c.post("/v1/usage-events", headers=admin, json=[{
            "event_id": "e1", "customer_id": "late", "model": "model-a", "timestamp": utc(datetime.now(UTC)),
            "usage": {"input_tokens": 1_000_000, "output_tokens": 0}}])
        assert sent.json()["accepted"] == 1, sent.text
        period = period_of(datetime.now(UTC), CYCLE)
        await close_early(c, admin, "late", period)
        await sign_in(c, "ar-console")
        at = utc(period.end + timedelta(days=30 + 95))  # 95 days past due
        page = await c.get("/console/receivables", params={"at": at, "currency": ""})
        assert page.status_code == 200, page.text
        row = re.search(r'<tr data-customer="late">(.*?)</tr>', page.text, re.S).group(1)
        assert "Late &amp; Co" in row
        cells = re.findall(r'<td class="num">([^<]*)</td>', row)
        assert cells == ["0.00", "0.00", "0.00", "0.00", "0.00", "10.00", "10.00"], cells
        figures = re.search(r'<div class="figures" data-currency="USD">(.*?)</div>\n</div>', page.text, re.S).group(1)
        assert re.search(r'data-figure="total">10\.00<', figures)
        assert re.search(r'data-figure="over-90">10\.00<', figures)
        assert (await c.get("/console/receivables", params={"at": "soon"})).status_code == 422



async def test_an_at_a_fraction_of_a_microsecond_after_usage_ages_that_usage(client) -> None:
    """Entries are kept to the microsecond; an `at` may carry 9 digits. 1,000,000 input tokens at
    $10 per 1M = $10.00 of usage, posted at T0 (.xxxxxx); T = T0 + 100 ns is after it, so at T the
    customer owes $10.00 unbilled, as the trial balance at T (journal, since 1c59749) says. The
    digits past the microsecond were dropped: T was read as T0, before which nothing occurred
    (no row)."""
    await _book(client, "USD", "10")
    await _postpaid(client, "nano", "USD", [1_000_000])
    [entry] = (await client.get("/v1/journal", headers=ADMIN, params={"customer": "nano"})).json()["entries"]
    t0 = entry["occurred_at"]
    assert re.fullmatch(r".*\.[0-9]{6}Z", t0), t0
    after = await _ageing(client, at=t0[:-1] + "100Z")
    assert [(r["customer_id"], r["unbilled"], r["total"]) for r in after["customers"]] == [("nano", "10.00", "10.00")]
    await _tied_to_trial_balance(client, after)
    assert (await _ageing(client, at=t0))["customers"] == []  # at T0 itself: the usage did not occur before T0

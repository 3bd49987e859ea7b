"""The auditor's view of everything added lately, on one ledger built through the API: top-ups,
grants with priority and expiry, reserves, captures, settles and releases, usage events, customer
price overrides (a discount that covers a volume tier's true-up, a free allowance that pays calls
whole: free calls, which post no entry), a partial revocation, a whole revocation, a partial
refund, a lot expiry after its revocation, period closes with invoices and a payment, a re-rate
backdated over closed periods (credit notes) and the next periods' closes. Every derived view must
agree with the postings: the Beancount export (bean-check, balances equal to the trial balance,
every posting once), the jsonl export (verified offline, every entry sealed), statements (opening
+ movements = closing), balances at T (the sum of the postings before T), usage reports (the
charges), invoices (the postings billed in their periods), verify.

Book `av` (USD): model-a input $10/M, output $20/M; model-v output volume-tiered, $20/M up to
100,000 tokens and $10/M beyond. acme (prepaid) has 50 % off model-v; initech (postpaid) a $1.00
free allowance per period."""
from __future__ import annotations

import contextlib
import csv
import io
import itertools
import os
import re
import subprocess
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from beancount import loader
from beancount.core import data
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.bench.common import scratch_database
from api.cli import parser
from api.settings import Settings
from ledger.db import connect
from wallets.expiry import expire_grants
from wallets.jobs import fold_usage, seal_journal
from wallets.periods import Cycle, period_of

ADMIN = {"Authorization": "Bearer auditor-view-admin"}
CUSTOMERS = ("acme", "initech")


def utc(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def q(at: datetime | str) -> str:
    return quote(at if isinstance(at, str) else at.astimezone(UTC).isoformat())


def book(version: str, effective_from: str, a_in: str) -> dict:
    return {"id": "av", "version": version, "currency": "USD", "effective_from": effective_from, "rules": [
        {"id": "a-in", "model": "model-a", "token_type": "input", "price": a_in},
        {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
        {"id": "f-in", "model": "model-f", "token_type": "input", "price": "1.00"},
        {"id": "v-out", "model": "model-v", "token_type": "output", "tier_mode": "volume",
         "tiers": [{"up_to": 100_000, "price": "20"}, {"up_to": None, "price": "10"}]}]}


class Api:
    def __init__(self, client: AsyncTestClient) -> None:
        self.client = client

    async def call(self, method: str, path: str, body=None, status: int | None = None) -> dict:
        answer = await self.client.request(method, path, json=body, headers=ADMIN)
        assert answer.status_code < 300 if status is None else answer.status_code == status, (path, answer.text)
        return answer.json()

    async def post(self, path: str, body=None, status: int | None = None) -> dict:
        return await self.call("POST", path, {} if body is None else body, status)

    async def get(self, path: str) -> dict:
        return await self.call("GET", path)


async def _job(url: str, step):
    db = connect(url, pool_size=1)
    try:
        return await step(db)
    finally:
        await db.dispose()


async def _settle(tt: Api, reservation: dict, input_tokens: int, output_tokens: int, final: bool = True) -> dict:
    return await tt.post(f"/v1/reservations/{reservation['id']}/settle", {
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}, "final": final})


def _ago(now: datetime, minutes: int) -> datetime:
    """`minutes` before `now`, but in now's billing period (a run just after a month's start
    would time usage in the period before, which the scenario does not close)."""
    return max(now - timedelta(minutes=minutes), period_of(now, Cycle()).start)


async def _free_call(tt: Api, event_id: str, now: datetime) -> None:
    """A call of acme's that its contract price of 0 makes free: a charge, and no entry."""
    answer = await tt.post("/v1/usage-events", [{"event_id": event_id, "customer_id": "acme", "model": "model-f",
                                                 "timestamp": utc(_ago(now, 10)),
                                                 "usage": {"input_tokens": 5_000}}])
    assert answer["accepted"] == 1, answer


async def scenario(tt: Api, url: str) -> dict:
    now = datetime.now(UTC)
    period = period_of(now, Cycle())
    following = period_of(period.end, Cycle())
    await tt.post("/v1/price-books", book("v1", "2026-01-01T00:00:00Z", "10.00"))
    await tt.post("/v1/customers", {"id": "acme", "name": "Acme", "currency": "USD", "price_book": "av"})
    await tt.post("/v1/customers", {"id": "initech", "name": "Initech", "currency": "USD", "price_book": "av",
                                    "billing": "postpaid"})
    hour_ago = utc(min(now - timedelta(hours=1), period.start))
    await tt.call("PUT", "/v1/customers/acme/price-overrides", {
        "effective_from": hour_ago, "discounts": [{"id": "half-v", "model": "model-v", "percent": "50"}],
        "contract_prices": [{"id": "free-f", "model": "model-f", "price": "0"}]})
    await tt.call("PUT", "/v1/customers/initech/price-overrides", {
        "effective_from": hour_ago, "free_allowances": [{"id": "free-1", "amount": "1.00"}]})

    # acme's lots, in consumption order: loyalty (10), welcome (60, expiring), the two top-ups (100)
    await tt.post("/v1/customers/acme/topups", {"amount": "50.00", "reference": "pay-acme-1"})
    refundable = (await tt.post("/v1/customers/acme/topups", {"amount": "10.00", "reference": "pay-acme-2"}))[
        "grant_id"]
    loyalty = (await tt.post("/v1/customers/acme/grants", {"amount": "3.00", "priority": 10, "reason": "loyalty"}))[
        "grant_id"]
    welcome = (await tt.post("/v1/customers/acme/grants", {"amount": "5.00", "priority": 60, "reason": "welcome",
                                                            "expires_at": utc(now + timedelta(hours=1))}))["grant_id"]
    # an agent loop captured in two parts (0.12 + 0.06), a release, a settle above its hold (1.04)
    held = await tt.post("/v1/reservations", {"customer_id": "acme", "request_id": "agent-1", "model": "model-a",
                                              "estimate": {"input_tokens": 30_000, "max_output_tokens": 5_000}})
    await _settle(tt, held, 10_000, 1_000, final=False)
    await _settle(tt, held, 5_000, 500)
    dropped = await tt.post("/v1/reservations", {"customer_id": "acme", "request_id": "dropped-1",
                                                 "model": "model-a", "amount": "0.50"})
    await tt.post(f"/v1/reservations/{dropped['id']}/release")
    over = await tt.post("/v1/reservations", {"customer_id": "acme", "request_id": "over-1", "model": "model-a",
                                              "amount": "0.01"})
    await _settle(tt, over, 100_000, 2_000)
    # model-v: 60,000 then 70,000 output tokens, 1.20 + 1.10 graduated, half off: 0.60 + 0.55
    answer = await tt.post("/v1/usage-events", [
        {"event_id": f"v-{i}", "customer_id": "acme", "model": "model-v",
         "timestamp": utc(_ago(now, m)), "usage": {"output_tokens": n}}
        for i, (m, n) in enumerate(((30, 60_000), (20, 70_000)))])
    assert answer["accepted"] == 2, answer
    # a part of the welcome grant revoked, the rest of the loyalty grant revoked, a part of a top-up refunded
    part = await tt.post(f"/v1/customers/acme/grants/{welcome}/reverse", {"amount": "2.00", "reason": "ended"})
    assert part["reversal"] == "revocation", part
    whole = await tt.post(f"/v1/customers/acme/grants/{loyalty}/reverse", {"reason": "abuse"})
    assert whole["reversal"] == "revocation", whole
    refund = await tt.post(f"/v1/customers/acme/grants/{refundable}/reverse", {"amount": "4.00",
                                                                                "reference": "re_1"})
    assert refund["reversal"] == "refund", refund

    # initech: a call the allowance pays whole (no entry), one it pays in part, one it does not
    answer = await tt.post("/v1/usage-events", [
        {"event_id": f"i-{i}", "customer_id": "initech", "model": "model-a",
         "timestamp": utc(_ago(now, m)), "usage": {"input_tokens": n, "output_tokens": o}}
        for i, (m, n, o) in enumerate(((40, 50_000, 0), (35, 100_000, 1_000), (25, 200_000, 0)))])
    assert answer["accepted"] == 3, answer
    await _free_call(tt, "f-0", now)

    # a stream held from the welcome grant over its expiry and its period's close, settled after both
    stream = await tt.post("/v1/reservations", {"customer_id": "acme", "request_id": "stream-1", "model": "model-a",
                                                "amount": "1.00"})
    # the welcome grant expires; both periods close early (acme's true-up gives back), initech pays in part
    assert await _job(url, lambda db: expire_grants(db, now + timedelta(hours=2))) == 1
    # what the closes will finalize, as the upcoming invoices show it now
    upcoming = {cid: await tt.get(f"/v1/customers/{cid}/invoices/upcoming") for cid in CUSTOMERS}
    until = utc(period.end + timedelta(hours=1, seconds=1))
    closing = datetime.now(UTC)  # an early close's entries are dated when written, not at `until`
    closed = {}
    for cid in CUSTOMERS:
        [closed[cid]] = (await tt.post("/v1/billing/close", {"until": until, "customer_id": cid, "early": True}))[
            "closed"]
    await _free_call(tt, "f-1", now)  # after its period closed: late, billed in the next period
    await _settle(tt, stream, 50_000, 0)  # 0.50 charged, 0.50 back to an expired lot: breakage
    rest = await tt.post(f"/v1/customers/acme/grants/{refundable}/reverse", {"reference": "re_2"})
    assert (rest["reversal"], rest["amount"]) == ("refund", "6.00"), rest
    await tt.post(f"/v1/invoices/{closed['initech']['invoice_id']}/payments",
                  {"amount": "1.00", "reference": "wire-initech-1"})
    # the price fix, backdated to the period's start, re-rated over both closed periods: credit notes
    await tt.post("/v1/price-books", book("v2", utc(period.start), "6.00"))
    rerate = {"price_book": "av", "version": "v2", "from": utc(period.start),
              "to": utc(datetime.now(UTC) + timedelta(seconds=1))}  # every call so far, however long this took
    previewed = await tt.post("/v1/rerate", {**rerate, "mode": "preview"})
    applied = await tt.post("/v1/rerate", {**rerate, "mode": "apply"})
    # more usage, and the next periods closed early too
    await tt.post("/v1/usage-events", [
        {"event_id": "late-1", "customer_id": "initech", "model": "model-a", "timestamp": utc(now),
         "usage": {"input_tokens": 300_000, "output_tokens": 0}}])
    later = utc(following.end + timedelta(hours=1, seconds=1))
    for cid in CUSTOMERS:
        await tt.post("/v1/billing/close", {"until": later, "customer_id": cid, "early": True})
    assert await _job(url, seal_journal) > 0
    # the rollups are kept off the write path: what the readers answer is the same once folded
    unfolded = {cid: await _reads(tt, cid) for cid in CUSTOMERS}
    assert await _job(url, fold_usage) > 0
    return {"now": now, "period": period, "following": following, "upcoming": upcoming, "unfolded": unfolded,
            "previewed": previewed, "applied": applied, "closing": closing}


USAGE = "/usage?from=2026-01-01T00:00:00Z&to=2028-01-01T00:00:00Z&group_by="


async def _reads(tt: Api, customer: str) -> dict:
    """What a customer's reports read from the rollups: its usage by day, model, token type and kind,
    by rule and price version, and its upcoming invoice."""
    return {"by_day": await tt.get(f"/v1/customers/{customer}{USAGE}day,model,token_type,kind"),
            "by_rule": await tt.get(f"/v1/customers/{customer}{USAGE}rule_id,price_version"),
            "upcoming": await tt.get(f"/v1/customers/{customer}/invoices/upcoming")}


@pytest.fixture(scope="module")
def ledger_url(server_url, migrated_template):
    with scratch_database(server_url, f"tokentill_auditor_view_{os.getpid()}", template=migrated_template) as url:
        yield url


@pytest.fixture(scope="module")
async def books(ledger_url):
    app = create_app(Settings(admin_key="auditor-view-admin", scheduler=False, webhooks=False), ledger_url)
    async with AsyncTestClient(app=app, base_url="https://console.test") as client:  # the console's cookies are Secure
        tt = Api(client)
        facts = await scenario(tt, ledger_url)
        yield tt, ledger_url, facts


def _run(url: str, commands: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess]:
    """`tokentill audit ...` commands, in this process (a process each took 2-3 s to start on a
    loaded machine) but in a thread of their own, so that their `asyncio.run` never meets the
    tests' event loop; bean-check, which is its own program, beside them."""
    checking = {name: subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for name, args in commands.items() if args[0] == "bean-check"}

    def run(args: list[str]) -> subprocess.CompletedProcess:
        parsed = parser().parse_args(["audit", *args])
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = parsed.func(parsed, Settings(database_url=url))
        return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())

    with ThreadPoolExecutor(1) as thread:
        done = {name: thread.submit(run, args).result() for name, args in commands.items() if args[0] != "bean-check"}
    for name, process in checking.items():
        out, err = process.communicate(timeout=120)
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done


PAYMENTS = ("reference,amount,currency\npay-acme-1,50.00,USD\npay-acme-2,10.00,USD\nre_1,-4.00,USD\n"
            "re_2,-6.00,USD\nwire-initech-1,1.00,USD\n")


@pytest.fixture(scope="module")
def exported(books, tmp_path_factory) -> tuple[Path, dict[str, subprocess.CompletedProcess]]:
    """What the command line makes of the books, run in two waves of processes at once (one at a
    time took most of the module's time): the exports and the reconciliation, then the checks of
    what they wrote. The window is split at the first close, whose entries are dated when written
    (they were dated at its `until`, the hour after the period's end, so that the entries written
    after it, a payment, a refund, a late settle, occurred before them), as those after it are."""
    _, url, facts = books
    out = tmp_path_factory.mktemp("exports")
    (out / "payments.csv").write_text(PAYMENTS)
    cut = facts["closing"].isoformat()
    with psycopg.connect(url) as conn:  # the head the server's seals end at, obtained apart
        (head,) = conn.execute("SELECT encode(chain_hash, 'hex') FROM seals ORDER BY id DESC LIMIT 1").fetchone()
    done = _run(url, {
        "beancount": ["export", "--format", "beancount", "--out", str(out / "books.beancount")],
        "jsonl": ["export", "--format", "jsonl", "--out", str(out / "books.jsonl")],
        "window": ["export", "--format", "jsonl", "--from", cut, "--out", str(out / "window.jsonl")],
        "csv": ["export", "--format", "csv", "--out", str(out / "books.csv")],
        "before": ["export", "--format", "csv", "--to", cut, "--out", str(out / "before.csv")],
        "after": ["export", "--format", "csv", "--from", cut, "--out", str(out / "after.csv")],
        "reconcile": ["reconcile", "--payments", str(out / "payments.csv")]})
    assert all(d.returncode == 0 for name, d in done.items() if name != "reconcile"), done
    done |= _run(url, {"bean-check": ["bean-check", str(out / "books.beancount")],
                       "verify": ["verify", "--file", str(out / "books.jsonl"), "--expect-head", head],
                       "verify window": ["verify", "--file", str(out / "window.jsonl")]})
    done["head"] = subprocess.CompletedProcess([], 0, head, "")
    return out, done


def _db_postings(url: str, before: datetime | None = None) -> dict[str, Decimal]:
    """Every account's balance (debits - credits, display units) from the postings themselves,
    of entries that occurred before `before` (all without it)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT a.code, sum(p.amount), s.scale FROM postings p JOIN journal_entries j ON j.id = p.entry_id
                 JOIN accounts a ON a.id = p.account_id JOIN assets s ON s.code = a.asset
                WHERE %(before)s::timestamptz IS NULL OR j.occurred_at < %(before)s
                GROUP BY a.code, s.scale""", {"before": before}).fetchall()
    return {code: Decimal(total).scaleb(-scale) for code, total, scale in rows if total != 0}


async def test_verify_is_ok_and_the_trial_balance_balances(books):
    tt, url, _ = books
    verified = await tt.post("/v1/audit/verify")
    assert verified["ok"], [c for c in verified["checks"] if not c["ok"]]
    trial = await tt.get("/v1/audit/trial-balance?currency=USD")
    assert trial["total_debits"] == trial["total_credits"]
    assert {a["account"]: Decimal(a["balance"]) for a in trial["accounts"] if Decimal(a["balance"])} == \
        _db_postings(url)
    with psycopg.connect(url) as conn:
        kinds = {k for (k,) in conn.execute("SELECT DISTINCT kind FROM journal_entries")}
    assert {"topup", "grant", "reserve", "settle", "release", "usage", "grant_expiry", "grant_reversal"} <= kinds


async def test_the_beancount_export_passes_bean_check_and_equals_the_trial_balance(books, exported):
    tt, _, _ = books
    out, done = exported
    check = done["bean-check"]
    assert check.returncode == 0 and not check.stdout + check.stderr, check.stdout + check.stderr
    out = out / "books.beancount"
    entries, errors, _ = loader.load_file(str(out))
    assert errors == []
    code_of = {e.account: e.meta["code"] for e in entries if isinstance(e, data.Open)}
    balances: dict[str, Decimal] = defaultdict(Decimal)
    for e in entries:
        if isinstance(e, data.Transaction):
            for p in e.postings:
                balances[code_of[p.account]] += p.units.number
    trial = await tt.get("/v1/audit/trial-balance?currency=USD")
    assert {c: b for c, b in balances.items() if b} == \
        {a["account"]: Decimal(a["balance"]) for a in trial["accounts"] if Decimal(a["balance"])}


async def test_the_jsonl_export_verifies_offline_with_every_entry_sealed(books, exported):
    """Every entry is sealed, and the offline verifier's chain head is the server's last seal's."""
    tt, url, _ = books
    done = exported[1]["verify"]
    assert done.returncode == 0, done.stdout + done.stderr
    with psycopg.connect(url) as conn:
        (total,) = conn.execute("SELECT count(*) FROM journal_entries").fetchone()
    assert f"verified offline: {total} entries" in done.stdout and "not sealed" not in done.stdout, done.stdout
    assert exported[1]["head"].stdout in done.stdout
    page = await tt.get("/v1/journal?limit=1000")
    assert page["next_cursor"] is None and len(page["entries"]) == total
    assert {e["seal"]["status"] for e in page["entries"]} == {"sealed"}


def _account(code: str) -> str:
    return quote(code, safe="")


async def test_balances_at_t_are_the_postings_before_t_and_statements_move_by_them(books):
    """At cuts at entries' exact times, between them, before the first and after the last (the
    closes post at their own clock, in the months ahead): every account's balance at T, and the
    trial balance at T, equal the sum of the postings of the entries that occurred before T; every
    statement between two cuts opens and closes at those balances, its debits less its credits are
    what it moved, and its postings' running balances end at its closing."""
    tt, url, _ = books
    with psycopg.connect(url) as conn:
        times = [t for (t,) in conn.execute("SELECT DISTINCT occurred_at FROM journal_entries ORDER BY 1")]
        codes = [c for (c,) in conn.execute("SELECT code FROM accounts ORDER BY code")]
    cuts = sorted({times[0] - timedelta(days=1), times[0], times[len(times) // 3], times[len(times) // 2],
                   times[-2], times[-1], times[-1] + timedelta(microseconds=1)})
    balance = {}
    for at in cuts:
        expected = _db_postings(url, at)
        trial = await tt.get(f"/v1/audit/trial-balance?currency=USD&at={q(at)}")
        assert {a["account"]: Decimal(a["balance"]) for a in trial["accounts"] if Decimal(a["balance"])} == expected
        for code in codes:
            found = await tt.get(f"/v1/accounts/{_account(code)}/balance?at={q(at)}")
            balance[code, at] = Decimal(found["balance"])
            assert balance[code, at] == expected.get(code, Decimal(0)), (code, at)
    for start, end in itertools.pairwise(cuts):
        for code in codes:
            statement = await tt.get(f"/v1/accounts/{_account(code)}/statement?from={q(start)}&to={q(end)}&limit=1000")
            opening, closing = Decimal(statement["opening_balance"]), Decimal(statement["closing_balance"])
            assert (opening, closing) == (balance[code, start], balance[code, end]), (code, start, end)
            moved = Decimal(statement["total_debits"]) - Decimal(statement["total_credits"])
            assert opening + moved == closing, (code, start, end)
            lines = statement["postings"]
            assert statement["next_cursor"] is None
            assert sum((Decimal(p["amount"]) for p in lines), Decimal(0)) == moved, (code, statement)
            if lines:
                assert Decimal(lines[-1]["balance"]) == closing, (code, statement)


async def _journal(tt: Api, customer: str) -> list[dict]:
    page = await tt.get(f"/v1/journal?customer={customer}&limit=1000")
    assert page["next_cursor"] is None
    return page["entries"]


def _moved(entries: list[dict], account: str, kinds: tuple[str, ...] | None = None, sign: int = 0) -> Decimal:
    """What `entries` posted to the accounts whose code starts with `account` (debits - credits;
    with `sign` 1 the debits alone, -1 the credits alone)."""
    return sum((Decimal(p["amount"]) for e in entries if kinds is None or e["kind"] in kinds
                for p in e["postings"] if p["account"].startswith(account)
                and (sign == 0 or (Decimal(p["amount"]) > 0) == (sign > 0))), Decimal(0))


@pytest.mark.parametrize("customer", CUSTOMERS)
async def test_the_usage_report_sums_the_charges_the_journal_posted(books, customer):
    """The report reads the charges as they stand, re-rated: its amounts add up to the usage
    revenue the settles, usage events and re-rates posted, free calls included (their lines net
    0), and its quantities to the tokens the charges carry."""
    tt, url, _ = books
    report = await tt.get(f"/v1/customers/{customer}/usage?from=2026-01-01T00:00:00Z&to=2028-01-01T00:00:00Z"
                          "&group_by=model,token_type,kind")
    amount = sum((Decimal(r["amount"]) for r in report["rows"]), Decimal(0))
    posted = -_moved(await _journal(tt, customer), "income:platform:usage:", ("settle", "usage", "rerate_adjustment"))
    assert amount == posted, report["rows"]
    with psycopg.connect(url) as conn:
        tokens = conn.execute(
            """SELECT coalesce(sum((u.value)::numeric), 0) FROM charges c, jsonb_each_text(c.usage -> 'canonical') u
                WHERE c.customer_id = %s""", (customer,)).fetchone()[0]
    used = sum(r["quantity"] for r in report["rows"] if r["kind"] == "usage")
    assert used == tokens, report["rows"]


@pytest.mark.parametrize("customer", CUSTOMERS)
async def test_each_invoice_ties_out_to_the_postings_billed_in_its_period(books, customer):
    """An invoice's total is the usage revenue its period's entries posted; its top-ups, grants,
    expirations, refunds, revocations and payments received are what they posted to cash,
    promotions and breakage; its credits, reserved and receivable move, closing less opening, as
    the period's entries moved the lots, the hold and the receivable; each opens where the one
    before closed."""
    tt, _, _ = books
    entries = await _journal(tt, customer)
    invoices = (await tt.get(f"/v1/customers/{customer}/invoices"))["invoices"]
    assert len(invoices) == 2
    closing = {"credits": Decimal(0), "reserved": Decimal(0), "receivable": Decimal(0)}
    for invoice in invoices:
        billed = [e for e in entries if e["metadata"].get("period") == invoice["period"]["label"]]
        figures = {
            "total": -_moved(billed, "income:platform:usage:"),
            "top_ups": _moved(billed, "asset:platform:cash:", ("topup",)),
            "grants": _moved(billed, "expense:platform:promotions:", sign=1),
            "expired": -_moved(billed, "income:platform:breakage:"),
            "refunds": -_moved(billed, "asset:platform:cash:", ("grant_reversal",)),
            # a revocation, and what came back to a grant revoked in whole since (a re-rate's money
            # back, a hold's piece): closed for good, it goes back to promotions, revoked again
            "grants_revoked": -_moved(billed, "expense:platform:promotions:", sign=-1),
            "payments_received": _moved([e for e in billed if e["kind"] not in ("topup", "grant_reversal")],
                                        "asset:platform:cash:"),
        }
        assert {k: Decimal(invoice[k]) for k in figures} == figures, (invoice["number"], invoice)
        opening = {k: Decimal(v) for k, v in invoice["opening_balance"].items()}
        assert opening == closing, invoice["number"]
        closing = {k: Decimal(v) for k, v in invoice["closing_balance"].items()}
        movement = {"credits": -_moved(billed, f"liability:customer:{customer}:lot:"),
                    "reserved": -_moved(billed, f"liability:customer:{customer}:reserved"),
                    "receivable": _moved(billed, f"asset:customer:{customer}:receivable")}
        assert {k: closing[k] - opening[k] for k in movement} == movement, (invoice["number"], invoice)
        lines = sum((Decimal(line["amount"]) for line in invoice["lines"]), Decimal(0))
        assert lines == Decimal(invoice["total"]), invoice["lines"]


async def _console(tt: Api) -> None:
    """The client signed in to the console with the admin key."""
    page = await tt.client.get("/console/sign-in")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text).group(1)
    await tt.client.post("/console/sign-in", data={"key": "auditor-view-admin", "_csrf_token": token})


# The console's invoice page: each figure of the document under the lines, by its data-figure name
CONSOLE_FIGURES = {"top_ups": "top-ups", "grants": "grants", "expired": "expired", "refunds": "refunds",
                   "grants_revoked": "grants-revoked", "payments_received": "payments-received"}


@pytest.mark.parametrize("customer", CUSTOMERS)
async def test_the_console_invoice_page_shows_every_figure_the_invoice_ties_out_with(books, customer):
    """The page's "wallet over the period" showed top-ups, grants and expired but neither refunds
    nor revocations: acme's credits went from 0.00 to 56.50 over top-ups of 60.00, grants of 8.00,
    3.00 expired and 1.87 of credits applied, 6.63 that the page did not account for (4.00
    refunded, 2.63 revoked)."""
    tt, _, _ = books
    await _console(tt)
    for invoice in (await tt.get(f"/v1/customers/{customer}/invoices"))["invoices"]:
        page = await tt.client.get(f"/console/invoices/{invoice['id']}")
        assert page.status_code == 200, page.text
        shown = dict(re.findall(r'data-figure="([a-z-]+)">(?:<strong>)?([-0-9.,]+)<', page.text))
        assert {name: shown.get(name) for name in CONSOLE_FIGURES.values()} == \
            {name: invoice[field] for field, name in CONSOLE_FIGURES.items()}, invoice["number"]


# What an invoice document says beside its identity and its payments
FIGURES = ("lines", "subtotals", "total", "credits_applied", "charged_to_account", "top_ups", "grants", "expired",
           "refunds", "grants_revoked", "payments_received", "opening_balance", "closing_balance", "amount_due",
           "amount_due_rounding", "credit_note_rounding", "adjustments")


@pytest.mark.parametrize("customer", CUSTOMERS)
async def test_the_upcoming_invoice_is_what_the_close_finalized(books, customer):
    tt, _, facts = books
    [first, _] = (await tt.get(f"/v1/customers/{customer}/invoices"))["invoices"]
    upcoming = facts["upcoming"][customer]
    assert {k: upcoming[k] for k in FIGURES} == {k: first[k] for k in FIGURES}


async def test_a_free_call_after_its_period_closed_is_billed_on_the_next_invoice(books):
    tt, _, facts = books
    [first, second] = (await tt.get("/v1/customers/acme/invoices"))["invoices"]
    free = [(ln["kind"], ln["quantity"], ln["amount"], ln["original_period"]) for ln in first["lines"] + second["lines"]
            if ln["model"] == "model-f"]
    assert free == [("usage", 5_000, "0.00", None), ("usage", 5_000, "0.00", facts["period"].label)], free


def test_the_cash_reconciles_with_the_processors_rows_refunds_included(exported):
    done = exported[1]["reconcile"]
    assert done.returncode == 0 and "matched: 5" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("customer", CUSTOMERS)
async def test_the_reports_read_the_same_before_and_after_the_rollups_are_folded(books, customer):
    tt, _, facts = books
    folded = await _reads(tt, customer)
    for read in ("by_day", "by_rule"):
        assert sorted(map(str, folded[read]["rows"])) == sorted(map(str, facts["unfolded"][customer][read]["rows"]))
    before = facts["unfolded"][customer]["upcoming"]
    assert {k: folded["upcoming"][k] for k in FIGURES} == {k: before[k] for k in FIGURES}



@pytest.mark.parametrize("request_id", ["agent-1", "over-1", "i-1"])
async def test_the_console_trace_shows_what_paid_each_charge_and_the_re_rates_that_corrected_it(books, request_id):
    """The trace page showed a re-rated charge at its first amount only (over-1: 1.04 at $10/M),
    with no word of the re-rate that corrected it to 0.64 and the credit note that gave the
    difference back, nor which lots paid it: the API's trace has both (`adjustments`, `funding`)."""
    tt, _, _ = books
    trace = await tt.get(f"/v1/audit/charges/{request_id}")
    adjusted = [(a["corrected_version"], a["old_amount"], a["new_amount"], str(a["entry_id"]), a["credit_note"] or "")
                for c in trace["charges"] for a in c["adjustments"]]
    funded = [(f["account"], f["amount"]) for c in trace["charges"] for f in c["funding"]]
    assert adjusted and funded, trace
    await _console(tt)
    page = await tt.client.get(f"/console/audit/trace?request_id={request_id}")
    assert page.status_code == 200, page.text
    shown = re.findall(r'<tr data-adjustment><td>([^<]*)</td><td class="num">([^<]*)</td><td class="num">([^<]*)</td>'
                       r'<td>#([0-9]+)</td><td>([^<]*)</td></tr>', page.text)
    assert shown == adjusted, page.text
    paid = re.findall(r'<tr data-funding><td><code>([^<]*)</code></td><td class="num">([^<]*)</td></tr>', page.text)
    assert paid == funded, page.text


def _csv(path: Path) -> list[tuple[str, str, str]]:
    with path.open(newline="") as f:
        return sorted((r["entry_id"], r["account"], r["amount"]) for r in csv.DictReader(f))


def test_windows_split_at_the_first_close_neither_drop_nor_repeat_a_posting_and_verify_offline(exported):
    out, done = exported
    before, after = _csv(out / "before.csv"), _csv(out / "after.csv")
    assert before and after and sorted(before + after) == _csv(out / "books.csv")
    assert done["verify window"].returncode == 0, done["verify window"].stdout + done["verify window"].stderr


@pytest.mark.parametrize("fmt", ["beancount", "csv", "jsonl"])
async def test_the_console_download_is_the_command_line_export_byte_for_byte_but_its_time(books, exported, fmt):
    tt, _, _ = books
    await _console(tt)
    page = await tt.client.get(f"/console/audit/export/download?format={fmt}")
    assert page.status_code == 200, page.text
    written = (exported[0] / f"books.{fmt}").read_bytes()
    if fmt == "jsonl":  # the header says when each was written
        stamp = re.compile(rb'"exported_at":"[^"]+"')
        written, downloaded = stamp.sub(b"", written), stamp.sub(b"", page.content)
    else:
        downloaded = page.content
    assert downloaded == written


@pytest.mark.parametrize("customer", CUSTOMERS)
async def test_the_console_wallet_and_usage_pages_show_the_apis_figures(books, customer):
    tt, _, facts = books
    wallet = await tt.get(f"/v1/customers/{customer}/wallet")
    day = facts["now"].date()
    month = (day.replace(day=1).isoformat(), (facts["period"].end.date()).isoformat())
    report = await tt.get(f"/v1/customers/{customer}/usage?from={month[0]}T00:00:00Z&to={month[1]}T00:00:00Z"
                          "&group_by=day,model,token_type")
    await _console(tt)
    page = (await tt.client.get(f"/console/customers/{customer}")).text
    shown = dict(re.findall(r'data-figure="([a-z]+)"><div class="label">[^<]*</div><div class="value">([-0-9.,]+)<',
                            page))
    assert shown == {"available": wallet["available"], "held": wallet["reserved"], "owed": wallet["receivable"]}
    usage = (await tt.client.get(f"/console/customers/{customer}/usage?from={month[0]}&to={month[1]}")).text
    [total] = re.findall(r'data-figure="usage-total">([-0-9.,]+)<', usage)
    assert Decimal(total.replace(",", "")) == sum((Decimal(r["amount"]) for r in report["rows"]), Decimal(0))


async def test_the_console_trial_balance_is_the_apis(books):
    tt, _, _ = books
    trial = await tt.get("/v1/audit/trial-balance?currency=USD")
    await _console(tt)
    page = (await tt.client.get("/console/audit?currency=USD")).text
    rows = re.findall(r'<tr data-account="([^"]+)"><td><code>[^<]*</code></td><td class="num">([^<]*)</td>'
                      r'<td class="num">([^<]*)</td><td class="num">([^<]*)</td></tr>', page)
    assert rows == [(a["account"], a["debits"], a["credits"], a["balance"]) for a in trial["accounts"]]
    assert re.findall(r'data-figure="total-(?:debits|credits)">([^<]*)<', page) == \
        [trial["total_debits"], trial["total_credits"]]


async def test_the_rerate_preview_is_what_its_apply_posted(books):
    """Over closed periods, funded by lots since revoked, refunded and expired, with overrides."""
    _, _, facts = books
    previewed, applied = facts["previewed"], facts["applied"]
    assert previewed["customers"] and previewed["delta"] == applied["delta"] == "-2.06"
    assert previewed["customers"] == [{k: v for k, v in c.items() if k != "entry_ids"} for c in applied["customers"]]
    assert [(n["customer_id"], n["kind"], n["total"]) for n in applied["credit_notes"]] == \
        [("acme", "credit", "-0.46"), ("initech", "credit", "-1.40")]


async def test_the_console_trace_of_a_free_call_says_it_posted_no_entry(books):
    """A call its contract price of 0 paid whole is a charge with no entry: the trace page said
    "entry #None", an entry that does not exist."""
    tt, _, _ = books
    [charge] = (await tt.get("/v1/audit/charges/f-0"))["charges"]
    assert charge["entry_id"] is None and charge["charged"] == "0.00"
    await _console(tt)
    page = (await tt.client.get("/console/audit/trace?request_id=f-0")).text
    assert "#None" not in page and "no entry: it moved no money" in page, page

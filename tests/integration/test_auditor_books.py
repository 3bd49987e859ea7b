"""What an auditor gets, on a realistic ledger built through the public API: top-ups, promotional
grants with priority and expiry (and the expiry job), reserves, partial captures, releases,
postpaid usage, an invoice and its payment, a re-rate after a backdated price fix, two
currencies, post-hoc usage events, sealed and unsealed entries. The exported books pass
bean-check, equal the trial balance account for account, carry every posting exactly once, and
adjacent windows (split at an entry's exact time) neither drop nor duplicate an entry."""
from __future__ import annotations

import asyncio
import csv
import itertools
import os
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from beancount import loader
from beancount.core import data

from ledger.db import connect
from tests.live_server import serving
from wallets.expiry import expire_grants
from wallets.jobs import seal_journal
from wallets.periods import Cycle, period_of

ADMIN = "auditor-books-admin"


def cli(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENTILL_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "api.cli", "audit", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def utc(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def book(book_id: str, currency: str, version: str, effective_from: str, a_in: str) -> dict:
    return {"id": book_id, "version": version, "currency": currency, "effective_from": effective_from, "rules": [
        {"id": "a-in", "model": "model-a", "token_type": "input", "price": a_in},
        {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
        {"id": "call", "token_type": "request", "price": "0.01"}]}


def _jobs(url: str, step) -> object:
    async def run():
        db = connect(url, pool_size=1)
        try:
            return await step(db)
        finally:
            await db.dispose()
    return asyncio.run(run())


def _settle(tt, reservation: dict, input_tokens: int, output_tokens: int, *, final: bool = True) -> dict:
    return tt.post(f"/v1/reservations/{reservation['id']}/settle", {
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}, "final": final})


def scenario(tt, url: str) -> None:
    now = datetime.now(UTC)
    period = period_of(now, Cycle())
    for book_id, currency in (("std", "USD"), ("eu", "EUR")):
        tt.post("/v1/price-books", book(book_id, currency, "v1", "2026-01-01T00:00:00Z", "10.00"))
    tt.post("/v1/customers", {"id": "acme", "name": "Acme", "currency": "USD", "price_book": "std"})
    tt.post("/v1/customers", {"id": "globex", "name": "Globex", "currency": "EUR", "price_book": "eu"})
    tt.post("/v1/customers", {"id": "initech", "name": "Initech", "currency": "USD", "price_book": "std",
                              "billing": "postpaid"})
    tt.post("/v1/customers/acme/topups", {"amount": "50.00", "reference": "pay-acme-1"})
    tt.post("/v1/customers/acme/grants", {"amount": "0.50", "priority": 10, "reason": "welcome",
                                          "expires_at": utc(now + timedelta(hours=1))})
    tt.post("/v1/customers/acme/grants", {"amount": "2.00", "priority": 60, "reason": "loyalty"})
    tt.post("/v1/customers/globex/topups", {"amount": "30.00", "reference": "pay-globex-1"})
    tt.post("/v1/customers/globex/grants", {"amount": "1.00", "expires_at": utc(now + timedelta(hours=2))})

    # acme: an agent loop captured in three parts, a release, a settle above its hold
    held = tt.post("/v1/reservations", {"customer_id": "acme", "request_id": "agent-1", "model": "model-a",
                                        "estimate": {"input_tokens": 30_000, "max_output_tokens": 5_000}})
    _settle(tt, held, 10_000, 1_000, final=False)
    _settle(tt, held, 10_000, 1_000, final=False)
    _settle(tt, held, 5_000, 500)
    dropped = tt.post("/v1/reservations", {"customer_id": "acme", "request_id": "dropped-1", "model": "model-a",
                                           "estimate": {"input_tokens": 1_000, "max_output_tokens": 100}})
    tt.post(f"/v1/reservations/{dropped['id']}/release", {})
    over = tt.post("/v1/reservations", {"customer_id": "acme", "request_id": "over-1", "model": "model-a",
                                        "amount": "0.01"})
    _settle(tt, over, 100_000, 2_000)
    # globex in EUR: a reservation and usage events
    held = tt.post("/v1/reservations", {"customer_id": "globex", "request_id": "eu-1", "model": "model-a",
                                        "estimate": {"input_tokens": 2_000, "max_output_tokens": 1_000}})
    _settle(tt, held, 1_500, 700)
    tt.post("/v1/usage-events", [
        {"event_id": f"g-{i}", "customer_id": "globex", "model": "model-a", "timestamp": utc(now),
         "usage": {"input_tokens": 20_000, "output_tokens": 100}} for i in range(3)])
    # initech, postpaid: backdated usage events, its period closed early, the invoice paid in part
    tt.post("/v1/usage-events", [
        {"event_id": f"i-{i}", "customer_id": "initech", "model": "model-a", "timestamp": utc(period.start),
         "usage": {"input_tokens": 100_000, "output_tokens": 500}} for i in range(4)])
    [invoice] = tt.post("/v1/billing/close", {"until": utc(period.end + timedelta(hours=1, seconds=1)),
                                              "customer_id": "initech", "early": True})["closed"]
    tt.post(f"/v1/invoices/{invoice['invoice_id']}/payments", {"amount": "1.00", "reference": "wire-initech-1"})
    # the price fix, backdated to the period's start, re-rated
    for book_id, currency in (("std", "USD"), ("eu", "EUR")):
        tt.post("/v1/price-books", book(book_id, currency, "v2", utc(period.start), "6.00"))
        tt.post("/v1/rerate", {"price_book": book_id, "version": "v2", "from": utc(period.start),
                               "to": utc(now + timedelta(seconds=1)), "mode": "apply"})
    # initech's next period, which the payment and the credit note are billed in, closed early too
    following = period_of(period.end, Cycle())
    [_] = tt.post("/v1/billing/close", {"until": utc(following.end + timedelta(hours=1, seconds=1)),
                                        "customer_id": "initech", "early": True})["closed"]
    # the welcome grants expire; everything so far is sealed; then more, left unsealed
    assert _jobs(url, lambda db: expire_grants(db, now + timedelta(hours=3))) == 2
    assert _jobs(url, seal_journal) > 0
    tt.post("/v1/customers/acme/topups", {"amount": "5.00", "reference": "pay-acme-2"})
    tt.post("/v1/usage-events", [{"event_id": "g-late", "customer_id": "globex", "model": "model-a",
                                  "timestamp": utc(now), "usage": {"input_tokens": 10, "output_tokens": 1}}])


@pytest.fixture(scope="module")
def books(server_url):
    from tests.conftest import _migrated

    gen = _migrated(server_url, "tokentill_auditor_books")
    url = next(gen)
    try:
        with serving(url, ADMIN) as tt:
            scenario(tt, url)
            verified = tt.post("/v1/audit/verify", {})
            assert verified["ok"], [c for c in verified["checks"] if not c["ok"]]
            trial = {c: tt.get(f"/v1/audit/trial-balance?currency={c}") for c in ("USD", "EUR")}
            assert all(t["currency"] == c and t["total_debits"] == t["total_credits"] for c, t in trial.items())
            yield url, trial
    finally:
        gen.close()


def _postings(url: str) -> dict[int, Counter]:
    """Every entry's postings from the database: entry id -> Counter of (account code, amount)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("""SELECT p.entry_id, a.code, p.amount, s.scale FROM postings p
                                 JOIN accounts a ON a.id = p.account_id JOIN assets s ON s.code = a.asset""")
        found: dict[int, Counter] = defaultdict(Counter)
        for entry_id, code, amount, scale in rows:
            found[entry_id][(code, Decimal(amount).scaleb(-scale))] += 1
    return found


def _bean(path: Path) -> tuple[dict[int, Counter], dict[str, Decimal], set[str]]:
    """A Beancount file's transactions (entry id -> postings), balances by account code, and currencies."""
    entries, errors, _ = loader.load_file(str(path))
    assert errors == []
    code_of = {e.account: e.meta["code"] for e in entries if isinstance(e, data.Open)}
    found: dict[int, Counter] = defaultdict(Counter)
    balances: dict[str, Decimal] = defaultdict(Decimal)
    currencies = set()
    for e in entries:
        if isinstance(e, data.Transaction):
            for p in e.postings:
                balances[code_of[p.account]] += p.units.number
                currencies.add(p.units.currency)
                if "entry_id" in e.meta:
                    found[int(e.meta["entry_id"])][(code_of[p.account], p.units.number)] += 1
    return found, balances, currencies


def _trial(trial: dict) -> dict[str, Decimal]:
    """Every account's balance, from the trial balance of each currency."""
    return {line["account"]: Decimal(line["balance"]) for t in trial.values() for line in t["accounts"]}


def _bean_check(path: Path) -> None:
    check = subprocess.run(["bean-check", str(path)], capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and not check.stdout + check.stderr, check.stdout + check.stderr


def test_the_books_pass_bean_check_equal_the_trial_balance_and_carry_every_posting_once(books, tmp_path):
    url, trial = books
    out = tmp_path / "books.beancount"
    assert cli(url, "export", "--format", "beancount", "--out", str(out)).returncode == 0
    _bean_check(out)
    found, balances, currencies = _bean(out)
    assert currencies == {"USD", "EUR"}
    assert found == _postings(url)
    expected = _trial(trial)
    assert {code: balances.get(code, Decimal(0)) for code in expected} == expected
    assert set(balances) <= set(expected)
    kinds = {kind for (kind,) in psycopg.connect(url).execute("SELECT DISTINCT kind FROM journal_entries")}
    assert {"topup", "grant", "reserve", "settle", "release", "usage", "grant_expiry"} <= kinds, kinds


def test_exporting_twice_gives_the_same_bytes(books, tmp_path):
    url, _ = books
    for fmt in ("beancount", "csv"):
        first, second = cli(url, "export", "--format", fmt), cli(url, "export", "--format", fmt)
        assert first.returncode == 0 and first.stdout == second.stdout, fmt


def _csv_entries(url: str, *window: str) -> Counter:
    done = cli(url, "export", "--format", "csv", *window)
    assert done.returncode == 0, done.stderr
    return Counter((r["entry_id"], r["account"], r["amount"]) for r in csv.DictReader(done.stdout.splitlines()))


def test_adjacent_windows_split_at_an_entrys_exact_time_neither_drop_nor_duplicate_an_entry(books, tmp_path):
    url, trial = books
    whole = _csv_entries(url)
    with psycopg.connect(url) as conn:
        times = [t for (t,) in conn.execute("SELECT DISTINCT occurred_at FROM journal_entries ORDER BY 1")]
    for cut in (times[1], times[len(times) // 2], times[-1]):
        at = cut.isoformat()
        before, after = _csv_entries(url, "--to", at), _csv_entries(url, "--from", at)
        assert before + after == whole and not (set(before) & set(after)), at
        assert any(int(e) for e, _, _ in after)
        # Beancount: the window from the cut opens with the balances before it, ends at the whole ledger's
        out = tmp_path / "after.beancount"
        assert cli(url, "export", "--format", "beancount", "--from", at, "--out", str(out)).returncode == 0
        _bean_check(out)
        found, balances, _ = _bean(out)
        assert Counter({(e, a, x): n for e, postings in found.items() for (a, x), n in postings.items()}) == \
            Counter({(int(e), a, Decimal(x)): n for (e, a, x), n in after.items()})
        expected = _trial(trial)
        assert {code: balances.get(code, Decimal(0)) for code in expected} == expected, at


# Raw-SQL tampering, as a superuser with the triggers off, each inside a transaction that is rolled
# back: verify (run in that transaction) must fail a named check whose problems name the entry.
# The entry is a sealed settle of acme's, {entry} in the statements. Each case: the statements, the
# checks that must fail naming the entry, and other checks that must fail (naming what they can).
_SEALED_SETTLE = """SELECT j.id FROM journal_entries j, seals s
                     WHERE j.kind = 'settle' AND j.customer_id = 'acme'
                       AND j.txid >= s.from_txid AND j.txid < s.to_txid ORDER BY j.id LIMIT 1"""
_OTHER_LANE = "(lane + 1) % (SELECT lanes FROM ledger_settings)"
_UNCHECKED = "ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_lane_of_customer"
TAMPERING = {
    "one amount changed": (["UPDATE postings SET amount = amount + 1 WHERE id = "
                            "(SELECT min(id) FROM postings WHERE entry_id = {entry})"],
                           {"entries_balanced", "seals"}),
    "both sides changed alike": (["UPDATE postings SET amount = amount * 2 WHERE entry_id = {entry}"],
                                 {"seals"}),
    "deleted": (["DELETE FROM postings WHERE entry_id = {entry}", "DELETE FROM journal_entries WHERE id = {entry}"],
                {"seals"}),
    "backdated": (["UPDATE journal_entries SET occurred_at = occurred_at - interval '1 day' WHERE id = {entry}"],
                  {"seals"}),
    "its recorded time moved": (["UPDATE journal_entries SET recorded_at = recorded_at - interval '1 day' "
                                 "WHERE id = {entry}"], {"seals"}),
    "moved out of its seal's txid range": (
        ["UPDATE journal_entries SET txid = '999999999'::xid8 WHERE id = {entry}"], {"seals"}),
    "its postings moved to another lane": ([f"UPDATE postings SET lane = {_OTHER_LANE} WHERE entry_id = {{entry}}"],
                                           {"lanes", "seals"}),
    "a posting moved to another lane": ([f"UPDATE postings SET lane = {_OTHER_LANE} WHERE id = "
                                         "(SELECT min(id) FROM postings WHERE entry_id = {entry})"],
                                        {"lanes", "seals"}),
    "the entry moved to another lane": ([_UNCHECKED, f"UPDATE journal_entries SET lane = {_OTHER_LANE} "
                                         "WHERE id = {entry}"], {"lanes", "seals"}),
    "given to another customer": ([_UNCHECKED, "UPDATE journal_entries SET customer_id = 'globex' WHERE id = {entry}"],
                                  {"seals", "one_customer_per_entry", "lanes"}),
    "its postings given to no entry": (["UPDATE postings SET entry_id = -{entry} WHERE entry_id = {entry}"],
                                       {"entries_balanced", "seals"}, {"lanes"}),
}


async def _verify_after(url: str, tamper):
    """`full_verify`'s report on the books once `await tamper(conn)` changed them, in a transaction
    rolled back after: (what `tamper` returned, the report)."""
    from wallets.audit import full_verify

    db = connect(url, pool_size=1)
    try:
        async with db.engine.connect() as conn:
            done = await tamper(conn)
            report = await full_verify(conn)
            await conn.rollback()
        return done, report
    finally:
        await db.dispose()


async def _verify_tampered(url: str, statements: list[str]):
    from sqlalchemy import text

    async def tamper(conn):
        await conn.execute(text("SET session_replication_role = replica"))
        entry = (await conn.execute(text(_SEALED_SETTLE))).scalar_one()
        for sql in statements:
            done = await conn.execute(text(sql.format(entry=entry)))
            assert sql.startswith("ALTER") or done.rowcount > 0, sql
        return entry

    return await _verify_after(url, tamper)


@pytest.mark.parametrize("tamper", TAMPERING)
def test_verify_names_the_entry_tampered_with_in_raw_sql(books, tamper):
    url, _ = books
    statements, expected, *also = TAMPERING[tamper]
    entry, report = asyncio.run(_verify_tampered(url, statements))
    failed = {c.name: c for c in report.checks if not c.ok}
    assert expected | set(*also) <= set(failed), (tamper, {c.name: c.detail for c in failed.values()})
    for name in expected:
        assert any(f"entry {entry} " in p or p.endswith(f"entry {entry}") for p in failed[name].problems), \
            (tamper, name, failed[name].problems)


def test_the_jsonl_export_of_the_books_verifies_offline_with_its_unsealed_tail_counted(books, tmp_path):
    url, _ = books
    out = tmp_path / "books.jsonl"
    assert cli(url, "export", "--format", "jsonl", "--out", str(out)).returncode == 0
    done = cli(url, "verify", "--file", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    with psycopg.connect(url) as conn:
        total, unsealed = conn.execute("SELECT count(*), count(*) FILTER (WHERE txid >= "
                                       "(SELECT max(to_txid) FROM seals)) FROM journal_entries").fetchone()
    assert f"verified offline: {total} entries" in done.stdout, done.stdout
    assert unsealed > 0 and f"{unsealed} entries are not sealed yet" in done.stdout, done.stdout


# What an invoice says beside its lines and totals comes from its period's rollup too: the top-ups,
# grants, expirations and payments of the period, and how the customer's credits moved (its opening
# and closing balances). A rollup that says otherwise than the postings must fail `period_rollups`,
# naming the customer and period, as a wrong revenue, receivable or reserved movement does. The
# tampering is a delta of one atomic unit more on the item, as a batch would append it.
ROLLUP_ITEMS = {"topups": "acme", "grants": "acme", "expired": "acme", "lots": "acme", "payments": "initech"}


async def _verify_rollup_tampered(url: str, item: str, customer: str):
    from sqlalchemy import text

    async def tamper(conn):
        period = (await conn.execute(text(
            "SELECT metadata ->> 'period' FROM journal_entries WHERE customer_id = :c AND metadata ? 'period' "
            "ORDER BY id LIMIT 1"), {"c": customer})).scalar_one()
        await conn.execute(text(
            """INSERT INTO period_deltas (lane, customer_id, period, items, quantities, amounts)
               VALUES (ledger_lane(:c), :c, :p, ARRAY[:item]::wallets_rollup_item[],
                       ARRAY[0]::wallets_units[], ARRAY[1]::wallets_units[])"""),
            {"c": customer, "p": period, "item": item})
        return period

    return await _verify_after(url, tamper)


@pytest.mark.parametrize("item", ROLLUP_ITEMS)
def test_verify_names_a_rollup_whose_balances_or_cash_differ_from_the_postings(books, item):
    url, _ = books
    customer = ROLLUP_ITEMS[item]
    period, report = asyncio.run(_verify_rollup_tampered(url, item, customer))
    failed = {c.name: c for c in report.checks if not c.ok}
    assert set(failed) == {"period_rollups"}, (item, {c.name: c.detail for c in failed.values()})
    assert any(f"customer {customer}, period {period}" in p and item in p for p in failed["period_rollups"].problems), \
        (item, failed["period_rollups"].problems)


def _api_time(at: datetime) -> str:
    return quote(at.astimezone(UTC).isoformat())


def _account(code: str) -> str:
    return quote(code, safe="")


def test_at_each_cut_balances_statements_the_journal_and_window_exports_agree(books, tmp_path):
    """Cuts at entries' exact times (where the half-open rule bites), between them and outside the
    ledger: at each, the trial balance at T (both currencies), every account's balance at T and a
    Beancount export `--to T` agree account for account; between two cuts, every account's
    statement moves by the journal's postings of the window, opens at the balance at its start, and
    the window's jsonl export verifies offline."""
    url, _ = books
    with psycopg.connect(url) as conn:
        times = [t for (t,) in conn.execute("SELECT DISTINCT occurred_at FROM journal_entries ORDER BY 1")]
        codes = [c for (c,) in conn.execute("SELECT code FROM accounts ORDER BY code")]
    cuts = sorted({times[0] - timedelta(days=1), times[0], times[1], times[len(times) // 3], times[len(times) // 2],
                   times[-1], times[-1] + timedelta(microseconds=1)})
    with serving(url, ADMIN) as tt:
        balance = {}
        for at in cuts:
            trial = {line["account"]: Decimal(line["balance"]) for cur in ("USD", "EUR") for line in
                     tt.get(f"/v1/audit/trial-balance?currency={cur}&at={_api_time(at)}")["accounts"]}
            out = tmp_path / "to.beancount"
            done = cli(url, "export", "--format", "beancount", "--to", at.isoformat(), "--out", str(out))
            assert done.returncode == 0, done.stderr
            _, exported, _ = _bean(out)
            for code in codes:
                found = tt.get(f"/v1/accounts/{_account(code)}/balance?at={_api_time(at)}")
                balance[code, at] = Decimal(found["balance"])
                assert balance[code, at] == trial.get(code, Decimal(0)) == exported.get(code, Decimal(0)), (code, at)
        for start, end in itertools.pairwise(cuts):
            window = f"from={_api_time(start)}&to={_api_time(end)}"
            moved: dict[str, Decimal] = defaultdict(Decimal)
            page = tt.get(f"/v1/journal?{window}&limit=7")
            while True:  # small pages: the cursor is followed too
                for entry in page["entries"]:
                    assert start <= datetime.fromisoformat(entry["occurred_at"]) < end
                    for posting in entry["postings"]:
                        moved[posting["account"]] += Decimal(posting["amount"])
                if page["next_cursor"] is None:
                    break
                page = tt.get(f"/v1/journal?{window}&limit=7&cursor={page['next_cursor']}")
            for code in codes:
                statement = tt.get(f"/v1/accounts/{_account(code)}/statement?{window}&limit=1000")
                assert Decimal(statement["opening_balance"]) == balance[code, start], (code, start)
                assert Decimal(statement["closing_balance"]) == balance[code, end], (code, end)
                assert Decimal(statement["total_debits"]) - Decimal(statement["total_credits"]) == \
                    moved.get(code, Decimal(0)), (code, start, end)
            out = tmp_path / "window.jsonl"
            assert cli(url, "export", "--format", "jsonl", "--from", start.isoformat(), "--to", end.isoformat(),
                       "--out", str(out)).returncode == 0
            done = cli(url, "verify", "--file", str(out))
            assert done.returncode == 0, (start, end, done.stdout + done.stderr)


# A finalized invoice's own figures beside its total (the period's top-ups, grants, expirations,
# payments received, and its opening and closing balances) against what the period's entries
# posted, and each opening against the closing of the invoice before: an invoice rewritten as a
# superuser, its content hash recomputed so that it still looks intact, must fail `invoices` naming
# it. initech's first invoice, or (`second`) its next, whose balances move as its postings say
# but start elsewhere than the first's ended.
INVOICE_FIGURES = {
    "second": "jsonb_set(jsonb_set(content, '{opening_balance,receivable}', '\"9.99\"'), "
              "'{closing_balance,receivable}', to_jsonb(CAST((content -> 'closing_balance' ->> 'receivable')::numeric "
              "+ 9.99 - (content -> 'opening_balance' ->> 'receivable')::numeric AS text)))",
    "top-ups": "jsonb_set(content, '{top_ups}', '\"1.00\"')",
    "grants": "jsonb_set(content, '{grants}', '\"1.00\"')",
    "expired": "jsonb_set(content, '{expired}', '\"1.00\"')",
    "payments received": "jsonb_set(content, '{payments_received}', '\"1.00\"')",
    "closing credits": "jsonb_set(content, '{closing_balance,credits}', '\"1.00\"')",
    "closing receivable": "jsonb_set(content, '{closing_balance,receivable}', '\"9.99\"')",
    "opening reserved": "jsonb_set(content, '{opening_balance,reserved}', '\"1.00\"')",
}


async def _verify_invoice_rewritten(url: str, content: str, second: bool):
    from sqlalchemy import text

    from wallets.audit import full_verify

    db = connect(url, pool_size=1)
    try:
        async with db.engine.connect() as conn:
            await conn.execute(text("SET session_replication_role = replica"))
            number = (await conn.execute(text(
                f"""UPDATE invoices SET content = {content},
                           content_hash = sha256(convert_to(CAST({content} AS text), 'UTF8'))
                     WHERE id = (SELECT id FROM invoices WHERE customer_id = 'initech' ORDER BY period_start
                                  {'DESC' if second else ''} LIMIT 1) RETURNING number"""))).scalar_one()
            report = await full_verify(conn)
            await conn.rollback()
        return number, report
    finally:
        await db.dispose()


@pytest.mark.parametrize("figure", INVOICE_FIGURES)
def test_verify_names_an_invoice_whose_figures_differ_from_its_periods_postings(books, figure):
    url, _ = books
    number, report = asyncio.run(_verify_invoice_rewritten(url, INVOICE_FIGURES[figure], figure == "second"))
    failed = {c.name: c for c in report.checks if not c.ok}
    assert set(failed) == {"invoices"}, (figure, {c.name: c.detail for c in failed.values()})
    assert any(p.startswith(f"invoice {number}") for p in failed["invoices"].problems), \
        (figure, failed["invoices"].problems)

"""`tokentill audit reconcile`: top-ups made over HTTP against a Stripe balance-transactions export."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import _migrated
from tests.live_server import serving

HEADER = "id,Type,Source,Amount,Fee,Net,Currency,Created (UTC),Available On (UTC),Description\n"
TOPUPS = {"ch_1": "10.00", "ch_2": "20.00", "ch_3": "30.00", "ch_4": "44.44", "ch_5": "5.55"}


@pytest.fixture(scope="module")
def ledger_url(server_url):
    gen = _migrated(server_url, "tokentill_reconcile")
    url = next(gen)
    try:
        with serving(url, "reconcile-admin") as tt:
            tt.post("/v1/customers", {"id": "acme", "name": "Acme", "currency": "USD"})
            for reference, amount in TOPUPS.items():
                tt.post("/v1/customers/acme/topups", {"amount": amount, "reference": reference})
        yield url
    finally:
        gen.close()


def _stripe(rows: dict[str, str]) -> str:
    lines = [f"txn_{i},charge,{ref},{amount},0.30,0.00,usd,2026-11-02 10:00,2026-11-04 00:00,\n"
             for i, (ref, amount) in enumerate(rows.items())]
    return HEADER + "".join(lines) + "txn_p,payout,po_1,-3.00,0.00,-3.00,usd,2026-11-03 10:00,2026-11-05 00:00,\n"


def _reconcile(url: str, tmp_path, body: str, *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / "balance_transactions.csv"
    path.write_text(body)
    env = {**os.environ, "TOKENTILL_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "api.cli", "audit", "reconcile", "--payments", str(path), *extra],
                          env=env, capture_output=True, text=True, timeout=120)


def test_a_clean_processor_file_reconciles(ledger_url, tmp_path):
    done = _reconcile(ledger_url, tmp_path, _stripe(TOPUPS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "matched: 5 top-ups" in done.stdout and "skipped rows that are not payments or refunds: payout 1" \
        in done.stdout


def test_a_missing_payment_an_extra_one_and_a_cent_off_are_each_reported(ledger_url, tmp_path):
    paid = {**TOPUPS, "ch_4": "44.43", "ch_9": "12.00"}
    del paid["ch_2"]
    done = _reconcile(ledger_url, tmp_path, _stripe(paid))
    assert done.returncode == 1
    out = done.stdout
    assert "AMOUNT MISMATCH reference ch_4: ledger 44.44 USD" in out and "file 44.43 USD" in out
    assert "ONLY IN LEDGER  reference ch_2: 20.00 USD, entry" in out
    assert "ONLY IN FILE    reference ch_9: 12.00 USD, line" in out
    assert "matched: 3 top-ups" in out and "reconciliation FAILED: 3 difference(s)" in out

    report = json.loads(_reconcile(ledger_url, tmp_path, _stripe(paid), "--json").stdout)
    assert [m["reference"] for m in report["amount_mismatches"]] == ["ch_4"]
    assert [m["reference"] for m in report["only_in_ledger"]] == ["ch_2"]
    assert [m["reference"] for m in report["only_in_file"]] == ["ch_9"]
    assert report["ok"] is False


def test_the_generic_layout_and_a_file_it_cannot_read(ledger_url, tmp_path):
    generic = "reference,amount,currency\n" + "".join(f"{r},{a},USD\n" for r, a in TOPUPS.items())
    assert _reconcile(ledger_url, tmp_path, generic).returncode == 0
    bad = _reconcile(ledger_url, tmp_path, "reference,amount,currency\nch_1,ten,USD\n")
    assert bad.returncode == 2 and "line 2: not an amount" in bad.stderr


def test_a_file_that_is_not_utf8_or_has_an_amount_out_of_range_is_exit_2(ledger_url, tmp_path):
    """Were tracebacks (UnicodeDecodeError, decimal.Overflow), not exit 2 naming the problem."""
    path = tmp_path / "latin1.csv"
    path.write_bytes("reference,amount,currency,note\nch_1,10.00,USD,caf\u00e9\n".encode("latin-1"))
    env = {**os.environ, "TOKENTILL_DATABASE_URL": ledger_url}
    latin = subprocess.run([sys.executable, "-m", "api.cli", "audit", "reconcile", "--payments", str(path)],
                           env=env, capture_output=True, text=True, timeout=120)
    assert latin.returncode == 2 and "not UTF-8 text" in latin.stderr and "Traceback" not in latin.stderr
    huge = _reconcile(ledger_url, tmp_path, "reference,amount,currency\nch_1,1e999999,USD\n")
    assert huge.returncode == 2 and "line 2: not an amount" in huge.stderr, huge.stderr


def test_a_bad_or_reversed_window_is_exit_2_not_a_verdict(ledger_url, tmp_path):
    """Was: a --from that is not a time exited 1 (which means differences), and --from after --to
    reconciled an empty window: exit 0, "reconciled", with every top-up and payment left out."""
    body = _stripe(TOPUPS)
    bad = _reconcile(ledger_url, tmp_path, body, "--from", "yesterday")
    assert bad.returncode == 2 and "not a time: 'yesterday'" in bad.stderr, bad.stdout + bad.stderr
    reversed_ = _reconcile(ledger_url, tmp_path, body, "--from", "2026-12-01", "--to", "2026-11-01")
    assert reversed_.returncode == 2 and "--to must not be before --from" in reversed_.stderr, reversed_.stdout
    assert "reconciled" not in reversed_.stdout


def test_an_invoice_payment_is_cash_received_and_is_reconciled(server_url, tmp_path):
    """A postpaid customer pays its invoice by card: the ledger's cash comes in by an
    `invoice_payment` entry, with the processor's reference. Was: only top-ups were read, so the
    charge was "ONLY IN FILE" and a clean ledger failed to reconcile."""
    from datetime import UTC, datetime, timedelta

    from wallets.periods import Cycle, period_of

    gen = _migrated(server_url, "tokentill_reconcile_invoices")
    url = next(gen)
    try:
        with serving(url, "reconcile-admin") as tt:
            tt.post("/v1/price-books", {"id": "seed", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                                        "rules": [{"id": "call", "token_type": "request", "price": "0.01"},
                                                  {"id": "in", "model": "m", "token_type": "input", "price": "0"}]})
            tt.post("/v1/customers", {"id": "later", "currency": "USD", "price_book": "seed", "billing": "postpaid"})
            tt.post("/v1/customers", {"id": "acme", "currency": "USD", "price_book": "seed"})
            tt.post("/v1/customers/acme/topups", {"amount": "10.00", "reference": "ch_top"})
            now = datetime.now(UTC)
            sent = tt.post("/v1/usage-events", [{"event_id": f"e{i}", "customer_id": "later", "model": "m",
                                          "timestamp": now.isoformat(), "usage": {"input_tokens": 1}}
                                         for i in range(5)])
            assert sent["accepted"] == 5, sent
            period = period_of(now, Cycle("UTC", None))
            closed = tt.post("/v1/billing/close", {"until": (period.end + timedelta(hours=1, seconds=1)).isoformat(),
                                                   "customer_id": "later", "early": True})
            [one] = closed["closed"]
            paid = tt.post(f"/v1/invoices/{one['invoice_id']}/payments", {"amount": "0.05", "reference": "ch_inv"})
            assert paid["payment_status"] == "paid", paid
        done = _reconcile(url, tmp_path, _stripe({"ch_top": "10.00", "ch_inv": "0.05"}), "--json")
        report = json.loads(done.stdout)
        assert done.returncode == 0 and report["ok"], done.stdout + done.stderr
        assert sorted(m["reference"] for m in report["matched"]) == ["ch_inv", "ch_top"]
        assert any("invoice payment" in m["ledger"] for m in report["matched"])
        short = _reconcile(url, tmp_path, _stripe({"ch_top": "10.00"}))
        assert short.returncode == 1 and "ONLY IN LEDGER  reference ch_inv: 0.05 USD" in short.stdout, short.stdout
    finally:
        gen.close()


def test_a_reference_the_locale_cannot_encode_is_reported_not_a_traceback(ledger_url, tmp_path):
    """Under a locale whose encoding is not UTF-8 (PYTHONIOENCODING stands in for it), the first
    reference it could not encode stopped the report with a UnicodeEncodeError (exit 1, which means
    differences, after a partial report)."""
    path = tmp_path / "payments.csv"
    path.write_text("reference,amount,currency\n" + "".join(f"{r},{a},USD\n" for r, a in TOPUPS.items())
                    + "r\u00e9f-\U0001f600,1.00,USD\n", encoding="utf-8")
    env = {**os.environ, "TOKENTILL_DATABASE_URL": ledger_url, "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([sys.executable, "-m", "api.cli", "audit", "reconcile", "--payments", str(path)],
                          env=env, capture_output=True, text=True, encoding="ascii", errors="replace", timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "ONLY IN FILE    reference r\\xe9f-\\U0001f600: 1.00 USD, line 7" in done.stdout
    assert "reconciliation FAILED: 1 difference(s)" in done.stdout


def test_a_reference_with_control_characters_cannot_forge_or_hide_report_lines(ledger_url, tmp_path):
    """A reference is the caller's text (the processor's file, or what a top-up was given), and a
    quoted CSV cell may hold a line break or a terminal escape. Printed as it was, a file row
    `"ch_x<LF>reconciled: every top-up, ...<LF>ch_y",1.00,USD` wrote the clean verdict's line into a
    failed report, and ESC [2J cleared the auditor's screen. Now every control character of a
    reference is written as an escape (`\\n`, `\\x1b`), so each difference is one line."""
    verdict = "reconciled: every top-up, invoice payment and refund matches a row, and every row one of them"
    rows = "".join(f"{r},{a},USD\n" for r, a in TOPUPS.items())
    done = _reconcile(ledger_url, tmp_path, f'reference,amount,currency\n{rows}"ch_x\n{verdict}\nch_y",1.00,USD\n'
                                            '"ch_\x1b[2Jy",2.00,USD\n')
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert verdict not in lines and "\x1b" not in done.stdout, done.stdout
    assert f"ONLY IN FILE    reference ch_x\\n{verdict}\\nch_y: 1.00 USD, line 7" in lines, done.stdout
    assert any(line.startswith("ONLY IN FILE    reference ch_\\x1b[2Jy: 2.00 USD, line ") for line in lines), lines
    assert len(lines) == 4 and lines[-1] == "reconciliation FAILED: 2 difference(s)", lines


def test_a_skipped_row_s_type_with_control_characters_cannot_forge_or_hide_report_lines(ledger_url, tmp_path):
    """The type of a row that is not a payment (Stripe's `Type` or `reporting_category` cell) is the
    file's text too, and the report names it among the skipped rows. Printed as it was, a quoted
    cell `"x<LF>reconciled: every top-up, ...<LF>ESC[2J"` wrote the clean verdict's line into a failed
    report and cleared the screen; it is written with escapes, as a reference is."""
    verdict = "reconciled: every top-up, invoice payment and refund matches a row, and every row one of them"
    body = _stripe({**TOPUPS, "ch_9": "12.00"}) + (
        f'txn_x,"x\n{verdict}\n\x1b[2J",src_x,1.00,0.00,1.00,usd,2026-11-02 10:00,2026-11-04 00:00,\n')
    done = _reconcile(ledger_url, tmp_path, body)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert verdict not in lines and "\x1b" not in done.stdout, done.stdout
    assert f"skipped rows that are not payments or refunds: payout 1, x\\n{verdict}\\n\\x1b[2J 1" in lines, lines
    assert len(lines) == 4 and lines[-1] == "reconciliation FAILED: 1 difference(s)", lines


def test_a_payment_in_another_currency_is_named_as_such(ledger_url, tmp_path):
    """Was "AMOUNT MISMATCH reference ch_3: ledger 30.00 USD, file 30.00 EUR": the amounts agree,
    the currency does not, and the report said otherwise."""
    paid = "".join(f"{r},{a},{'EUR' if r == 'ch_3' else 'USD'}\n" for r, a in TOPUPS.items())
    done = _reconcile(ledger_url, tmp_path, "reference,amount,currency\n" + paid)
    assert done.returncode == 1
    assert "CURRENCY MISMATCH reference ch_3: ledger 30.00 USD (entry" in done.stdout, done.stdout
    assert "AMOUNT MISMATCH" not in done.stdout
    report = json.loads(_reconcile(ledger_url, tmp_path, "reference,amount,currency\n" + paid, "--json").stdout)
    assert [(m["reference"], m["ledger_amount"], m["file_amount"]) for m in report["amount_mismatches"]] == [
        ("ch_3", "30.00 USD", "30.00 EUR")]


def test_one_charge_that_paid_two_invoices_reconciles(server_url, tmp_path):
    """A customer pays two of its invoices with one card charge, `ch_both` of 0.08,
    and finance records it on each invoice under that charge's id (0.05 and 0.03). Was: the ledger
    had `ch_both` twice, so reconcile said DUPLICATE, AMOUNT MISMATCH (ledger 0.05, file 0.08) and
    ONLY IN LEDGER 0.03, and a ledger that took exactly the cash the processor had could never
    reconcile. A customer's invoice payments under one reference are one receipt; two top-ups
    under one reference (credit given twice), or one reference on two customers' invoices, are
    still duplicates."""
    from datetime import UTC, datetime, timedelta

    from wallets.periods import Cycle, following, period_of

    gen = _migrated(server_url, "tokentill_reconcile_split")
    url = next(gen)
    try:
        with serving(url, "reconcile-admin") as tt:
            tt.post("/v1/price-books", {"id": "seed", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                                        "rules": [{"id": "call", "token_type": "request", "price": "0.01"},
                                                  {"id": "in", "model": "m", "token_type": "input", "price": "0"}]})
            tt.post("/v1/customers", {"id": "later", "currency": "USD", "price_book": "seed", "billing": "postpaid"})
            now = datetime.now(UTC)
            december = period_of(now, Cycle("UTC", None))
            invoices = []
            # 5 calls closed with this period, 3 more (late) with the next one
            for calls, period in ((5, december), (3, following(december, Cycle("UTC", None)))):
                sent = tt.post("/v1/usage-events", [
                    {"event_id": f"e{calls}{i}", "customer_id": "later", "model": "m", "timestamp": now.isoformat(),
                     "usage": {"input_tokens": 1}} for i in range(calls)])
                assert sent["accepted"] == calls, sent
                until = (period.end + timedelta(hours=1, seconds=1)).isoformat()
                closed = tt.post("/v1/billing/close", {"until": until, "customer_id": "later", "early": True})
                invoices += [c["invoice_id"] for c in closed["closed"]]
            assert len(invoices) == 2, invoices
            for invoice, amount in zip(invoices, ("0.05", "0.03"), strict=True):
                paid = tt.post(f"/v1/invoices/{invoice}/payments", {"amount": amount, "reference": "ch_both"})
                assert paid["payment_status"] == "paid", paid
        done = _reconcile(url, tmp_path, _stripe({"ch_both": "0.08"}), "--json")
        report = json.loads(done.stdout)
        assert done.returncode == 0 and report["ok"], done.stdout + done.stderr
        [match] = report["matched"]
        assert match["reference"] == "ch_both" and match["amount"] == "0.08 USD", match
        assert "invoice payments" in match["ledger"], match
    finally:
        gen.close()


def test_a_refund_of_a_top_up_is_matched_by_its_reference_and_one_not_recorded_is_a_difference(server_url, tmp_path):
    """A top-up refunded at the processor (a Stripe `refund` row, -3.00, source `re_1`) and in the
    ledger (the top-up's lot reversed with `reference` re_1): matched. Was: refund rows were only
    counted as skipped, so a refund the ledger never recorded (the customer kept the credit of the
    cash that went back) reconciled clean."""
    gen = _migrated(server_url, "tokentill_reconcile_refunds")
    url = next(gen)
    refund = "txn_r,refund,re_1,-3.00,0.00,-3.00,usd,2026-11-03 10:00,2026-11-05 00:00,\n"
    try:
        with serving(url, "reconcile-admin") as tt:
            tt.post("/v1/customers", {"id": "acme", "currency": "USD"})
            lot = tt.post("/v1/customers/acme/topups", {"amount": "10.00", "reference": "ch_1"})["grant_id"]
            tt.post("/v1/customers/acme/topups", {"amount": "5.00", "reference": "ch_2"})
            unrecorded = _reconcile(url, tmp_path, _stripe({"ch_1": "10.00", "ch_2": "5.00"}) + refund)
            assert unrecorded.returncode == 1, unrecorded.stdout
            assert "ONLY IN FILE    reference re_1: -3.00 USD, line" in unrecorded.stdout, unrecorded.stdout
            tt.post(f"/v1/customers/acme/grants/{lot}/reverse", {"amount": "3.00", "reference": "re_1"})
        done = _reconcile(url, tmp_path, _stripe({"ch_1": "10.00", "ch_2": "5.00"}) + refund, "--json")
        report = json.loads(done.stdout)
        assert done.returncode == 0 and report["ok"], done.stdout + done.stderr
        assert [(m["reference"], m["amount"]) for m in report["matched"] if "refund" in m["ledger"]] == [
            ("re_1", "-3.00 USD")]
        short = _reconcile(url, tmp_path, _stripe({"ch_1": "10.00", "ch_2": "5.00"}))
        assert short.returncode == 1 and "ONLY IN LEDGER  reference re_1: -3.00 USD" in short.stdout, short.stdout
    finally:
        gen.close()


def test_a_payment_the_processor_dated_just_before_the_window_its_top_up_is_in_matches(ledger_url, tmp_path):
    """The processor creates a payment before the ledger records its top-up: Stripe dates ch_1
    (10.00 USD) at T - 1 s, the ledger's top-up occurred at T. Reconciled a month at a time, the
    boundary falls between them: [T, T + 1 us) holds the top-up (and no other: ch_2 came after it)
    and not the row; [T - 2 s, T) the row and no ledger entry (ch_1 is the ledger's first). Before,
    each run left out what lay outside its window: 'ONLY IN LEDGER reference ch_1' in one,
    'ONLY IN FILE reference ch_1' in the other, exit 1 twice for one honest 10.00 USD payment. Now
    the payment is the window's whose ledger record it is: [T, T + 1 us) takes the row in (matched:
    1, exit 0), and [T - 2 s, T) leaves it to that window (matched: 0, exit 0), not counted twice."""
    from datetime import timedelta

    import psycopg

    with psycopg.connect(ledger_url) as conn:
        at = conn.execute("SELECT occurred_at FROM journal_entries WHERE kind = 'topup' "
                          "AND metadata ->> 'reference' = 'ch_1'").fetchone()[0]
    body = f"reference,amount,currency,date\nch_1,10.00,USD,{(at - timedelta(seconds=1)).isoformat()}\n"
    for (start, end), matched in (((at, at + timedelta(microseconds=1)), 1), ((at - timedelta(seconds=2), at), 0)):
        done = _reconcile(ledger_url, tmp_path, body, "--from", start.isoformat(), "--to", end.isoformat())
        assert done.returncode == 0 and f"matched: {matched} top-ups" in done.stdout, (
            start, end, done.stdout + done.stderr)

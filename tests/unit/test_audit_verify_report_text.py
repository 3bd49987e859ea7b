"""`tokentill audit verify`'s text report names the database's own text in its problems, and some of
it is a caller's: a charge's request id (any string up to 200 characters, `POST /v1/reservations`)
is printed in the charge checks' problems (`charge 7 (<request id>): its lines sum to ...`). Printed
as it was, a request id `r<CR>ESC[2Kverified: the ledger is whole<LF>ESC[8m` on a charge a check
names erased its problem line's start, put the clean verdict on a line of its own and concealed
every line after it (ESC [8m), "verification FAILED" included: exit 1, but the operator's screen
read whole. Each control or format character of a problem is written as an escape now, as
`audit reconcile` and `audit verify --file` write the text they name."""
from __future__ import annotations

import argparse

from api import cli
from ledger.audit import Check, Report

VERDICT = "verified: the ledger is whole"
REQUEST_ID = f"r\r\x1b[2K{VERDICT}\n\x1b[8m"
# charge 7 charged $0.028 (28,000,000 atomic units) where its lines sum to $0.03 (30,000,000): the
# charges check names it with its request id (wallets/audit.py's format of that problem)
PROBLEM = f"charge 7 ({REQUEST_ID}): its lines sum to 30000000, not 28000000"


def test_a_request_id_with_control_characters_cannot_forge_or_hide_report_lines(monkeypatch, capsys):
    report = Report((Check("entries_balanced", True, "every entry balances per asset"),
                     Check("charges", False, "every charge equals the sum of its lines", (PROBLEM,))))
    monkeypatch.setattr(cli, "_with_db", lambda settings, work: report)
    args = argparse.Namespace(file=None, json=False, expect_head=None)
    assert cli._audit_verify(args, None) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out, out
    lines = out.splitlines()
    assert VERDICT not in lines
    assert lines == ["ok   entries_balanced: every entry balances per asset",
                     "FAIL charges: every charge equals the sum of its lines",
                     f"       charge 7 (r\\r\\x1b[2K{VERDICT}\\n\\x1b[8m): its lines sum to 30000000, not 28000000",
                     "verification FAILED"], lines


def test_a_request_id_the_locale_cannot_encode_is_printed_escaped(monkeypatch):
    """Under an ASCII locale a problem naming request id `caf\\u00e9` stopped the report with a
    UnicodeEncodeError at that line (the checks after it unprinted, a traceback for a verdict); it is
    written `caf\\xe9`, as reconcile and verify --file write such text."""
    import io
    import sys

    report = Report((Check("charges", False, "every charge equals the sum of its lines",
                           ("charge 7 (caf\u00e9): its lines sum to 30000000, not 28000000",)),
                     Check("lots", True, "each lot's remaining is its account balance")))
    monkeypatch.setattr(cli, "_with_db", lambda settings, work: report)
    raw = io.BytesIO()
    ascii_out = io.TextIOWrapper(raw, encoding="ascii")
    monkeypatch.setattr(sys, "stdout", ascii_out)
    assert cli._audit_verify(argparse.Namespace(file=None, json=False, expect_head=None), None) == 1
    ascii_out.flush()
    assert raw.getvalue().decode("ascii").splitlines() == [
        "FAIL charges: every charge equals the sum of its lines",
        "       charge 7 (caf\\xe9): its lines sum to 30000000, not 28000000",
        "ok   lots: each lot's remaining is its account balance",
        "verification FAILED"]


def test_the_first_problem_in_a_failed_check_s_detail_is_escaped_too(monkeypatch, capsys):
    """A failed check's detail line repeats its first problem (`problems_check`, which every query
    check of the database's goes through: `1 found; first: <problem>`), and that line printed the
    request id raw: its CR and ESC [2K erased `FAIL charges: 1 found; first: charge 7 (r`, the clean
    verdict stood on a line of its own and ESC [8m concealed every line after it, the escaped problem
    line and "verification FAILED" included. The detail is escaped as the problem is."""
    from ledger.audit import problems_check

    report = Report((problems_check("charges", [PROBLEM], "every charge equals the sum of its lines"),))
    monkeypatch.setattr(cli, "_with_db", lambda settings, work: report)
    assert cli._audit_verify(argparse.Namespace(file=None, json=False, expect_head=None), None) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out, out
    shown = f"charge 7 (r\\r\\x1b[2K{VERDICT}\\n\\x1b[8m): its lines sum to 30000000, not 28000000"
    assert out.splitlines() == [f"FAIL charges: 1 found; first: {shown}", f"       {shown}",
                                "verification FAILED"], out

"""The invoice's CSV rendering opens in a spreadsheet as text and figures, never as formulas."""
from __future__ import annotations

import csv
import io

from api.renderings import csv_text


def test_a_cell_a_spreadsheet_would_run_is_written_as_text_and_figures_keep_their_sign():
    """A model name is the caller's text when a rule with a pattern priced it: '=HYPERLINK(...)'
    in the invoice's CSV ran as a formula when opened (OWASP's CSV injection)."""
    document = {"number": "INV-2026-000001", "period": {"label": "2026-11"}, "currency": "USD", "lines": [
        {"kind": "usage", "model": '=HYPERLINK("http://example.invalid","x")', "token_type": "input",
         "quantity": 1000, "unit_price": "5.00", "amount": "0.01", "rule_id": "@any"},
        {"kind": "adjustment", "model": "-2+3", "token_type": "input", "quantity": -1000, "unit_price": "5.00",
         "amount": "-0.01", "rule_id": "+r"},
        {"kind": "usage", "model": "model-a", "token_type": "output", "quantity": 10, "unit_price": "1.00",
         "amount": "0.00", "rule_id": "plain"}]}
    rows = list(csv.DictReader(io.StringIO(csv_text(document))))
    assert [r["model"] for r in rows] == ['\'=HYPERLINK("http://example.invalid","x")', "'-2+3", "model-a"]
    assert [r["rule_id"] for r in rows] == ["'@any", "'+r", "plain"]
    assert [(r["quantity"], r["amount"]) for r in rows] == [("1000", "0.01"), ("-1000", "-0.01"), ("10", "0.00")]

"""An invoice's printed days (HTML, PDF) are UTC days: a time written with another offset (a
document frozen on a server in another time zone keeps the offset it was written with) is the
UTC instant it names, not its local digits."""
from __future__ import annotations

from api.renderings import credit_note_context, facts


def _document(**times: str) -> dict:
    return {"customer_id": "acme", "billing": "prepaid", "currency": "USD", "line_rounding": None,
            "period": {"label": "2026-12", "start": times["start"], "end": times["end"], "time_zone": "UTC"},
            "issued_at": times["issued"], "due_at": times["due"]}


def test_a_period_boundary_written_with_an_offset_prints_its_utc_day():
    printed = dict(facts(_document(start="2026-12-01T09:00:00+09:00", end="2026-12-31T16:00:00-08:00",
                                   issued="2027-01-01T01:30:00+01:00", due="2027-01-15T00:00:00Z")))
    assert printed["Period"] == "2026-12: 2026-12-01 to 2027-01-01 (UTC)"
    assert printed["Issued"] == "2027-01-01 00:30:00 UTC"
    assert printed["Due"] == "2027-01-15"


def test_utc_times_print_as_before():
    printed = dict(facts(_document(start="2026-12-01T00:00:00Z", end="2027-01-01T00:00:00Z",
                                   issued="2027-01-01T00:05:07.123456Z", due="2027-01-15T00:00:00+00:00")))
    assert printed["Period"] == "2026-12: 2026-12-01 to 2027-01-01 (UTC)"
    assert printed["Issued"] == "2027-01-01 00:05:07 UTC"
    assert printed["Due"] == "2027-01-15"


def test_a_credit_note_issued_with_an_offset_prints_its_utc_time():
    note = {"kind": "credit", "number": "CN-1", "customer_id": "acme", "invoice_number": "INV-1",
            "period": "2026-12", "price_book": "b", "price_version": 2, "charges": 1, "currency": "USD",
            "issued_at": "2027-01-02T08:00:00+09:00", "total": "-1.00", "lines": []}
    assert dict(credit_note_context(note)["facts"])["Issued"] == "2027-01-01 23:00:00 UTC"

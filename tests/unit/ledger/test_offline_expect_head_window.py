"""--expect-head on a window export (review of 98274f3): a window leaves out the seals before its
first and in its gaps, so a head kept at one of those is in no seal of the file without the chain
having been rewritten; the failure says so and sends the auditor to a whole export."""

from __future__ import annotations

import json

from ledger.offline import OfflineReport, _expected

KEPT, LAST = "a" * 64, "b" * 64  # the head kept apart (an earlier seal's), the window's last seal's


def test_a_head_before_a_window_export_fails_naming_the_window_and_a_whole_export() -> None:
    report = OfflineReport(seals=2, head=LAST, chain={"c" * 64: 12, LAST: 13}, whole=False)
    _expected(report, KEPT)
    assert not report.ok
    assert report.problems == [
        f"no seal in the window export has chain hash {KEPT}: the window starts after that seal or leaves "
        "it out in a gap, the chain was rewritten since that head was taken, or the head is another "
        f"ledger's (the chain ends at {LAST}): check a whole export against it"
    ]


def test_a_head_no_seal_of_a_whole_export_has_keeps_its_message() -> None:  # guard
    report = OfflineReport(seals=2, head=LAST, chain={"c" * 64: 12, LAST: 13}, whole=True)
    _expected(report, KEPT)
    assert report.problems == [
        f"no seal in the file has chain hash {KEPT}: the chain was rewritten since that head was taken, "
        f"the file stops before it, or the head is another ledger's (the chain ends at {LAST})"
    ]


def test_a_head_a_window_s_seal_has_passes() -> None:  # guard
    report = OfflineReport(seals=2, head=LAST, chain={KEPT: 12, LAST: 13}, whole=False)
    _expected(report, KEPT)
    assert report.ok and report.problems == []


def test_the_json_report_names_the_seal_that_has_the_expected_head(monkeypatch, capsys) -> None:
    """(review of 98274f3) The text says 'seal 12 has chain hash ...: the chain passes through it
    (1 seal(s) after it in the file)'; --json said only ok and the last seal's head (LAST, not the
    head given), not which seal had it. Seal 12 of 12, 13: one seal after it."""
    from ledger import offline

    report = OfflineReport(seals=2, head=LAST, chain={KEPT: 12, LAST: 13})
    monkeypatch.setattr(offline, "verify_file", lambda _: report)
    assert offline.main(["export.jsonl", "--expect-head", KEPT, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["head"] == LAST
    assert printed["expected_head"] == {"chain_hash": KEPT, "seal": 12, "after": 1}

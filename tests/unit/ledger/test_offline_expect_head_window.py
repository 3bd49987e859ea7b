"""--expect-head on a window export (review of 98274f3): a window leaves out the seals before its
first and in its gaps, so a head kept at one of those is in no seal of the file without the chain
having been rewritten; the failure says so and sends the auditor to a whole export."""

from __future__ import annotations

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

"""The export header's `format`, `version` and window (`from`, `to`), which the offline verifier
did not read: a header naming another format or a version it does not know verified as if it were
its own, and so did a window export whose entries were not of its window (a window export writes
only the seals that hold an entry of it, and the unsealed entries of it alone). And a window export
whose first seal is the chain's first (its previous hash the genesis, its range from txid 0) was
told that the seals before its first were not in it: there are none."""
from __future__ import annotations

import json

import pytest

from ledger.chain import GENESIS, chain, entry_digest
from ledger.offline import OfflineReport, _expected, main, verify_lines
from tests.unit.ledger.test_offline_seal_order_and_assets import ACCOUNTS, CASH, LOT

# Seal 1 covers txids [0, 10) and entries 1 and 2 (November 1st and 2nd), seal 2 [10, 20) and
# entries 3 and 4 (November 30th, December 1st); entry 5 (December 2nd) is not sealed yet.
TIMES = {1: "2026-11-01T00:00:00.000000", 2: "2026-11-02T00:00:00.000000", 3: "2026-11-30T00:00:00.000000",
         4: "2026-12-01T00:00:00.000000", 5: "2026-12-02T00:00:00.000000"}
SEALS = {1: [1, 2], 2: [3, 4]}


def _entry(entry_id: int, seal: int | None) -> dict:
    postings = [[2 * entry_id, CASH, 0, 100, "USD"], [2 * entry_id + 1, LOT, 0, -100, "USD"]]
    fields = {"id": entry_id, "key": f"topup:{entry_id}", "request_hash": "00", "kind": "topup",
              "customer_id": "a", "metadata": {}, "txid": str(entry_id * 4), "occurred_at": TIMES[entry_id]}
    digest = entry_digest(*fields.values(), [p[:4] for p in postings])
    return {"type": "entry", "seal": seal, "sealed_hash": digest.hex() if seal else None, **fields,
            "postings": postings}


def _export(header: dict, seals: tuple[int, ...] = (1, 2), unsealed: tuple[int, ...] = (5,)) -> list[dict]:
    records: list[dict] = [{"type": "export", "format": "tokentill-journal", "version": 2, **header}, *ACCOUNTS]
    prev = GENESIS
    for seal, ids in SEALS.items():
        entries = [_entry(i, seal) for i in ids]
        chained = chain(prev, [bytes.fromhex(e["sealed_hash"]) for e in entries])
        if seal in seals:
            records.append({"type": "seal", "id": seal, "from_txid": str(10 * (seal - 1)), "to_txid": str(10 * seal),
                            "prev_hash": prev.hex(), "chain_hash": chained.hex(), "entry_ids": ids})
            records += entries
        prev = chained
    records += [{"type": "unsealed", "from_txid": "20"}, *(_entry(i, None) for i in unsealed)]
    count = sum(len(SEALS[s]) for s in seals)
    return [*records, {"type": "end", "entries": count + len(unsealed), "seals": len(seals),
                       "unsealed": len(unsealed)}]


def _verify(records: list[dict]) -> OfflineReport:
    return verify_lines(json.dumps(r).encode() for r in records)


WHOLE = {"whole": True, "from": None, "to": None}
DECEMBER = {"whole": False, "from": "2026-12-01T00:00:00+00:00", "to": "2027-01-01T00:00:00+00:00"}


def test_the_files_an_export_writes_verify():  # guard
    for header, seals in ((WHOLE, (1, 2)), (DECEMBER, (2,))):
        report = _verify(_export(header, seals))
        assert report.ok, report.problems


@pytest.mark.parametrize(("name", "value", "named"), [
    ("format", "ledgerly-journal", "line 1: the export header's 'format' is \"ledgerly-journal\", not "
                                   "\"tokentill-journal\": not a file this verifier reads"),
    ("format", None, "line 1: the export header's 'format' is null, not \"tokentill-journal\": not a file "
                     "this verifier reads"),
    ("version", 4, "line 1: the export header's 'version' is 4, a version this verifier does not know "
                   "(it reads 1, 2 and 3)"),
    ("version", "2", "line 1: the export header's 'version' is \"2\", a version this verifier does not know "
                     "(it reads 1, 2 and 3)"),
    ("version", 2.0, "line 1: the export header's 'version' is 2.0, a version this verifier does not know "
                     "(it reads 1, 2 and 3)"),
    ("version", True, "line 1: the export header's 'version' is true, a version this verifier does not know "
                      "(it reads 1, 2 and 3)"),
])
def test_a_header_of_another_format_or_an_unknown_version_is_refused(name, value, named, tmp_path, capsys):
    """A header saying `"version": 4` or another format verified ok: neither was read."""
    records = _export(WHOLE)
    records[0][name] = value
    assert _verify(records).problems == [named]
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main([str(path)]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == f"offline verification FAILED: 1 problem(s); first: {named}"


def test_a_header_of_version_1_or_without_format_and_version_is_read():  # guard: exports before versions
    for header in ({"version": 1}, {"format": "tokentill-journal"}, {}):
        records = _export(WHOLE)
        records[0] = {"type": "export", **WHOLE, **header}
        assert _verify(records).ok


@pytest.mark.parametrize(("name", "value", "shown"), [
    ("from", "yesterday", '"yesterday"'), ("to", 20261201, "20261201"),
    ("from", "2026-12-01T00:00:00", '"2026-12-01T00:00:00"'),  # no offset: no instant
])
def test_a_window_bound_that_is_not_a_time_is_named(name, value, shown):
    records = _export(DECEMBER, (2,))
    records[0][name] = value
    assert _verify(records).problems == [f"line 1: the export header's {name!r} is {shown}, not an RFC 3339 "
                                         "time with its offset (nor null)"]


def test_a_window_that_ends_before_it_starts_is_named():
    records = _export(DECEMBER, (2,))
    records[0]["to"] = "2026-11-30T23:59:59+00:00"
    assert _verify(records).problems == [
        "line 1: the export header's window ends ('to' 2026-11-30T23:59:59+00:00) before it starts "
        "('from' 2026-12-01T00:00:00+00:00)"]


def test_a_seal_with_no_entry_of_the_header_s_window_is_named():
    """December's window holds seal 2 (entry 4, December 1st) and entry 5. Seal 1 (November 1st and
    2nd) added to it, the window kept, verified ok, as did the window moved to December 2nd (so
    that seal 2 holds none of it either)."""
    records = _export(DECEMBER, (1, 2))
    assert _verify(records).problems == [
        "seal 1 holds no entry that occurred in the header's window [2026-12-01T00:00:00+00:00, "
        "2027-01-01T00:00:00+00:00): a window export writes only the seals that hold one"]
    records = _export({**DECEMBER, "from": "2026-12-02T00:00:00+00:00"}, (2,))
    assert _verify(records).problems == [
        "seal 2 holds no entry that occurred in the header's window [2026-12-02T00:00:00+00:00, "
        "2027-01-01T00:00:00+00:00): a window export writes only the seals that hold one"]


def test_an_unsealed_entry_outside_the_header_s_window_is_named():
    """November's window (to December 1st, excluded) holds seals 1 and 2 (entry 3, November 30th)
    and no unsealed entry: entry 5 (December 2nd) among them verified ok."""
    november = {"whole": False, "from": "2026-11-01T00:00:00+00:00", "to": "2026-12-01T00:00:00+00:00"}
    assert _verify(_export(november, (1, 2), ())).ok
    assert _verify(_export(november, (1, 2), (5,))).problems == [
        "entry 5 occurred at 2026-12-02T00:00:00.000000, outside the header's window [2026-11-01T00:00:00+00:00, "
        "2026-12-01T00:00:00+00:00), yet it lies among the unsealed entries, which a window export takes from "
        "the window alone"]


def test_a_window_bound_holds_entries_at_it_from_and_not_to():  # guard: [from, to)
    at = {"whole": False, "from": "2026-12-02T00:00:00Z", "to": "2026-12-02T00:00:00.000001Z"}
    assert _verify(_export(at, (), (5,))).ok
    at = {"whole": False, "from": "2026-12-01T23:00:00-01:00", "to": "2026-12-02T01:00:00+01:00"}  # 00:00 both
    assert _verify(_export(at, (), ())).ok


def test_a_window_export_from_the_first_seal_without_gaps_is_not_cautioned(tmp_path, capsys):
    """Seal 1's previous hash is the genesis and its range starts at txid 0: no seal precedes it.
    The window [November 1st, December 1st) starts there; the report said 'the seals before its
    first ... are not in it, so nothing here shows that none was removed'."""
    november = {"whole": False, "from": "2026-11-01T00:00:00+00:00", "to": "2026-12-01T00:00:00+00:00"}
    path = tmp_path / "november.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _export(november, (1, 2), ())))
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "note: a window export" not in out, out
    assert "verified offline: 4 entries, 2 seals intact" in out
    assert main([str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["whole"], printed["from_genesis"], printed["gaps"]) == (False, True, 0)


def test_a_window_export_from_the_first_seal_with_a_gap_names_only_the_gap(tmp_path, capsys):  # guard of the rest
    # seal 2 of the three seals of the order file's export left out: seal 1 starts at the genesis
    from tests.unit.ledger.test_offline_seal_order_and_assets import _export as three_seals
    from tests.unit.ledger.test_offline_seal_order_and_assets import _seal_block

    records = three_seals(whole=False)
    start, stop = _seal_block(records, 2)
    del records[start:stop]
    records[-1] = {"type": "end", "entries": 6, "seals": 2, "unsealed": 0}
    path = tmp_path / "gap.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main([str(path)]) == 0
    assert ("note: a window export (its header says so): the seals in 1 gap(s) between its seals are not in it, "
            "so nothing here shows that none was removed; verify a whole export to know") in capsys.readouterr().out
    december = _export(DECEMBER, (2,))  # seal 1 before its first: cautioned as before
    path.write_text("".join(json.dumps(r) + "\n" for r in december))
    assert main([str(path)]) == 0
    assert ("note: a window export (its header says so): the seals before its first are not in it, so nothing "
            "here shows that none was removed; verify a whole export to know") in capsys.readouterr().out


def test_a_head_past_a_window_from_the_first_seal_is_named_as_past_its_end():
    """A window from seal 1 without gaps leaves out only the seals after its last: a head none of
    its seals has is not 'before its first or in a gap'."""
    report = _verify(_export({"whole": False, "from": "2026-11-01T00:00:00Z", "to": "2026-11-03T00:00:00Z"}, (1,), ()))
    assert report.ok and report.from_genesis, report.problems
    _expected(report, "a" * 64)
    assert report.problems == [
        f"no seal in the window export has chain hash {'a' * 64}: the window stops before that seal, the chain "
        "was rewritten since that head was taken, or the head is another ledger's "
        f"(the chain ends at {report.head})"]


def test_an_empty_window_export_is_told_what_no_seal_leaves_unshown(tmp_path, capsys):
    """An export of an empty window (`--from T --to T`, or a window with no entry) is a valid export:
    it verifies (exit 0). It was cautioned 'the seals before its first are not in it', of a file with
    no seal (no first), and told to 'compare the chain head with one obtained apart from this file
    (--expect-head)', of a head '(no seal)' that --expect-head always fails ('the window export has
    no seal'). The caution stands (nothing sealed says the ledger had no entry in the window): it
    now says so, and what to do, verify a whole export; it no longer sends the auditor to --expect-head."""
    empty = {"whole": False, "from": "2026-12-10T00:00:00+00:00", "to": "2026-12-10T00:00:00+00:00"}
    path = tmp_path / "empty.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _export(empty, (), ())))
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "verified offline: 0 entries, 0 seals intact; chain head (no seal)",
        "note: a window export of no entry (its header says so): an empty window is a valid export, but no seal "
        "in it vouches that the ledger has no entry in that window; verify a whole export to know"], out


def test_a_window_export_of_unsealed_entries_alone_names_no_first_seal(tmp_path, capsys):
    """A window of entry 5 alone (December 2nd, not sealed yet) holds no seal: it was told 'the seals
    before its first are not in it' and sent to --expect-head, which fails for a file with no seal."""
    second = {"whole": False, "from": "2026-12-02T00:00:00+00:00", "to": "2026-12-03T00:00:00+00:00"}
    path = tmp_path / "unsealed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _export(second, (), (5,))))
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "verified offline: 1 entries, 0 seals intact; chain head (no seal)",
        "note: 1 entries are not sealed yet, so no hash vouches for them",
        "note: a window export (its header says so) with no seal: the seals before its entries are not in it, so "
        "nothing here shows that none was removed; verify a whole export to know"], out

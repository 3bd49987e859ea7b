"""The offline verifier on a file whose records were edited out of shape: each is named as a
problem (exit 1), never a traceback. Was: a seal without `prev_hash`, a hash that is not hex, an
entry without `key`, a posting cut short or with a string amount, an id that is a list each
stopped the verifier with KeyError, ValueError, IndexError or TypeError."""
from __future__ import annotations

import json

import pytest

from ledger.chain import GENESIS, chain, entry_digest
from ledger.offline import main, verify_lines

POSTINGS = [[1, "asset:platform:cash:USD", 0, 5, "USD"], [2, "liability:customer:a:lot:x", 0, -5, "USD"]]
ENTRY = {"type": "entry", "seal": 1, "id": 1, "key": "k", "request_hash": "ab", "kind": "topup",
         "customer_id": "a", "metadata": {}, "txid": "5", "occurred_at": "2026-01-01T00:00:00.000000",
         "postings": POSTINGS}
DIGEST = entry_digest(1, "k", "ab", "topup", "a", {}, "5", "2026-01-01T00:00:00.000000", [p[:4] for p in POSTINGS])
ACCOUNTS = [{"type": "account", "code": "asset:platform:cash:USD", "account_type": "asset", "asset": "USD",
             "scale": 9, "customer_id": None},
            {"type": "account", "code": "liability:customer:a:lot:x", "account_type": "liability", "asset": "USD",
             "scale": 9, "customer_id": "a"}]
SEAL = {"type": "seal", "id": 1, "from_txid": "0", "to_txid": "10", "prev_hash": GENESIS.hex(),
        "chain_hash": chain(GENESIS, [DIGEST]).hex(), "sealed_at": "2026-01-01T00:00:01.000000Z", "entry_ids": [1]}


def _file(seal: dict, entry: dict) -> list[bytes]:
    records = [{"type": "export", "whole": True}, *ACCOUNTS, seal, {**entry, "sealed_hash": DIGEST.hex()},
               {"type": "unsealed", "from_txid": "10"}, {"type": "end", "entries": 1, "seals": 1, "unsealed": 0}]
    return [json.dumps(r).encode() for r in records]


def test_the_intact_file_verifies():
    report = verify_lines(_file(SEAL, ENTRY))
    assert report.ok and report.head == SEAL["chain_hash"], report.problems


@pytest.mark.parametrize(("seal", "entry", "named"), [
    ({k: v for k, v in SEAL.items() if k != "prev_hash"}, ENTRY, "line 4: the seal record's 'prev_hash'"),
    ({**SEAL, "prev_hash": "zz"}, ENTRY, "line 4: the seal record's 'prev_hash'"),
    ({**SEAL, "entry_ids": None}, ENTRY, "line 4: the seal record's 'entry_ids'"),
    ({**SEAL, "id": "1"}, ENTRY, "line 4: the seal record's 'id'"),
    ({**SEAL, "from_txid": "0x0"}, ENTRY, "line 4: the seal record's 'from_txid'"),
    (SEAL, {k: v for k, v in ENTRY.items() if k != "key"}, "line 5: the entry record's 'key'"),
    (SEAL, {**ENTRY, "postings": "ab"}, "line 5: the entry record's 'postings'"),
    (SEAL, {**ENTRY, "postings": [p[:4] for p in POSTINGS]}, "line 5: the entry record's 'postings'"),
    (SEAL, {**ENTRY, "postings": [[1, "a", 0, "5", "USD"], [2, "b", 0, "-5", "USD"]]},
     "line 5: the entry record's 'postings'"),
    (SEAL, {**ENTRY, "postings": [[1, "a", 0, 5, ["USD"]], [2, "b", 0, -5, "USD"]]},
     "line 5: the entry record's 'postings'"),
    (SEAL, {**ENTRY, "id": [1]}, "line 5: the entry record's 'id'"),
])
def test_a_record_out_of_shape_is_named(seal, entry, named):
    report = verify_lines(_file(seal, entry))
    assert not report.ok and report.problems[0].startswith(named), report.problems


def test_a_sealed_hash_that_is_not_hex_is_named(tmp_path, capsys):
    lines = _file(SEAL, ENTRY)
    lines[4] = json.dumps({**ENTRY, "sealed_hash": 5}).encode()
    path = tmp_path / "edited.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert main([str(path)]) == 1
    assert "line 5: the entry record's 'sealed_hash' is missing or malformed" in capsys.readouterr().out


def test_an_entry_giving_its_postings_twice_is_named():
    """json keeps the last of a key an object gives twice (as msgspec did), and so the verifier
    checked the last `postings` alone: a line giving made-up postings first (cash +500, the lot -500,
    balanced, where the sealed entry moved 5) and the sealed ones after verified whole, while a
    person reading the line, or a reader keeping the first key, reads 500. An export never gives a
    key twice: such a line is named."""
    lines = _file(SEAL, ENTRY)
    made_up = json.dumps([[1, "asset:platform:cash:USD", 0, 500, "USD"],
                          [2, "liability:customer:a:lot:x", 0, -500, "USD"]])
    sealed = json.dumps({**ENTRY, "sealed_hash": DIGEST.hex()})
    assert sealed.startswith('{"type": "entry", ')
    lines[4] = ('{"type": "entry", "postings": ' + made_up + ", " + sealed[len('{"type": "entry", '):]).encode()
    report = verify_lines(lines)
    assert not report.ok
    assert report.problems[0] == "line 5 is not a record of the export: it gives the key 'postings' twice", \
        report.problems


def _with_unsealed(metadata: str) -> list[bytes]:
    """The intact file with an unsealed entry (txid 10, where the seal ends) whose metadata is
    `metadata` as written: an unsealed entry's content is in no hash, so only the reading of its
    line can refuse it."""
    lines = _file(SEAL, ENTRY)
    unsealed = {**ENTRY, "id": 2, "seal": None, "sealed_hash": None, "txid": "10", "metadata": "METADATA"}
    lines[6:] = [json.dumps(unsealed).replace('"METADATA"', metadata).encode(),
                 json.dumps({"type": "end", "entries": 2, "seals": 1, "unsealed": 1}).encode()]
    return lines


def test_the_intact_file_with_an_unsealed_entry_verifies():
    report = verify_lines(_with_unsealed('{"reference": "ch_1", "n": 1.5, "u": "\\ud83d\\ude00"}'))
    assert report.ok and report.unsealed == 1, report.problems


@pytest.mark.parametrize(("metadata", "why"), [
    # past a double's range: json reads 1e400 as inf (msgspec refused it: "Number out of range")
    ('{"n": 1e400}', "the number 1e400 is past what a double holds"),
    ('{"n": -1e400}', "the number -1e400 is past what a double holds"),
    # a lone surrogate: no Unicode text holds one (msgspec refused it); a pair is a character
    ('{"r": "ch_\\ud800"}', "it holds a lone surrogate (\\ud800 to \\udfff)"),
    ('{"\\udfff": 1}', "it holds a lone surrogate (\\ud800 to \\udfff)"),
    ('{"reference": "ch_1", "reference": "ch_2"}', "it gives the key 'reference' twice"),
])
def test_a_line_json_reads_but_no_export_writes_is_named(metadata, why):
    report = verify_lines(_with_unsealed(metadata))
    assert not report.ok  # the line unread, the end record's 2 entries, 1 unsealed are named too (1, 0)
    assert report.problems[0] == f"line 7 is not a record of the export: {why}", report.problems


def test_an_amount_written_with_an_exponent_is_refused_not_read_as_a_float():
    """`5e0` is 5.0 to json, a float: an amount is an integer of atomic units, so the posting is
    malformed (json and msgspec alike)."""
    lines = _file(SEAL, ENTRY)
    lines[4] = lines[4].replace(b', 5, "USD"]', b', 5e0, "USD"]').replace(b', -5, "USD"]', b', -5e0, "USD"]')
    assert b"5e0" in lines[4]
    report = verify_lines(lines)
    assert not report.ok and report.problems[0].startswith("line 5: the entry record's 'postings'"), report.problems


def test_an_unsealed_entry_reusing_a_sealed_entry_s_id_is_named():
    """The intact file's unsealed entry given id 1, the id of the entry seal 1 sealed (as a forged
    entry of another lane can be: an entry id is unique within its lane alone, and `audit verify`'s
    entry_ids names a shared one). Each entry on its own is sound (its postings balance, the
    unsealed one's content is in no hash), so the verifier passed the file: 0 problems. Now the
    unsealed entry is named."""
    lines = _with_unsealed("{}")
    lines[6] = lines[6].replace(b'"id": 2,', b'"id": 1,')
    assert b'"id": 1,' in lines[6]
    report = verify_lines(lines)
    assert report.problems == ["entry 1 (line 7) lies among the unsealed entries, but a sealed entry has the "
                               "same id: an entry id is given once"]


@pytest.mark.parametrize(("line", "record", "field"), [
    # an entry told a reader more than its seal saw: a note, or a figure beside the postings
    (5, {**ENTRY, "sealed_hash": DIGEST.hex(), "note": "refunded in full"}, "note"),
    (5, {**ENTRY, "sealed_hash": DIGEST.hex(), "amount": "500.00"}, "amount"),
    (4, {**SEAL, "approved_by": "the auditor"}, "approved_by"),
    (2, {**ACCOUNTS[0], "balance": "500.00"}, "balance"),
    (1, {"type": "export", "whole": True, "signed_by": "the ledger's auditor"}, "signed_by"),
    (7, {"type": "end", "entries": 1, "seals": 1, "unsealed": 0, "total": "500.00"}, "total"),
])
def test_a_field_no_export_writes_is_named(line, record, field):
    """The intact file with one record carrying a field the export never writes. No hash covers
    it and nothing is checked against it, so the file verified intact (0 problems) while a person
    reading it read the field: `"note": "refunded in full"` on a sealed top-up. Now it is named, on
    its line; the record is still checked, so with nothing else changed it is the one problem."""
    lines = _file(SEAL, ENTRY)
    lines[line - 1] = json.dumps(record).encode()
    report = verify_lines(lines)
    kind = record["type"]
    assert report.problems == [f"line {line}: the {kind} record carries {field!r}, a field no export writes"]


def test_a_field_no_export_writes_is_named_beside_the_alteration_of_its_record():
    """An entry whose cash posting was made 6 (the lot's -6: still balanced, but not what seal 1
    stored) and which carries a note: both are named, the note first (its line is read first)."""
    lines = _file(SEAL, ENTRY)
    altered = [[1, "asset:platform:cash:USD", 0, 6, "USD"], [2, "liability:customer:a:lot:x", 0, -6, "USD"]]
    lines[4] = json.dumps({**ENTRY, "sealed_hash": DIGEST.hex(), "postings": altered, "note": "6"}).encode()
    report = verify_lines(lines)
    assert report.problems == ["line 5: the entry record carries 'note', a field no export writes",
                               "entry 1 was altered: its content does not match the hash seal 1 stored for it"]


def _against_a_head(tmp_path, records: list[dict], capsys) -> str:
    """The file of `records` verifies (exit 0) and, against a head kept apart, fails (exit 1): what
    that printed."""
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main([str(path)]) == 0
    capsys.readouterr()
    assert main([str(path), "--expect-head", "ab" * 32]) == 1
    return capsys.readouterr().out


def test_an_expected_head_against_a_file_with_no_seal_says_there_is_none(tmp_path, capsys):
    """A whole export with no seal (every seal and its entries cut out, or a ledger never sealed)
    checked against a head kept apart: exit 1, as before, but the problem printed Python's None,
    `the chain ends at None, not at the expected head ab…`. Now it says the file has no seal."""
    records = [{"type": "export", "whole": True}, {"type": "unsealed", "from_txid": "0"},
               {"type": "end", "entries": 0, "seals": 0, "unsealed": 0}]
    out = _against_a_head(tmp_path, records, capsys)
    assert f"FAIL the file has no seal, so no chain in it ends at the expected head {'ab' * 32} (every seal cut " \
           "out, or the head is another ledger's)" in out, out
    assert "None" not in out


def test_an_expected_head_against_a_window_with_no_seal_says_its_entries_are_not_sealed(tmp_path, capsys):
    """A window export of entries no seal covers yet (today's, before the seal job ran) holds no
    seal: a window carries only the seals of its entries. Checked against a head kept apart, exit 1
    (no chain in it ends there), but 1895f94 gave the whole file's causes, `(every seal cut out, or
    the head is another ledger's)`, neither of which is so. Now it says the window's entries are not
    sealed yet (or their seals were cut out with them) and a whole export is the one to check."""
    entry = {**ENTRY, "seal": None, "sealed_hash": None, "txid": "12"}
    records = [{"type": "export", "whole": False, "from": "2026-01-01T00:00:00+00:00", "to": None}, *ACCOUNTS,
               {"type": "unsealed", "from_txid": "10"}, entry, {"type": "end", "entries": 1, "seals": 0, "unsealed": 1}]
    out = _against_a_head(tmp_path, records, capsys)
    assert f"FAIL the window export has no seal (its entries not sealed yet, or their seals cut out with them), so " \
           f"no chain in it ends at the expected head {'ab' * 32}: check a whole export against it" in out, out
    assert "every seal cut out" not in out

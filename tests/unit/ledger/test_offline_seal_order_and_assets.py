"""The offline verifier against two edits it let through.

A window export (`"whole": false`) may leave seals out, so the verifier counts gaps there rather
than failing; but it also took a seal written twice, or two seals swapped, as gaps: a file with
seal 2's block repeated verified "intact", its entries counted twice. Seals are written in
txid order, so a seal that starts before the previous one ends is named now.

A posting's asset is not among the fields an entry's hash covers (the account code is, and the
code fixes the asset): an entry whose postings were all relabelled from USD to EUR still
balanced and verified. Each posting's asset is now checked against the file's account record
of its code, and a posting naming an account the file does not list is named too."""
from __future__ import annotations

import json

import pytest

from ledger.chain import GENESIS, chain, entry_digest
from ledger.offline import verify_lines

CASH, LOT = "asset:platform:cash:USD", "liability:customer:a:lot:x"
ACCOUNTS = [{"type": "account", "code": CASH, "account_type": "asset", "asset": "USD", "scale": 9,
             "customer_id": None},
            {"type": "account", "code": LOT, "account_type": "liability", "asset": "USD", "scale": 9,
             "customer_id": "a"}]


def _entry(entry_id: int, txid: int, seal: int) -> dict:
    postings = [[2 * entry_id, CASH, 0, 100, "USD"], [2 * entry_id + 1, LOT, 0, -100, "USD"]]
    fields = {"id": entry_id, "key": f"topup:{entry_id}", "request_hash": "00", "kind": "topup",
              "customer_id": "a", "metadata": {}, "txid": str(txid), "occurred_at": "2026-01-01T00:00:00.000000"}
    digest = entry_digest(*fields.values(), [p[:4] for p in postings])
    return {"type": "entry", "seal": seal, "sealed_hash": digest.hex(), **fields, "postings": postings}


def _export(whole: bool = True) -> list[dict]:
    """Three seals of three entries each (txids [0, 10), [10, 20), [20, 30)), nothing unsealed."""
    records: list[dict] = [{"type": "export", "whole": whole}, *ACCOUNTS]
    prev = GENESIS
    for seal in (1, 2, 3):
        lo = 10 * (seal - 1)
        entries = [_entry(3 * (seal - 1) + k + 1, lo + k + 1, seal) for k in range(3)]
        chained = chain(prev, [bytes.fromhex(e["sealed_hash"]) for e in entries])
        records.append({"type": "seal", "id": seal, "from_txid": str(lo), "to_txid": str(lo + 10),
                        "prev_hash": prev.hex(), "chain_hash": chained.hex(),
                        "entry_ids": [e["id"] for e in entries]})
        records += entries
        prev = chained
    return [*records, {"type": "unsealed", "from_txid": "30"}, {"type": "end", "entries": 9, "seals": 3, "unsealed": 0}]


def _verify(records: list[dict]):
    return verify_lines(json.dumps(r).encode() for r in records)


def _seal_block(records: list[dict], seal: int) -> tuple[int, int]:
    start = next(i for i, r in enumerate(records) if r["type"] == "seal" and r["id"] == seal)
    return start, start + 4


def test_the_untouched_files_verify():
    for whole in (True, False):
        report = _verify(_export(whole))
        assert report.ok and report.entries == 9 and report.gaps == 0, report.problems


def test_a_seal_left_out_of_a_window_export_is_a_gap_not_a_failure():
    records = _export(whole=False)
    start, stop = _seal_block(records, 2)
    del records[start:stop]
    records[-1] = {"type": "end", "entries": 6, "seals": 2, "unsealed": 0}
    report = _verify(records)
    assert report.ok and report.gaps == 1, report.problems


def test_a_seal_written_twice_in_a_window_export_is_named():
    records = _export(whole=False)
    start, stop = _seal_block(records, 2)
    records[stop:stop] = records[start:stop]
    records[-1] = {"type": "end", "entries": 12, "seals": 4, "unsealed": 0}
    report = _verify(records)
    assert not report.ok
    assert report.problems[0] == ("seal 2 does not follow seal 2: its range starts before that seal's ends "
                                  "(a seal repeated, or seals out of order)")


def test_two_seals_swapped_in_a_window_export_are_named():
    records = _export(whole=False)
    two, three = _seal_block(records, 2), _seal_block(records, 3)
    records[two[0]:three[1]] = records[three[0]:three[1]] + records[two[0]:two[1]]
    report = _verify(records)
    assert not report.ok
    assert report.problems[0] == ("seal 2 does not follow seal 3: its range starts before that seal's ends "
                                  "(a seal repeated, or seals out of order)")


def test_an_entry_relabelled_to_another_currency_is_named():
    records = _export()
    entry = next(r for r in records if r["type"] == "entry" and r["id"] == 5)
    for posting in entry["postings"]:
        posting[4] = "EUR"  # still balanced, and the hash does not cover the asset
    report = _verify(records)
    assert not report.ok
    assert report.problems[0] == f"entry 5 posts EUR to {CASH}, an account in USD"


def test_a_posting_to_an_account_the_file_does_not_list_is_named():
    records = [r for r in _export() if not (r["type"] == "account" and r["code"] == LOT)]
    report = _verify(records)
    assert not report.ok
    assert report.problems[0] == f"entry 1 posts to {LOT}, which the file lists no account record for"


def test_an_account_record_that_changes_its_asset_is_named():
    records = _export()
    records.insert(3, {**ACCOUNTS[0], "asset": "EUR"})
    report = _verify(records)
    assert not report.ok
    assert report.problems[0] == f"line 4: account {CASH} is listed again with another asset (EUR, was USD)"


def test_a_problem_naming_text_the_locale_cannot_encode_is_printed_escaped(tmp_path):
    """An edited file's text goes into the problems it prints: under an ASCII locale (PYTHONIOENCODING
    stands in for it) an account code with an accent stopped the verifier with a UnicodeEncodeError."""
    import os
    import subprocess
    import sys

    records = _export()
    entry = next(r for r in records if r["type"] == "entry")
    entry["postings"][1][1] = "liability:customer:caf\u00e9:lot:x"
    path = tmp_path / "edited.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "ledger.offline", str(path)], capture_output=True, text=True,
                          encoding="ascii", errors="replace", env={**os.environ, "PYTHONIOENCODING": "ascii"},
                          timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "FAIL entry 1 posts to liability:customer:caf\\xe9:lot:x, which the file lists no account record for" \
        in done.stdout


@pytest.mark.parametrize("whole", [True, False])
@pytest.mark.parametrize("txid", [5, 35])
def test_an_entry_before_the_first_seal_is_named(whole, txid):
    """An export writes each entry after its seal's record, or after the `unsealed` record; one put
    between the account records and seal 1's (a made-up top-up of 700 atomic units: cash +700, the
    lot -700, balanced) lay in no seal's part and not among the unsealed entries, so neither its
    txid nor anything else was checked: with txid 5, inside seal 1's range [0, 10) (seal 1 lists
    entries 1-3 only), the file verified, 10 entries of which 1 "not sealed yet". Placed after the
    `unsealed` record the same entry is named (its txid 5 is below 30, where the unsealed start)."""
    records = _export(whole)
    fake = _entry(100, txid, 1)
    fake["postings"] = [[200, CASH, 0, 700, "USD"], [201, LOT, 0, -700, "USD"]]
    fake.update(seal=None, sealed_hash=None)
    records.insert(3, fake)  # the export header, two account records, then it
    records[-1] = {"type": "end", "entries": 10, "seals": 3, "unsealed": 1}
    report = _verify(records)
    assert not report.ok
    assert report.problems == ["entry 100 (line 4) lies before the first seal's record: in no seal's part of the "
                               "file, nor among the unsealed entries"], report.problems


def test_a_file_s_text_with_control_characters_cannot_forge_or_hide_report_lines(tmp_path, capsys):
    """The problems name the file's own text (account codes, assets, customer ids), which whoever
    edited the file chose. An entry's posting to account `x<CR>ESC[2K<verdict><LF>ESC[8m` printed as it
    was: the CR and ESC [2K erased the `FAIL` line's start, the clean verdict stood on a line of its
    own, and ESC [8m (concealed text) hid every line after it, the failed verdict included: on the
    auditor's screen the tampered file read "verified offline". Each control or format character
    of the file's text is now written as an escape (`\\r`, `\\x1b`, `\\n`), so each problem is one
    line starting `FAIL`. The file fails two ways (2 problems): the posting names an account the
    file does not list, and entry 1 no longer hashes to what seal 1 stored (its stored hash is
    untouched, so seal 1's chain hash still matches)."""
    from ledger.offline import main

    verdict = "verified offline: 9 entries, 3 seals intact; chain head " + "0" * 64
    forged = f"x\r\x1b[2K{verdict}\n\x1b[8m"
    records = _export()
    entry = next(r for r in records if r["type"] == "entry")
    entry["postings"][0][1] = forged
    path = tmp_path / "edited.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    assert main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out, out
    lines = out.splitlines()
    assert verdict not in lines
    assert lines[0] == (f"FAIL entry 1 posts to x\\r\\x1b[2K{verdict}\\n\\x1b[8m, "
                        "which the file lists no account record for")
    assert [line.split(" ", 1)[0] for line in lines] == ["FAIL", "FAIL", "offline"], lines
    assert lines[-1].startswith("offline verification FAILED: 2 problem(s); first: entry 1 posts to x\\r\\x1b"), lines


@pytest.mark.parametrize("whole", ["false", "no", "true", "", 0.0, 0, 1, None, [], {}])
def test_a_header_whose_whole_is_not_a_json_boolean_is_refused_not_guessed(whole, tmp_path, capsys):
    """The header's `whole` was read with bool(): "false" and "no" were a whole export, 0.0, 0, ""
    and null a window (whose left-out seals are gaps, not failures); each verified "intact". Only
    true or false is an answer: anything else is named on the header's line, and the file is
    checked as whole (the stricter reading). Seal 2 (entries 4-6) cut out under `"whole": 0.0`
    verified ok with 1 gap; it now fails, on the header and on seal 3 not following seal 1."""
    from ledger.offline import main

    named = f"line 1: the export header's 'whole' is {json.dumps(whole)}, not true or false"
    records = _export()
    records[0] = {"type": "export", "whole": whole}
    report = _verify(records)
    assert (report.ok, report.whole, report.problems) == (False, True, [named])  # was (True, bool(whole), [])
    start, stop = _seal_block(records, 2)
    del records[start:stop]
    records[-1] = {"type": "end", "entries": 6, "seals": 2, "unsealed": 0}
    report = _verify(records)
    assert report.problems == [named, "seal 3 does not follow seal 1: its range does not start where that "
                                      "seal's ends"] and report.gaps == 0  # was ok, 1 gap, where falsy
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main([str(path)]) == 1
    assert f"FAIL {named}" in capsys.readouterr().out


def test_a_header_without_whole_is_refused_and_checked_as_whole():
    """Every export writes `whole`; a header without it was taken as whole, silently. It is named."""
    records = _export()
    records[0] = {"type": "export"}
    report = _verify(records)
    assert (report.ok, report.whole) == (False, True)
    assert report.problems == ["line 1: the export header has no 'whole' (true or false)"]


def test_a_header_with_whole_true_or_false_is_read_as_it_says():
    for whole in (True, False):
        records = _export(whole)
        report = _verify(records)
        assert report.ok and report.whole is whole, report.problems


def test_an_export_header_past_the_first_line_is_named_and_not_read():
    """`whole` is read from the header, the file's first record. A second header was read too,
    the last one read winning: seal 2 (entries 4-6) cut out of a whole export and `{"type":
    "export", "whole": false}` added on line 2, the header on line 1 still saying true, verified
    ok with 1 gap. The extra header is named on its line and not read: the file is checked as
    whole, and seal 3 does not follow seal 1."""
    records = _export()
    start, stop = _seal_block(records, 2)
    del records[start:stop]
    records[-1] = {"type": "end", "entries": 6, "seals": 2, "unsealed": 0}
    records.insert(1, {"type": "export", "whole": False})
    report = _verify(records)
    assert report.problems == [
        "line 2: an export header past the first record (not read)",
        "seal 3 does not follow seal 1: its range does not start where that seal's ends"], report.problems
    assert (report.ok, report.whole, report.gaps) == (False, True, 0)  # was (True, False, 1)
    records = _export(False)
    records.insert(len(records) - 1, {"type": "export", "whole": True})
    report = _verify(records)
    assert report.problems == [f"line {len(records) - 1}: an export header past the first record (not read)"]
    assert report.whole is False  # the first header's word


def test_a_customer_s_currency_rescaled_throughout_the_file_is_named():
    """No hash covers an asset's scale. Every USD account record's scale made 6 (the cash account's
    and customer a's lot's alike, so one scale per asset still holds): each top-up of 100 atomic
    units read 100 x 10^-6 USD, 1000 times its 100 x 10^-9, and the file verified intact. A
    customer's currency is kept at the wallets' scale (wallets.chart.ASSET_SCALE, 9), as `audit
    verify`'s `assets` check holds in the database: named once, for the asset."""
    records = [dict(r, scale=6) if r["type"] == "account" else r for r in _export()]
    report = _verify(records)
    assert report.problems == ["asset USD has scale 6, but a customer's currency is kept in units of 10^-9: "
                               "its amounts read 1000 times what they are"], report.problems
    records = [dict(r, scale=12) if r["type"] == "account" else r for r in _export()]
    assert _verify(records).problems == ["asset USD has scale 12, but a customer's currency is kept in units of "
                                         "10^-9: its amounts read 1/1000 times what they are"]
    from ledger import offline  # standard library only: the wallets' scale is its own constant
    from wallets.chart import ASSET_SCALE
    assert offline.CUSTOMER_SCALE == ASSET_SCALE

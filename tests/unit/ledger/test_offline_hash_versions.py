"""Seal hash versions in an export: a version 2 seal's entry hashes cover recorded_at, so an edited
recorded_at is named; a version 3 seal's cover each posting's asset too, so a file relabelled to another
currency is named; a version 4 seal's chain hash covers its sealed_at, which must not precede its
entries' recorded_at nor the seal before it; a version 1 seal (or an export written before
versions, with none) is checked as it was made; a version the verifier does not know is named,
not guessed."""
from __future__ import annotations

import hashlib
import json

import pytest

from ledger.chain import GENESIS, chain, entry_digest, seal_chain
from ledger.offline import verify_lines

POSTINGS = [[1, "asset:platform:cash:USD", 0, 5, "USD"], [2, "liability:customer:a:lot:x", 0, -5, "USD"]]
RECORDED = "2026-01-01T00:00:00.250001Z"
SEALED = "2026-01-01T00:00:01.000000Z"  # 0.749999 s after the entry was recorded
ENTRY = {"type": "entry", "seal": 1, "id": 1, "key": "k", "request_hash": "ab", "kind": "topup",
         "customer_id": "a", "metadata": {}, "txid": "5", "occurred_at": "2026-01-01T00:00:00.000000",
         "recorded_at": RECORDED, "postings": POSTINGS}
ACCOUNTS = [{"type": "account", "code": "asset:platform:cash:USD", "account_type": "asset", "asset": "USD",
             "scale": 9, "customer_id": None},
            {"type": "account", "code": "liability:customer:a:lot:x", "account_type": "liability", "asset": "USD",
             "scale": 9, "customer_id": "a"}]


def _digest(version: int) -> bytes:
    return entry_digest(1, "k", "ab", "topup", "a", {}, "5", "2026-01-01T00:00:00.000000",
                        POSTINGS if version >= 3 else [p[:4] for p in POSTINGS], recorded_at=RECORDED,
                        version=version)


def _file(version: int | None, entry: dict = ENTRY, digest_version: int | None = None,
          sealed_at: str = SEALED) -> list[bytes]:
    digest = _digest(digest_version or version or 1)
    seal = {"type": "seal", "id": 1, "from_txid": "0", "to_txid": "10", "prev_hash": GENESIS.hex(),
            "chain_hash": seal_chain(GENESIS, [digest], version or 1, sealed_at).hex(), "sealed_at": sealed_at,
            "entry_ids": [1]}
    if version is not None:
        seal["hash_version"] = version
    records = [{"type": "export", "whole": True}, *ACCOUNTS, seal, {**entry, "sealed_hash": digest.hex()},
               {"type": "unsealed", "from_txid": "10"}, {"type": "end", "entries": 1, "seals": 1, "unsealed": 0}]
    return [json.dumps(r).encode() for r in records]


def test_the_versions_hash_differently_and_version_1_is_as_before():
    before = entry_digest(1, "k", "ab", "topup", "a", {}, "5", "2026-01-01T00:00:00.000000",
                          [p[:4] for p in POSTINGS])
    assert _digest(1) == before != _digest(2)
    with pytest.raises(ValueError, match="recorded_at"):
        entry_digest(1, "k", "ab", "topup", "a", {}, "5", "2026-01-01T00:00:00.000000", [], version=2)
    with pytest.raises(ValueError, match="hash version 5"):
        entry_digest(1, "k", "ab", "topup", "a", {}, "5", "2026-01-01T00:00:00.000000", [], recorded_at=RECORDED,
                     version=5)


@pytest.mark.parametrize("version", [None, 1, 2, 3, 4])
def test_an_intact_file_of_each_version_verifies(version):
    report = verify_lines(_file(version))
    assert report.ok, report.problems


def test_an_export_of_before_versions_without_recorded_at_verifies():
    report = verify_lines(_file(None, {k: v for k, v in ENTRY.items() if k != "recorded_at"}))
    assert report.ok, report.problems


def test_an_edited_recorded_at_is_named_under_a_version_2_seal():
    report = verify_lines(_file(2, {**ENTRY, "recorded_at": "2026-01-01T00:00:00.250002Z"}))
    assert report.problems[0] == "entry 1 was altered: its content does not match the hash seal 1 stored for it"


def test_a_version_1_seal_does_not_vouch_for_recorded_at():
    assert verify_lines(_file(1, {**ENTRY, "recorded_at": "2026-01-01T00:00:00.250002Z"})).ok


def test_a_missing_recorded_at_under_a_version_2_seal_is_named():
    report = verify_lines(_file(2, {k: v for k, v in ENTRY.items() if k != "recorded_at"}))
    assert report.problems[0] == ("entry 1 has no recorded_at, which the hash of seal 1 (hash version 2) "
                                  "covers"), report.problems


def test_a_seal_relabelled_to_the_other_version_is_named():
    report = verify_lines(_file(1, digest_version=2))
    assert not report.ok and report.problems[0].startswith("entry 1 was altered"), report.problems


@pytest.mark.parametrize("version", [5, 0, "2", True, None])
def test_a_hash_version_this_verifier_does_not_know_is_named(version):
    lines = _file(2)
    seal = json.loads(lines[3])
    seal["hash_version"] = version
    lines[3] = json.dumps(seal).encode()
    report = verify_lines(lines)
    assert not report.ok
    assert report.problems[0].startswith("line 4: the seal record's 'hash_version'"), report.problems


EUROS = [{**a, "asset": "EUR"} for a in ACCOUNTS]


def _relabelled(version: int) -> list[bytes]:
    """The file of a seal of `version`, its two accounts and the entry's postings made EUR: the
    entry still balances (5 - 5 = 0 EUR) and each posting's asset is its account record's."""
    lines = _file(version)
    entry = json.loads(lines[4])
    entry["postings"] = [[*p[:4], "EUR"] for p in entry["postings"]]
    return [lines[0], *(json.dumps(a).encode() for a in EUROS), lines[3], json.dumps(entry).encode(), *lines[5:]]


def test_a_file_relabelled_to_another_currency_is_named_under_a_version_3_seal():
    report = verify_lines(_relabelled(3))
    assert report.problems == ["entry 1 was altered: its content does not match the hash seal 1 stored for it"]


@pytest.mark.parametrize("version", [1, 2])
def test_a_version_1_or_2_seal_does_not_vouch_for_the_currency(version):
    assert verify_lines(_relabelled(version)).ok


def test_version_3_hashes_the_asset_and_needs_it():
    assert _digest(3) != _digest(2)
    with pytest.raises(ValueError, match="asset"):
        entry_digest(1, "k", "ab", "topup", "a", {}, "5", "2026-01-01T00:00:00.000000", [p[:4] for p in POSTINGS],
                     recorded_at=RECORDED, version=3)
    # versions 1 and 2 hash a posting's first four items, whether the asset follows or not
    assert entry_digest(1, "k", "ab", "topup", "a", {}, "5", "2026-01-01T00:00:00.000000", POSTINGS,
                        recorded_at=RECORDED, version=2) == _digest(2)


def test_version_4_hashes_entries_as_3_and_chains_the_sealed_at():
    assert _digest(4) == _digest(3)
    assert seal_chain(GENESIS, [_digest(4)], 3, SEALED) == chain(GENESIS, [_digest(4)])
    # sha256(prev || entry hash || "2026-01-01T00:00:01.000000Z")
    assert seal_chain(GENESIS, [_digest(4)], 4, SEALED) == hashlib.sha256(
        GENESIS + _digest(4) + b"2026-01-01T00:00:01.000000Z").digest()
    with pytest.raises(ValueError, match="sealed_at"):
        seal_chain(GENESIS, [_digest(4)], 4, None)


def _sealed_at_edited(version: int, at: str) -> list[bytes]:
    lines = _file(version)
    seal = json.loads(lines[3])
    seal["sealed_at"] = at
    lines[3] = json.dumps(seal).encode()
    return lines


def test_an_edited_sealed_at_is_named_under_a_version_4_seal_only():
    later = "2026-01-01T00:00:02.000000Z"  # a second on
    assert verify_lines(_sealed_at_edited(4, later)).problems == [
        "seal 1: its chain hash does not match the hashes of its entries and its sealed_at"]
    assert verify_lines(_sealed_at_edited(3, later)).ok  # a version 3 chain never covered it


def test_a_version_4_seal_chained_over_a_date_before_its_entry_was_recorded_is_named():
    """The chain recomputed by whoever moved the date (a whole chain can be, from there on: only
    the head from another source tells): dated 0.000001 s before its entry was recorded (.250001)."""
    early = "2026-01-01T00:00:00.250000Z"
    assert verify_lines(_file(4, sealed_at=early)).problems == [
        f"seal 1 is dated {early}, before entry 1 was recorded ({RECORDED})"]
    assert verify_lines(_file(3, sealed_at=early)).ok  # an older seal is dated at its transaction's start


def test_a_version_4_seal_dated_before_the_seal_before_it_is_named():
    """Seal 2 (no entries of its own here) dated 0.5 s before seal 1 (01.000000 - 0.5 = 00.500000)."""
    lines = _file(4)
    first = json.loads(lines[3])
    second = {"type": "seal", "id": 2, "from_txid": "10", "to_txid": "20", "prev_hash": first["chain_hash"],
              "sealed_at": "2026-01-01T00:00:00.500000Z", "hash_version": 4, "entry_ids": []}
    second["chain_hash"] = seal_chain(bytes.fromhex(first["chain_hash"]), [], 4, second["sealed_at"]).hex()
    end = {"type": "end", "entries": 1, "seals": 2, "unsealed": 0}
    edited = [*lines[:5], json.dumps(second).encode(), b'{"type": "unsealed", "from_txid": "20"}',
              json.dumps(end).encode()]
    assert verify_lines(edited).problems == [
        "seal 2 is dated 2026-01-01T00:00:00.500000Z, before seal 1 (2026-01-01T00:00:01.000000Z)"]
    second["hash_version"] = 3  # not checked: an older seal's date was its transaction's start
    second["chain_hash"] = chain(bytes.fromhex(first["chain_hash"]), []).hex()
    edited[5] = json.dumps(second).encode()
    assert verify_lines(edited).ok, verify_lines(edited).problems

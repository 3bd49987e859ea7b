"""Seal hash versions in an export: a version 2 seal's entry hashes cover recorded_at, so an edited
recorded_at is named; a version 3 seal's cover each posting's asset too, so a file relabelled to another
currency is named; a version 1 seal (or an export written before versions, with none) is checked
as it was made; a version the verifier does not know is named, not guessed."""
from __future__ import annotations

import json

import pytest

from ledger.chain import GENESIS, chain, entry_digest
from ledger.offline import verify_lines

POSTINGS = [[1, "asset:platform:cash:USD", 0, 5, "USD"], [2, "liability:customer:a:lot:x", 0, -5, "USD"]]
RECORDED = "2026-01-01T00:00:00.250001Z"
ENTRY = {"type": "entry", "seal": 1, "id": 1, "key": "k", "request_hash": "ab", "kind": "topup",
         "customer_id": "a", "metadata": {}, "txid": "5", "occurred_at": "2026-01-01T00:00:00.000000",
         "recorded_at": RECORDED, "postings": POSTINGS}
ACCOUNTS = [{"type": "account", "code": "asset:platform:cash:USD", "account_type": "asset", "asset": "USD",
             "scale": 9, "customer_id": None},
            {"type": "account", "code": "liability:customer:a:lot:x", "account_type": "liability", "asset": "USD",
             "scale": 9, "customer_id": "a"}]


def _digest(version: int) -> bytes:
    return entry_digest(1, "k", "ab", "topup", "a", {}, "5", "2026-01-01T00:00:00.000000",
                        POSTINGS if version == 3 else [p[:4] for p in POSTINGS], recorded_at=RECORDED,
                        version=version)


def _file(version: int | None, entry: dict = ENTRY, digest_version: int | None = None) -> list[bytes]:
    digest = _digest(digest_version or version or 1)
    seal = {"type": "seal", "id": 1, "from_txid": "0", "to_txid": "10", "prev_hash": GENESIS.hex(),
            "chain_hash": chain(GENESIS, [digest]).hex(), "entry_ids": [1]}
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
    with pytest.raises(ValueError, match="hash version 4"):
        entry_digest(1, "k", "ab", "topup", "a", {}, "5", "2026-01-01T00:00:00.000000", [], recorded_at=RECORDED,
                     version=4)


@pytest.mark.parametrize("version", [None, 1, 2, 3])
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


@pytest.mark.parametrize("version", [4, 0, "2", True, None])
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

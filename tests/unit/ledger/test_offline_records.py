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

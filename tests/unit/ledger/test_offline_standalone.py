"""The README's promise for an auditor who does not trust our server, run as written: "with nothing
but `ledger/offline.py` and `ledger/chain.py`, `python -m ledger.offline EXPORT.jsonl`". The two
files are copied alone into an empty folder and run by a Python without site-packages (`-S`: no
tokentill, none of its dependencies), as on an auditor's machine with a bare Python.

Was: ledger/offline.py imported msgspec (a third-party package) to read each line, so there it
stopped at `ModuleNotFoundError: No module named 'msgspec'`, exit 1, before reading the file (the
import-linter contract forbade only database modules)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from ledger.chain import GENESIS, chain, entry_digest

LEDGER = Path(__file__).resolve().parents[3] / "ledger"

# One top-up of $5.00 (5,000,000,000 atomic units at scale 9) sealed by one version 4 seal:
# cash debited +5,000,000,000, the customer's lot credited -5,000,000,000; the entry balances (0).
POSTINGS = [[1, "asset:platform:cash:USD", 1, 5_000_000_000, "USD"],
            [2, "liability:customer:acme:lot:x", 0, -5_000_000_000, "USD"]]
RECORDED, SEALED = "2026-12-06T09:00:00.000000Z", "2026-12-06T09:00:01.000000Z"
ENTRY = {"type": "entry", "seal": 1, "id": 1, "key": "topup:x", "request_hash": "ab", "kind": "topup",
         "customer_id": "acme", "metadata": {"reference": "ch_1"}, "txid": "5",
         "occurred_at": "2026-12-06T09:00:00.000000", "recorded_at": RECORDED, "postings": POSTINGS}


def _export(entry: dict) -> str:
    digest = entry_digest(1, "topup:x", "ab", "topup", "acme", {"reference": "ch_1"}, "5",
                          "2026-12-06T09:00:00.000000", POSTINGS, recorded_at=RECORDED, version=4)
    records = [
        {"type": "export", "format": "tokentill-journal", "version": 2, "whole": True},
        {"type": "account", "code": "asset:platform:cash:USD", "account_type": "asset", "asset": "USD",
         "scale": 9, "customer_id": None},
        {"type": "account", "code": "liability:customer:acme:lot:x", "account_type": "liability", "asset": "USD",
         "scale": 9, "customer_id": "acme"},
        {"type": "seal", "id": 1, "from_txid": "0", "to_txid": "10", "prev_hash": GENESIS.hex(),
         "chain_hash": chain(GENESIS, [digest], SEALED).hex(), "sealed_at": SEALED, "hash_version": 4,
         "entry_ids": [1]},
        {**entry, "sealed_hash": digest.hex()},
        {"type": "unsealed", "from_txid": "10"},
        {"type": "end", "entries": 1, "seals": 1, "unsealed": 0},
    ]
    return "".join(json.dumps(r) + "\n" for r in records)


def _run_alone(tmp_path: Path, export: str) -> subprocess.CompletedProcess:
    """`python -m ledger.offline EXPORT.jsonl` in a folder holding the two files and the export only,
    by this Python without its site-packages (-S) nor PYTHON* variables (-E) nor user site (-s)."""
    (tmp_path / "ledger").mkdir()
    for name in ("offline.py", "chain.py"):
        shutil.copy(LEDGER / name, tmp_path / "ledger" / name)
    (tmp_path / "export.jsonl").write_text(export, encoding="utf-8")
    return subprocess.run([sys.executable, "-S", "-E", "-s", "-m", "ledger.offline", "export.jsonl"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)


def test_the_two_files_alone_verify_an_intact_export_on_a_bare_python(tmp_path):
    done = _run_alone(tmp_path, _export(ENTRY))
    assert done.returncode == 0, done.stderr
    assert "verified offline: 1 entries, 1 seals intact" in done.stdout


def test_the_two_files_alone_name_an_altered_amount_on_a_bare_python(tmp_path):
    """The cash leg made $6.00 (6,000,000,000): the entry no longer balances (+1,000,000,000) and no
    longer hashes to what the seal stored."""
    altered = {**ENTRY, "postings": [[1, "asset:platform:cash:USD", 1, 6_000_000_000, "USD"], POSTINGS[1]]}
    done = _run_alone(tmp_path, _export(altered))
    assert done.returncode == 1, done.stderr
    assert "FAIL entry 1 does not balance: {'USD': 1000000000}" in done.stdout
    assert "FAIL entry 1 was altered: its content does not match the hash seal 1 stored for it" in done.stdout

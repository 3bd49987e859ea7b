"""The hashes of tamper evidence, and nothing else: what an entry's hash covers and how seals chain
them. Pure (hashlib and json only), so the offline verifier can use it with no database."""
from __future__ import annotations

import hashlib
import json
from typing import Any

GENESIS = bytes(32)  # the previous hash of the first seal


def entry_digest(entry_id: int, key: str, request_hash_hex: str, kind: str, customer_id: str | None,
                 metadata: Any, txid: str, occurred_at: str, postings: list) -> bytes:
    """sha256 over an entry's header and postings ([posting id, account code, stripe, amount],
    in posting id order), as canonical JSON."""
    body = [entry_id, key, request_hash_hex, kind, customer_id, metadata, txid, occurred_at, postings]
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).digest()


def chain(prev: bytes, hashes: list[bytes]) -> bytes:
    """A seal's chain hash: sha256(previous seal's chain hash || its entries' hashes, in id order)."""
    return hashlib.sha256(prev + b"".join(hashes)).digest()

"""The hashes of tamper evidence, and nothing else: what an entry's hash covers and how seals chain
them. Pure (hashlib and json only), so the offline verifier can use it with no database.

An entry's hash has versions, and each seal records the one its hashes were made with:
1 (seals written before migration 0042) covers the entry's id, key, request hash, kind, customer,
metadata, txid, occurred_at and postings ([id, account code, stripe, amount]); 2 (seals of 0042 to
0075) covers recorded_at too, as RFC 3339 UTC text with microseconds (`2026-12-04T14:13:26.123456Z`),
exactly as the export writes it; 3 (seals of 0076 to 0080) covers each posting's asset too, after
its amount, as the export writes the posting: the account code did not fix it, so a ledger or a
file relabelled from one currency to another verified; 4 (every seal since 0081) hashes entries as
3 does, and its chain hash covers the seal's sealed_at too (`chain`): an auditor reads it as "these
entries existed by then", and nothing covered it."""
from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

GENESIS = bytes(32)  # the previous hash of the first seal
HASH_VERSIONS = (1, 2, 3, 4)
HASH_VERSION = 4  # what new seals are written with
SEALED_AT_FROM = 4  # the first version whose chain hash covers the seal's sealed_at
# How far past the database's clock a version 4 seal may be dated by a clock that later stepped
# back (NTP, a host's clock corrected: 0083 dates the seals after it no earlier) before both
# verifications name it: past that, no clock reading dated it (a seal planted with the triggers
# off). A day, as a spool allows a clock set back.
DATED_AHEAD = timedelta(days=1)


def entry_digest(entry_id: int, key: str, request_hash_hex: str, kind: str, customer_id: str | None,
                 metadata: Any, txid: str, occurred_at: str, postings: list, *,
                 recorded_at: str | None = None, version: int = 1) -> bytes:
    """sha256 over an entry's header and postings ([posting id, account code, stripe, amount,
    asset], in posting id order), as canonical JSON. Version 2 puts recorded_at after occurred_at;
    version 3 too, and keeps each posting's asset (versions 1 and 2 hash its first four items);
    version 4 is 3 (it differs in the chain hash only)."""
    body = [entry_id, key, request_hash_hex, kind, customer_id, metadata, txid, occurred_at]
    if version not in HASH_VERSIONS:
        raise ValueError(f"hash version {version} is not one of {HASH_VERSIONS}")
    if version >= 2:
        if not isinstance(recorded_at, str):
            raise ValueError(f"hash version {version} covers recorded_at: it must be given")
        body.append(recorded_at)
    if version >= 3:
        if any(len(p) != 5 or not isinstance(p[4], str) for p in postings):
            raise ValueError(f"hash version {version} covers each posting's asset: [id, code, stripe, amount, asset]")
        body.append([list(p) for p in postings])
    else:
        body.append([list(p[:4]) for p in postings])
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).digest()


def chain(prev: bytes, hashes: list[bytes], sealed_at: str | None = None) -> bytes:
    """A seal's chain hash: sha256(previous seal's chain hash || its entries' hashes, in id order),
    and from version 4 (SEALED_AT_FROM) || its sealed_at, as the export writes it: RFC 3339 UTC
    text with microseconds and a `Z` (`2026-12-06T05:13:11.352792Z`), UTF-8."""
    return hashlib.sha256(prev + b"".join(hashes) + (sealed_at or "").encode()).digest()


def seal_chain(prev: bytes, hashes: list[bytes], version: int, sealed_at: str | None) -> bytes:
    """The chain hash a seal of `version` has: with its sealed_at from SEALED_AT_FROM on, without
    it before."""
    if version < SEALED_AT_FROM:
        return chain(prev, hashes)
    if not sealed_at:
        raise ValueError(f"hash version {version} covers the seal's sealed_at: it must be given")
    return chain(prev, hashes, sealed_at)

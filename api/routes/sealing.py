"""Secrets kept in idempotent answers (an API key's, a webhook endpoint's signing secret), sealed
to the API key that made the call. Answers are kept per customer scope, not per key (every
unlimited admin key shares one), so a kept secret is XORed with a pad drawn from the calling
key's own secret (which the database holds only as a hash) and the Idempotency-Key. Only the
caller who made it can read it back; another key of that scope, or a copy of the database,
cannot. Sealing is its own inverse."""
from __future__ import annotations

import base64
import hashlib
import hmac

from wallets.errors import ConflictError

_SEALED = "sealed:"


def pad(caller_secret: str, idempotency_key: str, label: bytes) -> bytes:
    """64 bytes for `label`'s secrets (each kind its own), this caller and this Idempotency-Key."""
    seed = hmac.new(caller_secret.encode(), label + b"\0" + idempotency_key.encode(), hashlib.sha256)
    return seed.digest() + hmac.new(seed.digest(), b"\1", hashlib.sha256).digest()


def sealed(secret: str, pad: bytes) -> str:
    """`secret` sealed with `pad`, or a sealed one opened (garbage, or an error, for another pad)."""
    if secret.startswith(_SEALED):
        raw = base64.urlsafe_b64decode(secret[len(_SEALED):])
        return bytes(a ^ b for a, b in zip(raw, pad, strict=False)).decode()
    raw = secret.encode()
    if len(raw) > len(pad):
        raise ValueError("a secret longer than its pad")
    return _SEALED + base64.urlsafe_b64encode(bytes(a ^ b for a, b in zip(raw, pad, strict=False))).decode()


def unsealed(kept: str, pad: bytes, idempotency_key: str, prefix: str, what: str) -> str:
    """The secret (starting with `prefix`) kept under `idempotency_key`, read with the caller's pad.
    Another key of that scope (another admin key, or one after a rotation) cannot read it, and is
    refused rather than answered a secret that is not one (or given another)."""
    try:
        secret = sealed(kept, pad)
    except (UnicodeDecodeError, ValueError):
        secret = ""
    if not secret.startswith(prefix):
        raise ConflictError(f"Idempotency-Key {idempotency_key} made {what} whose secret only the API key "
                            "that sent it can read", key=idempotency_key)
    return secret

"""Idempotency, in one place. An answer is kept under (scope, key) with the request's hash, in
the same transaction as the effect, forever; it is an outcome code and a body (JSON values),
never an HTTP status: api/ alone maps codes to statuses. A key seen again with the same hash
replays the answer; with another hash it is a conflict."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from ledger.errors import LedgerError
from pricing.errors import PricingError
from wallets.errors import ConflictError

# The `status` column of an answer kept with a code: it says nothing of HTTP. Rows kept before
# answers had codes hold the HTTP status they were answered with, and a body of {"json": text}.
CODED = 0
# Outcome codes of calls that create something, or find it as it was asked for, and of answers
# composed at the edge (a batch of usage events, of settles): their body is {"json": text}.
CREATED, EXISTS, OK = "created", "exists", "ok"


@dataclass(frozen=True, slots=True)
class IdemKey:
    """An Idempotency-Key of a mutating call (or a request id): its scope, key and request hash."""

    scope: str
    key: str
    request_hash: bytes
    # where the call hashes its body normalized (a usage batch's times as instants): the hash a
    # key kept before it did so was kept with (a copy sent as before, or respelled), matched too;
    # found by the route among the body's spellings before the key's transaction
    earlier: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Replayed:
    """The answer kept for an earlier call with the same key: a code and a body. `status` is set
    only for answers kept before codes were (their HTTP status; their body is {"json": text})."""

    code: str
    body: Any
    status: int | None = None


class Kept(Protocol):
    request_hash: bytes
    status: int
    body: Any


def replayed(kept: Kept) -> Replayed:
    if kept.status == CODED:
        return Replayed(kept.body["code"], kept.body["body"])
    body = kept.body
    code = body.get("code", "") if isinstance(body, dict) else ""
    return Replayed(code or "replayed", body, kept.status)


def check(kept: Kept | None, request_hash: bytes, what: str, **context: Any) -> Replayed | None:
    """The kept answer to replay, None if there is none, or a conflict if the request differs."""
    if kept is None:
        return None
    if kept.request_hash != request_hash:
        raise ConflictError(f"{what} was used with another request", **context)
    return replayed(kept)


def refusal_body(error: Exception) -> dict[str, Any]:
    """What a client is told of a domain refusal: its detail and the context it may see."""
    if isinstance(error, LedgerError):
        return {"detail": error.detail, **error.shown()}  # the nulls it spells included (a budget's window)
    body: dict[str, Any] = {"detail": str(error)}
    if isinstance(getattr(error, "fields", None), list):
        body["fields"] = error.fields  # type: ignore[attr-defined]
    for name in ("model", "token_type"):
        if isinstance(getattr(error, name, None), str):
            body[name] = getattr(error, name)
    return body


def answer(outcome: Any, code: str | None = None) -> tuple[str, Any]:
    """(code, body as JSON values) of a domain refusal, or of a result (its own `code` unless given)."""
    if isinstance(outcome, LedgerError | PricingError):
        return outcome.code, refusal_body(outcome)
    return code or outcome.code, msgspec.to_builtins(outcome)


def http_scope(customers: Iterable[str] | None, *, own: bool = False) -> str:
    """The scope of the Idempotency-Keys an API key sends: the customers it acts for (None: every
    customer, the whole tenant), not the key itself, so that a call sent again after the key was
    rotated (a new key for the same customers) is answered, and a key limited to other customers
    never reads it. A customer's own keys (`own`: customer:<id>) have a scope apart from the
    operator's keys for that customer, so that neither can take or block the other's keys.
    Migration 0038 moved the answers kept per key here by the same rule."""
    base = "http:own" if own else "http"
    if customers is None:
        return f"{base}:*"
    ids = sorted(set(customers))
    if len(ids) == 1:
        return f"{base}:c:{ids[0]}"
    return f"{base}:cs:" + hashlib.sha256(",".join(ids).encode()).hexdigest()  # bounded, whatever the list


def check_key(kept: Kept | None, idem: IdemKey) -> Replayed | None:
    """`check` for an Idempotency-Key (kept with its hash of the body normalized, or earlier)."""
    if kept is not None and kept.request_hash != idem.request_hash and kept.request_hash in idem.earlier:
        return replayed(kept)
    return check(kept, idem.request_hash, f"Idempotency-Key {idem.key}", key=idem.key)


def row(scope: str, key: str, request_hash: bytes, code: str, body: Any) -> dict[str, Any]:
    """The idempotency_keys row that keeps an answer."""
    return {"scope": scope, "key": key, "request_hash": request_hash, "status": CODED,
            "response": {"code": code, "body": body}}

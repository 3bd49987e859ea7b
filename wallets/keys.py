"""API keys: random secrets shown once, stored as sha256 hashes, each with one scope."""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.errors import InvalidEntryError, LedgerError

SCOPE = re.compile(r"^(admin|inference|auditor|customer:[A-Za-z0-9][A-Za-z0-9._:-]{0,127})$")
PREFIX = "tt_"


class KeyNotFoundError(LedgerError):
    code = "not_found"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    scope: str
    customers: tuple[str, ...]
    name: str
    created_at: datetime
    revoked_at: datetime | None = None


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def validate(scope: str) -> None:
    if not SCOPE.match(scope):
        raise InvalidEntryError("invalid API key request", fields=[
            {"field": "scope", "message": "admin, inference, auditor or customer:<id>"}])


async def create(conn: AsyncConnection, scope: str, customers: list[str], name: str) -> tuple[ApiKey, str]:
    """A new key and its secret; the secret is not stored and cannot be shown again."""
    validate(scope)
    key_id = f"key_{secrets.token_hex(8)}"
    secret = PREFIX + secrets.token_urlsafe(32)
    row = (await conn.execute(text(
        """INSERT INTO api_keys (id, secret_hash, scope, customers, name)
           VALUES (:id, :h, :scope, :customers, :name) RETURNING created_at"""),
        {"id": key_id, "h": secret_hash(secret), "scope": scope, "customers": customers, "name": name})).one()
    return ApiKey(key_id, scope, tuple(customers), name, row.created_at), secret


async def find(conn: AsyncConnection, secret: str) -> ApiKey | None:
    """The live key with this secret, or None (unknown or revoked)."""
    if not secret.startswith(PREFIX):
        return None
    row = (await conn.execute(text(
        "SELECT id, scope, customers, name, created_at FROM api_keys "
        "WHERE secret_hash = :h AND revoked_at IS NULL"), {"h": secret_hash(secret)})).first()
    return ApiKey(row.id, row.scope, tuple(row.customers), row.name, row.created_at) if row else None


async def list_keys(conn: AsyncConnection) -> list[ApiKey]:
    rows = await conn.execute(text(
        "SELECT id, scope, customers, name, created_at, revoked_at FROM api_keys ORDER BY created_at, id"))
    return [ApiKey(r.id, r.scope, tuple(r.customers), r.name, r.created_at, r.revoked_at) for r in rows]


async def revoke(conn: AsyncConnection, key_id: str) -> ApiKey:
    row = (await conn.execute(text(
        """UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = :id
           RETURNING id, scope, customers, name, created_at, revoked_at"""), {"id": key_id})).first()
    if row is None:
        raise KeyNotFoundError(f"no API key {key_id}")
    return ApiKey(row.id, row.scope, tuple(row.customers), row.name, row.created_at, row.revoked_at)

"""API keys: random secrets shown once, stored as sha256 hashes, each with one scope."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from api.listening import listen
from api.routes.formats import IDENTIFIER, unstorable_at
from ledger.db import Database
from ledger.errors import InvalidEntryError, LedgerError
from pricing.text import text_problem

log = logging.getLogger(__name__)

SCOPE = re.compile(rf"^(admin|inference|auditor|customer:{IDENTIFIER.strip('^$')})$")
CUSTOMER_ID = re.compile(IDENTIFIER)
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


NAME_MOST = 200  # characters of a key's name (its label)
CUSTOMERS_MOST = 1000  # customers one key may be limited to (POST /v1/api-keys' schema too)


def validate(scope: str, customers: list[str], name: str = "") -> None:
    """A scope and customer list a key can be used with: a customer id that no customer can
    have (customers.id's CHECK) would limit the key to nothing, silently. A name as the API
    takes it (the CLI's `--name` stored any length, and one with a byte not in UTF-8, a lone
    surrogate from argv, ended in the driver's traceback)."""
    fields = [] if SCOPE.match(scope) else [{"field": "scope", "message": "admin, inference, auditor or customer:<id>"}]
    if len(name) > NAME_MOST:
        fields.append({"field": "name", "message": f"at most {NAME_MOST} characters, not {len(name)}"})
    elif (bad := unstorable_at(name)) is not None:
        fields.append({"field": "name", "message": "not text PostgreSQL can hold (a byte not in UTF-8, or U+0000) "
                       f"at position {bad + 1}"})
    elif (problem := text_problem(name)) is not None:  # the rule of every free text: the CLI's --name too
        fields.append({"field": "name", "message": problem})
    if len(customers) > CUSTOMERS_MOST:  # the CLI's --customer, repeated: the route's schema refuses it first
        fields.append({"field": "customers", "message": f"at most {CUSTOMERS_MOST} customers, not {len(customers)}"})
    fields += [{"field": f"customers[{i}]", "message": f"{c!r} is not a customer id (1-100 of A-Z a-z 0-9 . _ -, "
                "starting with a letter or digit)"} for i, c in enumerate(customers)
               if not (isinstance(c, str) and CUSTOMER_ID.match(c))]
    own = scope.removeprefix("customer:") if scope.startswith("customer:") else None
    if own is not None and customers and own not in customers:  # a key every route would refuse
        fields.append({"field": "customers", "message": f"a customer:{own} key sees its own customer only: "
                       f"leave customers out, or list {own!r}"})
    if fields:
        raise InvalidEntryError("invalid API key request", fields=fields)


async def create(conn: AsyncConnection, scope: str, customers: list[str], name: str) -> tuple[ApiKey, str]:
    """A new key and its secret; the secret is not stored and cannot be shown again."""
    validate(scope, customers, name)
    customers = list(dict.fromkeys(customers))  # a set: one given twice is kept once, where first given
    key_id = f"key_{secrets.token_hex(8)}"
    secret = PREFIX + secrets.token_urlsafe(32)
    row = (await conn.execute(text(
        """INSERT INTO api_keys (id, secret_hash, scope, customers, name)
           VALUES (:id, :h, :scope, :customers, :name) RETURNING created_at"""),
        {"id": key_id, "h": secret_hash(secret), "scope": scope, "customers": customers, "name": name})).one()
    return ApiKey(key_id, scope, tuple(customers), name, row.created_at), secret


async def find_live(conn: AsyncConnection, secret: str) -> ApiKey | None:
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


def check_id(key_id: str) -> None:
    """Refuse, by name, an id no stored key can have: one PostgreSQL text cannot hold (U+0000, which
    DELETE /v1/api-keys/{key_id} answers 422; argv's lone surrogate for a byte not in UTF-8 ended
    in the driver's traceback), in the words `validate` refuses a name with."""
    if (bad := unstorable_at(key_id)) is not None:
        raise InvalidEntryError(f"invalid API key id {key_id!r}", fields=[{"field": "id", "message": (
            f"not text PostgreSQL can hold (a byte not in UTF-8, or U+0000) at position {bad + 1}")}])


async def revoke(conn: AsyncConnection, key_id: str) -> ApiKey:
    row = (await conn.execute(text(
        """UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = :id
           RETURNING id, scope, customers, name, created_at, revoked_at"""), {"id": key_id})).first()
    if row is None:
        raise KeyNotFoundError(f"no API key {key_id}")
    return ApiKey(row.id, row.scope, tuple(row.customers), row.name, row.created_at, row.revoked_at)


CHANNEL = "tokentill_api_keys"  # migration 0006: every change to api_keys is announced here
LISTENER_NAME = "tokentill key listener"  # its application_name in pg_stat_activity


class KeyCache:
    """The keys this process has verified, served only while it provably listens for changes.

    A trigger announces every change to api_keys on CHANNEL at commit, and the listener then
    forgets every cached key, so a revocation reaches every process within the time a
    notification takes (milliseconds); `forget()` makes the revoking process refuse at once.
    The listener proves its connection every `check_s` (SELECT 1 under a deadline); the cache is
    served only while the last proof is younger than `stale_s`, so a connection that died
    without a word stops the cache within `stale_s`, however long the driver takes to notice.
    While the listener is down nothing is cached and every request looks its key up. A lookup
    that overlapped a notification is not cached (it may have read the key before the change).
    """

    def __init__(self, db: Database, url: str, *, max_keys: int = 10_000, retry_s: float = 1.0,
                 check_s: float = 0.5, stale_s: float = 1.5) -> None:
        self.db, self.url = db, url
        self.max_keys, self.retry_s, self.check_s, self.stale_s = max_keys, retry_s, check_s, stale_s
        self._live: dict[bytes, ApiKey] = {}
        self._generation = 0
        self.listening = False
        self._proved_at = 0.0  # time.monotonic() of the listener's last proof of life
        self._task: asyncio.Task[None] | None = None

    @property
    def serving(self) -> bool:
        return self.listening and time.monotonic() - self._proved_at < self.stale_s

    async def find(self, secret: str) -> ApiKey | None:
        """The live key with this secret, or None (unknown or revoked)."""
        if not secret.startswith(PREFIX):
            return None
        digest = secret_hash(secret)
        if self.serving and digest in self._live:
            return self._live[digest]
        generation = self._generation
        key = await self.db.lookup(lambda conn: find_live(conn, secret))
        if key is not None and self.serving and generation == self._generation:
            if len(self._live) >= self.max_keys:
                self._live.clear()
            self._live[digest] = key
        return key

    def forget(self) -> None:
        self._generation += 1
        self._live.clear()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _listen(self) -> None:
        await listen(self.url, CHANNEL, LISTENER_NAME, self.retry_s, log, up=self._up, serve=self._prove,
                     gone=self._gone, back="the key-change listener listens again; caching API keys",
                     down=lambda why: f"not caching API keys: the key-change listener is down ({why}); "
                                      f"retrying every {self.retry_s:g} s")

    def _up(self) -> None:
        self.forget()  # anything cached before now may have missed a notification
        self._proved_at = time.monotonic()
        self.listening = True

    async def _prove(self, conn: psycopg.AsyncConnection) -> None:
        """Forget every key at each notification; prove the connection every `check_s`."""
        while True:
            async for _ in conn.notifies(timeout=self.check_s):
                self.forget()
            async with asyncio.timeout(self.check_s):  # not wait_for: it can drop a cancellation
                await conn.execute("SELECT 1")
            self._proved_at = time.monotonic()

    def _gone(self) -> None:
        self.listening = False
        self.forget()

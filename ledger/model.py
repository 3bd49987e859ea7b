"""Immutable values of the ledger: postings, journal entries and account specs.

Amounts are signed integers of an asset's atomic unit (debit > 0, credit < 0). Nothing here
touches a float or a database; the rules are plain functions over plain values.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import msgspec
from msgspec.structs import force_setattr

from ledger.errors import InvalidEntryError, UnbalancedEntryError

MAX_POSTING = 2**63 - 1  # a posting is a PostgreSQL bigint; sums are numeric(38, 0)


class AccountType(StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    INCOME = "income"
    EXPENSE = "expense"

    @property
    def normal_sign(self) -> int:
        """+1 for debit-normal accounts, -1 for credit-normal ones."""
        return 1 if self in (AccountType.ASSET, AccountType.EXPENSE) else -1


@dataclass(frozen=True, slots=True)
class AccountSpec:
    code: str  # "liability:customer:acme:lot:7f3c"
    type: AccountType
    asset: str
    customer_id: str | None = None
    lower_bound: int | None = None  # on the normal balance; None: unbounded
    stripes: int = 1  # >1 spreads a hot unbounded account's cached balance over rows

    def __post_init__(self) -> None:
        if self.lower_bound is not None and self.stripes != 1:
            raise InvalidEntryError("a bounded account cannot be striped", account=self.code)
        if not 1 <= self.stripes <= 256:
            raise InvalidEntryError("stripes must be 1..256", account=self.code)


class Posting(msgspec.Struct, frozen=True, gc=False):
    """One leg of an entry (an immutable msgspec Struct: a usage event's entry builds two or
    three, and a frozen dataclass set each field in Python)."""

    account: str
    amount: int
    asset: str

    def __post_init__(self) -> None:
        if type(self.amount) is not int:
            raise InvalidEntryError("posting amounts are integers of atomic units", account=self.account)
        if self.amount == 0 or abs(self.amount) > MAX_POSTING:
            raise InvalidEntryError("posting amount must be non-zero and fit in 63 bits",
                                    account=self.account)


def residual_by_asset(postings: Iterable[Posting]) -> dict[str, int]:
    """The non-zero sums of postings per asset: empty for a balanced entry."""
    sums: dict[str, int] = defaultdict(int)
    for p in postings:
        sums[p.asset] += p.amount
    return {asset: total for asset, total in sums.items() if total}


class JournalEntry(msgspec.Struct, frozen=True, gc=False):
    """An immutable msgspec Struct, checked when built (its postings, its balance per asset)."""

    key: str  # idempotency key, unique forever
    kind: str
    postings: tuple[Posting, ...]
    customer_id: str | None = None
    occurred_at: datetime = msgspec.field(default_factory=lambda: datetime.now(UTC))
    metadata: Mapping[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.key or len(self.key) > 300:
            raise InvalidEntryError("an entry needs a key of 1 to 300 characters")
        if len(self.postings) < 2:
            raise InvalidEntryError("an entry needs at least two postings", key=self.key)
        if self.occurred_at.tzinfo is None:
            raise InvalidEntryError("occurred_at must be timezone-aware", key=self.key)
        residual = residual_by_asset(self.postings)
        if residual:
            raise UnbalancedEntryError(f"entry {self.key} does not balance: {residual}",
                                       key=self.key, residual=residual)

    def canonical(self) -> dict[str, Any]:
        """What the entry says, in a stable form: the basis of its request hash."""
        return {
            "key": self.key,
            "kind": self.kind,
            "customer_id": self.customer_id,
            "occurred_at": iso_time(self.occurred_at.astimezone(UTC)),
            "metadata": self.metadata,
            "postings": [[p.account, p.amount, p.asset] for p in self.postings],
        }

    def request_hash(self) -> bytes:
        return request_hash(self.canonical())

    def with_metadata(self, metadata: Mapping[str, Any]) -> JournalEntry:
        """The entry with other metadata: `msgspec.structs.replace` without checking the
        postings again (they are this entry's, checked when it was made)."""
        entry = self.__copy__()  # copy.copy's dispatch costs twice the copy
        force_setattr(entry, "metadata", metadata)
        return entry


def iso_time(at: datetime) -> str:
    """`at.isoformat()`, kept for the last datetime asked: a batch's entries share their time
    (one datetime object, and a datetime is immutable)."""
    global _last_iso
    if _last_iso[0] is not at:
        _last_iso = (at, at.isoformat())
    return _last_iso[1]


_last_iso: tuple[datetime, str] = (datetime.min.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC).isoformat())


# json.dumps with these arguments, made once: dumps builds a new encoder on every call.
CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_hash(value: Any) -> bytes:
    """sha256 of canonical JSON (sorted keys, no spaces, UTF-8): equal requests, equal hashes.
    Hashes are stored (events, entries, reservations) and compared with a replay's, so the text
    never changes: it is `json.dumps(value, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`. msgspec writes the very same bytes, ~10 x faster, for str-keyed
    objects, arrays, strings, integers, booleans and null; anything else (a float, whose exponent
    it writes as 1e16 where json writes 1e+16, or a type json would refuse) takes json."""
    if _plain(value):
        return hashlib.sha256(_sorted_json(value)).digest()
    return hashlib.sha256(CANONICAL_JSON.encode(value).encode()).digest()


_sorted_json = msgspec.json.Encoder(order="sorted").encode
_LEAVES = frozenset((str, int, bool, type(None)))


def _plain(value: Any) -> bool:
    """Whether msgspec's sorted JSON of `value` is byte for byte json.dumps's (see request_hash)."""
    kind = type(value)
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str or (type(v) not in _LEAVES and not _plain(v)):
                return False
        return True
    if kind is list or kind is tuple:
        for v in value:
            if type(v) not in _LEAVES and not _plain(v):
                return False
        return True
    return kind in _LEAVES

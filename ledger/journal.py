"""Reading the journal: entries with their postings and seal status, a page at a time, in time
order (occurred_at, then id: a stable order, since entries never change).

Pages are read against a *snapshot watermark*: the first page records the reading transaction's
`pg_current_snapshot()`, and every later page keeps only entries whose inserting transaction is
visible in that snapshot (`pg_visible_in_snapshot(txid, snapshot)`). Entry ids and times are
fixed before commit, so an entry with an earlier id or time than the first page's newest can
still commit later; the snapshot keeps it out, and together the pages are exactly the entries
committed before the first page was read, whatever the order of their commits. This holds
because an entry's `txid` is always its own transaction's (a database trigger sees to it) and
entries are never updated or deleted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.chain import HASH_VERSION
from ledger.seal import entry_hash

MAX_IN_PROGRESS = 10_000  # transaction ids a snapshot may list as in progress (max_connections bounds it)
_SNAPSHOT = re.compile(r"^([0-9]{1,20}):([0-9]{1,20}):((?:[0-9]{1,20})(?:,[0-9]{1,20})*)?$")


@dataclass(frozen=True, slots=True)
class JournalFilter:
    """What to list; every field narrows. `visible` is the set of customers the reader may see
    (None: all, entries without a customer included)."""

    start: datetime | None = None  # occurred_at >= start
    end: datetime | None = None  # occurred_at < end
    customer: str | None = None
    account_id: int | None = None
    account_customer: str | None = None  # the account's customer: its entries live in that lane
    kind: str | None = None
    request_id: str | None = None  # reservations' request id, or a usage event's id
    visible: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class PostingLine:
    id: int
    account: str
    asset: str
    stripe: int
    amount: int  # signed atomic units: debit > 0, credit < 0


@dataclass(frozen=True, slots=True)
class SealStatus:
    status: str  # sealed | pending | altered | unlisted
    seal_id: int | None = None
    hash: bytes | None = None  # the entry's hash as the seal stored it
    sealed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EntryRecord:
    id: int
    key: str
    request_hash: bytes
    kind: str
    customer_id: str | None
    occurred_at: datetime
    recorded_at: datetime
    txid: int
    metadata: dict[str, Any]
    postings: tuple[PostingLine, ...]
    seal: SealStatus


def parse_snapshot(value: str) -> tuple[int, int, tuple[int, ...]] | None:
    """(xmin, xmax, in-progress ids) of a pg_snapshot's text form, or None if it is not one."""
    match = _SNAPSHOT.fullmatch(value)
    if match is None:
        return None
    xmin, xmax = int(match[1]), int(match[2])
    xip = tuple(int(x) for x in match[3].split(",")) if match[3] else ()
    if not 0 < xmin <= xmax < 2**63 or len(xip) > MAX_IN_PROGRESS or any(not xmin <= x < xmax for x in xip):
        return None
    return xmin, xmax, xip


async def current_snapshot(conn: AsyncConnection) -> str:
    """The reading transaction's snapshot (at REPEATABLE READ, the one all its statements see)."""
    return (await conn.execute(text("SELECT pg_current_snapshot()::text"))).scalar_one()


async def snapshot_is_past(conn: AsyncConnection, snapshot: str) -> bool:
    """Whether `snapshot` is well formed and no newer than this transaction's own."""
    parsed = parse_snapshot(snapshot)
    if parsed is None:
        return False
    now_xmax = int((await conn.execute(text(
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text"))).scalar_one())
    return parsed[1] <= now_xmax


Position = tuple[datetime, int]  # (occurred_at, id) of the last entry read: the listing's order


def _where(f: JournalFilter, after: Position | None, params: dict[str, Any]) -> str:
    """The WHERE clause of `f`, naming only the filters given (so each plan fits its query)."""
    clauses = ["pg_visible_in_snapshot(j.txid, CAST(:snapshot AS pg_snapshot))"]
    if after is not None:
        clauses.append("(j.occurred_at, j.id) > (:after_at, :after_id)")
        params.update(after_at=after[0], after_id=after[1])
    if f.start is not None:
        clauses.append("j.occurred_at >= :start")
        params["start"] = f.start
    if f.end is not None:
        clauses.append("j.occurred_at < :end")
        params["end"] = f.end
    if f.customer is not None:
        clauses.append("j.customer_id = :customer AND j.lane = ledger_entry_lane(:customer)")
        params["customer"] = f.customer
    if f.visible is not None:
        clauses.append("j.customer_id = ANY(CAST(:visible AS text[]))")
        params["visible"] = list(f.visible)
    if f.kind is not None:
        clauses.append("j.kind = :kind")
        params["kind"] = f.kind
    if f.request_id is not None:
        clauses.append("(j.metadata ->> 'request_id' = :request_id"
                       " OR (j.kind = 'usage' AND j.metadata ->> 'event_id' = :request_id))")
        params["request_id"] = f.request_id
    if f.account_id is not None:
        clauses.append("(j.lane, j.id) IN (SELECT p.lane, p.entry_id FROM postings p"
                       " WHERE p.account_id = :account_id)")
        params["account_id"] = f.account_id
        if f.account_customer is not None:
            clauses.append("j.lane = ledger_entry_lane(:account_customer)")
            params["account_customer"] = f.account_customer
    return " AND ".join(clauses)


_POSTINGS = """
SELECT p.entry_id, p.id, a.code, a.asset, p.stripe, p.amount
  FROM postings p JOIN accounts a ON a.id = p.account_id
 WHERE (p.lane, p.entry_id) IN (SELECT * FROM unnest(CAST(:lanes AS smallint[]), CAST(:ids AS bigint[])))
 ORDER BY p.entry_id, p.id
"""

# The seal covering each of the page's txids (the last seal starting at or below it, if it ends
# above it: one index probe each), and what those seals stored for the page's entries.
_SEALS = """
WITH covering AS (
    SELECT DISTINCT s.id
      FROM unnest(CAST(:txids AS text[])) AS t(txid)
      CROSS JOIN LATERAL (SELECT id, to_txid FROM seals WHERE from_txid <= CAST(t.txid AS xid8)
                           ORDER BY from_txid DESC LIMIT 1) AS s
     WHERE s.to_txid > CAST(t.txid AS xid8))
SELECT s.id, s.from_txid::text AS lo, s.to_txid::text AS hi, s.sealed_at, s.hash_version, u.entry_id, u.hash
  FROM seals s JOIN covering c ON c.id = s.id
  LEFT JOIN LATERAL unnest(s.entry_ids, s.entry_hashes) AS u(entry_id, hash)
    ON u.entry_id = ANY(CAST(:ids AS bigint[]))
"""


async def journal_page(conn: AsyncConnection, f: JournalFilter, snapshot: str, after: Position | None,
                       limit: int) -> list[EntryRecord]:
    """Up to `limit` entries after `after`, in (occurred_at, id) order, as of `snapshot`."""
    params: dict[str, Any] = {"snapshot": snapshot, "limit": limit}
    rows = (await conn.execute(text(
        f"""SELECT j.lane, j.id, j.key, j.request_hash, j.kind, j.customer_id, j.metadata,
                   j.txid::text AS txid, j.occurred_at, j.recorded_at
              FROM journal_entries j WHERE {_where(f, after, params)}
             ORDER BY j.occurred_at, j.id LIMIT :limit"""),
        params)).all()
    if not rows:
        return []
    ids = [r.id for r in rows]
    legs: dict[int, list[PostingLine]] = {i: [] for i in ids}
    for p in await conn.execute(text(_POSTINGS), {"lanes": [r.lane for r in rows], "ids": ids}):
        legs[p.entry_id].append(PostingLine(p.id, p.code, p.asset, p.stripe, p.amount))
    seals = (await conn.execute(text(_SEALS), {"ids": ids, "txids": sorted({r.txid for r in rows})})).all()
    return [_record(r, tuple(legs[r.id]), seals) for r in rows]


def _record(row: Any, postings: tuple[PostingLine, ...], seals: list[Any]) -> EntryRecord:
    txid = int(row.txid)
    return EntryRecord(row.id, row.key, bytes(row.request_hash), row.kind, row.customer_id, row.occurred_at,
                       row.recorded_at, txid, row.metadata, postings,
                       _seal_status(row, txid, postings, seals))


def recomputed_hash(row: Any, postings: tuple[PostingLine, ...], version: int = HASH_VERSION) -> bytes:
    """The entry's hash as the sealer computes it (ledger.seal.entry_hash), from what was read, with
    the hash version of the seal it is compared with."""
    shaped = SimpleNamespace(
        id=row.id, key=row.key, request_hash=bytes(row.request_hash), kind=row.kind,
        customer_id=row.customer_id, metadata=row.metadata, txid=row.txid,
        occurred_at=row.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"),
        recorded_at=row.recorded_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        postings=[[p.id, p.account, p.stripe, p.amount, p.asset] for p in postings])
    return entry_hash(shaped, version)


def _seal_status(row: Any, txid: int, postings: tuple[PostingLine, ...], seals: list[Any]) -> SealStatus:
    covering = [s for s in seals if int(s.lo) <= txid < int(s.hi)]
    if not covering:
        return SealStatus("pending")
    listed = next((s for s in covering if s.entry_id == row.id), None)
    if listed is None:
        return SealStatus("unlisted", covering[0].id, None, covering[0].sealed_at)
    stored = bytes(listed.hash)
    status = "sealed" if recomputed_hash(row, postings, listed.hash_version) == stored else "altered"
    return SealStatus(status, listed.id, stored, listed.sealed_at)


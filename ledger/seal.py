"""Tamper evidence without a write hotspot: a job seals batches of committed entries.

Seal k covers every entry whose inserting transaction id lies in [from_txid, to_txid), where
to_txid is the xmin of the sealer's snapshot: no transaction below it can still commit, so a
sealed range is complete and never grows. Each entry gets a sha256 over its header and postings;
a seal stores those hashes and chains them: chain_hash = sha256(prev_hash || entry hashes), and
from version 4 || sealed_at. A seal records the version of its hashes (`ledger.chain`: 4 chains
sealed_at, 3 and 4 cover each posting's asset and recorded_at, 2 recorded_at only, 1 neither),
and is verified with that version.

A seal is dated when it is written (clock_timestamp(), not the sealer's transaction start, which
precedes what its snapshot sees): after every entry it seals was recorded and after the seal
before it, which the database checks (0081) and verification checks again. A clock stepped back
below either dates the seal at the latest of them instead (0083 allows that much ahead of it).
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.chain import DATED_AHEAD, GENESIS, HASH_VERSION, HASH_VERSIONS, SEALED_AT_FROM, entry_digest, seal_chain

SEAL_LOCK = 7_402_211_902
MAX_TXIDS_PER_SEAL = 5000
# A seal stops before the transaction that would take it past this many entries (one bigger than
# that is sealed alone): its entries are read and hashed in one transaction, on the event loop of
# the process that runs the job, ~45 us and ~2.2 kB each (200,000 took 9.0 s and 440 MB). Bounded
# by transactions only, a backlog of bulk writes (256 entries a transaction) made seals of ~1.3 M
# entries: ~60 s, the idle-in-transaction timeout, and ~2.8 GB.
MAX_ENTRIES_PER_SEAL = 50_000

# What an entry's hash covers, as SQL over `journal_entries j` (the offline export writes the same).
SEALED_TXID = "j.txid::text"
SEALED_OCCURRED_AT = """to_char(j.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')"""
SEALED_RECORDED_AT = """to_char(j.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""  # version 2
# A seal's sealed_at, as its chain hash covers it (version 4) and the export writes it.
SEALED_AT = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""

_ENTRIES = text(f"""
SELECT j.lane, j.id, j.key, j.request_hash, j.kind, j.customer_id, j.metadata, {SEALED_TXID} AS txid,
       {SEALED_OCCURRED_AT} AS occurred_at, {SEALED_RECORDED_AT} AS recorded_at,
       coalesce((SELECT jsonb_agg(jsonb_build_array(p.id, a.code, p.stripe, p.amount, a.asset) ORDER BY p.id)
                   FROM postings p JOIN accounts a ON a.id = p.account_id
                  WHERE p.lane = j.lane AND p.entry_id = j.id), '[]'::jsonb) AS postings
  FROM journal_entries j
 WHERE j.txid >= CAST(:lo AS xid8) AND j.txid < CAST(:hi AS xid8)
 ORDER BY j.id, j.lane
""")


@dataclass(frozen=True, slots=True)
class Seal:
    id: int
    from_txid: int
    to_txid: int
    entries: int


def entry_hash(row, version: int = HASH_VERSION) -> bytes:
    return entry_digest(row.id, row.key, row.request_hash.hex(), row.kind, row.customer_id, row.metadata,
                        row.txid, row.occurred_at, row.postings, recorded_at=row.recorded_at, version=version)


# Entries read and hashed at a time. The seal job runs in a serving process: read and hashed in
# one go, a seal of 50,000 entries held its event loop 1.06 s (every request there waited);
# through a server-side cursor, a page at a time, the loop runs between pages.
HASH_PAGE = 1000


async def hashes_between(conn: AsyncConnection, lo: int, hi: int, version: int = HASH_VERSION) -> dict[int, bytes]:
    return {i: h for i, by_lane in (await _hashed(conn, lo, hi, version))[0].items() for h in by_lane.values()}


async def _hashed(conn: AsyncConnection, lo: int, hi: int,
                  version: int) -> tuple[dict[int, dict[int, bytes]], str | None]:
    """The entries' hashes by id, then lane (one lane an id, unless a superuser gave an entry's id
    to another: the checks name them), and the latest of their recorded_at (one fixed-width UTC
    text: the greatest text is the latest time)."""
    hashes: dict[int, dict[int, bytes]] = {}
    latest = None
    result = await conn.stream(_ENTRIES, {"lo": str(lo), "hi": str(hi)})
    async for page in result.partitions(HASH_PAGE):
        for row in page:
            hashes.setdefault(row.id, {})[row.lane] = entry_hash(row, version)
            if latest is None or row.recorded_at > latest:
                latest = row.recorded_at
    return hashes, latest


async def horizon(conn: AsyncConnection) -> int:
    """The txid below which every transaction has ended now: what a seal taken now may cover."""
    return int((await conn.execute(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))).scalar_one())


async def seal_once(conn: AsyncConnection, until: int | None = None) -> Seal | None:
    """Seal what has committed since the last seal (below `until`, a `horizon`, when given). One
    sealer at a time; others return None."""
    if not (await conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SEAL_LOCK})).scalar():
        return None
    last = (await conn.execute(text(
        "SELECT to_txid::text, chain_hash, sealed_at FROM seals ORDER BY id DESC LIMIT 1"))).first()
    lo, prev, prev_at = (int(last[0]), bytes(last[1]), last[2]) if last else (0, GENESIS, None)
    hi = await horizon(conn)
    if until is not None:
        hi = min(hi, until)
    cap = (await conn.execute(text(
        """SELECT txid::text FROM (SELECT DISTINCT txid FROM journal_entries
            WHERE txid >= CAST(:lo AS xid8) AND txid < CAST(:hi AS xid8) ORDER BY txid
            OFFSET :n LIMIT 1) t"""), {"lo": str(lo), "hi": str(hi), "n": MAX_TXIDS_PER_SEAL})).scalar()
    hi = int(cap) if cap is not None else hi
    hi = await _entries_cap(conn, lo, hi)
    if hi <= lo:
        return None
    by_id, latest = await _hashed(conn, lo, hi, HASH_VERSION)
    if not by_id:
        return None
    ids = sorted(by_id)
    ordered = [next(iter(by_id[i].values())) for i in ids]
    at = (await conn.execute(_DATE, {"before": prev_at, "latest": latest})).scalar_one()
    seal_id = (await conn.execute(text(
        """INSERT INTO seals (from_txid, to_txid, entry_ids, entry_hashes, prev_hash, chain_hash, hash_version,
                              sealed_at)
           VALUES (CAST(:lo AS xid8), CAST(:hi AS xid8), :ids, :hashes, :prev, :chain, :version,
                   CAST(:at AS timestamptz)) RETURNING id"""),
        {"lo": str(lo), "hi": str(hi), "ids": ids, "hashes": ordered, "prev": prev, "at": at,
         "chain": seal_chain(prev, ordered, HASH_VERSION, at), "version": HASH_VERSION})).scalar_one()
    return Seal(seal_id, lo, hi, len(ids))


# A seal's date: now, or later when the clock stepped back (NTP) below the seal before it or below
# an entry it seals (recorded before the step): dated by the clock alone, it was refused
# (seals_sealed_at) and nothing was sealed until the clock caught up. GREATEST skips a NULL. More
# than DATED_AHEAD past the clock, no step back goes so far: a seal (or an entry) dated so was
# planted, and the seal is still taken (refused, nothing would be sealed until the clock reached
# that date) but not in silence (dated_ahead, SealsDatedAhead).
_DATE = text(f"""SELECT {SEALED_AT.format(
    "GREATEST(clock_timestamp(), CAST(:before AS timestamptz), CAST(:latest AS timestamptz))")}""")
# The last seal's date, when it is more than DATED_AHEAD past the database's clock.
_AHEAD = text(f"""SELECT {SEALED_AT.format('sealed_at')} FROM (SELECT sealed_at FROM seals ORDER BY id DESC LIMIT 1) s
                   WHERE sealed_at > clock_timestamp() + CAST(:ahead AS interval)""")


async def dated_ahead(conn: AsyncConnection) -> str | None:
    """The last seal's date when it is more than DATED_AHEAD past the database's clock: every seal
    after it is dated so (the sealer dates a seal no earlier than the one before it) until the clock
    is within DATED_AHEAD of it, whatever a run seals."""
    return (await conn.execute(_AHEAD, {"ahead": DATED_AHEAD})).scalar()


class SealsDatedAhead(Exception):
    """Seals were taken, dated more than DATED_AHEAD past the database's clock, as the seal before
    them (or an entry they seal) is: the sealing job's run is an error, so its last success stops."""

    def __init__(self, at: str) -> None:
        super().__init__(f"seals are dated {at}, more than a day past the database's clock, as the seal before "
                         "them or an entry they seal is (`tokentill audit verify` names it); they were taken")


_ENTRY_PAST = text("""SELECT j.txid::text FROM journal_entries j
                        WHERE j.txid >= CAST(:lo AS xid8) AND j.txid < CAST(:hi AS xid8)
                        ORDER BY j.txid OFFSET :n LIMIT 1""")  # j.txid: by the xid8 (plain `txid` is the text column)
_FIRST_TXID = text("""SELECT min(txid)::text FROM journal_entries
                       WHERE txid >= CAST(:lo AS xid8) AND txid < CAST(:hi AS xid8)""")


async def _entries_cap(conn: AsyncConnection, lo: int, hi: int) -> int:
    """`hi`, or lower: the first transaction in [lo, hi) that would take a seal past
    MAX_ENTRIES_PER_SEAL entries (the next one when that is the first: sealed alone). Reads the
    txid index in order, up to MAX_ENTRIES_PER_SEAL + 1 entries."""
    bounds = {"lo": str(lo), "hi": str(hi)}
    over = (await conn.execute(_ENTRY_PAST, {**bounds, "n": MAX_ENTRIES_PER_SEAL})).scalar()
    if over is None:
        return hi
    if over != (await conn.execute(_FIRST_TXID, bounds)).scalar():
        return int(over)
    after = (await conn.execute(_FIRST_TXID, {"lo": str(int(over) + 1), "hi": str(hi)})).scalar()
    return hi if after is None else int(after)


async def seal_problems(conn: AsyncConnection) -> list[str]:
    """Every way the sealed history differs from the journal as it is now, naming entries."""
    problems: list[str] = []
    prev, expected_lo, before = GENESIS, 0, None
    rows = await conn.execute(text(
        f"""SELECT id, from_txid::text AS lo, to_txid::text AS hi, entry_ids, entry_hashes,
                   prev_hash, chain_hash, hash_version, {SEALED_AT.format('sealed_at')} AS at
              FROM seals ORDER BY id"""))
    seals = rows.all()
    clock = (await conn.execute(_CLOCK, {"ahead": DATED_AHEAD})).one()  # read after the seals: each was written before
    for s in seals:
        if int(s.lo) != expected_lo or bytes(s.prev_hash) != prev:
            problems.append(f"seal {s.id} does not follow the seal before it")
        sealed = dict(zip(s.entry_ids, (bytes(h) for h in s.entry_hashes), strict=True))
        if s.hash_version not in HASH_VERSIONS:
            problems.append(f"seal {s.id} has hash version {s.hash_version}, which this tokentill does not know")
            prev, expected_lo, before = bytes(s.chain_hash), int(s.hi), s
            continue
        dated = s.hash_version >= SEALED_AT_FROM
        if seal_chain(bytes(s.prev_hash), list(sealed.values()), s.hash_version, s.at) != bytes(s.chain_hash):
            problems.append(f"seal {s.id} chain hash does not match its entry hashes"
                            + (" and sealed_at" if dated else ""))
        if dated:
            problems += await _misdated(conn, s, before, clock)
        now = (await _hashed(conn, int(s.lo), int(s.hi), s.hash_version))[0]
        for entry_id in sorted(sealed.keys() | now.keys()):
            if entry_id not in now:
                problems.append(f"entry {entry_id} sealed by seal {s.id} is missing")
            elif entry_id not in sealed:
                problems.append(f"entry {entry_id} appeared inside sealed range of seal {s.id}")
            else:
                problems += _sealed_one(s.id, entry_id, sealed[entry_id], now[entry_id])
        prev, expected_lo, before = bytes(s.chain_hash), int(s.hi), s
    return problems


def _sealed_one(seal_id: int, entry_id: int, sealed: bytes, by_lane: dict[int, bytes]) -> list[str]:
    """How the entries of id `entry_id` in a seal's range (by lane: one, unless a superuser gave its
    id to another entry) differ from the one the seal sealed: the one of its hash is the sealed
    entry, any other appeared beside it; when none has it, the entry was altered."""
    kept = next((lane for lane, h in by_lane.items() if h == sealed), None)
    if kept is None:
        return [f"entry {entry_id} was altered after seal {seal_id}"]
    return [f"entry {entry_id} of lane {lane} appeared inside sealed range of seal {seal_id}, beside the entry "
            f"{entry_id} of lane {kept} it sealed" for lane in by_lane if lane != kept]


# OFFSET 0: the seal's range read by the txid index, never the journal in id order (see 0083).
_RECORDED_AFTER = text(f"""SELECT j.id, {SEALED_RECORDED_AT} FROM (
                              SELECT * FROM journal_entries
                               WHERE txid >= CAST(:lo AS xid8) AND txid < CAST(:hi AS xid8)
                                 AND recorded_at > CAST(:at AS timestamptz) OFFSET 0) j
                            ORDER BY j.id LIMIT 1""")


# The database's clock, and DATED_AHEAD past it, as a seal's date is written.
_CLOCK = text(f"""SELECT {SEALED_AT.format('clock_timestamp()')} AS now,
                         {SEALED_AT.format('(clock_timestamp() + CAST(:ahead AS interval))')} AS ahead""")
# The entry of a seal's range recorded last (by the txid index, as _RECORDED_AFTER).
_LATEST = text(f"""SELECT j.id, {SEALED_RECORDED_AT} FROM (
                      SELECT * FROM journal_entries
                       WHERE txid >= CAST(:lo AS xid8) AND txid < CAST(:hi AS xid8) OFFSET 0) j
                    ORDER BY j.recorded_at DESC, j.id LIMIT 1""")


async def _misdated(conn: AsyncConnection, s, before, clock) -> list[str]:
    """How a seal of version 4 or later is dated wrong: before the seal before it, before the
    first of its entries recorded after it (the sealer dates a seal after both), or more than
    DATED_AHEAD past the database's clock (`clock`: now, and that much past it) by a date of its
    own. The sealer dates a seal GREATEST(its clock, the seal before it, its entries): a seal
    planted a year ahead dates every seal after it so, with the chain and the order intact; only
    the first, whose date neither the seal before it nor its entries explain, is named (or the
    entry recorded so far ahead, whose date it took)."""
    problems = []
    # a date that explains this one: the seal before it's, when a hash covers it (version 4 on)
    chained = before is not None and before.hash_version >= SEALED_AT_FROM
    if before is not None and s.at < before.at:  # one fixed-width UTC text: compared as text
        problems.append(f"seal {s.id} is dated {s.at}, before seal {before.id} ({before.at})")
    late = (await conn.execute(_RECORDED_AFTER, {"lo": s.lo, "hi": s.hi, "at": s.at})).first()
    if late is not None:
        problems.append(f"seal {s.id} is dated {s.at}, before entry {late[0]} was recorded ({late[1]})")
    if s.at > clock.ahead and not (chained and s.at <= before.at):
        last = (await conn.execute(_LATEST, {"lo": s.lo, "hi": s.hi})).first()
        if last is not None and last[1] == s.at:
            problems.append(f"entry {last[0]} was recorded at {s.at}, more than a day past the database's clock "
                            f"({clock.now}): seal {s.id} is dated by it, and the seals after it no earlier")
        elif before is not None and s.at <= before.at:  # an older seal's date, which no hash covers
            problems.append(f"seal {s.id} is dated {s.at}, more than a day past the database's clock ({clock.now}), "
                            f"as seal {before.id} before it is, whose date (hash version {before.hash_version}) no "
                            "hash covers: no clock dated it so, and the seals after it are dated no earlier")
        else:
            problems.append(f"seal {s.id} is dated {s.at}, more than a day past the database's clock ({clock.now}), "
                            "and past the seal before it and its entries: no clock dated it so, and the seals "
                            "after it are dated no earlier")
    return problems

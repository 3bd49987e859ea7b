"""Streaming exports of the journal: Beancount, CSV (one posting a row), and JSON lines that carry
the seal chain for the offline verifier (`ledger.offline`).

The whole file is read in one REPEATABLE READ, READ ONLY transaction (one snapshot, and no
writer is ever aborted by it), through server-side cursors, so memory stays flat whatever the
size of the ledger. Amounts are written in the asset's display unit, exact, with at least the
decimals the caller's table gives the asset (ISO 4217 minor units: `1.50 USD` for 1,500,000,000
atomic units at scale 9, `1000 JPY`, `1.500 KWD`), as the trial balance shows them.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

import psycopg

from ledger.seal import SEALED_AT, SEALED_OCCURRED_AT, SEALED_RECORDED_AT, SEALED_TXID

FORMATS = ("beancount", "csv", "jsonl")
ROOTS = {"asset": "Assets", "liability": "Liabilities", "equity": "Equity", "income": "Income",
         "expense": "Expenses"}
FETCH = 5000  # rows per round trip of a server-side cursor
JSONL_VERSION = 3  # 2: seals carry hash_version, entries recorded_at; 3: re-rates' payer rows
APPLICATION = "tokentill-export"  # the export's session in pg_stat_activity

Progress = Callable[[int, int], None]  # (entries written, entries in the export)


@dataclass(frozen=True, slots=True)
class Window:
    """Entries whose `occurred_at` lies in [start, end); None is unbounded."""
    start: datetime | None = None
    end: datetime | None = None

    @property
    def whole(self) -> bool:
        return self.start is None and self.end is None

    def params(self) -> dict:
        return {"from": self.start, "to": self.end}


WINDOW_SQL = ("(CAST(%(from)s AS timestamptz) IS NULL OR j.occurred_at >= %(from)s) "
              "AND (CAST(%(to)s AS timestamptz) IS NULL OR j.occurred_at < %(to)s)")


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    code: str
    type: str
    asset: str
    scale: int
    customer_id: str | None
    name: str  # its Beancount name


@dataclass(frozen=True, slots=True)
class Summary:
    entries: int | None  # None: not counted (CSV counts postings)
    postings: int | None = None
    seals: int = 0
    unsealed: int = 0


SUFFIX = "--"  # then 8 hex digits of the code's sha256: only a lossy code's name carries it
_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _component(part: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9-]", "-", part) or "X"
    if cleaned[0].islower():
        return cleaned[0].upper() + cleaned[1:]
    return cleaned if cleaned[0].isalnum() else "X" + cleaned


def _uncomponent(component: str) -> str:
    """The part `_component` gives `component` back for, if any: a leading capital is a lower-case
    letter upper-cased, unless a capital follows it (`USD`); a leading digit stays."""
    if component[0] in _UPPER and not (len(component) > 1 and component[1] in _UPPER):
        return component[0].lower() + component[1:]
    return component


def beancount_name(code: str, type_: str) -> str:
    """An account's Beancount name, from its code and type alone: the root by type (Assets,
    Liabilities, Equity, Income, Expenses), then each part of the code (a leading part equal to
    the type dropped) with its first letter upper-cased and any character Beancount forbids
    replaced by "-". That name is kept when it is exact: reading it back (the type word in front
    again, a leading capital lower-cased unless a capital follows it) gives the code, and it has
    no "--". Otherwise (`a_b`, `Acme`, `a--b`: something was lost) it always gets "--" and 8 hex
    digits of the code's sha256, whatever other accounts exist. Two exact names differ (each
    reads back to its code), a suffixed name is never an exact one, and two suffixed ones meet
    only if sanitized form and 8 hex digits both do (`beancount_names` then refuses)."""
    parts = code.split(":")
    if len(parts) > 1 and parts[0] == type_:
        parts = parts[1:]
    components = [_component(p) for p in parts]
    name = ":".join([ROOTS[type_], *components])
    if SUFFIX not in name and ":".join([type_, *(_uncomponent(c) for c in components)]) == code:
        return name
    return f"{name}{SUFFIX}{hashlib.sha256(code.encode()).hexdigest()[:8]}"


class NameClash(ValueError):
    """Two accounts whose Beancount names would be one: the Beancount export refuses."""


def beancount_names(accounts: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Account code -> Beancount account name (`beancount_name`), given (code, type) pairs. Two
    lossy codes sharing both their sanitized form and their hash's 8 hex digits (about one pair
    in 4 billion) would share a name: NameClash, rather than two accounts merged."""
    names = {code: beancount_name(code, type_) for code, type_ in accounts}
    _distinct(names)
    return names


def _distinct(names: Mapping[str, str]) -> None:
    if len(set(names.values())) < len(names):
        seen: dict[str, str] = {}
        for code, name in names.items():
            if name in seen:
                raise NameClash(f"accounts {seen[name]!r} and {code!r} would share the Beancount name {name!r}")
            seen[name] = code


def connect(url: str) -> psycopg.Connection:
    """A connection in one REPEATABLE READ, READ ONLY transaction: the export's snapshot. The
    sorts that put entries in order get memory of the server's, not of this process."""
    conn = psycopg.connect(url, application_name=APPLICATION)
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    conn.execute("SET LOCAL work_mem = '256MB'")
    return conn


def accounts(conn: psycopg.Connection) -> dict[int, Account]:
    rows = conn.execute("""SELECT a.id, a.code, a.type, a.asset, s.scale, a.customer_id
                             FROM accounts a JOIN assets s ON s.code = a.asset ORDER BY a.code""").fetchall()
    return {r[0]: Account(*r, beancount_name(r[1], r[2])) for r in rows}


def _stream(conn: psycopg.Connection, sql: str, params: dict, name: str) -> Iterator[tuple]:
    with conn.cursor(name=name) as cur:
        cur.itersize = FETCH
        cur.execute(sql, params)
        yield from cur


def count_entries(conn: psycopg.Connection, window: Window) -> int:
    return conn.execute(f"SELECT count(*) FROM journal_entries j WHERE {WINDOW_SQL}", window.params()
                        ).fetchone()[0]


def _bean_string(sql: str) -> str:
    """A Beancount string literal of a SQL text expression."""
    return f"""('"' || replace(replace(replace({sql}, '\\', '\\\\'), '"', '\\"'), E'\\n', '\\n') || '"')"""


def _display(units: str, scale: str, unit: str, shown: str) -> str:
    """SQL of an amount in atomic units as a numeric in display units, exact: the dividend is given
    the asset's scale first, since PostgreSQL divides to 16 significant digits otherwise
    (123456789123456789 / 10^9 was 123456789.123456790). Trailing zeros are dropped down to
    `shown` decimals, the asset's own (yen 1000, dinars 1.500, dollars 0.00015)."""
    exact = f"trim_scale(round(round(CAST({units} AS numeric), {scale}) / {unit}, {scale}))"
    return f"round({exact}, greatest(scale({exact}), least({shown}, {scale})))"


SHOWN_DEFAULT = 2  # the decimals shown of an asset the caller's table does not list


def _shown_params(shown: Mapping[str, int] | None) -> dict:
    """The decimals each asset shows (the caller's table: ISO 4217 minor units) as parameters."""
    table = dict(shown or {})
    return {"shown_assets": list(table), "shown_decimals": list(table.values()), "shown_default": SHOWN_DEFAULT}


# An asset's decimals shown, from the parameters of _shown_params.
_SHOWN = """coalesce((SELECT d.decimals FROM unnest(CAST(%(shown_assets)s AS text[]),
                                               CAST(%(shown_decimals)s AS int[])) d(asset, decimals)
                      WHERE d.asset = {asset}), %(shown_default)s)"""


# Accounts with their Beancount names (given as parameters) and the divisor of their display unit.
_NAMED = f"""(SELECT a.id, a.name, x.asset, s.scale, power(10::numeric, s.scale) AS unit,
               {_SHOWN.format(asset="x.asset")} AS shown
          FROM unnest(CAST(%(ids)s AS bigint[]), CAST(%(names)s AS text[])) a(id, name)
          JOIN accounts x ON x.id = a.id JOIN assets s ON s.code = x.asset) m"""

# One transaction per entry, written by PostgreSQL.
_BEANCOUNT = f"""
SELECT to_char(j.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') || ' * '
       || coalesce({_bean_string("j.customer_id")} || ' ', '') || {_bean_string("j.kind")}
       || E'\n  entry_id: "' || j.id || E'"\n  key: ' || {_bean_string("j.key")}
       || E'\n  time: "' || to_char(j.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '"'
       || coalesce(E'\n  request_id: ' || {_bean_string("j.metadata ->> 'request_id'")}, '') || E'\n'
       || string_agg('  ' || m.name || '  ' || {_display('p.amount', 'm.scale', 'm.unit', 'm.shown')}
                     || ' ' || m.asset, E'\n'
                     ORDER BY p.id)
       || E'\n'
  FROM journal_entries j
  JOIN postings p ON p.lane = j.lane AND p.entry_id = j.id
  JOIN {_NAMED} ON m.id = p.account_id
 WHERE {WINDOW_SQL}
 GROUP BY j.lane, j.id ORDER BY j.id
"""

# A window's opening balances: every account's postings before it, one posting line each.
_OPENING = f"""
SELECT string_agg('  ' || m.name || '  ' || {_display('o.total', 'm.scale', 'm.unit', 'm.shown')}
                  || ' ' || m.asset, E'\n'
                  ORDER BY m.name)
  FROM (SELECT p.account_id, sum(p.amount) AS total
          FROM journal_entries j JOIN postings p ON p.lane = j.lane AND p.entry_id = j.id
         WHERE j.occurred_at < %(from)s GROUP BY p.account_id HAVING sum(p.amount) <> 0) o
  JOIN {_NAMED} ON m.id = o.account_id
"""


def write_beancount(conn: psycopg.Connection, out: TextIO, window: Window = Window(),
                    progress: Progress | None = None, shown: Mapping[str, int] | None = None) -> Summary:
    """Commodities, an `open` for every account (dated on the first entry's day, its code as
    metadata), then one transaction per entry: the customer as payee, the kind as narration,
    and its id, key, time and request id as metadata. A window with a start opens with one
    transaction of the balances before it, so the file's balances are those at its end.
    Amounts are exact, with at least `shown[asset]` decimals (SHOWN_DEFAULT for one not in it)."""
    book = accounts(conn)
    _distinct({a.code: a.name for a in book.values()})  # only Beancount needs the names apart
    first = conn.execute(f"SELECT min(j.occurred_at AT TIME ZONE 'UTC')::date FROM journal_entries j "
                         f"WHERE {WINDOW_SQL}", window.params()).fetchone()[0]
    total = count_entries(conn, window) if progress else 0
    out.write(f'option "title" "tokentill journal"\n; entries that occurred in [{_utc_text(window.start) or "-"}, '
              f'{_utc_text(window.end) or "-"}); amounts in display units, exact\n\n')
    # on the window's first day, else its first entry's, else (none in it) its last day or today
    if window.start or first:
        opened = (window.start.astimezone(UTC).date() if window.start else first).isoformat()
    else:
        opened = ((window.end - timedelta(microseconds=1)).astimezone(UTC).date() if window.end
                  else datetime.now(UTC).date()).isoformat()
    for asset, scale in sorted({(a.asset, a.scale) for a in book.values()}):
        out.write(f'{opened} commodity {asset}\n  scale: "{scale}"\n')
    for a in sorted(book.values(), key=lambda a: a.name):
        out.write(f"{opened} open {a.name} {a.asset}\n  code: {_quote(a.code)}\n")
    params = {"ids": list(book), "names": [a.name for a in book.values()], **window.params(),
              **_shown_params(shown)}
    opening = conn.execute(_OPENING, params).fetchone()[0] if window.start else None
    if opening:
        out.write(f'\n{opened} * "opening balances"\n  time: "{_utc_text(window.start)}"\n{opening}\n')
    entries = 0
    for (text,) in _stream(conn, _BEANCOUNT, params, "tokentill_beancount"):
        out.write("\n")
        out.write(text)
        entries += 1
        if progress and entries % FETCH == 0:
            progress(entries, total)
    if progress:
        progress(entries, total)
    return Summary(entries)


def _utc_text(moment: datetime | None) -> str | None:
    """A time as every entry's `time` is written: UTC, microseconds, a Z (`2026-12-07T20:07:13.176782Z`);
    None for none (an unbounded side of a window)."""
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _quote(value: str) -> str:
    value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{value}"'


CSV_COLUMNS = ("entry_id", "time", "kind", "customer_id", "request_id", "account", "asset", "amount")
# A request id is the caller's text: one a spreadsheet would take as a formula (it starts with =,
# +, -, @, a tab or a CR: OWASP's "CSV injection") is written after a ' so that it opens as text.
# The other text columns are the ledger's own codes and customer ids (which start with a letter
# or digit); jsonl and Beancount keep every value exactly.
_CSV = f"""
COPY (SELECT j.id, to_char(j.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), j.kind,
             j.customer_id, regexp_replace(j.metadata ->> 'request_id', E'^([=+@\\t\\r-])', '''\\1'),
             a.code, a.asset,
             {_display('p.amount', 's.scale', 'power(10::numeric, s.scale)',
                       _SHOWN.format(asset='a.asset'))}
        FROM journal_entries j
        JOIN postings p ON p.lane = j.lane AND p.entry_id = j.id
        JOIN accounts a ON a.id = p.account_id JOIN assets s ON s.code = a.asset
       WHERE {WINDOW_SQL}
       ORDER BY j.id, p.id) TO STDOUT WITH (FORMAT csv)
"""


def write_csv(conn: psycopg.Connection, out: TextIO, window: Window = Window(),
              progress: Progress | None = None, shown: Mapping[str, int] | None = None) -> Summary:
    """One posting a row, in entry then posting order; `amount` is signed (debits positive), in
    the asset's display unit, exact, with at least `shown[asset]` decimals. PostgreSQL writes the
    rows (COPY), quoted as RFC 4180 says."""
    total = conn.execute(f"SELECT count(*) FROM journal_entries j JOIN postings p ON p.lane = j.lane "
                         f"AND p.entry_id = j.id WHERE {WINDOW_SQL}", window.params()).fetchone()[0] if progress else 0
    out.write(",".join(CSV_COLUMNS) + "\n")
    rows, quoted = 0, False
    with conn.cursor() as cur, cur.copy(_CSV, {**window.params(), **_shown_params(shown)}) as copy:
        for chunk in copy:
            data = bytes(chunk)
            out.write(data.decode())
            ended, quoted = csv_rows_ended(data, quoted)
            rows += ended
            if progress:
                progress(rows, total)
    return Summary(None, rows)


def csv_rows_ended(data: bytes, quoted: bool) -> tuple[int, bool]:
    """The CSV rows that end in `data` (its newlines outside quoted values) and whether it ends
    inside a quoted value, given whether it starts inside one. A request id may hold a line break,
    which COPY writes in quotes: counting every newline counted that row twice (`exported 6
    postings` of 4). An escaped quote ("") toggles twice, so the parity of quotes is the state."""
    parts = data.split(b'"')
    ended = sum(part.count(b"\n") for i, part in enumerate(parts) if (i % 2 == 1) == quoted)
    return ended, quoted != (len(parts) % 2 == 0)


# JSON lines: a header, the accounts, then each seal followed by its entries (in id order, each
# with the hash the seal stored for it), then the entries no seal covers yet, then an end record.
#
# Seal k covers the txids [from_txid, to_txid), and the ranges follow one another, so an entry's
# section is `width_bucket(txid, bounds)` over the seals' from_txids and the last to_txid: k for
# seal k (by id order), and one past the last seal for the entries not sealed yet. One statement
# streams every entry in (section, id) order; this process writes each seal's record before its
# entries and puts in the hash the seal stored for each entry (one seal's hashes held at a time).
_SEAL_BOUNDS = "SELECT id, from_txid::text, to_txid::text FROM seals ORDER BY id"
_SEALS = f"""
SELECT s.id, s.from_txid::text, s.to_txid::text, encode(s.prev_hash, 'hex'), encode(s.chain_hash, 'hex'),
       {SEALED_AT.format('s.sealed_at')}, s.hash_version,
       array_to_json(s.entry_ids)::text, s.entry_ids, s.entry_hashes
  FROM seals s
 WHERE %(whole)s OR s.id = ANY(%(ids)s)
 ORDER BY s.id
"""
_SECTION = "width_bucket(j.txid, CAST(%(bounds)s AS xid8[]))"
# The sections that hold an entry of a window (whose seals are then written whole).
_WINDOW_SECTIONS = f"SELECT DISTINCT {_SECTION} FROM journal_entries j WHERE {WINDOW_SQL}"
# The rest of each entry's line after its seal and stored hash, written by PostgreSQL. The fields
# are those an entry's seal hash covers, as `ledger.seal` reads them (`metadata` is the jsonb's own
# text, which the sealer decoded; `recorded_at` is covered by version 2 seals only). Grouped by
# (section, id, lane) so that the one sort feeding the aggregate also gives the output order (grouped
# by (lane, id), the written lines took a second sort: 457 MB spilled to disk at 1,000,000 entries).
_ENTRIES = f"""
SELECT {_SECTION}, j.id,
       ',"id":' || j.id || ',"key":' || to_json(j.key) || ',"request_hash":"' || encode(j.request_hash, 'hex')
       || '","kind":' || to_json(j.kind) || ',"customer_id":' || coalesce(to_json(j.customer_id)::text, 'null')
       || ',"metadata":' || j.metadata::text || ',"txid":"' || {SEALED_TXID} || '","occurred_at":"'
       || {SEALED_OCCURRED_AT} || '","recorded_at":"' || {SEALED_RECORDED_AT} || '","postings":['
       || coalesce(string_agg('[' || p.id || ',' || to_json(a.code) || ',' || p.stripe || ',' || p.amount || ',"'
                              || a.asset || '"]', ',' ORDER BY p.id), '') || ']}}'
  FROM journal_entries j
  LEFT JOIN postings p ON p.lane = j.lane AND p.entry_id = j.id
  LEFT JOIN accounts a ON a.id = p.account_id
 WHERE {_SECTION} > 0 AND (%(whole)s OR {_SECTION} = ANY(%(sections)s)
                               OR ({_SECTION} = %(unsealed)s AND {WINDOW_SQL}))
 GROUP BY 1, j.id, j.lane ORDER BY 1, j.id
"""


# Each re-rate's payer rows (the wallets' `true_up_payers`, migration 0082, read by name: ledger imports
# no wallet module): what its true-up gave back (took back: negative) of each charge, by payer (an
# account code; null: none of the charge's payers). The offline verifier ties them to the re-rate's
# entry, whose `beyond_payer_rows` (in its hash) is what it posted each account beyond them. Every
# re-rate's rows, in a window export too (a few rows a re-rate): an entry of the file is tied to all
# of its own. A close's rows (rerate_id null) are not written.
_PAYER_ROWS = """
SELECT rerate_id, customer_id, period, charge_id, payer, units::text FROM true_up_payers
 WHERE rerate_id IS NOT NULL ORDER BY customer_id, period, rerate_id, charge_id, payer NULLS FIRST
"""


def _payer_rows(conn: psycopg.Connection) -> Iterator[tuple]:
    """The re-rates' payer rows (none before migration 0082 made their table)."""
    if conn.execute("SELECT to_regclass('true_up_payers') IS NOT NULL").fetchone()[0]:
        yield from _stream(conn, _PAYER_ROWS, {}, "tokentill_payers")


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def write_jsonl(conn: psycopg.Connection, out: TextIO, window: Window = Window(),
                progress: Progress | None = None, shown: Mapping[str, int] | None = None) -> Summary:
    """The journal with its seal chain, for `tokentill audit verify --file`. With a window, every
    seal that covers an entry of the window is written whole (a seal can only be checked whole),
    so entries just outside the window may be included; unsealed entries are those of the window.
    Amounts stay atomic units (integers), so `shown` changes nothing here."""
    book = accounts(conn)
    total = count_entries(conn, window) if progress else 0
    exported_at = conn.execute("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                               ).fetchone()[0]
    out.write(_json({"type": "export", "format": "tokentill-journal", "version": JSONL_VERSION,
                     "exported_at": exported_at, "whole": window.whole,
                     "from": _utc_text(window.start), "to": _utc_text(window.end)}) + "\n")
    for a in book.values():
        out.write(_json({"type": "account", "code": a.code, "account_type": a.type, "asset": a.asset,
                         "scale": a.scale, "customer_id": a.customer_id}) + "\n")
    ranges = conn.execute(_SEAL_BOUNDS).fetchall()  # (id, from_txid, to_txid) of every seal
    bounds = [lo for _, lo, _ in ranges] + [ranges[-1][2] if ranges else "0"]
    unsealed = len(bounds)  # the section past the last seal's to_txid
    params = {"whole": window.whole, "bounds": bounds, "unsealed": unsealed, **window.params()}
    sections = [] if window.whole else sorted(
        b for (b,) in conn.execute(_WINDOW_SECTIONS, params) if 0 < b < unsealed)
    section_of = {seal_id: k for k, (seal_id, _, _) in enumerate(ranges, 1)}
    entries = seals = sealed = 0
    with conn.cursor(name="tokentill_seals") as seal_rows, conn.cursor(name="tokentill_entries") as entry_rows:
        seal_rows.itersize = 1  # a seal row carries its entry ids and hashes: hold one at a time
        seal_rows.execute(_SEALS, {"whole": window.whole, "ids": [ranges[k - 1][0] for k in sections]})
        entry_rows.itersize = FETCH
        entry_rows.execute(_ENTRIES, {**params, "sections": sections})
        stream = iter(entry_rows)
        row = next(stream, None)

        def section(number: int, head: str, stored: dict[int, bytes]) -> None:
            nonlocal row, entries
            while row is not None and row[0] == number:
                digest = stored.get(row[1])
                out.write(f'{head}"{digest.hex()}"' if digest is not None else f"{head}null")
                out.write(row[2])
                out.write("\n")
                entries += 1
                if progress and entries % FETCH == 0:
                    progress(entries, total)
                row = next(stream, None)

        for seal_id, lo, hi, prev, chain_hash, sealed_at, version, ids, entry_ids, hashes in seal_rows:
            out.write(f'{{"type":"seal","id":{seal_id},"from_txid":"{lo}","to_txid":"{hi}",'
                      f'"prev_hash":"{prev}","chain_hash":"{chain_hash}","sealed_at":"{sealed_at}",'
                      f'"hash_version":{version},"entry_ids":{ids}}}\n')
            seals += 1
            section(section_of[seal_id], f'{{"type":"entry","seal":{seal_id},"sealed_hash":',
                    dict(zip(entry_ids, hashes, strict=True)))
        sealed = entries
        out.write(_json({"type": "unsealed", "from_txid": bounds[-1]}) + "\n")
        section(unsealed, '{"type":"entry","seal":null,"sealed_hash":', {})
    payers = 0
    for rerate_id, customer_id, period, charge_id, payer, units in _payer_rows(conn):
        out.write(_json({"type": "payer", "rerate_id": rerate_id, "customer_id": customer_id, "period": period,
                         "charge_id": charge_id, "payer": payer, "units": int(units)}) + "\n")
        payers += 1
    out.write(_json({"type": "end", "entries": entries, "seals": seals, "unsealed": entries - sealed,
                     "payers": payers}) + "\n")
    if progress:
        progress(entries, total)
    return Summary(entries, None, seals, entries - sealed)


WRITERS = {"beancount": write_beancount, "csv": write_csv, "jsonl": write_jsonl}

"""The offline verifier of a JSON-lines export: no database, only hashing and JSON (an import-linter
contract keeps it so), for an auditor who holds a copy and does not trust our server. It runs as
`tokentill audit verify --file EXPORT.jsonl`, or on its own with this file and `ledger/chain.py`:
`python -m ledger.offline EXPORT.jsonl`.

It recomputes every entry's hash from its fields and compares it with the hash its seal stored,
with the hash version its seal records (`ledger.chain`: 3 and 4 cover each posting's asset and
recorded_at, 2 recorded_at only, 1 neither; a seal of an export written before versions has none
and is version 1), recomputes each seal's chain hash from those (and from version 4, its
sealed_at), checks that each seal follows the one before it, that a seal's entries are all
there and in its order, that every entry balances per asset, and that each posting's asset is
that of the account record of its code (a version 3 hash covers the asset; 1 and 2 the code
alone, and a file relabelled to another currency throughout passes under them). Fields no hash
covers are checked against those that are: each entry's txid lies in its seal's range (or past the
last seal's, unsealed), the end record's counts are the file's, and an account record's type,
scale and customer are those its code and asset fix (`account`; a customer's currency at
CUSTOMER_SCALE). A version 4 seal is dated when
it was written, so its sealed_at must not precede the seal before it nor any of its entries'
recorded_at; an older seal's was its sealer's transaction start, which need not follow either,
and it is not checked. An unsealed entry may not reuse a sealed entry's id (as a forged entry of
another lane can). From version 3 a re-rate's payer rows are tied to its entry's postings and its
`beyond_payer_rows` (`tie_payers`). Memory is one seal's entry ids at a time, the re-rates' entries
and payer rows, a bit for each sealed entry's id, the
ids of the entries no seal covers yet, and each account's asset and customer.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ledger.chain import DATED_AHEAD, GENESIS, HASH_VERSIONS, SEALED_AT_FROM, entry_digest

LIMIT = 50  # problems kept; the count is exact
# A customer's currency is kept in units of 10^-9 (wallets.chart.ASSET_SCALE; this file imports no
# wallet module): no hash covers an asset's scale, so one rewritten throughout a file would read
# every amount a power of ten off, each account still agreeing with the others
CUSTOMER_SCALE = 9
_HASH = re.compile(r"[0-9a-f]{64}")
_PERIOD = re.compile(r"[0-9]{4}-[0-9]{2}")
_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")  # as the export writes


class _Refused(ValueError):
    """A line that json reads but no export writes: its str says why."""


def _refuse(constant: str) -> object:
    raise ValueError(f"{constant} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: json reads it as inf, msgspec refused it (out of range)
        raise _Refused(f"the number {text} is past what a double holds")
    return value


def _object(pairs: list[tuple[str, object]]) -> dict:
    """An object whose keys are each given once. json keeps the last of a key given twice; an export
    writes none, and a reader that keeps the first (or shows the line to a person) would read other
    content than the one verified: `"postings": <made up>, ..., "postings": <sealed>` verified."""
    rec = dict(pairs)
    if len(rec) != len(pairs):
        twice = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise _Refused(f"it gives the key {twice!r} twice")
    return rec


def _scalars(value: object) -> None:
    """Raise where a string holds a lone surrogate (`\\ud800`, an escape json reads and msgspec
    refused: no Unicode text, and no database text, holds one)."""
    if isinstance(value, str):
        value.encode("utf-8")  # UnicodeEncodeError, a ValueError
    elif isinstance(value, dict):
        for k, v in value.items():
            _scalars(k)
            _scalars(v)
    elif isinstance(value, list):
        for v in value:
            _scalars(v)


_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")  # an escape that may leave a lone surrogate: looked at then


def _decode(raw: bytes) -> object:
    """One line's record: strict UTF-8 JSON (NaN, Infinity and numbers past a double's range, a key
    given twice in an object and lone surrogates refused), by the standard library alone, so that
    this file and ledger/chain.py run on a bare Python (msgspec, a dependency of tokentill's, stopped
    them there with ModuleNotFoundError). A bad line raises ValueError (_Refused, a
    UnicodeDecodeError or UnicodeEncodeError, a JSONDecodeError) or, nested past Python's limit,
    RecursionError."""
    rec = json.loads(raw.decode("utf-8"), parse_constant=_refuse, parse_float=_finite, object_pairs_hook=_object)
    if _SURROGATE.search(raw):
        try:
            _scalars(rec)
        except UnicodeEncodeError:
            raise _Refused("it holds a lone surrogate (\\ud800 to \\udfff)") from None
    return rec


def _int(value: object) -> bool:
    return type(value) is int


def _text(value: object) -> bool:
    return type(value) is str


def _hash(value: object) -> bool:
    return type(value) is str and _HASH.fullmatch(value) is not None


def _txid(value: object) -> bool:
    return type(value) is str and value.isascii() and value.isdigit()


def _posting(value: object) -> bool:
    return (type(value) is list and len(value) == 5 and _int(value[0]) and _text(value[1]) and _int(value[2])
            and _int(value[3]) and _text(value[4]))


# The fields each record must carry, and what each must be: a record that is otherwise (an edited
# file) is named as such, rather than stopping the verifier.
_TYPES = ("asset", "liability", "equity", "income", "expense")
_SHAPES = {
    "account": {"code": _text, "account_type": lambda v: v in _TYPES, "asset": _text,
                "scale": lambda v: _int(v) and v >= 0, "customer_id": lambda v: v is None or _text(v)},
    "seal": {"id": _int, "from_txid": _txid, "to_txid": _txid, "prev_hash": _hash, "chain_hash": _text,
             "entry_ids": lambda v: type(v) is list and all(_int(i) for i in v),
             "hash_version": lambda v: _int(v) and v in HASH_VERSIONS,
             "sealed_at": lambda v: type(v) is str and _UTC.fullmatch(v) is not None},
    "entry": {"id": _int, "key": _text, "request_hash": _text, "kind": _text,
              "customer_id": lambda v: v is None or _text(v), "metadata": lambda v: True, "txid": _txid,
              "occurred_at": _text, "recorded_at": _text,
              "postings": lambda v: type(v) is list and all(_posting(p) for p in v),
              "seal": lambda v: v is None or _int(v), "sealed_hash": lambda v: v is None or _hash(v)},
    "unsealed": {"from_txid": _txid},
    "payer": {"rerate_id": _text, "customer_id": _text,
              "period": lambda v: _text(v) and _PERIOD.fullmatch(v) is not None,
              "charge_id": _int, "payer": lambda v: v is None or (_text(v) and v != ""),
              "units": lambda v: _int(v) and v != 0},
    "end": {"entries": _int, "seals": _int, "unsealed": _int, "payers": _int},
}
# Fields an export written before hash versions lacks: a seal without one is version 1, and an
# entry's recorded_at is needed only under a version 2 seal or later, a seal's sealed_at under 4.
_OPTIONAL = {"seal": {"hash_version", "sealed_at"}, "entry": {"recorded_at"}, "end": {"payers"}}


# The fields an export header carries (none needed: `whole` is checked on its own; an export written
# before versions may lack `format` and `version`, one given must be these).
_HEADER = {"format", "version", "exported_at", "whole", "from", "to"}
FORMAT = "tokentill-journal"
VERSIONS = (1, 2, 3)  # 1: before hash versions (no hash_version, no recorded_at); 3: payer records
PAYERS_FROM = 3  # the export version whose end record counts its payer records


def _unwritten(kind: str, rec: dict) -> str | None:
    """A field of `rec` that no export writes on a record of its kind: no hash covers it and
    nothing is checked against it, so a file carrying one (an entry's `"note": "refunded"`) was
    verified intact, vouching for text its seals never saw."""
    known = _HEADER if kind == "export" else _SHAPES.get(kind)
    return None if known is None else next((name for name in rec if name != "type" and name not in known), None)


def _wrong(kind: str, rec: dict) -> str | None:
    optional = _OPTIONAL.get(kind, set())
    return next((name for name, ok in _SHAPES.get(kind, {}).items()
                 if (name in rec and not ok(rec[name])) or (name not in rec and name not in optional)), None)


@dataclass(slots=True)
class OfflineReport:
    entries: int = 0
    seals: int = 0
    unsealed: int = 0
    head: str | None = None  # the last seal's chain hash: compare it with one from another source
    chain: dict[str, int] = field(default_factory=dict)  # each seal's chain hash -> its id, in file order
    whole: bool = True
    gaps: int = 0  # in a window export: places where seals were left out (the chain is not checked there)
    from_genesis: bool = False  # the first seal is the chain's first: none precedes it
    payers: int = 0  # re-rates' payer rows read
    untied: int = 0  # of them, rows of a re-rate no entry of the file records what it posted beyond (not checked)
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def fail(self, problem: str) -> None:
        self.problem_count += 1
        if len(self.problems) < LIMIT:
            self.problems.append(problem)


@dataclass(slots=True)
class _Seal:
    id: int
    chain_hash: str
    expected: list[int]
    hasher: object
    version: int
    from_txid: int
    to_txid: int
    sealed_at: str | None  # version 4 on: chained, and no entry of the seal recorded after it
    seen: list[int] = field(default_factory=list)
    late: bool = False  # an entry recorded after sealed_at was named
    before: str | None = None  # the sealed_at of the seal before it
    before_of: tuple[object, int] | None = None  # that seal's id and hash version
    in_window: bool = False  # an entry of it occurred in the header's window
    last: tuple[str, int] | None = None  # its entries' latest recorded_at, and that entry


class _Ids:
    """A set of entry ids kept as one bit an id (ids a sequence gave: 1.25 MB up to 10,000,000), in
    a plain set from _BITS on (32 MB of bits below it)."""
    _BITS = 1 << 28

    def __init__(self) -> None:
        self.bits = bytearray()
        self.rest: set[int] = set()

    def add(self, i: int) -> None:
        if not 0 <= i < self._BITS:
            self.rest.add(i)
            return
        if i >> 3 >= len(self.bits):
            self.bits.extend(bytes(max((i >> 3) + 1 - len(self.bits), len(self.bits))))
        self.bits[i >> 3] |= 1 << (i & 7)

    def __contains__(self, i: int) -> bool:
        if not 0 <= i < self._BITS:
            return i in self.rest
        return i >> 3 < len(self.bits) and bool(self.bits[i >> 3] & (1 << (i & 7)))


class _Verifier:
    def __init__(self, now: datetime | None = None) -> None:
        self.report = OfflineReport()
        self.seal: _Seal | None = None
        self.prev: dict | None = None  # the previous seal record
        self.in_unsealed = False
        self.unsealed_from: int | None = None  # the txid the unsealed entries start at
        self.ended = False
        self.unsealed_ids: set[int] = set()  # a seal's own ids are checked when it closes
        # every seal's entry ids so far: an unsealed entry (they follow the seals) of one of them
        # reuses a sealed entry's id, as a forged entry of another lane can (ids are unique within a
        # lane alone; `audit verify`'s entry_ids names it)
        self.sealed_ids = _Ids()
        self.past_first_seal = False  # a seal record was read (well formed or not)
        self.started = False  # a line was read: a header past it is not the file's
        # account code -> asset, from the account records: a posting's asset is in the entry's hash
        # under version 3 only (1 and 2 cover its account code), so it is checked against the account
        # it names
        self.assets: dict[str, str] = {}
        self.customers: dict[str, str] = {}  # account code -> its customer, for the customer accounts
        self.scales: dict[str, int] = {}  # asset -> the scale of its first account record
        self.rescaled: set[str] = set()  # customers' assets named for a scale other than CUSTOMER_SCALE
        # DATED_AHEAD past the header's exported_at (the database's clock when the file was written),
        # as the export writes a time; None without one (a file written before it, or edited)
        self.ahead: str | None = None
        self.exported_at: str | None = None
        # the header's window: [from, to) as written and as instants (None: unbounded), or None for none
        self.window: tuple[str, str, datetime | None, datetime | None] | None = None
        # and past this machine's clock: the file was written before it is verified, and no edit of
        # the file moves this clock (exported_at, which no hash covers, moved on or removed, hid a
        # seal planted a year ahead)
        now = now or datetime.now(UTC)
        self.now = _utc(now)
        self.now_ahead = _utc(now + DATED_AHEAD)
        self.version = VERSIONS[0]  # the header's
        # a re-rate's entry that recorded what it posted beyond its payer rows, by (re-rate, customer,
        # period): (entry id, what it gave each account back, what it recorded beyond the rows of each)
        self.rerated: dict[tuple[str, str, str], list[tuple[int, dict[str, int], dict[str, int]]]] = {}
        # the payer records: what their rows give each payer (none aside), by (re-rate, customer, period)
        self.payer_sums: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.payer_rows: Counter[tuple[str, str, str]] = Counter()  # the payer records, by the same
        self.payer_keys: set[tuple[str, str, str, int, str | None]] = set()  # a row given twice is named

    def line(self, number: int, raw: bytes) -> None:
        first, self.started = not self.started, True
        try:
            rec = _decode(raw)
            kind = rec["type"]
        except _Refused as exc:
            self.report.fail(f"line {number} is not a record of the export: {exc}")
            return
        except (ValueError, RecursionError, KeyError, TypeError):
            self.report.fail(f"line {number} is not a record of the export")
            return
        wrong = _wrong(kind, rec) if isinstance(kind, str) else None
        unwritten = _unwritten(kind, rec) if isinstance(kind, str) else None
        if unwritten is not None:  # the record is still checked: its other problems are named too
            self.report.fail(f"line {number}: the {kind} record carries {unwritten!r}, a field no export writes")
        self.past_first_seal = self.past_first_seal or kind == "seal"
        if self.ended:
            self.report.fail(f"line {number} follows the end record")
        elif wrong is not None:
            self.report.fail(f"line {number}: the {kind} record's {wrong!r} is missing or malformed")
            if kind == "seal":  # its entries are then checked against no seal
                self.close_seal()
                self.seal = None
            elif kind == "entry":
                self.report.entries += 1
            elif kind == "unsealed":  # the entries after it are still the unsealed ones
                self.close_seal()
                self.in_unsealed = True
        elif kind == "export" and not first:  # read, the last one read said whole or not
            self.report.fail(f"line {number}: an export header past the first record (not read)")
        elif kind == "export":
            self.header_whole(number, rec)
            self.header_kind(number, rec)
            self.header_window(number, rec)
            at = rec.get("exported_at")
            if _text(at) and _UTC.fullmatch(at):
                try:
                    self.ahead = _utc(datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ") + DATED_AHEAD)
                    self.exported_at = at
                except (ValueError, OverflowError):  # an edited header: no time to check against
                    pass
        elif kind == "seal":
            self.start_seal(rec)
        elif kind == "entry":
            self.entry(number, rec)
        elif kind == "unsealed":
            self.start_unsealed(rec)
        elif kind == "payer":
            self.payer(number, rec)
        elif kind == "end":
            self.close_seal()
            self.ended = True
            if "payers" not in rec and self.version >= PAYERS_FROM:
                self.report.fail(f"line {number}: the end record has no 'payers', which a version {self.version} "
                                 "export's counts")
            for name, what, held in (("entries", "entries", self.report.entries), ("seals", "seals", self.report.seals),
                                     ("unsealed", "unsealed entries", self.report.unsealed),
                                     ("payers", "payer records", self.report.payers)):
                if rec.get(name, held) != held:
                    self.report.fail(f"the end record counts {rec[name]} {what}, the file holds {held}")
            if self.version >= PAYERS_FROM:  # an export before writes no payer record: nothing to tie
                self.tie_payers()
        elif kind == "account":
            self.account(number, rec)
        else:
            self.report.fail(f"line {number}: unknown record type {kind!r}")

    def header_whole(self, number: int, rec: dict) -> None:
        """The header's `whole`: true or false, and nothing else. It was read with bool(), so
        "false" and "no" were a whole export and 0.0, 0, "" and null a window, whose left-out seals
        are gaps, not failures (a seal cut out under `"whole": 0.0` verified intact). Anything else,
        or none, is named, and the file is checked as whole, the stricter reading."""
        whole = rec.get("whole")
        if type(whole) is bool:
            self.report.whole = whole
            return
        self.report.whole = True
        if "whole" not in rec:
            self.report.fail(f"line {number}: the export header has no 'whole' (true or false)")
        else:
            self.report.fail(f"line {number}: the export header's 'whole' is {_shown(whole)}, not true or false")

    def header_kind(self, number: int, rec: dict) -> None:
        """The header's `format` and `version`: a file of another format, or of a version this
        verifier does not know, was verified as if it were its own (an export written before
        versions may lack both)."""
        if "format" in rec and rec["format"] != FORMAT:
            self.report.fail(f"line {number}: the export header's 'format' is {_shown(rec['format'])}, not "
                             f"{_shown(FORMAT)}: not a file this verifier reads")
        version = rec.get("version", VERSIONS[0])
        if type(version) is int and version in VERSIONS:
            self.version = version
        else:
            known = f"{', '.join(map(str, VERSIONS[:-1]))} and {VERSIONS[-1]}"
            self.report.fail(f"line {number}: the export header's 'version' is {_shown(version)}, a version this "
                             f"verifier does not know (it reads {known})")

    def header_window(self, number: int, rec: dict) -> None:
        """The header's window, [from, to) (null: unbounded), which a window export's seals and
        unsealed entries are checked against (`entry`, `close_seal`)."""
        bounds: list[datetime | None] = []
        for name in ("from", "to"):
            value = rec.get(name)
            at = _instant(value) if _text(value) else None
            if value is not None and (at is None or at.tzinfo is None):
                self.report.fail(f"line {number}: the export header's {name!r} is {_shown(value)}, not an RFC 3339 "
                                 "time with its offset (nor null)")
                return
            bounds.append(at)
        start, end = bounds
        if start is not None and end is not None and end < start:
            self.report.fail(f"line {number}: the export header's window ends ('to' {rec['to']}) before it starts "
                             f"('from' {rec['from']})")
        elif start is not None or end is not None:
            self.window = (rec.get("from") or "-", rec.get("to") or "-", start, end)

    def in_window(self, occurred_at: object) -> bool | None:
        """Whether an entry's occurred_at (UTC, as the export writes it) lies in the header's
        window; None when there is none, or the time is not one (its hash names it)."""
        at = _instant(occurred_at) if self.window is not None and _text(occurred_at) else None
        if at is None:
            return None
        at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        _, _, start, end = self.window  # type: ignore[misc]
        return (start is None or start <= at) and (end is None or at < end)

    def account(self, number: int, rec: dict) -> None:
        """An account record: its type, scale and customer are in no hash, so each is checked against
        what fixes it: the code's first part names the type (`liability:customer:acme:reserved`), an
        asset has one scale, and a customer account's code names its customer (wallets/chart.py);
        entries then post only to their own customer's accounts (`entry`)."""
        code, type_, asset, customer = rec["code"], rec["account_type"], rec["asset"], rec["customer_id"]
        known = self.assets.setdefault(code, asset)
        if known != asset:
            self.report.fail(f"line {number}: account {code} is listed again with another asset ({asset}, was {known})")
        named = code.split(":", 1)[0]
        if named in _TYPES and named != type_:
            self.report.fail(f"account {code} is of type {type_}, but its code says {named}")
        scale = self.scales.setdefault(asset, rec["scale"])
        if scale != rec["scale"]:
            self.report.fail(f"account {code} has scale {rec['scale']}, another account in {asset} has {scale}")
        parts = code.split(":", 2)
        if len(parts) == 3 and parts[1] == "customer" and (customer is None or not parts[2].startswith(customer + ":")):
            self.report.fail(f"account {code} is of customer {customer or 'none'}, but its code names another")
        if customer is not None:
            self.customers[code] = customer
            if scale != CUSTOMER_SCALE and asset not in self.rescaled:  # as `audit verify`'s `assets` check
                self.rescaled.add(asset)
                factor = f"{'1/' if scale > CUSTOMER_SCALE else ''}1{'0' * abs(scale - CUSTOMER_SCALE)}"
                self.report.fail(f"asset {asset} has scale {scale}, but a customer's currency is kept in units of "
                                 f"10^-{CUSTOMER_SCALE}: its amounts read {factor} times what they are")

    def rerate_entry(self, rec: dict) -> None:
        """A re-rate's entry (kind rerate_adjustment, keyed `rerate:<re-rate>:<customer>:<period>`, as
        `audit verify` reads one: another key is not a re-rate's) that recorded what it posted each
        account beyond its payer rows (`beyond_payer_rows`, in its hash): kept, with what it gave each
        account back (credited it, less debited it), for `tie_payers`."""
        meta = rec["metadata"]
        if rec["kind"] != "rerate_adjustment" or type(meta) is not dict or "beyond_payer_rows" not in meta:
            return
        rerate_id, customer, key = meta.get("rerate_id"), rec["customer_id"], rec["key"]
        period = key.rsplit(":", 1)[-1]
        if not (_text(rerate_id) and _text(customer) and key == f"rerate:{rerate_id}:{customer}:{period}"):
            return
        beyond = meta["beyond_payer_rows"]
        if type(beyond) is not dict or not all(_int(v) for v in beyond.values()):
            self.report.fail(f"entry {rec['id']}: its beyond_payer_rows is {_shown(beyond)}, not what it posted each "
                             "account beyond its payer rows (account codes and integers)")
            return
        posted: dict[str, int] = defaultdict(int)
        for p in rec["postings"]:
            posted[p[1]] -= p[3]
        self.rerated.setdefault((rerate_id, customer, period), []).append((rec["id"], dict(posted), beyond))

    def payer(self, number: int, rec: dict) -> None:
        """A re-rate's payer row: what its true-up gave back (took back) of a charge, by payer."""
        self.report.payers += 1
        if self.version < PAYERS_FROM:
            self.report.fail(f"line {number}: a payer record in a version {self.version} export (written from version "
                             f"{PAYERS_FROM} on: not tied here)")
        key = (rec["rerate_id"], rec["customer_id"], rec["period"])
        row = (*key, rec["charge_id"], rec["payer"])
        if row in self.payer_keys:
            self.report.fail(f"line {number}: re-rate {rec['rerate_id']} of customer {rec['customer_id']}, "
                             f"{rec['period']} gives {rec['payer'] or 'none of its payers'} of charge "
                             f"{rec['charge_id']} twice (a true-up writes one row a charge and payer)")
        self.payer_keys.add(row)
        self.payer_rows[key] += 1
        if rec["payer"] is not None:
            self.payer_sums[key][rec["payer"]] += rec["units"]

    def tie_payers(self) -> None:
        """Each re-rate entry's payer rows tied to its postings (as `audit verify` ties them): of each
        account, the rows (the rows of none aside) and what the entry recorded beyond them sum to
        what it gave the account back, so a row changed, moved to another payer, added or removed
        names each account it gives more or less than the entry posted it. Rows of a re-rate with no
        such entry in the file (one that posted none, its lines netting 0; one outside a window; one
        written before `beyond_payer_rows`) are tied to nothing here: counted (`untied`)."""
        for key in sorted(set(self.rerated) | set(self.payer_rows)):
            rows = self.payer_sums.get(key, {})
            entries = self.rerated.get(key)
            if entries is None:
                self.report.untied += self.payer_rows[key]
                continue
            rerate_id, customer, period = key
            for entry_id, posted, beyond in entries:
                for account in sorted(set(posted) | set(beyond) | set(rows)):
                    got, kept, given = posted.get(account, 0), beyond.get(account, 0), rows.get(account, 0)
                    if got != given + kept:
                        self.report.fail(f"true-up record of re-rate {rerate_id} of customer {customer}, {period}: "
                                         f"its payers' rows give {account} {given} back, its entry {entry_id} "
                                         f"posted it {got} ({kept} of it beyond its payers' rows, as it recorded)")

    def start_unsealed(self, rec: dict) -> None:
        self.close_seal()
        self.in_unsealed = True
        self.unsealed_from = int(rec["from_txid"])
        ends = int(self.prev["to_txid"]) if self.prev is not None else None
        # a whole export's unsealed entries start where its last seal ends; a window's, where the last
        # seal of the ledger ends, which may be past the last seal it holds
        if ends is not None and (self.unsealed_from != ends if self.report.whole else self.unsealed_from < ends):
            self.report.fail(f"the unsealed entries start at txid {self.unsealed_from}, not where seal "
                             f"{self.prev['id']} ends ({ends})")

    def start_seal(self, rec: dict) -> None:
        self.close_seal()
        if self.in_unsealed:
            self.report.fail(f"seal {rec['id']} comes after the unsealed entries")
        prev = self.prev
        if prev is None:
            self.report.from_genesis = rec["prev_hash"] == GENESIS.hex() and rec["from_txid"] == "0"
            if self.report.whole and (rec["prev_hash"] != GENESIS.hex() or rec["from_txid"] != "0"):
                self.report.fail(f"seal {rec['id']} is not the first seal, yet nothing precedes it "
                                 "(a whole export starts at the first seal)")
        elif rec["from_txid"] == prev["to_txid"]:
            if rec["prev_hash"] != prev["chain_hash"]:
                self.report.fail(f"seal {rec['id']} does not follow seal {prev['id']}: its previous hash "
                                 "is not that seal's chain hash")
        elif self.report.whole:  # a window may skip seals; a whole export may not
            self.report.fail(f"seal {rec['id']} does not follow seal {prev['id']}: its range does not "
                             "start where that seal's ends")
        elif int(rec["from_txid"]) < int(prev["to_txid"]):  # seals are written in txid order
            self.report.fail(f"seal {rec['id']} does not follow seal {prev['id']}: its range starts before "
                             "that seal's ends (a seal repeated, or seals out of order)")
        else:
            self.report.gaps += 1
        version, at = rec.get("hash_version", 1), rec.get("sealed_at")
        if version >= SEALED_AT_FROM and at is None:
            self.report.fail(f"seal {rec['id']} has no sealed_at, which its hash (version {version}) covers")
        elif version >= SEALED_AT_FROM and prev is not None and prev.get("sealed_at") and at < prev["sealed_at"]:
            self.report.fail(f"seal {rec['id']} is dated {at}, before seal {prev['id']} ({prev['sealed_at']})")
        self.prev = rec
        self.report.seals += 1
        self.seal = _Seal(rec["id"], rec["chain_hash"], list(rec["entry_ids"]),
                          hashlib.sha256(bytes.fromhex(rec["prev_hash"])), version,
                          int(rec["from_txid"]), int(rec["to_txid"]), at if version >= SEALED_AT_FROM else None,
                          before=prev.get("sealed_at") if prev is not None else None,
                          before_of=(prev["id"], prev.get("hash_version", 1)) if prev is not None else None)

    def entry(self, number: int, rec: dict) -> None:
        self.report.entries += 1
        entry_id = rec["id"]
        postings = rec["postings"]
        sums: dict[str, int] = defaultdict(int)
        txid = int(rec["txid"])
        for p in postings:
            owner = self.customers.get(p[1])
            if owner is not None and owner != rec["customer_id"]:
                self.report.fail(f"entry {entry_id} (customer {rec['customer_id'] or 'none'}) posts to account "
                                 f"{p[1]} of customer {owner}")
            sums[p[4]] += p[3]
            listed = self.assets.get(p[1])
            if listed is None:
                self.report.fail(f"entry {entry_id} posts to {p[1]}, which the file lists no account record for")
            elif listed != p[4]:
                self.report.fail(f"entry {entry_id} posts {p[4]} to {p[1]}, an account in {listed}")
        if any(sums.values()) or len(postings) < 2:
            self.report.fail(f"entry {entry_id} does not balance: {dict(sums)}")
        self.rerate_entry(rec)
        seal = self.seal
        if not self.past_first_seal and not self.in_unsealed:  # an export writes none there: nothing checks it
            self.report.fail(f"entry {entry_id} (line {number}) lies before the first seal's record: in no seal's "
                             "part of the file, nor among the unsealed entries")
        if self.in_unsealed or seal is None:
            self.report.unsealed += 1
            if self.in_unsealed and self.unsealed_from is not None and txid < self.unsealed_from:
                self.report.fail(f"entry {entry_id} lies among the unsealed entries, but its txid {txid} is below "
                                 f"{self.unsealed_from}, where they start")
            if entry_id in self.unsealed_ids:
                self.report.fail(f"entry {entry_id} appears twice among the unsealed entries (line {number})")
            elif entry_id in self.sealed_ids:
                self.report.fail(f"entry {entry_id} (line {number}) lies among the unsealed entries, but a sealed "
                                 "entry has the same id: an entry id is given once")
            self.unsealed_ids.add(entry_id)
            if rec.get("seal") is not None:
                self.report.fail(f"entry {entry_id} names seal {rec['seal']} but lies among the unsealed entries")
            if self.in_unsealed and self.in_window(rec["occurred_at"]) is False:
                start, end, _, _ = self.window  # type: ignore[misc]
                self.report.fail(f"entry {entry_id} occurred at {rec['occurred_at']}, outside the header's window "
                                 f"[{start}, {end}), yet it lies among the unsealed entries, which a window export "
                                 "takes from the window alone")
            return
        seal.seen.append(entry_id)
        seal.in_window = seal.in_window or self.in_window(rec["occurred_at"]) is not False
        if not seal.from_txid <= txid < seal.to_txid:  # the txid is in the hash; the seal's range is not
            self.report.fail(f"entry {entry_id} has txid {txid}, outside seal {seal.id}'s range "
                             f"[{seal.from_txid}, {seal.to_txid})")
        if rec.get("seal") != seal.id:
            self.report.fail(f"entry {entry_id} (line {number}) names seal {rec.get('seal')} but lies in seal "
                             f"{seal.id}'s part of the file")
        sealed = rec.get("sealed_hash")
        if sealed is None:
            self.report.fail(f"entry {entry_id} lies in seal {seal.id}'s range but was never sealed: "
                             "it was added after the seal")
            return
        recorded_at = rec.get("recorded_at")
        if _text(recorded_at) and _UTC.fullmatch(recorded_at) and (seal.last is None or recorded_at > seal.last[0]):
            seal.last = (recorded_at, entry_id)
        if (seal.sealed_at is not None and not seal.late and _text(recorded_at) and _UTC.fullmatch(recorded_at)
                and recorded_at > seal.sealed_at):  # one fixed-width UTC text: compared as text
            seal.late = True  # the first one named
            self.report.fail(f"seal {seal.id} is dated {seal.sealed_at}, before entry {entry_id} was recorded "
                             f"({recorded_at})")
        if seal.version >= 2 and recorded_at is None:
            self.report.fail(f"entry {entry_id} has no recorded_at, which the hash of seal {seal.id} "
                             f"(hash version {seal.version}) covers")
        elif entry_digest(entry_id, rec["key"], rec["request_hash"], rec["kind"], rec["customer_id"], rec["metadata"],
                          rec["txid"], rec["occurred_at"], postings, recorded_at=recorded_at,
                          version=seal.version).hex() != sealed:
            self.report.fail(f"entry {entry_id} was altered: its content does not match the hash "
                             f"seal {seal.id} stored for it")
        seal.hasher.update(bytes.fromhex(sealed))  # type: ignore[attr-defined]

    def close_seal(self) -> None:
        seal, self.seal = self.seal, None
        if seal is None:
            return
        expected, present = set(seal.expected), set(seal.seen)
        for i in expected:
            self.sealed_ids.add(i)
        for twice in sorted(i for i, n in Counter(seal.seen).items() if n > 1):
            self.report.fail(f"entry {twice} appears twice in seal {seal.id}'s part of the file")
        for missing in (i for i in seal.expected if i not in present):
            self.report.fail(f"entry {missing} sealed by seal {seal.id} is missing")
        in_file = [i for i in seal.seen if i in expected]
        in_seal = [i for i in seal.expected if i in present]
        for found, sealed in zip(in_file, in_seal, strict=False):  # duplicates are reported apart
            if found != sealed:
                self.report.fail(f"entries out of order in seal {seal.id}: entry {found} stands where "
                                 f"the seal has entry {sealed}")
                break
        for extra in sorted(present - expected):
            self.report.fail(f"entry {extra} is not one of the entries seal {seal.id} sealed")
        if self.window is not None and not seal.in_window:
            start, end, _, _ = self.window
            self.report.fail(f"seal {seal.id} holds no entry that occurred in the header's window [{start}, {end}): "
                             "a window export writes only the seals that hold one")
        if seal.sealed_at is not None:
            self.dated_ahead(seal)
            seal.hasher.update(seal.sealed_at.encode())  # type: ignore[attr-defined]
        if seal.hasher.hexdigest() != seal.chain_hash:  # type: ignore[attr-defined]
            self.report.fail(f"seal {seal.id}: its chain hash does not match the hashes of its entries"
                             + (" and its sealed_at" if seal.sealed_at is not None else ""))
        self.report.head = seal.chain_hash
        self.report.chain[seal.chain_hash] = seal.id


    def dated_ahead(self, seal: _Seal) -> None:
        """A version 4 seal dated more than DATED_AHEAD past the export (its header's exported_at,
        which no hash covers) or past this machine's clock, the earlier, by a date of its own: the
        seal before it (a date a hash covers) and its entries do not explain it (`audit verify`
        names it so against the database's clock; the seals after it take its date, and are not)."""
        at = seal.sealed_at
        # the earlier of the export's time (as the file says) and this machine's clock
        if self.ahead is not None and self.ahead <= self.now_ahead:
            bound, past = self.ahead, f"the export ({self.exported_at})"
        else:
            bound, past = self.now_ahead, f"this machine's clock ({self.now})"
        # the seal before it explains its date when a hash covers that date (version 4 on)
        explained = _text(seal.before) and seal.before_of is not None and seal.before_of[1] >= SEALED_AT_FROM
        if at is None or at <= bound or (explained and at <= seal.before):
            return
        if seal.last is not None and seal.last[0] == at:
            self.report.fail(f"entry {seal.last[1]} was recorded at {at}, more than a day past {past}: "
                             f"seal {seal.id} is dated by it, and the seals after it no earlier")
        elif _text(seal.before) and seal.before_of is not None and at <= seal.before:  # a date no hash covers
            self.report.fail(f"seal {seal.id} is dated {at}, more than a day past {past}, as seal "
                             f"{seal.before_of[0]} before it is, whose date (hash version {seal.before_of[1]}) "
                             "no hash covers: no clock dated it so, and the seals after it are dated no earlier")
        else:
            self.report.fail(f"seal {seal.id} is dated {at}, more than a day past {past}, and past the seal "
                             "before it and its entries: no clock dated it so, and the seals after it are dated "
                             "no earlier")


def _shown(value: object) -> str:
    """A header's value as JSON, cut at 40 characters."""
    shown = json.dumps(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _instant(text: str) -> datetime | None:
    """An RFC 3339 time (a header's bound, with its offset) or an entry's UTC time (without), or None."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _utc(at: datetime) -> str:
    """A time as the export writes one (one fixed-width UTC text: compared as text)."""
    return at.replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def verify_lines(lines: Iterable[bytes], now: datetime | None = None) -> OfflineReport:
    """Check an export given as its lines; every problem names the entry or the seal. `now`: this
    machine's clock (a seal dated more than DATED_AHEAD past it, or past the export, is named)."""
    verifier = _Verifier(now)
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            verifier.line(number, raw)
    if not verifier.ended:
        verifier.close_seal()
        verifier.report.fail("the file ends before its end record: it was cut short")
    return verifier.report


def verify_file(path: str) -> OfflineReport:
    with open(path, "rb") as f:
        return verify_lines(f)


def printable(text: str) -> str:
    """Text a report line names that someone else chose (an edited file's account codes, assets and
    customer ids; a caller's reference or request id in `tokentill audit`'s reports): each control
    or format character (a line break, CR, ESC, a bidi override) is written as an escape (`\\n`,
    `\\x1b`, `\\u202e`), so that it can neither start a line of its own (a forged "verified offline")
    nor drive the terminal (ESC [8m hid the lines after it, the failed verdict included)."""
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text)


def _print(report: OfflineReport, expect_head: str | None) -> None:
    for problem in report.problems:
        print(f"FAIL {printable(problem)}")
    if report.problem_count > len(report.problems):
        print(f"     ... and {report.problem_count - len(report.problems)} more")
    if not report.ok:
        print(f"offline verification FAILED: {report.problem_count} problem(s); first: {printable(report.problems[0])}")
        return
    print(f"verified offline: {report.entries:,} entries, {report.seals:,} seals intact; chain head "
          f"{report.head or '(no seal)'}")
    if report.unsealed:
        print(f"note: {report.unsealed:,} entries are not sealed yet, so no hash vouches for them")
    if report.untied:
        print(f"note: {report.untied:,} of {report.payers:,} re-rate payer rows are of re-rates with no entry in the "
              "file that recorded what it posted beyond them (one that posted no entry, one outside a window, or one "
              "written before it recorded that): nothing here ties them to a posting")
    # a window from the chain's first seal leaves none out before it (it was cautioned so all the same)
    left = ([] if report.from_genesis else ["before its first"]) + (
        [f"in {report.gaps:,} gap(s) between its seals"] if report.gaps else [])
    sealless = not report.whole and report.head is None  # no first seal to name, no head --expect-head can find
    if sealless and not report.entries:  # an empty window: valid, but nothing sealed says it was empty
        print("note: a window export of no entry (its header says so): an empty window is a valid export, but no "
              "seal in it vouches that the ledger has no entry in that window; verify a whole export to know")
    elif sealless:
        print("note: a window export (its header says so) with no seal: the seals before its entries are not in it, "
              "so nothing here shows that none was removed; verify a whole export to know")
    elif not report.whole and left:
        print(f"note: a window export (its header says so): the seals {' and '.join(left)} are not in it, so "
              "nothing here shows that none was removed; verify a whole export to know")
    if expect_head:
        found = _passes(report, expect_head)
        print(f"seal {found['seal']} has chain hash {expect_head}: the chain passes through it "
              f"({found['after']} seal(s) after it in the file)")
    elif not sealless:  # without a seal --expect-head fails (_expected): the note above says what to do
        print("note: compare the chain head with one obtained apart from this file (--expect-head)")


def _passes(report: OfflineReport, head: str) -> dict[str, object] | None:
    """The seal of the file that has `head` and how many follow it, or None: the text's line and
    the JSON's `expected_head` (which said only ok, and the last seal's head)."""
    if head not in report.chain:
        return None
    heads = list(report.chain)
    return {"chain_hash": head, "seal": report.chain[head], "after": len(heads) - 1 - heads.index(head)}


def _expected(report: OfflineReport, head: str) -> None:
    """Whether the file's chain passes through `head` (a seal's chain hash kept apart: published,
    mailed, from an earlier export), as `audit verify --expect-head` asks of a database: a seal
    must have it, the last or an earlier one (the chain grows, so a head kept at any earlier time
    still matches while the history up to it is the one it was taken of)."""
    if report.head is None and not report.whole:  # a window holds its entries' seals
        report.fail(f"the window export has no seal (its entries not sealed yet, or their seals cut out with them), "
                    f"so no chain in it ends at the expected head {head}: check a whole export against it")
    elif report.head is None:  # as `audit verify --expect-head` says of a database
        report.fail(f"the file has no seal, so no chain in it ends at the expected head {head} "
                    "(every seal cut out, or the head is another ledger's)")
    elif head not in report.chain and not report.whole and report.from_genesis and not report.gaps:
        report.fail(f"no seal in the window export has chain hash {head}: the window stops before that seal, the "
                    "chain was rewritten since that head was taken, or the head is another ledger's "
                    f"(the chain ends at {report.head})")
    elif head not in report.chain and not report.whole:  # its seals before its first, and in its gaps, left out
        report.fail(f"no seal in the window export has chain hash {head}: the window starts after that seal or "
                    "leaves it out in a gap, the chain was rewritten since that head was taken, or the head is "
                    f"another ledger's (the chain ends at {report.head}): check a whole export against it")
    elif head not in report.chain:
        report.fail(f"no seal in the file has chain hash {head}: the chain was rewritten since that head was "
                    "taken, the file stops before it, or the head is another ledger's "
                    f"(the chain ends at {report.head})")


def chain_hash(text: str) -> str:
    """A seal's chain hash as an argument (argparse type): 64 hex digits, read in lower case. A
    typo is a usage error, not an export that "does not end at the expected head"."""
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise argparse.ArgumentTypeError(f"not a chain hash (64 hex digits): {text!r}")
    return text.lower()


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when the export is intact, 1 naming the first problem, 2 when it cannot be read."""
    p = argparse.ArgumentParser(prog="python -m ledger.offline", description="verify a tokentill jsonl export")
    p.add_argument("file")
    p.add_argument("--expect-head", type=chain_hash, metavar="HEX",
                   help="a chain hash kept apart: a seal of the file must have it")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):  # an edited file's text, in a locale that lacks it: escaped
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        report = verify_file(args.file)
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.expect_head:
        _expected(report, args.expect_head)
    if args.json:
        print(json.dumps({"ok": report.ok, "entries": report.entries, "seals": report.seals,
                          "unsealed": report.unsealed, "payers": report.payers, "untied_payers": report.untied,
                          "head": report.head, "whole": report.whole,
                          "gaps": report.gaps, "from_genesis": report.from_genesis,
                          **({"expected_head": _passes(report, args.expect_head)} if args.expect_head else {}),
                          "problem_count": report.problem_count, "problems": report.problems}, indent=2))
    else:
        _print(report, args.expect_head)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

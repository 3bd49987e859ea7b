"""The SDK's local spool: settles and releases not yet delivered, kept on disk until re-sent.

One append-only JSON-lines file per client, under `spool_dir()`. An append writes one line, then
flushes and fsyncs; a torn last line (a crash mid-write) is ignored on read, and the next append
starts on a line of its own; an append that fails (a full disk) is cut back, so it spools
nothing. Removing records writes a temp file and renames it over the spool; a removal that fails
leaves the spool as it was, and no temp file.
Because the rename replaces the file, the locks live beside it: every change holds an flock on
`<name>.lock`, and a flush holds `<name>.flush-lock` from reading the records to removing the ones
delivered, so two flushers never send the same record and never drop one the other kept.
No secret is stored: a record names the key's id, or no key at all.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import platformdirs

from ledger.forksafe import in_forked_child

log = logging.getLogger("tokentill.spool")

ENV_DIR = "TOKENTILL_SPOOL_DIR"
SUFFIX = ".jsonl"
# A spool file, its lock or its `.rejected` that is a symlink is refused (ELOOP, an OSError), not
# followed: planted in a directory others may write, it would have records appended to (or a
# file made at) whatever it names.
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# How many bytes before a record's `rejected_from` its `rejected_tail` digests: the end of the
# filing there, its `idempotency_key` and `rejected_at` (a line's why, before its time, may be long).
TAIL = 4096
# The lock descriptors this process holds. A forked child closes its copies at once: an flock
# belongs to the open file, so an inherited copy kept the parent's lock held as long as the child
# lived (a replay flushing when gunicorn --preload forked its workers: every later flush "busy").
_HELD: set[int] = set()


def release_lock(fd: int) -> None:
    """Let go of a lock `Spool` took (`take_flush_lock`)."""
    _HELD.discard(fd)
    os.close(fd)


def _drop_inherited_locks() -> None:
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


in_forked_child(_drop_inherited_locks)


def spool_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where spool files live: `explicit`, else $TOKENTILL_SPOOL_DIR, else `<user data dir>/spool`.
    A leading `~` is the home directory, as in TOKENTILL_DATA_DIR (set where no shell expands it,
    a systemd unit's Environment=, it was a directory named `~` under the working directory)."""
    if explicit is not None:
        return Path(explicit).expanduser()
    from_env = os.environ.get(ENV_DIR)
    return Path(from_env).expanduser() if from_env else Path(platformdirs.user_data_dir("tokentill")) / "spool"


def spool_name(base_url: str, api_key: str, key_id: str | None = None) -> str:
    """A client's spool file name: a hash of its base URL and key id (or of a hash of its key)."""
    who = f"id:{key_id}" if key_id else "sha256:" + hashlib.sha256(api_key.encode()).hexdigest()
    return hashlib.sha256(f"{base_url.rstrip('/')}\n{who}".encode()).hexdigest()[:24] + SUFFIX


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One call to send again, exactly as first sent (same Idempotency-Key)."""

    method: str
    path: str
    body: Any
    idempotency_key: str
    reservation_id: str | None
    base_url: str
    key_id: str | None = None
    reason: str = ""  # the last failure, for a person reading the file
    spooled_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    # how long `<name>.rejected` was when this was spooled (set by `Spool.append_many`): a filing of
    # it is after that; None (spooled by hand, or by an SDK before it) when it cannot tell
    rejected_from: int | None = field(default=None, compare=False)
    # a digest of the bytes that file ended in then (`_tail`): one cut since (deleted, rotated,
    # truncated) and grown past that length again does not end there in them
    rejected_tail: str | None = field(default=None, compare=False)

    def line(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    @classmethod
    def parse(cls, line: bytes) -> SpoolRecord | None:
        try:
            data = json.loads(line)
            fields = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
            # a line without its time (by hand, another tool) has none: "", not when it was read,
            # which made it spooled just now (a replay took it for its own client's and never sent it)
            return cls(**{"spooled_at": "", **fields})
        except (ValueError, TypeError):
            return None


@dataclass(slots=True)
class FlushReport:
    delivered: int = 0
    rejected: int = 0        # refused for good (moved to `<name>.rejected`)
    kept: int = 0            # calls (idempotency keys) left in the spool afterwards
    busy: bool = False       # another flusher held the file; nothing was sent
    problems: list[str] = field(default_factory=list)
    error: str | None = None  # the file could not be read or updated (a full disk, say): it is as it was


class Spool:
    """One spool file and its locks."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.flush_lock_path = self.path.with_name(self.path.name + ".flush-lock")
        self.rejected_path = self.path.with_name(self.path.name + ".rejected")

    def append(self, record: SpoolRecord) -> None:
        """Add one record, durably: it is on disk when this returns."""
        self.append_many([record])

    def append_many(self, records: Collection[SpoolRecord]) -> None:
        """Add records with one write and one fsync (a group commit of the callers waiting)."""
        with self._locked():
            start, tail = _end(self.rejected_path)
            _append(self.path, b"".join(replace(record, rejected_from=start, rejected_tail=tail).line()
                                        for record in records))

    def records(self) -> list[SpoolRecord]:
        """The records, each idempotency key once (its first): a call spooled twice under its key
        (a settle sent again by hand while the server was down) is one call, sent once."""
        with self._locked():
            records = self._read()[0]
        first: dict[str, SpoolRecord] = {}
        for record in records:
            first.setdefault(record.idempotency_key, record)
        return list(first.values())

    def remove(self, keys: Collection[str], rejected: Collection[tuple[SpoolRecord, str]] = ()) -> int:
        """Strike off the records with these idempotency keys, keeping `rejected` ones aside with why;
        returns how many calls (idempotency keys) are left, each sent once however often spooled.
        A refusal is filed before the spool is rewritten, so a crash between the two loses none,
        and a key filed already since its last spooling is not filed again: a rewrite that failed (a
        full disk) kept the record, refused again on the next flush, and it was filed twice."""
        with self._locked():
            records, damaged = self._read()
            refused = {r.idempotency_key for r, _ in rejected}
            filed = self._filed(refused, records)
            last = {r.idempotency_key: r for r in records}  # a key's last spooling: the one filed
            fresh = [(_as_spooled_last(r, last), why) for r, why in rejected if r.idempotency_key not in filed]
            if fresh:
                stamp = datetime.now(UTC).isoformat()
                lines = b"".join(json.dumps({**_filed_fields(r), "rejected": why, "rejected_at": stamp},
                                            ensure_ascii=False).encode() + b"\n" for r, why in fresh)
                _append(self.rejected_path, lines)
            kept = [r for r in records if r.idempotency_key not in keys]
            if len(kept) != len(records) or damaged:
                self._rewrite(kept)
            return len({r.idempotency_key for r in kept})

    def _filed(self, keys: set[str], records: list[SpoolRecord]) -> set[str]:
        """Which of `keys` `<name>.rejected` holds a filing of since their last spooling (a symlink
        refused, as for an append), read from its end back (damaged lines skipped). That file only
        grows, and was read whole, every line parsed, on each flush with a refusal (50 MiB and 0.6 s
        of CPU for 50 MB of old refusals): a record's filing is past the length the file had when
        it was spooled (`rejected_from`), so a key counts as filed by a line from its `_filed_from`
        on, and the read stops at the least of those. By where the lines stand, not by their
        `rejected_at`: read back to a day before the record's `spooled_at`, it stopped short of the
        record's own filing when the filing's clock was more than a day behind the spooling's (set
        back, or fast when it spooled), and the record was filed twice. From the key's LAST
        spooling: a call spooled again after its filing, while the record filed was still spooled
        (its rewrite failed), took that filing for the new spooling's too, and its refusal was
        never filed. A file cut since (`_filed_from`) is read whole."""
        if not keys:
            return set()
        try:
            fd = os.open(self.rejected_path, os.O_RDONLY | NOFOLLOW)
        except FileNotFoundError:
            return set()
        found: set[str] = set()
        try:
            since = _filed_from(keys, records, fd)
            for at, line in _lines_back(fd, start=min(since.values(), default=0)):
                try:
                    data = json.loads(line)
                except ValueError:
                    continue
                key = data.get("idempotency_key") if isinstance(data, dict) else None
                if isinstance(key, str) and key in keys and at >= since.get(key, 0):
                    found.add(key)
                    if found == keys:
                        break
        finally:
            os.close(fd)
        return found

    def flush(self, send: Callable[[SpoolRecord], tuple[str, str]], *, wait: bool = True) -> FlushReport:
        """Send every record once; `send` answers (outcome, note) as `delivery.flush_outcome` does."""
        fd = self._acquire(self.flush_lock_path, wait)
        if fd is None:
            return FlushReport(busy=True)
        try:
            run = _FlushRun()
            for record in self.records():
                if not run.add(record, *send(record)):
                    break
            run.report.kept = self.remove(run.done, run.rejected)
            return run.report
        finally:
            release_lock(fd)

    async def aflush(self, send: Callable[[SpoolRecord], Awaitable[tuple[str, str]]], *,
                     wait: bool = True) -> FlushReport:
        """`flush` for asyncio: the file work runs in a thread."""
        fd = await self.atake_flush_lock(wait)
        if fd is None:
            return FlushReport(busy=True)
        try:
            run = _FlushRun()
            for record in await asyncio.to_thread(self.records):
                if not run.add(record, *await send(record)):
                    break
            run.report.kept = await asyncio.to_thread(self.remove, run.done, run.rejected)
            return run.report
        finally:
            release_lock(fd)

    def take_flush_lock(self) -> int | None:
        """The flush lock's descriptor (close it to let go), or None when another flusher holds it."""
        return self._acquire(self.flush_lock_path, False)

    async def atake_flush_lock(self, wait: bool = False) -> int | None:
        """`take_flush_lock` for asyncio (`wait`: until the other flusher lets go). The flock waits
        in a worker thread that no cancellation stops: a lock it takes after its caller was
        cancelled (a timeout, a close) is let go there and then, never kept for the process's life."""
        handoff = threading.Lock()
        given_up = False
        taken: list[int] = []

        def take() -> int | None:
            fd = self._acquire(self.flush_lock_path, wait)
            with handoff:
                if fd is not None and given_up:
                    release_lock(fd)
                    return None
                if fd is not None:
                    taken.append(fd)
                return fd

        try:
            return await asyncio.to_thread(take)
        except BaseException:  # cancelled: a lock already taken is let go; one taken later, by `take`
            with handoff:
                given_up = True
                for fd in taken:
                    release_lock(fd)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = self._acquire(self.lock_path, True)
        try:
            yield
        finally:
            release_lock(fd)  # closing the descriptor releases the flock

    def _acquire(self, lock_path: Path, wait: bool) -> int | None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        _HELD.add(fd)
        return fd

    def _read(self) -> tuple[list[SpoolRecord], int]:
        """The records, and how many lines were damaged (a torn write) and skipped."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], 0
        records, damaged = [], 0
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            record = SpoolRecord.parse(line)
            if record is None:
                damaged += 1
                log.warning("spool %s: skipped a damaged line (a write cut short)", self.path)
            else:
                records.append(record)
        return records, damaged

    def _rewrite(self, records: list[SpoolRecord]) -> None:
        if not records:
            self.path.unlink(missing_ok=True)
            _fsync_dir(self.path.parent)
            return
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            try:
                _write_all(fd, b"".join(r.line() for r in records))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:  # a full disk, say: the spool stays as it was, and no temp file
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.path.parent)


class _FlushRun:
    """Tallies one flush: which keys to strike off, which records were refused for good."""

    def __init__(self) -> None:
        self.report = FlushReport()
        self.done: set[str] = set()
        self.rejected: list[tuple[SpoolRecord, str]] = []

    def add(self, record: SpoolRecord, outcome: str, note: str) -> bool:
        """Count one answer; False when the server is unreachable, so the rest wait for next time."""
        if outcome == "delivered":
            self.report.delivered += 1
            self.done.add(record.idempotency_key)
        elif outcome == "rejected":
            self.report.rejected += 1
            self.done.add(record.idempotency_key)
            self.rejected.append((record, note))
        else:
            self.report.problems.append(f"{record.method} {record.path}: {note}")
        return outcome != "unreachable"


def _append(path: Path, data: bytes) -> None:
    """Append `data` on a line of its own (after a torn last line, a crash mid-write), fsynced. A
    write that fails (a full disk) is cut back, so none of it is there, not half a line."""
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o600)
    size = os.fstat(fd).st_size
    try:
        torn = not created and not _ends_with_newline(fd)
        _write_all(fd, (b"\n" if torn else b"") + data)
        os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)


def _end(path: Path) -> tuple[int, str | None]:
    """A file's length and `_tail` there ((0, None): none there, or not a file: a symlink, which is
    refused, a FIFO, opened without waiting for a writer)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW)
    except OSError:
        return 0, None
    try:
        info = os.fstat(fd)
        return (info.st_size, _tail(fd, info.st_size)) if stat.S_ISREG(info.st_mode) else (0, None)
    finally:
        os.close(fd)


def _tail(fd: int, end: int) -> str:
    """A digest of the TAIL bytes before byte `end` (fewer at the start): the last filing's key and
    time (`rejected_at`, to the microsecond), which another file, or this one cut and grown again,
    does not hold there."""
    first = max(0, end - TAIL)
    return hashlib.sha256(os.pread(fd, end - first, first)).hexdigest()[:32]


def _filed_from(keys: set[str], records: list[SpoolRecord], fd: int) -> dict[str, int]:
    """Where in `<name>.rejected` (open at `fd`) a filing of each key's spooled records may start:
    the greatest `rejected_from` of its spoolings (a filing before the last one is of an earlier
    spooling: the call spooled again after it is refused again, and filed again). 0 (all of it)
    for a key not in the spool at all (a background settle sent from memory, its spool write
    failed), and for a spooling with none or naming a place the file no longer is as it was
    (shorter than that, or not ending there in `rejected_tail`: deleted, rotated or truncated by
    hand since, a new file's filings grown past that length read from there missed the record's
    own, and it was filed again)."""
    size = os.fstat(fd).st_size
    tails: dict[int, str] = {}
    starts: dict[str, int] = dict.fromkeys(keys, 0)
    for record in records:
        if record.idempotency_key in keys:
            at = record.rejected_from
            if not isinstance(at, int) or isinstance(at, bool) or not 0 <= at <= size:
                at = 0
            else:
                if at not in tails:
                    tails[at] = _tail(fd, at)
                at = at if record.rejected_tail == tails[at] else 0
            starts[record.idempotency_key] = max(at, starts[record.idempotency_key])
    return starts


def _as_spooled_last(record: SpoolRecord, last: dict[str, SpoolRecord]) -> SpoolRecord:
    """The call sent (a key's first record), with the `spooled_at` and `reason` of its last
    spooling, the one its filing is of: a call spooled again while its filed record was kept (a
    rewrite refused) was filed again with the first spooling's, a copy of the first filing."""
    again = last.get(record.idempotency_key, record)
    return replace(record, spooled_at=again.spooled_at, reason=again.reason)


def _filed_fields(record: SpoolRecord) -> dict[str, Any]:
    """A record as `<name>.rejected` keeps it: the call, without where the spool read back from."""
    fields = asdict(record)
    del fields["rejected_from"], fields["rejected_tail"]
    return fields


def _lines_backward(fd: int, block: int = 64 * 1024, start: int = 0) -> Iterator[bytes]:
    """The file's non-empty lines from byte `start` on, last first, read a block at a time from its end."""
    return (line for _, line in _lines_back(fd, block, start))


def _lines_back(fd: int, block: int = 64 * 1024, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """`_lines_backward`, each line with the byte it starts at."""
    end = os.fstat(fd).st_size
    carry = b""
    while end > start:
        first = max(start, end - block)
        chunk = os.pread(fd, end - first, first)  # a regular file's is whole, but past its end
        if len(chunk) != end - first:  # cut short meanwhile (by hand): no more to read
            return
        parts = (chunk + carry).split(b"\n")
        carry, end = parts[0], first
        at, placed = first + len(parts[0]) + 1, []
        for part in parts[1:]:
            placed.append((at, part))
            at += len(part) + 1
        yield from ((at, line) for at, line in reversed(placed) if line.strip())
    if carry.strip():
        yield start, carry


def _ends_with_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""`tokentill audit export`, `audit verify --file` (offline) and `audit reconcile`: the auditor's
command-line tools. Export reads one snapshot through server-side cursors; the offline verify
imports nothing of the database layer."""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from api.settings import Settings
from ledger.offline import printable
from pricing.parse import rounded_up, uppercase_z


def parse_time(raw: str | None) -> datetime | None:
    """An RFC 3339 time or a date (midnight UTC); naive times are UTC. A bad one is exit 2, as any
    bad argument (reconcile's exit 1 means differences). A fraction finer than a microsecond is
    read as the next microsecond: entries are kept to the microsecond, and as a bound (`>= from`,
    `< to`) that keeps exactly the same ones (datetime drops the 7th to 9th digits)."""
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(uppercase_z(raw))
        return rounded_up((value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC), raw)
    except (ValueError, OverflowError):  # OverflowError: a year-1 time east of UTC
        print(f"error: not a time: {raw!r} (give RFC 3339, e.g. 2026-11-01T00:00:00Z, or a date)", file=sys.stderr)
        raise SystemExit(2) from None


def parse_window(start: str | None, end: str | None) -> tuple[datetime | None, datetime | None]:
    """--from and --to, [from, to): `--to` before `--from`, to the 9th digit given, is exit 2 (as
    GET /v1/journal's 422 names `to`); `--to` equal to `--from`, or after it within one microsecond
    (both read as the next one), is an empty window, as the journal answers it (the CLI refused it)."""
    since, until = parse_time(start), parse_time(end)
    if since is not None and until is not None and _instant(end, until) < _instant(start, since):
        print("error: --to must not be before --from", file=sys.stderr)
        raise SystemExit(2)
    return since, until


def _instant(raw: str, read: datetime) -> tuple[datetime, int]:
    """A bound as given, to its 9th digit, as GET /v1/journal compares `to` with `from`: the
    microsecond it lies in (`read`, parse_time's, is the next one where digits past it were given)
    and the nanoseconds past it."""
    finer = re.search(r"\.[0-9]{6}([0-9]+)", raw)
    digits = finer.group(1) if finer else ""
    return read - timedelta(microseconds=1) if digits.strip("0") else read, int(digits[:3].ljust(3, "0"))


class StderrBar:
    """A progress bar on stderr, redrawn at most five times a second; only made for a terminal."""

    def __init__(self, label: str, unit: str) -> None:
        self.label, self.unit = label, unit
        self.started = self.drawn = time.monotonic()

    @classmethod
    def on_terminal(cls, label: str, unit: str = "entries") -> StderrBar | None:
        return cls(label, unit) if sys.stderr.isatty() else None

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.drawn < 0.2 and done < total:
            return
        self.drawn = now
        share = min(1.0, done / total) if total else 1.0
        rate = done / max(now - self.started, 1e-9)
        bar = "#" * int(share * 30)
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {share:4.0%} {done:,}/{total:,} {self.unit} "
                         f"{rate:,.0f}/s ")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


@contextmanager
def output(path: str | None):
    """stdout, or a file that appears only once complete (written beside it, then renamed). Either
    gets UTF-8 with the lines exactly as written: stdout's own encoding is the locale's (ASCII or
    Latin-1 could not hold a request id, and stopped the export half-way) and its newlines the
    platform's."""
    if path is None and getattr(sys.stdout, "buffer", None) is None:  # a stand-in without bytes (tests)
        yield sys.stdout
        return
    if path is None:
        sys.stdout.flush()
        stream = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
        try:
            yield stream
            stream.flush()
        finally:
            stream.detach()  # sys.stdout keeps its buffer
        return
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tokentill-export-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def export(args: argparse.Namespace, settings: Settings) -> int:
    from api.runtime import open_database
    from ledger import export as exporting
    from pricing.money import CURRENCY_MINOR_UNITS

    window = exporting.Window(*parse_window(args.start, args.end))
    handle = open_database(settings, migrate=False)
    started, cpu = time.monotonic(), time.process_time()
    try:
        with exporting.connect(handle.url) as conn, output(args.out) as out:
            progress = StderrBar.on_terminal(f"export {args.format}",
                                             "postings" if args.format == "csv" else "entries")
            summary = exporting.WRITERS[args.format](conn, out, window, progress, CURRENCY_MINOR_UNITS)
    except exporting.NameClash as exc:  # nothing written: --out does not appear
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a folder that does not exist, a full disk (psycopg's errors are not OSError)
        print(f"error: cannot write {args.out or 'to stdout'}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        handle.close()
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    counted = (f"{summary.entries:,} entries" if summary.entries is not None
               else f"{summary.postings:,} postings")
    sealed = (f", {summary.seals:,} seals, {summary.unsealed:,} entries not sealed yet"
              if args.format == "jsonl" else "")
    print(f"exported {counted}{sealed} as {args.format} in {seconds:.1f}s ({cpu:.1f}s of CPU)"
          f"{' to ' + args.out if args.out else ''}", file=sys.stderr)
    return 0


def readable_stdout() -> None:
    """References are the caller's text: a character the locale's encoding lacks is written as an
    escape (\\xe9) rather than stopping the report with a UnicodeEncodeError."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")


def verify_file(args: argparse.Namespace) -> int:
    from ledger import offline

    return offline.main([args.file, *(["--expect-head", args.expect_head] if args.expect_head else []),
                         *(["--json"] if args.json else [])])


def reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from api.cli import _with_db
    from pricing.money import DEFAULT_SCALE, format_money
    from wallets.reconcile import PaymentFileError, asset_scales, ledger_topups, read_payments, windowed
    from wallets.reconcile import reconcile as match

    start, end = parse_window(args.start, args.end)

    async def read(db):
        async def work(conn):
            return await ledger_topups(conn), await asset_scales(conn)
        return await db.read(work)

    try:
        with open(args.payments, newline="", encoding="utf-8-sig") as f:
            ledger, scales = _with_db(settings, read)
            paid, skipped = read_payments(f, lambda currency: scales.get(currency, DEFAULT_SCALE))
    except OSError as exc:
        print(f"error: cannot read {args.payments}: {exc.strerror}", file=sys.stderr)
        return 2
    except PaymentFileError as exc:
        print(f"error: {args.payments}: {exc}", file=sys.stderr)
        return 2
    result = match(*windowed(ledger, paid, start, end))

    def money(p) -> str:
        scale = scales.get(p.currency, DEFAULT_SCALE)
        return f"{format_money(p.amount, p.currency, scale)} {p.currency}"

    report = {
        "matched": [{"reference": m.reference, "amount": money(m), "ledger": m.where, "file": t.where}
                    for m, t in result.matched],
        "amount_mismatches": [{"reference": m.reference, "ledger_amount": money(m), "file_amount": money(t),
                               "ledger": m.where, "file": t.where} for m, t in result.mismatched],
        "only_in_ledger": [{"reference": p.reference, "amount": money(p), "ledger": p.where}
                           for p in result.only_in_ledger],
        "only_in_file": [{"reference": p.reference, "amount": money(p), "file": p.where} for p in result.only_in_file],
        "duplicates": result.duplicates,
        "skipped_rows": dict(skipped),
        "ok": result.clean,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        readable_stdout()
        print(f"matched: {len(result.matched)} top-ups, invoice payments and refunds")
        for (mine, theirs), m in zip(result.mismatched, report["amount_mismatches"], strict=True):
            label = "AMOUNT" if mine.currency == theirs.currency else "CURRENCY"
            print(f"{label} MISMATCH reference {printable(m['reference'])}: "
                  f"ledger {m['ledger_amount']} ({m['ledger']}), "
                  f"file {m['file_amount']} ({m['file']})")
        for m in report["only_in_ledger"]:
            print(f"ONLY IN LEDGER  reference {printable(m['reference']) or '(none)'}: {m['amount']}, {m['ledger']}")
        for m in report["only_in_file"]:
            print(f"ONLY IN FILE    reference {printable(m['reference'])}: {m['amount']}, {m['file']}")
        for d in result.duplicates:
            print(f"DUPLICATE       {d}")
        if report["skipped_rows"]:
            print("skipped rows that are not payments or refunds: " + ", ".join(
                f"{printable(kind)} {n}" for kind, n in sorted(report["skipped_rows"].items())))
        differences = (len(result.mismatched) + len(result.only_in_ledger) + len(result.only_in_file)
                       + len(result.duplicates))
        print("reconciled: every top-up, invoice payment and refund matches a row, and every row one of them"
              if result.clean else f"reconciliation FAILED: {differences} difference(s)")
    return 0 if result.clean else 1

"""The `tokentill` command line: serve, migrate, audit verify, prices import, bench."""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

from api.gateway.config import digits
from api.settings import MAX_WORKERS, Settings, worker_count
from ledger.offline import chain_hash


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    workers = settings.workers if args.workers is None else args.workers
    if workers > 1:
        from api.workers import serve_workers

        return serve_workers(settings, workers, host=args.host, port=args.port, access_log=args.access_log)
    from api.app import create_app
    from api.runtime import check_connection_budget, check_spool, log_to_stderr, open_database
    from api.server import ACCEPT_BURST, check_connection_room, open_file_limit, serve
    from api.workers import exit_quietly_on_signals, listening_socket

    check_connection_room(settings, open_file_limit())
    log_to_stderr(settings)
    # SIGTERM or SIGINT: an ordinary exit, status 0, from the first line on. uvicorn shuts down
    # gracefully, then re-raises the signal it caught; during start-up open_database stops the
    # embedded cluster it started (when this is its last user), and once it is open the finally below.
    exit_quietly_on_signals()
    # The port first, as `--workers N` does: one line and exit 1 when another process holds it
    # (uvicorn exits 3, this command's code for a database it cannot reach), before the database.
    listening_socket(args.host, args.port, ACCEPT_BURST).close()
    handle = open_database(settings)
    try:
        check_spool(handle.url, settings)
        check_connection_budget(handle.url, settings, processes=1)
        app = create_app(settings, handle.url, cluster=handle.cluster)
        serve(app, settings, host=args.host, port=args.port, log_level=settings.log_level.lower(),
              access_log=args.access_log)
    finally:
        handle.close()
    return 0


def _gateway(args: argparse.Namespace, settings: Settings) -> int:
    """`serve`, with the gateway's upstreams from the command line (their keys stay in the environment)."""
    from dataclasses import replace

    given = {name: url for name, url in (("openai_url", args.upstream_openai),
                                         ("anthropic_url", args.upstream_anthropic)) if url}
    changes = {**given, **({"default_max_output_tokens": args.max_output_tokens} if args.max_output_tokens else {}),
               **({"settle": args.settle} if args.settle else {})}
    return _serve(args, replace(settings, gateway=replace(settings.gateway, **changes)))


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from api.runtime import open_database, upgrade

    handle = open_database(settings, migrate=False)
    try:
        print(f"migrated to {upgrade(handle, settings, to=args.to)}")
    finally:
        handle.close()
    return 0


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    from api.restore import restore

    return restore(settings, Path(args.file))


def _audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    timings = getattr(args, "timings", False)  # a Namespace made by hand may not have it
    if args.file:
        if timings:  # one pass over the file, not check by check
            print("tokentill audit verify: --timings times the database's checks; --file verifies in one pass",
                  file=sys.stderr)
            return 2
        from api.audit_cli import verify_file

        return verify_file(args)
    from functools import partial

    from ledger.audit import Report, head_check, timed
    from wallets.audit import full_verify

    async def work(conn):
        report = await full_verify(conn)
        if not args.expect_head:
            return report
        return Report((*report.checks, await timed(partial(head_check, head=args.expect_head), conn)))

    report = _with_db(settings, lambda db: db.read(work))
    seconds = [(c.micros or 0) / 1_000_000 for c in report.checks]  # each check's, in order
    took = sum(seconds)
    if args.json:
        print(json.dumps({"ok": report.ok, "checks": [
            {"name": c.name, "ok": c.ok, "detail": c.detail, "problems": list(c.problems),
             **({"seconds": round(took_c, 3)} if timings else {})}
            for c, took_c in zip(report.checks, seconds, strict=True)],
            **({"seconds": round(took, 3)} if timings else {})}, indent=2))
    else:
        from api.audit_cli import printable, readable_stdout  # a problem may name a caller's text

        readable_stdout()  # a charge's request id, say: escaped where the locale lacks a character
        for c, took_c in zip(report.checks, seconds, strict=True):
            timing = f" [{took_c:.3f} s]" if timings else ""
            print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {printable(c.detail)}{timing}")  # "first: <problem>"
            for p in c.problems:
                print(f"       {printable(p)}")
        if timings:
            print(f"checks took {took:.3f} s in all")
        print("verified: the ledger is whole" if report.ok else "verification FAILED")
    return 0 if report.ok else 1


def _audit_tool(args: argparse.Namespace, settings: Settings) -> int:
    from api import audit_cli

    return getattr(audit_cli, args.audit)(args, settings)


def port(text: str) -> int:
    """A TCP port (argparse type): 0 (any free one) to 65535."""
    if not digits(text) or int(text) > 65535:  # isdigit alone: any Unicode digit
        raise argparse.ArgumentTypeError(f"not a port: {text!r} (0 to 65535)")
    return int(text)


def at_least_one(text: str) -> int:
    """A count of at least 1 (argparse type)."""
    if not digits(text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of at least 1: {text!r}")
    return int(text)


def workers(text: str) -> int:
    """A number of server processes (argparse type): 1 to MAX_WORKERS, as TOKENTILL_WORKERS."""
    value = worker_count(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"not a number of processes from 1 to {MAX_WORKERS}: {text!r}")
    return value


def seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse type)."""
    from api.gateway.config import seconds_number

    value = seconds_number(text) or 0.0  # ASCII digits only, as the settings' durations
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def revision(text: str) -> str:
    """A migration of this tokentill's (argparse type)."""
    from migrations.runner import revisions

    known = revisions()
    if text not in known:
        raise argparse.ArgumentTypeError(f"no migration {text!r} (they go from {known[0]} to {known[-1]})")
    return text


def upstream(text: str) -> str:
    """An upstream's base URL (argparse type), as api.gateway.config.upstream_url takes it."""
    from api.gateway.config import upstream_url

    try:
        return upstream_url({"URL": text}, "URL", text)
    except SystemExit:
        raise argparse.ArgumentTypeError(f"not an http(s) URL with a host and no query: {text!r}") from None


def instant(text: str) -> datetime:
    """An argument's time, in the HTTP API's language (RFC 3339 with an offset: formats.DATE_TIME,
    read by pricing.parse.parse_time); anything else is a usage error (argparse type)."""
    from api.routes.formats import DATE_TIME, DATE_TIME_TEXT, matches
    from pricing.errors import PriceBookValidationError
    from pricing.parse import parse_time

    if matches(DATE_TIME, text):
        try:
            return parse_time(text, "time")
        except PriceBookValidationError:  # in the pattern, not in the calendar (2026-02-30)
            pass
    elif matches(DATE_TIME, text + "Z"):
        raise argparse.ArgumentTypeError(f"{text!r} has no offset (must be {DATE_TIME_TEXT})")
    raise argparse.ArgumentTypeError(f"not a time: {text!r} (must be {DATE_TIME_TEXT})")


def starting(text: str) -> datetime:
    """An argument's time something takes effect from: as instant, but a fraction finer than a
    microsecond read as the next microsecond (pricing.parse.rounded_up), as the HTTP API reads an
    effective_from: .0000005 was .000000, and changed prices rated a call at .000000."""
    from pricing.parse import rounded_up

    return rounded_up(instant(text), text)


def _billing_close(args: argparse.Namespace, settings: Settings) -> int:
    from pricing.money import format_money
    from wallets.billing import close_clock, close_due
    from wallets.engine import utc_now
    from wallets.errors import WalletValidationError

    now = utc_now()
    try:
        until = close_clock(args.until, now, early=args.early, early_as="--early")
    except WalletValidationError as exc:
        print(f"tokentill billing close: --{exc}", file=sys.stderr)
        return 2
    refused: list[tuple[str, str]] = []
    closed = _with_db(settings, lambda db: close_due(db, until, failures=refused, written=now))
    for c in closed:
        print(f"{c.number}  {c.customer_id}  {c.period}  total {format_money(c.total, c.currency)}  "
              f"due {format_money(c.amount_due, c.currency)}")
    print(f"closed {len(closed)} period(s)")
    if refused:  # each logged as it failed; it exited 0 with an invoice missing
        # (a customer refused is tried again in each round)
        failed = list(dict.fromkeys(f"the period of {customer}: {reason}" for customer, reason in refused))
        more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
        print(f"error: {len(failed)} period(s) not closed: {failed[0]}{more}", file=sys.stderr)
        return 1
    return 0


def _with_db(settings: Settings, work):
    """Run `work(db)` against the configured (or embedded) database, migrated."""
    from api.runtime import open_database
    from ledger.db import connect

    handle = open_database(settings)

    async def run():
        db = connect(handle.url, pool_size=1)
        try:
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    finally:
        handle.close()


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    from api import keys
    from ledger.errors import LedgerError
    from wallets.core.state import wire_time  # created_at as POST /v1/api-keys answers it: UTC, Z

    try:
        if args.keys == "create":
            keys.validate(args.scope, args.customer or [], args.name)  # before any connection: a usage error
            key, secret = _with_db(settings, lambda db: db.run(
                lambda conn: keys.create(conn, args.scope, args.customer or [], args.name)))
            print(json.dumps({"id": key.id, "key": secret, "scope": key.scope, "customers": list(key.customers),
                              "name": key.name, "created_at": wire_time(key.created_at), "revoked_at": None}))
            print("store the key now: it is not shown again", file=sys.stderr)
        elif args.keys == "list":
            from api.audit_cli import printable, readable_stdout  # a name is its maker's text

            listed = _with_db(settings, lambda db: db.read(keys.list_keys))
            readable_stdout()
            for key in listed:
                state = f"revoked {wire_time(key.revoked_at)}" if key.revoked_at else "active"
                print(f"{key.id}  {key.scope:<20} {','.join(key.customers) or '-':<20} {state}  {printable(key.name)}")
        else:
            keys.check_id(args.id)  # before any connection
            key = _with_db(settings, lambda db: db.run(lambda conn: keys.revoke(conn, args.id)))
            print(f"revoked {key.id}")
    except LedgerError as exc:
        from api.audit_cli import printable  # a key id or a name is its giver's text (ESC, a line break)

        fields = exc.context.get("fields") or []
        print("error: " + printable(exc.detail + "".join(f"; {f['field']}: {f['message']}" for f in fields)),
              file=sys.stderr)
        return 2
    return 0


def _prices_import(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC

    from wallets.price_import import import_genai_prices

    # without --effective-from: now, as the import takes it (behind a fence of the lanes)
    reports = _with_db(settings, lambda db: import_genai_prices(db, args.provider, args.model, args.effective_from,
                                                                datetime.now(UTC).date().isoformat()))
    if not reports:
        print(f"error: genai-prices has no {'model ' + args.model if args.model else 'provider ' + str(args.provider)}",
              file=sys.stderr)
        return 2
    for r in reports:
        if args.json:
            print(json.dumps(r.as_dict()))
            continue
        state = f"{len(r.created)} new version(s)" if r.created else "unchanged"
        print(f"{r.book_id}: {r.models} models, {r.rules} rules in force; {state}"
              + (f"; not expressed: {', '.join(r.skipped)}" if r.skipped else ""))
        for problem in r.conflicts:
            print(f"  conflict: {problem}", file=sys.stderr)
    return 1 if any(r.conflicts for r in reports) else 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from api import demo

    return demo.main(args, settings)


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    if args.target == "rating":
        from api.bench import rating_bench

        return rating_bench.main(args)
    from api.bench import ledger_bench

    if args.target == "ledger":
        return ledger_bench.main(args, settings)
    if args.target == "lifecycle":
        from api.bench import lifecycle_bench

        return lifecycle_bench.main(args, settings)
    if args.target == "faults":
        from api.bench import faults

        return faults.main(args)
    if args.target == "gateway":
        from api.bench import gateway_bench

        return gateway_bench.main(args, settings)
    if args.target == "budgets":
        from api.bench import budget_bench

        return budget_bench.main(args, settings)
    if args.target == "export":
        from api.bench import export_bench

        return export_bench.main(args, settings)
    if args.target == "ingest":
        from api.bench import ingest_bench

        return ingest_bench.main(args, settings)
    if args.target == "console":
        from api.bench import console_bench

        return console_bench.main(args, settings)
    if args.target == "invoices":
        from api.bench import invoice_bench

        return invoice_bench.main(args, settings)
    raise SystemExit(f"unknown benchmark {args.target}")


def _spool_flush(args: argparse.Namespace, _: Settings) -> int:
    import os

    from api.bearer import key_problem
    from api.client import SpoolServersError, base_url_problem, flush_spool_dir
    from api.spool import ENV_DIR, SUFFIX, spool_dir

    key = args.key or os.environ.get("TOKENTILL_API_KEY", "")
    # one a header cannot carry (é, a newline) was httpx's traceback, or every record kept
    if problem := key_problem("--key" if args.key else "TOKENTILL_API_KEY", key):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if not key:
        print("error: give --key or set TOKENTILL_API_KEY", file=sys.stderr)
        return 2
    for flag, given in (("--url", args.url), ("--server", args.server)):
        if given and (problem := base_url_problem(given, flag)) is not None:  # was the client's ValueError traceback
            print(f"error: {problem}", file=sys.stderr)
            return 2
    # a file, or a directory that is not there, was an empty spool: nothing printed, exit 0
    directory = spool_dir(args.dir)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        if args.dir is not None or os.environ.get(ENV_DIR):  # not the default, never made until a spool is
            print(f"error: {'--dir' if args.dir is not None else ENV_DIR}: {directory}: no such directory",
                  file=sys.stderr)
            return 2
        names = []
    except OSError as exc:
        print(f"error: {'--dir' if args.dir is not None else ENV_DIR}: {directory}: "
              f"{exc.strerror or type(exc).__name__}", file=sys.stderr)
        return 2
    if not any(name.endswith(SUFFIX) for name in names):
        print(f"nothing to flush in {directory}")
        return 0
    left = 0
    try:  # the key goes to the server it is given for only
        flushed = flush_spool_dir(directory, key, url=args.url, server=args.server)
    except SpoolServersError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path, report in flushed:
        if report.busy:
            print(f"{path}: another flush is at work on it; skipped")
            left += 1
            continue
        if report.error is not None:  # what was delivered is answered by its key when sent again
            print(f"{path}: not flushed: {report.error}")
            left += 1
            continue
        print(f"{path}: delivered {report.delivered}, refused {report.rejected}, left {report.kept}")
        for problem in report.problems:
            print(f"  kept: {problem}")
        left += report.kept
    return 1 if left else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tokentill",
        description="tokentill: a double-entry ledger for billing LLM usage, on PostgreSQL. "
        "Without TOKENTILL_DATABASE_URL it starts an embedded PostgreSQL under TOKENTILL_DATA_DIR.")
    p.add_argument("--version", action="version", version=f"tokentill {version('tokentill')}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="migrate, then serve the HTTP API (and the metering gateway)")
    gateway = sub.add_parser("gateway", help="serve, with the metering gateway's upstreams given here "
                             "(their keys: $TOKENTILL_UPSTREAM_OPENAI_KEY, $TOKENTILL_UPSTREAM_ANTHROPIC_KEY)")
    for command in (serve, gateway):
        command.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
        command.add_argument("--port", type=port, default=8000, help="default: 8000; 0: any free port")
        command.add_argument("--access-log", action="store_true", help="log every request")
        command.add_argument("--workers", type=workers, metavar="N", help="server processes on the port, "
                             "under one supervisor (default: $TOKENTILL_WORKERS, else 1)")
    serve.set_defaults(func=_serve)
    gateway.add_argument("--upstream-openai", type=upstream, metavar="URL", help="the OpenAI-compatible upstream, "
                         "as its SDK's base_url (default: $TOKENTILL_UPSTREAM_OPENAI, else https://api.openai.com/v1)")
    gateway.add_argument("--upstream-anthropic", type=upstream, metavar="URL", help="the Anthropic upstream, as its "
                         "SDK's base_url (default: $TOKENTILL_UPSTREAM_ANTHROPIC, else https://api.anthropic.com)")
    gateway.add_argument("--max-output-tokens", type=at_least_one, metavar="N", help="the output cap held for (and "
                         "sent with) a call that sets none (default: $TOKENTILL_GATEWAY_MAX_OUTPUT_TOKENS, else 4096)")
    gateway.add_argument("--settle", choices=("wait", "background"), help="wait: a whole answer waits for its "
                         "settle and carries x-tokentill-charged; background: it goes back once the settle is "
                         "spooled, with x-tokentill-reserved (default: $TOKENTILL_GATEWAY_SETTLE, else wait)")
    gateway.set_defaults(func=_gateway)

    migrate = sub.add_parser("migrate", help="apply database migrations (safe to run concurrently)")
    migrate.add_argument("--to", type=revision, metavar="REVISION", help="move the database to this revision: "
                         "down (undoing the later migrations: what they added goes, the journal stays) or up "
                         "(default: the newest, head)")
    migrate.set_defaults(func=_migrate)
    restore = sub.add_parser("restore", help="restore a pg_dump archive (--format=custom) into an empty database: "
                             "a new TOKENTILL_DATA_DIR's embedded cluster, or a new TOKENTILL_DATABASE_URL")
    restore.add_argument("file", metavar="DUMP", help="the archive pg_dump --format=custom wrote")
    restore.set_defaults(func=_restore)

    keys = sub.add_parser("keys", help="create, list and revoke API keys").add_subparsers(
        dest="keys", required=True)
    create = keys.add_parser("create", help="create a key; prints it once, as JSON")
    create.add_argument("--scope", required=True, help="admin, inference, auditor or customer:<id>")
    create.add_argument("--customer", action="append", help="limit the key to this customer (repeat)")
    create.add_argument("--name", default="", help="a label for the key")
    keys.add_parser("list", help="list keys, without their secrets")
    revoke = keys.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("id")
    for command in keys.choices.values():
        command.set_defaults(func=_keys)

    audit = sub.add_parser("audit", help="audit commands").add_subparsers(dest="audit", required=True)
    verify = audit.add_parser("verify", help="check the journal (or, with --file, a jsonl export, offline); "
                              "exit 1 when any check fails")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--file", metavar="EXPORT.jsonl", help="verify this export offline, with no database")
    verify.add_argument("--timings", action="store_true", help="say how long each check took (seconds; in --json, "
                        "each check's `seconds`), to find a slow one")
    verify.add_argument("--expect-head", type=chain_hash, metavar="HEX",
                        help="the chain hash (64 hex digits) of a head kept apart: a seal of the file (with --file) "
                        "or of the database must have it (the chain passes through it)")
    verify.set_defaults(func=_audit_verify)
    export = audit.add_parser("export", help="stream the journal as beancount, csv or jsonl (with its seals)")
    export.add_argument("--format", required=True, choices=["beancount", "csv", "jsonl"])
    export.add_argument("--from", dest="start", metavar="T", help="entries that occurred at or after T")
    export.add_argument("--to", dest="end", metavar="T", help="entries that occurred before T")
    export.add_argument("--out", metavar="FILE", help="write here (complete or not at all); default stdout")
    export.set_defaults(func=_audit_tool)
    reconcile = audit.add_parser("reconcile", help="match top-ups against a payment processor's CSV; "
                                 "exit 1 on any difference")
    reconcile.add_argument("--payments", required=True, metavar="FILE.csv",
                           help="Stripe balance transactions, or a generic reference,amount,currency[,date] CSV")
    reconcile.add_argument("--from", dest="start", metavar="T", help="top-ups (and payments) at or after T")
    reconcile.add_argument("--to", dest="end", metavar="T", help="top-ups (and payments) before T")
    reconcile.add_argument("--json", action="store_true", help="print the report as JSON")
    reconcile.set_defaults(func=_audit_tool)

    prices = sub.add_parser("prices", help="price books").add_subparsers(dest="prices", required=True)
    imp = prices.add_parser("import", help="create or version price books from a price data source (offline)")
    imp.add_argument("--source", required=True, choices=["genai-prices"],
                     help="genai-prices: the data snapshot bundled with the installed package")
    imp.add_argument("--provider", help="only this provider's book (genai-<provider>)")
    imp.add_argument("--model", help="only this model's rules (the book's other rules are kept)")
    imp.add_argument("--effective-from", type=starting, metavar="T",
                     help="when changed prices take effect (RFC 3339 with an offset; default: now)")
    imp.add_argument("--json", action="store_true", help="one JSON report per book")
    imp.set_defaults(func=_prices_import)

    billing = sub.add_parser("billing", help="billing periods and invoices").add_subparsers(
        dest="billing", required=True)
    close = billing.add_parser("close", help="close every billing period due and finalize its invoice "
                               "(safe while servers run the same job)")
    # a close compares by "at or before T" (due, expired): a fraction finer than a microsecond is
    # read as the last microsecond at or before it (instant), not the next (starting, for from-times)
    close.add_argument("--until", type=instant, metavar="T",
                       help="close what is due by this time (RFC 3339 with an offset; default: now)")
    close.add_argument("--early", action="store_true",
                       help="allow an --until in the future: finalize invoices before their periods end "
                       "(tests, simulations)")
    close.set_defaults(func=_billing_close)

    demo = sub.add_parser("demo", help="play a billed chatbot scenario on a fresh embedded database")
    demo.set_defaults(func=_demo)

    bench = sub.add_parser("bench", help="benchmarks against pgbench on the same cluster")
    bench.add_argument("target", choices=["ledger", "lifecycle", "faults", "ingest", "gateway", "budgets",
                                          "rating", "console", "export", "invoices"])
    bench.add_argument("--seconds", type=seconds, default=10.0, help="duration of each case")
    bench.add_argument("--workers", type=at_least_one, default=64, metavar="N", help=(
        "how many at once (default %(default)s); ledger: tasks posting entries in-process; lifecycle: HTTP "
        "clients running reserve -> settle in each case (at most 32 of them make the wallets, 16 the budgets); "
        "faults: lifecycles at once, through the two servers' SDK clients; ingest: clients sending batches "
        "of 1,000 usage events (at most 8); gateway: clients calling through the gateway in the peak's closed "
        "loop; console: clients posting the seed's batches of 1,000 usage events; "
        "not used by budgets, rating, export, invoices"))
    bench.add_argument("--accounts", type=at_least_one, default=10_000, help="accounts in the spread case")
    bench.add_argument("--wallets", type=at_least_one, default=1000, help="wallets in the lifecycle spread case, "
                       "customers in the ingest bench")
    bench.add_argument("--servers", type=at_least_one, default=1,
                       help="tokentill serve processes in the lifecycle bench")
    bench.add_argument("--lanes", type=at_least_one, default=None, metavar="N",
                       help="lifecycle: lanes of the bench's fresh database (default: the machine's cores, 2-16)")
    bench.add_argument("--scaling", action="store_true",
                       help="lifecycle: the table of lanes 1/2/4/16 x servers 1/2, each on a fresh database")
    bench.add_argument("--workers-per-server", type=workers, default=1, metavar="N",
                       help="lifecycle: run each server as one `tokentill serve --workers N`")
    bench.add_argument("--budgets", action="store_true",
                       help="lifecycle: run the spread case again with three matching budgets per wallet")
    bench.add_argument("--pgbench-clients", type=at_least_one, default=8, metavar="N",
                       help="ledger, lifecycle: clients of the pgbench tpcb-like run compared with "
                       "(default %(default)s)")
    bench.add_argument("--profile", metavar="DIR", help="lifecycle: profile the server during the spread case "
                       "with py-spy (pip install py-spy) and write its raw stacks to DIR")
    bench.add_argument("--stop-seconds", type=seconds, default=20.0, help="faults: how long a server is SIGSTOPped")
    bench.add_argument("--settle-seconds", type=seconds, default=3.0,
                       help="faults: load before the first fault and after each recovery")
    bench.add_argument("--rules", type=at_least_one, default=2000, help="rating: rules of the imported book")
    bench.add_argument("--charges", type=at_least_one, default=100_000,
                       help="console: charges of the customer this month")
    bench.add_argument("--requests", type=at_least_one, default=200, metavar="N", help=(
        "timed GET requests of each page or read, one at a time, after 5 untimed ones that warm the caches "
        "(default %(default)s); console: per customer page; invoices: per read, the busiest customer's usage "
        "report and its upcoming invoice; not used by ledger, lifecycle, faults, ingest, gateway, budgets, "
        "rating, export"))
    bench.add_argument("--entries", type=at_least_one, default=1_000_000,
                       help="export: entries in the synthetic ledger")
    bench.add_argument("--bean-check", action="store_true",
                       help="export: run bean-check and compare bean-query's balances with the trial balance")
    bench.add_argument("--customers", type=at_least_one, default=10_000, help="invoices: postpaid customers to close")
    bench.add_argument("--total-charges", type=at_least_one, default=1_000_000, help="invoices: usage charges in all")
    bench.add_argument("--big", type=at_least_one, default=100_000, help="invoices: charges of the busiest customer")
    bench.add_argument("--json", action="store_true", help="print figures as JSON")
    bench.set_defaults(func=_bench)

    spool = sub.add_parser("spool", help="the SDK's local spool of undelivered settles and releases")
    flush = spool.add_subparsers(dest="spool", required=True).add_parser(
        "flush", help="re-send spooled settles and releases with their Idempotency-Keys; exit 1 if any are left")
    flush.add_argument("--dir", help="spool directory (default: $TOKENTILL_SPOOL_DIR, else <user data dir>/spool)")
    to = flush.add_mutually_exclusive_group()  # the README's `[--url URL | --server URL]`: --server was dropped
    to.add_argument("--url", help="send every record to this server instead of the one it names")
    to.add_argument("--server", help="the server the key is for: only its records are sent (needed when the "
                       "spool holds records for several servers)")
    flush.add_argument("--key", help="API key to send with, to one server only (default: $TOKENTILL_API_KEY)")
    flush.set_defaults(func=_spool_flush)
    return p


DATABASE_UNREACHABLE = 3  # exit status: the command could not reach its database (1: it found problems, 2: usage)


INTERRUPTED = 130  # exit status: SIGINT (Ctrl-C) stopped a command before it finished
TERMINATED = 143  # exit status: SIGTERM stopped a command before it finished (128 + 15, as a shell reports it)
HUNG_UP = 129  # exit status: SIGHUP (its terminal closed) stopped a command before it finished (128 + 1)


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(HUNG_UP if signum == signal.SIGHUP else TERMINATED)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    # SIGTERM (and SIGHUP, a closed terminal) stops a command as an exception does, so its `finally`
    # blocks run and the embedded cluster it started stops with it (the default killed the process
    # and left it running); serve and gateway replace this with their own ordinary exit.
    signal.signal(signal.SIGTERM, _terminated)
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:  # nohup: a closed terminal leaves it running
        signal.signal(signal.SIGHUP, _terminated)
    try:
        status = args.func(args, Settings.from_env())
        sys.stdout.flush()  # a reader gone (`| head`) shows here, not as a traceback at exit
        return status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError as exc:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is left buffered goes nowhere
        print(f"error: cannot write to stdout: {exc.strerror}", file=sys.stderr)  # as audit export says it
        return 2
    except Exception as exc:
        reason = _unreachable(exc)
        if reason is None:
            raise
        if bad := LIBPQ_BAD_VALUE.search(reason):  # a setting, not a database down: exit 1, naming it
            raise SystemExit(f"{_set_by(bad.group())}: {bad.group()}") from None
        print(f"error: cannot reach the database: {reason}", file=sys.stderr)
        return DATABASE_UNREACHABLE


# How psycopg words a connection that was never made: refused, timed out or a refused login; a
# host name that does not resolve; a socket that is not there (libpq gave up at once). A host that
# took the connection and never answered within connect_timeout is its own class, ConnectionTimeout.
CONNECT_FAILURES = ("connection failed", "failed to resolve host", "connection is bad")
# How libpq refuses the value of one of the URL's parameters as it connects (`?sslmode=bogus`:
# `invalid sslmode value: "bogus"`; `?keepalives=x`: `invalid integer value "x" for connection option
# "keepalives"`): a bad setting, which was `cannot reach the database`, exit 3, naming no variable.
# So are a pair libpq will not use together (`?sslnegotiation=direct` beside its default sslmode,
# prefer) and a setting of `?options=` (or PGOPTIONS) the server refuses as it starts the session
# (`-cstatement_timeout=abc`: FATAL: invalid value for parameter "statement_timeout": "abc").
LIBPQ_BAD_VALUE = re.compile(
    r'invalid [\w ]*value:? "[^"]*"(?: for connection option "\w+")?'
    r'|weak sslmode "\w+" may not be used with sslnegotiation=\w+ \([^)]*\)'
    r'|(?:invalid value for parameter "[^"]*": |unrecognized configuration parameter )"[^"]*"')


def _set_by(refused: str) -> str:
    """The variable that set the value libpq `refused`: TOKENTILL_DATABASE_URL, or libpq's own
    environment variable (PGSSLMODE) where the URL does not give that parameter."""
    import os

    from psycopg import pq
    from psycopg.conninfo import conninfo_to_dict

    named = re.search(r'connection option "(\w+)"|invalid (\w+) value|(sslnegotiation)=', refused)
    keyword = next(filter(None, named.groups())) if named else "options"  # the server's: set by options
    url = os.environ.get("TOKENTILL_DATABASE_URL", "")
    if keyword not in (conninfo_to_dict(url) if url else {}):
        for option in pq.Conninfo.get_defaults():
            if option.keyword.decode() == keyword and option.envvar and option.envvar.decode() in os.environ:
                return option.envvar.decode()
    return "TOKENTILL_DATABASE_URL"


def _unreachable(exc: BaseException) -> str | None:
    """The driver's own words when `exc` is a failure to connect (no server, a refused login, no
    such database), else None: a command's other errors keep their traceback."""
    import psycopg
    import sqlalchemy.exc

    cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    if isinstance(cause, psycopg.errors.ConnectionTimeout) or (
            isinstance(cause, psycopg.OperationalError) and str(cause).startswith(CONNECT_FAILURES)):
        return " ".join(str(cause).split())
    return None


if __name__ == "__main__":
    sys.exit(main())

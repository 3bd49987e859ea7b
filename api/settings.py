"""Settings, read once from the environment and passed down; nothing else reads os.environ."""
from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs
from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict, timeout_from_conninfo

from api.gateway.config import MOST_SECONDS, GatewaySettings, digits, key, seconds_number, whole_number
from ledger.db import IDLE_IN_TRANSACTION_MS
from wallets.budgets import MAX_PER_CUSTOMER as MAX_BUDGETS_PER_CUSTOMER
from wallets.webhooks.rules import AddressPolicy, parse_networks

# The shortest duration a fractional-seconds setting takes. A microsecond was taken and left the
# service unusable: every request head timed out before it came (the connection guard sweeps every
# 50 ms at best, so less could not be kept anyway), every wait for a pooled connection and every
# webhook attempt failed at once, the webhook poll spun, a writer batch was ended between statements.
LEAST_SECONDS = 0.1


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    value = (seconds_number(raw) if raw else default) or -1.0
    if not LEAST_SECONDS <= value <= MOST_SECONDS:  # also refuses nan and inf
        raise SystemExit(f"{name} must be a number of seconds from {LEAST_SECONDS} to {MOST_SECONDS:,} (a year), "
                         f"not {raw!r}")
    return value


def _writer_idle(env: Mapping[str, str], name: str, default: float) -> float:
    """The wallet writers' idle-in-transaction timeout, which PostgreSQL keeps in whole
    milliseconds: at least LEAST_SECONDS (0.0004 s was set as 0, which PostgreSQL reads as no
    timeout: a stopped process kept its lane's lock for good; 1 ms ended batches between their
    statements), at most every session's own (60 s: more was taken as 60 s)."""
    value = _seconds(env, name, default)
    most = IDLE_IN_TRANSACTION_MS / 1000
    if value > most:
        raise SystemExit(f"{name} must be from {LEAST_SECONDS} to {most:g} seconds, not {env.get(name, '')!r}")
    return value


ON, OFF = ("on", "1", "true", "yes"), ("off", "0", "false", "no")


def _flag(env: Mapping[str, str], name: str, default: str = "on") -> bool:
    """`on` (or 1, true, yes) or `off` (or 0, false, no); anything else stops the start (a
    misspelt `disabled` must not leave a job running on a host meant to be without it)."""
    raw = env.get(name, "") or default
    if raw.lower() not in ON + OFF:
        raise SystemExit(f"{name} must be on or off, not {raw!r}")
    return raw.lower() in ON


LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")  # what both logging and uvicorn take


def _log_level(env: Mapping[str, str], name: str) -> str:
    raw = env.get(name, "") or "INFO"
    if raw.upper() not in LOG_LEVELS:
        raise SystemExit(f"{name} must be one of {', '.join(LOG_LEVELS)}, not {raw!r}")
    return raw.upper()


MAX_LANES = 256  # ledger_settings.lanes' bound (migration 0009)
MAX_BUDGETS_MOST = 10_000  # the most TOKENTILL_MAX_BUDGETS_PER_CUSTOMER allows: each is matched on every reserve


def _session_secret(raw: str) -> bytes:
    """The console's session key: derived from TOKENTILL_SESSION_SECRET (so that several
    `tokentill serve` hosts share sessions), else random per `serve` (its workers share it)."""
    if not raw:
        return secrets.token_bytes(32)
    if len(raw) < 32:
        raise SystemExit("TOKENTILL_SESSION_SECRET must be at least 32 characters")
    return hashlib.sha256(raw.encode("utf-8", "surrogateescape")).digest()  # bytes not in UTF-8: as set


def _networks(env: Mapping[str, str], name: str) -> AddressPolicy:
    try:
        return AddressPolicy(parse_networks(env.get(name, "")))
    except ValueError as exc:
        raise SystemExit(f"{name}: {exc}") from None


def _not_utf8(raw: str) -> int | None:
    """Where the first byte of an environment value not in UTF-8 is (Python reads it as a lone
    surrogate, U+DC80 to U+DCFF), or None."""
    return next((i for i, c in enumerate(raw) if "\udc80" <= c <= "\udcff"), None)


_PERCENT_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


def _url_not_utf8(raw: str) -> int | None:
    """Where the first byte of a URL not in UTF-8 is, as given (a lone surrogate) or percent-encoded
    (the % of its escape: %FF, or %C3 not followed by a continuation byte), or None."""
    at = _not_utf8(raw)
    for run in _PERCENT_RUN.finditer(raw if at is None else raw[:at]):
        try:
            bytes.fromhex(run.group().replace("%", "")).decode()
        except UnicodeDecodeError as exc:
            return run.start() + 3 * exc.start
    return at


def _data_dir(raw: str, *, embedded: bool) -> Path:
    """The embedded cluster's directory: PostgreSQL's tools are given its path in UTF-8 (a byte not
    in it: initdb made the cluster, then pgserver's UnicodeEncodeError traceback). Unused, and so
    not refused, when TOKENTILL_DATABASE_URL names the database."""
    path = Path(raw or platformdirs.user_data_dir("tokentill"))
    if embedded and (at := _not_utf8(str(path))) is not None:
        raise SystemExit(f"TOKENTILL_DATA_DIR: cannot use {path}: a byte not in UTF-8 at position {at + 1} of "
                         f"{len(str(path))}".encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
    return path


def _database_url(raw: str) -> str | None:
    """A libpq URL (postgresql:// or postgres://, a port from 1 to 65535), or None when unset;
    anything else stops the start here rather than as a parser's traceback. The message does not
    repeat the URL: it may hold a password."""
    if not raw:
        return None
    if (at := _url_not_utf8(raw)) is not None:  # psycopg's UnicodeEncodeError or UnicodeDecodeError traceback
        raise SystemExit(f"TOKENTILL_DATABASE_URL has a byte not in UTF-8 at position {at + 1} of {len(raw)}, as "
                         "given or percent-encoded: psycopg reads the URL and what it decodes as UTF-8 (write a "
                         "character as its UTF-8 bytes, é as %C3%A9)")  # the URL (its password) not repeated
    try:
        parts = urlsplit(raw)
        port_ok = parts.port is None or parts.port > 0  # .port raises beyond 65535 or on a non-number
    except ValueError:
        port_ok = False
    if not port_ok or parts.scheme not in ("postgresql", "postgres"):
        raise SystemExit("TOKENTILL_DATABASE_URL must be a libpq URL, postgresql://user@host:5432/db "
                         "(or postgresql://user@/db?host=/socket/dir)")
    if parts.netloc.count("@") > 1:  # SQLAlchemy would take the host from the first @ (part of the password)
        raise SystemExit("TOKENTILL_DATABASE_URL has more than one @ before its host: write an @ in the user or "
                         "password as %40")
    try:  # its parameters alone, as libpq reads them: libpq's message names the one it refuses
        conninfo_to_dict(f"postgresql://?{parts.query}")
    except ProgrammingError as exc:
        raise SystemExit(f"TOKENTILL_DATABASE_URL: {str(exc).strip()} (the parameters libpq takes: "
                         f"https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS)") from None
    try:  # the whole of it, as libpq reads it when a command connects (a traceback there, the password quoted)
        params = conninfo_to_dict(raw)
    except ProgrammingError as exc:
        reason = " ".join(str(exc).split())
        if parts.password:
            reason = reason.replace(parts.password, "<the password>")
        raise SystemExit(f"TOKENTILL_DATABASE_URL: {reason} (write a % in the user, password or database name "
                         f"as %25, a space as %20)") from None
    try:  # psycopg reads connect_timeout itself before libpq connects: a bad one was its traceback
        timeout_from_conninfo({"connect_timeout": params.get("connect_timeout", 0)})
    except ProgrammingError as exc:
        raise SystemExit(f"TOKENTILL_DATABASE_URL: {exc} (a number of seconds)") from None
    return raw


def _pgconnect_timeout(env: Mapping[str, str], database_url: str | None) -> None:
    """PGCONNECT_TIMEOUT, which psycopg reads (as libpq does) where the URL gives no connect_timeout,
    the embedded cluster's connections too: a bad one was psycopg's traceback as a command connected."""
    if database_url is not None and "connect_timeout" in conninfo_to_dict(database_url):
        return  # the URL's wins: PGCONNECT_TIMEOUT is not read
    try:
        timeout_from_conninfo({"connect_timeout": env.get("PGCONNECT_TIMEOUT", 0)})
    except ProgrammingError as exc:
        raise SystemExit(f"PGCONNECT_TIMEOUT: {exc} (a number of seconds)") from None


# Server processes of one `serve`: each is an interpreter with its own pool, so past this many a
# typo (`--workers 100000`) forks until the machine dies rather than serving faster. No real host
# has this many cores (a 96- or 192-core one is served); 64 refused a 96-core host's setting.
MAX_WORKERS = 1024


def worker_count(raw: str) -> int | None:
    """`raw` as a number of server processes, 1 to MAX_WORKERS; None when it is not one."""
    if not digits(raw):
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_WORKERS else None


def _workers(raw: str) -> int:
    value = worker_count(raw) if raw else 1
    if value is None:
        raise SystemExit(f"TOKENTILL_WORKERS must be a whole number of processes, 1 to {MAX_WORKERS}, not {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    # Secrets (the URL may hold a password) are left out of the repr: a Settings in a log line, a
    # traceback's locals or a debugger shows none (the session secret and the upstream keys too).
    database_url: str | None = field(default=None, repr=False)  # libpq URL; None: an embedded cluster
    data_dir: Path = Path(platformdirs.user_data_dir("tokentill"))
    admin_key: str | None = field(default=None, repr=False)
    pool_size: int = 10
    # Start although the processes' pools may open more connections than the database allows (a
    # warning only): else the start stops (api.runtime.check_connection_budget).
    pool_overcommit: bool = False
    pool_timeout_s: float = 5.0  # the longest a request waits for a database connection, then 503
    writer_idle_s: float = 5.0  # a wallet batch's session idle this long inside it is ended (its lane freed)
    scheduler: bool = True
    seal_interval_s: int = 10
    lanes: int | None = None  # lanes of a database created now (migration 0009); None: the machine's cores
    log_level: str = "INFO"
    max_connections: int = 4096  # per process; less when the open-file limit leaves no room (api/server.py)
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0  # no body bytes for this long: 408
    body_deadline_s: float = 60.0  # a body not complete after this long: 408
    keepalive_s: float = 5.0
    # After SIGTERM, requests in progress have this long to end; then they are cut (a gateway call
    # is charged what it streamed) and the process exits (api/server.py).
    shutdown_grace_s: float = 20.0
    workers: int = 1  # server processes of one `tokentill serve` on its port (api/workers.py)
    webhooks: bool = True  # run the webhook dispatcher in this process (api/webhooks.py)
    webhook_timeout_s: float = 10.0
    webhook_poll_s: float = 5.0  # the fallback poll: committed outbox events wake the dispatcher at once
    webhook_backoff_s: float = 5.0  # the first retry's delay; each next one doubles, with jitter
    webhook_backoff_cap_s: float = 4 * 3600.0
    webhook_retry_window_s: float = 3 * 86400.0  # then the delivery has failed
    webhook_redrive_limit: int = 10_000  # deliveries one re-drive may queue; more is 422 too_many_events
    # Networks deliveries may reach beside public addresses (loopback, private, ... are refused).
    webhook_addresses: AddressPolicy = field(default_factory=AddressPolicy)
    # Where the workers of one `serve --workers N` keep their metrics, summed at /metrics (set by
    # api/workers.py for its children, never from the environment); None: this process's own.
    metrics_dir: Path | None = None
    max_budgets_per_customer: int = MAX_BUDGETS_PER_CUSTOMER  # per customer, by each setter (matched per reserve)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)  # the metering gateway's upstreams
    # Encrypts the console's session cookies (api/console); a restart with a random one signs everyone out.
    session_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        database_url = _database_url(env.get("TOKENTILL_DATABASE_URL", ""))
        _pgconnect_timeout(env, database_url)
        return cls(
            database_url=database_url,
            data_dir=_data_dir(env.get("TOKENTILL_DATA_DIR", ""), embedded=database_url is None),
            admin_key=key(env, "TOKENTILL_ADMIN_KEY"),
            pool_size=whole_number(env, "TOKENTILL_POOL_SIZE", 10),
            pool_overcommit=_flag(env, "TOKENTILL_POOL_OVERCOMMIT", "off"),
            pool_timeout_s=_seconds(env, "TOKENTILL_POOL_TIMEOUT_SECONDS", 5.0),
            writer_idle_s=_writer_idle(env, "TOKENTILL_WRITER_IDLE_SECONDS", 5.0),
            scheduler=_flag(env, "TOKENTILL_SCHEDULER"),
            seal_interval_s=whole_number(env, "TOKENTILL_SEAL_INTERVAL_SECONDS", 10, most=MOST_SECONDS),
            lanes=whole_number(env, "TOKENTILL_LANES", 0, most=MAX_LANES) if env.get("TOKENTILL_LANES") else None,
            log_level=_log_level(env, "TOKENTILL_LOG_LEVEL"),
            max_connections=whole_number(env, "TOKENTILL_MAX_CONNECTIONS", 4096),
            header_timeout_s=_seconds(env, "TOKENTILL_HEADER_TIMEOUT_SECONDS", 10.0),
            body_timeout_s=_seconds(env, "TOKENTILL_BODY_TIMEOUT_SECONDS", 10.0),
            body_deadline_s=_seconds(env, "TOKENTILL_BODY_DEADLINE_SECONDS", 60.0),
            keepalive_s=_seconds(env, "TOKENTILL_KEEPALIVE_SECONDS", 5.0),
            shutdown_grace_s=_seconds(env, "TOKENTILL_SHUTDOWN_GRACE_SECONDS", 20.0),
            workers=_workers(env.get("TOKENTILL_WORKERS", "")),
            webhooks=_flag(env, "TOKENTILL_WEBHOOKS"),
            webhook_timeout_s=_seconds(env, "TOKENTILL_WEBHOOK_TIMEOUT_SECONDS", 10.0),
            webhook_poll_s=_seconds(env, "TOKENTILL_WEBHOOK_POLL_SECONDS", 5.0),
            webhook_backoff_s=_seconds(env, "TOKENTILL_WEBHOOK_BACKOFF_SECONDS", 5.0),
            webhook_backoff_cap_s=_seconds(env, "TOKENTILL_WEBHOOK_BACKOFF_CAP_SECONDS", 4 * 3600.0),
            webhook_retry_window_s=_seconds(env, "TOKENTILL_WEBHOOK_RETRY_WINDOW_SECONDS", 3 * 86400.0),
            webhook_redrive_limit=whole_number(env, "TOKENTILL_WEBHOOK_REDRIVE_LIMIT", 10_000, most=1_000_000),
            webhook_addresses=_networks(env, "TOKENTILL_WEBHOOK_ALLOWED_NETWORKS"),
            max_budgets_per_customer=whole_number(env, "TOKENTILL_MAX_BUDGETS_PER_CUSTOMER", MAX_BUDGETS_PER_CUSTOMER,
                                          most=MAX_BUDGETS_MOST),
            gateway=GatewaySettings.from_env(env),
            session_secret=_session_secret(env.get("TOKENTILL_SESSION_SECRET", "")),
        )

"""tokentill behind PgBouncer, in front of the session's server. Optional: these tests need the
`pgbouncer` program (`apt-get install pgbouncer`) and are skipped, saying so, where it is not
installed; the README's test command does not need it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from api.bench.common import free_port
from ledger.db import IDLE_IN_TRANSACTION_MS
from tests.integration.wallets.wallet_kit import Kit, usd

PGBOUNCER = shutil.which("pgbouncer") or next(
    (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
)
pytestmark = pytest.mark.skipif(PGBOUNCER is None, reason="needs the pgbouncer program (apt-get install pgbouncer)")


@contextmanager
def bouncer(server_url: str, mode: str, *, ignore_options: bool = False) -> Iterator[str]:
    """A PgBouncer of the test's own in `mode` in front of the server of `server_url`; yields a
    URL of `server_url`'s database through it."""
    url = make_url(server_url)
    host = url.query.get("host") or url.host or "127.0.0.1"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tokentill-pgbouncer-") as tmp:
        here = Path(tmp)
        (here / "users.txt").write_text(f'"{url.username}" ""\n')
        (here / "pgbouncer.ini").write_text(
            f"[databases]\n* = host={host} port={url.port or 5432}\n[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nauth_type = trust\n"
            f"auth_file = {here / 'users.txt'}\npool_mode = {mode}\ndefault_pool_size = 4\n"
            f"logfile = {here / 'log'}\n" + ("ignore_startup_parameters = options\n" if ignore_options else "")
        )
        command = [PGBOUNCER, str(here / "pgbouncer.ini")]
        if os.geteuid() == 0:  # it will not run as root: as the user the server runs as, else nobody
            user = next(u for u in ("pgserver", "postgres", "nobody") if _exists(u))
            os.chmod(here, 0o777)
            command[1:1] = ["-u", user]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield _ready(
                url.set(host="127.0.0.1", port=port, query={}).render_as_string(hide_password=False),
                process,
                here / "log",
            )
        finally:
            process.terminate()
            process.wait(10)


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _ready(url: str, process: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + 10
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return url
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not start: {log.read_text() if log.exists() else ''}") from None
            time.sleep(0.05)  # a port that is not listening yet: nothing to wait on but the clock


def _migrate(url: str, monkeypatch) -> str | int | None:
    from api.cli import main

    monkeypatch.setenv("TOKENTILL_DATABASE_URL", url)
    try:
        return main(["migrate"])
    except SystemExit as stopped:
        return stopped.code


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_transaction_and_statement_pooling_are_refused_in_one_line(mode, scratch_url, monkeypatch):
    """PgBouncer in transaction or statement mode (told to pass over `options`, else it refuses
    the pool's sessions by itself) shares one server session between clients: a session lock taken by one
    was the next one's too (pg_try_advisory_lock said true while the first held it), the leads'
    temporary functions went missing and LISTEN heard nothing. `migrate` ran, and `serve`
    served, on it."""
    with bouncer(scratch_url, mode, ignore_options=True) as url:
        with psycopg.connect(url, autocommit=True) as one, psycopg.connect(url, autocommit=True) as two:
            one.execute("SELECT pg_advisory_lock(42)")
            assert two.execute("SELECT pg_try_advisory_lock(42)").fetchone()[0] is True  # the defect, shown
            one.execute("SELECT pg_advisory_unlock_all()")
        said = _migrate(url, monkeypatch)
    assert isinstance(said, str) and "\n" not in said, said
    assert said.startswith(
        "error: TOKENTILL_DATABASE_URL reaches PostgreSQL through a pooler that shares its sessions between clients"
    ), said


def test_session_pooling_that_drops_the_connection_options_is_refused_in_one_line(scratch_url, monkeypatch):
    """PgBouncer 1.18 refuses `options` (the pool's sessions are told "unsupported startup
    parameter: options"); told to ignore it, its sessions ran without TimeZone=UTC and the
    idle-in-transaction timeout that frees a hung process's locks, and nothing said so."""
    with bouncer(scratch_url, "session", ignore_options=True) as url:
        said = _migrate(url, monkeypatch)
    assert isinstance(said, str) and "\n" not in said, said
    assert said.startswith("error: TOKENTILL_DATABASE_URL's sessions lost the options tokentill connects with"), said


def test_session_pooling_with_the_settings_on_the_role_serves(scratch_url, monkeypatch):
    """The README's recipe: session pooling, `ignore_startup_parameters = options`, and the two
    settings given to the role in the database instead: the start accepts it, and a wallet's
    ledger works through it."""
    import asyncio

    database = make_url(scratch_url).database
    role = make_url(scratch_url).username
    with psycopg.connect(scratch_url, autocommit=True) as admin:
        admin.execute(f'ALTER ROLE "{role}" IN DATABASE "{database}" SET TimeZone = \'UTC\'')
        admin.execute(
            f'ALTER ROLE "{role}" IN DATABASE "{database}" SET idle_in_transaction_session_timeout = '
            f"{IDLE_IN_TRANSACTION_MS}"
        )
    try:
        with bouncer(scratch_url, "session", ignore_options=True) as url:
            assert _migrate(url, monkeypatch) == 0
            assert asyncio.run(_lifecycle(url)) == {"lot": usd("9.60"), "revenue": usd("0.40")}
    finally:
        with psycopg.connect(scratch_url, autocommit=True) as admin:
            admin.execute(f'ALTER ROLE "{role}" IN DATABASE "{database}" RESET ALL')


async def _lifecycle(url: str) -> dict[str, int]:
    """A $10 top-up, a hold for 1,000 input and 500 output tokens, settled for 200 and 100 ($0.40),
    through the pooler: the lot's and the revenue's balances after."""
    from ledger.accounts import ensure_asset
    from ledger.db import connect

    db = connect(url, pool_size=2)
    try:
        await db.run(lambda conn: ensure_asset(conn, "USD", 9))
        kit = Kit(db, "pooled")
        await kit.setup_book()
        cid = await kit.customer("acme")
        await kit.top_up(cid, "10", "lot")
        held = await kit.reserve(cid, "r1", input_tokens=1_000, max_output_tokens=500)
        await kit.settle(cid, held.reservation.id, input_tokens=200, output_tokens=100)
        found = await kit.balances(cid)
        return {"lot": found["lot"], "revenue": found["revenue"]}
    finally:
        await db.dispose()

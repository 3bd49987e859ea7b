"""A backup an operator takes with pg_dump restores with pg_restore into a ledger that verifies.

pg_dump and pg_restore (and pg_upgrade, which dumps the schema) run with an empty search_path, so
a function a CHECK constraint calls must not find another function by name: ledger_entry_lane
called ledger_lane so, and every restore of a tokentill database failed (the journal's
partitions could not be attached, their rows not copied: 20 errors, an empty journal).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from api.bench.common import scratch_database
from api.cli import main
from api.client import Client
from ledger import embedded
from ledger.db import connect
from migrations import runner
from tests.api.apps import live_server
from tests.live_server import serving
from tests.webhook_receiver import receiver
from wallets.jobs import seal_journal
from wallets.webhooks.rules import AddressPolicy, parse_networks

ADMIN = "backup-test-admin"


def _seed(tt) -> None:
    tt.post("/v1/price-books", {
        "id": "std", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
        "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "10"},
                  {"id": "out", "model": "model-a", "token_type": "output", "price": "20"}]})
    for customer, billing in (("acme", "prepaid"), ("globex", "postpaid"), ("initech", "prepaid")):
        tt.post("/v1/customers", {"id": customer, "currency": "USD", "price_book": "std", "billing": billing})
    tt.post("/v1/customers/acme/topups", {"amount": "20.00"})
    tt.post("/v1/customers/acme/grants", {"amount": "5.00", "priority": 10, "expires_at": "2099-01-01T00:00:00Z"})
    tt.post("/v1/customers/initech/topups", {"amount": "3.00"})
    tt.post("/v1/budgets", {"customer_id": "acme", "name": "cap", "window": "day", "metric": "money",
                            "limit": "10.00", "mode": "hard"})
    for customer in ("acme", "globex", "initech"):
        for n in range(3):
            held = tt.post("/v1/reservations", {"customer_id": customer, "request_id": f"{customer}-{n}",
                                                "model": "model-a",
                                                "estimate": {"input_tokens": 1000, "max_output_tokens": 500}})
            if n < 2:
                tt.settle(held["id"], usage={"input_tokens": 1000, "output_tokens": 400 + n})
    taken = tt.post("/v1/usage-events", [{"event_id": "ev-1", "customer_id": "globex", "model": "model-a",
                                          "timestamp": datetime.now(UTC).isoformat(),
                                          "usage": {"input_tokens": 50, "output_tokens": 7}}])
    assert taken["accepted"] == 1, taken


def _views(tt) -> dict:
    return {
        "wallets": [tt.get(f"/v1/customers/{c}/wallet") for c in ("acme", "globex", "initech")],
        "trial_balance": tt.get("/v1/audit/trial-balance"),
        "journal": tt.get("/v1/journal?limit=200"),
    }


def test_a_pg_dump_of_the_ledger_restores_into_a_database_that_verifies(server_url, migrated_template):
    dump, restore = (str(embedded.bin_dir() / tool) for tool in ("pg_dump", "pg_restore"))
    suffix = uuid.uuid4().hex[:10]
    with scratch_database(server_url, f"tokentill_backup_{suffix}", template=migrated_template) as source:
        with serving(source, ADMIN) as tt:
            _seed(tt)
            before = _views(tt)
        backup = subprocess.run([dump, "--format=custom", f"--dbname={source}"], capture_output=True, check=True).stdout
    assert before["journal"]["entries"], "the seed wrote entries"

    with scratch_database(server_url, f"tokentill_restored_{suffix}") as target:
        restored = subprocess.run([restore, "--exit-on-error", "--single-transaction", "--no-owner",
                                   f"--dbname={target}"], input=backup, capture_output=True)
        assert restored.returncode == 0, restored.stderr.decode()[-2000:]
        with psycopg.connect(target) as conn:
            entries = conn.execute("SELECT count(*) FROM journal_entries").fetchone()[0]
        assert entries == len(before["journal"]["entries"])
        with serving(target, ADMIN) as tt:
            assert _views(tt) == before
            verify = tt.post("/v1/audit/verify", {})
            assert verify["ok"], [check for check in verify["checks"] if not check["ok"]]
            # the restored ledger takes writes: its triggers and constraints came back with it
            held = tt.post("/v1/reservations", {"customer_id": "acme", "request_id": "after-restore",
                                                "model": "model-a",
                                                "estimate": {"input_tokens": 1000, "max_output_tokens": 500}})
            assert tt.settle(held["id"], usage={"input_tokens": 1000, "output_tokens": 400})["charged"] == "0.018"


def _burn_transaction_ids(url: str, past: int) -> None:
    """Run transactions on `url`'s cluster until its transaction ids are past `past`: an old cluster's."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"""DO $$ BEGIN
            WHILE pg_current_xact_id() < '{past}'::xid8 LOOP COMMIT; END LOOP; END $$""")


def _seal(url: str) -> None:
    async def run() -> None:
        db = connect(url, pool_size=1)
        try:
            await seal_journal(db)
        finally:
            await db.dispose()
    asyncio.run(run())


def test_a_backup_restored_into_a_new_postgresql_serves_once_its_transaction_ids_pass_the_ledgers(
        server_url, migrated_template, monkeypatch):
    """README's Backups, into a new cluster (a lost disk, a move). A new cluster's transaction ids
    start low, and the restored journal, seals and webhook cursor carry the old cluster's: new
    entries fell inside sealed ranges (verify failed on them), restored entries lay past every
    snapshot (the journal showed none) and events written after the restore were never sent.
    tokentill now refuses such a database in one line naming the pg_resetwal that fixes it, and
    after it serves the restored ledger whole."""
    loopback = {"webhook_addresses": AddressPolicy(parse_networks("127.0.0.0/8")), "webhook_poll_s": 0.05}
    dump, restore = (str(embedded.bin_dir() / tool) for tool in ("pg_dump", "pg_restore"))
    with scratch_database(server_url, f"tokentill_backup_{uuid.uuid4().hex[:10]}",
                          template=migrated_template) as source, receiver() as hook:
        _burn_transaction_ids(source, 20_000)  # a cluster that has run for a while
        with live_server(source, admin=ADMIN, **loopback) as base, Client(base, ADMIN) as tt:
            tt.post("/v1/webhook-endpoints", {"url": hook.url, "topics": ["grant.reversed"]})
            _seed(tt)
            grant = next(g for g in tt.get("/v1/customers/acme/wallet")["grants"] if g["kind"] == "grant")
            tt.post(f"/v1/customers/acme/grants/{grant['id']}/reverse", {"amount": "1.00"})
            asyncio.run(hook.wait_for(lambda r: True))  # the fan-out's cursor is past it
            _seal(source)
            before = _views(tt)
        backup = subprocess.run([dump, "--format=custom", f"--dbname={source}"], capture_output=True,
                                check=True).stdout

        where = tempfile.TemporaryDirectory(prefix="tokentill-restore-")  # one the server's user may reach
        pgdata = Path(where.name) / "pg"
        cluster = embedded.start(pgdata)
        try:
            restored = subprocess.run([restore, "--exit-on-error", "--single-transaction", "--no-owner",
                                       f"--dbname={cluster.url}"], input=backup, capture_output=True)
            assert restored.returncode == 0, restored.stderr.decode()[-2000:]
            monkeypatch.setenv("TOKENTILL_DATABASE_URL", cluster.url)
            for command in (["migrate"], ["audit", "verify"]):
                with pytest.raises(SystemExit) as refused:
                    main(command)
                message = str(refused.value.code)
                assert message.startswith("error: the database's transaction ids are behind its journal's") \
                    and "pg_resetwal --epoch=1 " in message and "\n" not in message, message

            cluster.stop()  # as README says: stop it, move its epoch on, start it again
            resetwal = embedded.bin_dir() / "pg_resetwal"
            subprocess.run([str(resetwal), "--epoch=1", "-D", str(pgdata)], check=True, capture_output=True,
                           user=cluster.system_user)
            cluster = embedded.start(pgdata)
            assert main(["migrate"]) == 0
            with live_server(cluster.url, admin=ADMIN, **loopback) as base, Client(base, ADMIN) as tt:
                assert _views(tt) == before
                held = tt.post("/v1/reservations", {"customer_id": "acme", "request_id": "after-restore",
                                                    "model": "model-a",
                                                    "estimate": {"input_tokens": 1000, "max_output_tokens": 500}})
                tt.settle(held["id"], usage={"input_tokens": 1000, "output_tokens": 400})
                tt.post(f"/v1/customers/acme/grants/{grant['id']}/reverse", {"amount": "1.00"})
                asyncio.run(hook.wait_for(lambda r: True, count=2))  # the event written after the restore
                time.sleep(0.5)  # time for a second copy of either to arrive
                ids = [r.webhook_id for r in hook.of(lambda r: True)]
                assert len(ids) == len(set(ids)) == 2, ids  # each once: the one sent before is not sent again
                _seal(cluster.url)
                verify = tt.post("/v1/audit/verify", {})
                assert verify["ok"], [check for check in verify["checks"] if not check["ok"]]
        finally:
            cluster.stop()
            shutil.rmtree(where.name, ignore_errors=True)


def test_tokentill_restore_puts_a_backup_into_a_new_embedded_data_dir_that_serves_whole(server_url,
                                                                                       migrated_template):
    """Every command migrated the database it opened, so an embedded cluster was never the empty
    database README's pg_restore needs: a backup could not go back into one. `tokentill restore
    DUMP` on a new TOKENTILL_DATA_DIR restores it, moves the new cluster's transaction ids past the
    journal's and migrates it; a database that is not empty is refused, nothing written."""
    dump = str(embedded.bin_dir() / "pg_dump")
    name = f"tokentill_backup_{uuid.uuid4().hex[:10]}"
    with scratch_database(server_url, name, template=migrated_template) as source:
        _burn_transaction_ids(source, 20_000)
        with serving(source, ADMIN) as tt:
            _seed(tt)
            _seal(source)
            before = _views(tt)
        backup = subprocess.run([dump, "--format=custom", f"--dbname={source}"], capture_output=True,
                                check=True).stdout
    where = tempfile.TemporaryDirectory(prefix="tokentill-restore-")
    try:
        archive = Path(where.name) / "tokentill.dump"
        archive.write_bytes(backup)
        env = {k: v for k, v in os.environ.items() if k != "TOKENTILL_DATABASE_URL"}
        env["TOKENTILL_DATA_DIR"] = str(Path(where.name) / "data")

        def restore() -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "api.cli", "restore", str(archive)], env=env,
                                  capture_output=True, text=True, timeout=300)

        done = restore()
        assert (done.returncode, done.stdout.strip()) == (0, f"restored {archive}; migrated to "
                                                             f"{runner.head_revision()}"), done.stderr[-3000:]
        again = restore()
        assert again.returncode == 1 and again.stderr.strip().splitlines()[-1].startswith(
            "error: the database holds "), again.stderr[-3000:]
        cluster = embedded.start(Path(where.name) / "data" / "pg")
        try:
            with serving(cluster.url, ADMIN) as tt:
                assert _views(tt) == before
                held = tt.post("/v1/reservations", {"customer_id": "acme", "request_id": "after-restore",
                                                    "model": "model-a",
                                                    "estimate": {"input_tokens": 1000, "max_output_tokens": 500}})
                tt.settle(held["id"], usage={"input_tokens": 1000, "output_tokens": 400})
                _seal(cluster.url)
                verify = tt.post("/v1/audit/verify", {})
                assert verify["ok"], [check for check in verify["checks"] if not check["ok"]]
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(where.name, ignore_errors=True)


def test_a_dump_taken_while_calls_and_seals_run_restores_into_a_ledger_that_verifies(server_url, migrated_template):
    """pg_dump's snapshot cuts the ledger between transactions while reserves, settles and seals
    go on: the restored ledger holds whole entries and whole seals only, and verifies."""
    import threading

    dump = str(embedded.bin_dir() / "pg_dump")
    with scratch_database(server_url, f"tokentill_backup_{uuid.uuid4().hex[:10]}",
                          template=migrated_template) as source:
        _burn_transaction_ids(source, 20_000)
        with live_server(source, admin=ADMIN) as base, Client(base, ADMIN) as tt:
            _seed(tt)
            stop, failures = threading.Event(), []

            def calls() -> None:
                n = 0
                with Client(base, ADMIN) as own:
                    while not stop.is_set():
                        try:
                            held = own.post("/v1/reservations", {
                                "customer_id": "globex", "request_id": f"during-{n}", "model": "model-a",
                                "estimate": {"input_tokens": 100, "max_output_tokens": 50}})
                            own.settle(held["id"], usage={"input_tokens": 100, "output_tokens": 20 + n % 7})
                        except Exception as exc:  # reported below
                            failures.append(exc)
                            return
                        n += 1

            def seals() -> None:
                while not stop.is_set():
                    _seal(source)
                    time.sleep(0.05)

            threads = [threading.Thread(target=calls), threading.Thread(target=calls), threading.Thread(target=seals)]
            for thread in threads:
                thread.start()
            try:
                time.sleep(1.0)
                backup = subprocess.run([dump, "--format=custom", f"--dbname={source}"], capture_output=True,
                                        check=True).stdout
                time.sleep(0.5)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(60)
            assert failures == []
    where = tempfile.TemporaryDirectory(prefix="tokentill-restore-")
    try:
        archive = Path(where.name) / "tokentill.dump"
        archive.write_bytes(backup)
        env = {k: v for k, v in os.environ.items() if k != "TOKENTILL_DATABASE_URL"}
        env["TOKENTILL_DATA_DIR"] = str(Path(where.name) / "data")
        done = subprocess.run([sys.executable, "-m", "api.cli", "restore", str(archive)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        verified = subprocess.run([sys.executable, "-m", "api.cli", "audit", "verify"], env=env,
                                  capture_output=True, text=True, timeout=300)
        assert verified.returncode == 0 and verified.stdout.strip().endswith("verified: the ledger is whole"), \
            verified.stdout[-3000:] + verified.stderr[-3000:]
    finally:
        shutil.rmtree(where.name, ignore_errors=True)


def _ledger_dump(server_url: str, migrated_template: str, archive: Path) -> tuple[int, int]:
    """Dump a seeded ledger (pg_dump 18, custom format) to `archive`: its journal entries and customers."""
    dump = str(embedded.bin_dir() / "pg_dump")
    with scratch_database(server_url, f"tokentill_backup_{uuid.uuid4().hex[:10]}",
                          template=migrated_template) as source:
        with serving(source, ADMIN) as tt:
            _seed(tt)
        with psycopg.connect(source) as conn:
            entries, customers = conn.execute(
                "SELECT (SELECT count(*) FROM journal_entries), (SELECT count(*) FROM customers)").fetchone()
        archive.write_bytes(subprocess.run([dump, "--format=custom", f"--dbname={source}"], capture_output=True,
                                           check=True).stdout)
    assert (entries, customers) > (0, 2)
    return entries, customers


@contextlib.contextmanager
def _postgresql_16(env: dict[str, str]) -> Iterator[str]:
    """A PostgreSQL 16 cluster of the wheel (its URL), up while this process reads its stdin."""
    where = tempfile.TemporaryDirectory(prefix="tokentill-pg16-")  # one the server's user may reach
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from ledger import embedded; "
         "c = embedded.start(Path(sys.argv[1])); print(c.url, flush=True); sys.stdin.read(); c.stop()",
         str(Path(where.name) / "pg")], env={**env, "PGSERVER_POSTGRES_VERSION": "16"},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = holder.stdout.readline().strip()
        assert url, "the PostgreSQL 16 cluster started"
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.info.server_version // 10000 == 16
        yield url
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
        shutil.rmtree(where.name, ignore_errors=True)


def test_tokentill_restore_goes_into_a_postgresql_16_server(server_url, migrated_template, tmp_path):
    """README: tokentill runs on PostgreSQL 15 and later, and `tokentill restore DUMP` restores into
    the database TOKENTILL_DATABASE_URL names. The wheel's pg_restore (18) begins every restore
    with `SET transaction_timeout = 0`, a setting PostgreSQL 15 and 16 do not know, so every
    restore into one stopped there: `error: pg_restore restored nothing: pg_restore: error: could
    not execute query: ERROR:  unrecognized configuration parameter "transaction_timeout"`, exit 1.
    Into a PostgreSQL 16 cluster (the wheel's other version) it now restores the whole ledger,
    then says, as for any other server, that its transaction ids must pass the journal's."""
    archive = tmp_path / "tokentill.dump"
    entries, customers = _ledger_dump(server_url, migrated_template, archive)
    env = {k: v for k, v in os.environ.items() if k not in ("TOKENTILL_DATABASE_URL", "PGSERVER_POSTGRES_VERSION")}
    with _postgresql_16(env) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE restored")
        target = url.replace("/postgres?", "/restored?")
        done = subprocess.run([sys.executable, "-m", "api.cli", "restore", str(archive)],
                              env={**env, "TOKENTILL_DATABASE_URL": target}, capture_output=True, text=True,
                              timeout=300)
        last = (done.stderr.strip().splitlines() or [""])[-1]
        assert done.returncode == 1 and last.startswith(
            "error: restored, but the database's transaction ids are behind its journal's"), done.stderr[-3000:]
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT (SELECT count(*) FROM journal_entries), "
                                "(SELECT count(*) FROM customers)").fetchone() == (entries, customers)


SYSTEM_POSTGRESQL = "postgresql://postgres@127.0.0.1:5432/postgres"  # this machine's, trust auth, where there is one


def _readme_manual_restore() -> str:
    """README's (Backups) sh block that restores by hand into PostgreSQL 15 or 16: the one with psql."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    backups = readme[readme.index("**Backups.**"):]
    blocks = backups.split("```sh\n")[1:]
    found = [block[:block.index("```")] for block in blocks[:3] if "/psql " in block]
    assert found, "README's Backups gives a pg_restore recipe for PostgreSQL 15 and 16"
    return found[0]


@pytest.mark.parametrize("server", ["the wheel's 16", "the system's, 127.0.0.1:5432"])
def test_the_readme_s_manual_restore_into_postgresql_15_or_16(server, server_url, migrated_template, tmp_path):
    """README (Backups): `$PGBIN/pg_restore --single-transaction ... --dbname "$NEW_DATABASE_URL"`
    stops on PostgreSQL 15 and 16 (`unrecognized configuration parameter "transaction_timeout"`,
    nothing restored) and README gave no recipe that works there. Its commands, as written, with
    PGBIN the wheel's programs and NEW_DATABASE_URL an empty database: into a PostgreSQL 16 cluster
    of the wheel, and into the system's PostgreSQL where one older than 17 answers at 127.0.0.1:5432
    (skipped, saying so, where none does). The whole ledger is there: the dump's journal entries and
    customers, counted in the source."""
    script = _readme_manual_restore()
    env = {k: v for k, v in os.environ.items() if k not in ("TOKENTILL_DATABASE_URL", "PGSERVER_POSTGRES_VERSION")}
    with contextlib.ExitStack() as stack:
        if server.startswith("the system's"):
            try:
                with psycopg.connect(SYSTEM_POSTGRESQL, autocommit=True, connect_timeout=3) as conn:
                    version = conn.info.server_version
            except psycopg.OperationalError as exc:
                pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 (trust auth): {exc}")
            if version >= 170000:
                pytest.skip(f"the PostgreSQL at 127.0.0.1:5432 is {version}, not 15 or 16")
            url = SYSTEM_POSTGRESQL
        else:
            url = stack.enter_context(_postgresql_16(env))
        name = f"tokentill_manual_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        stack.callback(_drop, url, name)
        target = urlsplit(url)._replace(path=f"/{name}").geturl()
        archive = tmp_path / "tokentill.dump"
        entries, customers = _ledger_dump(server_url, migrated_template, archive)
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**env, "PGBIN": str(embedded.bin_dir()), "NEW_DATABASE_URL": target})
        assert done.returncode == 0, done.stderr[-3000:]
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT (SELECT count(*) FROM journal_entries), "
                                "(SELECT count(*) FROM customers)").fetchone() == (entries, customers)


def _drop(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

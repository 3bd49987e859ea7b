"""Every migration can be undone and redone: downgrade to nothing, then upgrade to head again."""
from __future__ import annotations

import json

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from api.runtime import sync_url
from migrations import runner


def test_migrations_go_down_to_base_and_back_up_to_head(scratch_url):
    engine = create_engine(sync_url(scratch_url))
    try:
        with engine.connect() as conn:
            config = runner.alembic_config()
            config.attributes["connection"] = conn
            for revision in ("0004", "base"):
                command.downgrade(config, revision)
                conn.commit()
            assert runner.current_revision(conn) is None
            tables = conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
                                       "AND tablename <> 'alembic_version'")).scalar()
            assert tables == 0
            command.upgrade(config, "head")
            conn.commit()
            assert runner.current_revision(conn) == runner.head_revision()
            triggers = {row[0] for row in conn.execute(text(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgrelid = 'journal_entries'::regclass"))}
            assert {"journal_entries_balanced", "journal_entries_txid"} <= triggers
    finally:
        engine.dispose()


def _post(conn, key: str, cash: int, lot: int, amount: int) -> str:
    batch = json.dumps([{"k": key, "h": "00", "kind": "raw", "c": None, "at": "2026-12-01T00:00:00+00:00", "m": {},
                         "p": [[cash, 0, amount], [lot, 0, -amount]],
                         "d": [[cash, 0, amount, 0], [lot, 0, -amount, 0]]}])
    row = conn.execute(text("SELECT status FROM ledger_post(CAST(:b AS jsonb), '{}', '{}', '{}')"), {"b": batch}).one()
    conn.commit()
    return row[0]


def test_the_ledger_posts_and_checks_at_every_step_down_from_head_to_0018_and_back(scratch_url):
    """The ledger-invariant migrations (0019-0029) downgrade one by one with data
    in the ledger: at each step ledger_post posts, an unbalanced raw entry is refused, and the
    cached balances equal the postings; then up to head again."""
    engine = create_engine(sync_url(scratch_url))
    try:
        with engine.connect() as conn:
            config = runner.alembic_config()
            config.attributes["connection"] = conn
            conn.execute(text("INSERT INTO assets (code, scale) VALUES ('USD', 9)"))
            cash, lot = (conn.execute(text("INSERT INTO accounts (code, type, asset) "
                                           "VALUES (:c, :t, 'USD') RETURNING id"), {"c": c, "t": t}).scalar_one()
                         for c, t in (("asset:cash", "asset"), ("liability:lot", "liability")))
            conn.commit()
            steps = ["0028", "0027", "0026", "0025", "0024", "0023", "0022", "0021", "0020", "0019", "0018", "head"]
            for n, revision in enumerate(steps):
                if revision == "head":
                    command.upgrade(config, "head")
                else:
                    command.downgrade(config, revision)
                conn.commit()
                assert _post(conn, f"k-{revision}", cash, lot, 10 + n) == "posted"
                with pytest.raises(DBAPIError, match=r"unbalanced|does not balance"):
                    entry = conn.execute(text("INSERT INTO journal_entries (key, request_hash, kind, occurred_at) "
                                              "VALUES (:k, '\\x00', 'raw', now()) RETURNING id"),
                                         {"k": f"bad-{revision}"}).scalar_one()
                    conn.execute(text("INSERT INTO postings (entry_id, account_id, amount) VALUES (:e, :a, 5)"),
                                 {"e": entry, "a": cash})
                    conn.commit()
                conn.rollback()
                drift = conn.execute(text("""
                    SELECT count(*) FROM account_balances b
                      LEFT JOIN (SELECT account_id, stripe, sum(amount) FILTER (WHERE amount > 0) AS d,
                                        -sum(amount) FILTER (WHERE amount < 0) AS c
                                   FROM postings GROUP BY 1, 2) s USING (account_id, stripe)
                     WHERE b.debits <> coalesce(s.d, 0) OR b.credits <> coalesce(s.c, 0)""")).scalar_one()
                assert drift == 0
            assert runner.current_revision(conn) == runner.head_revision()
            total = conn.execute(text("SELECT debits FROM account_balances WHERE account_id = :a"),
                                 {"a": cash}).scalar()
            assert total == sum(10 + n for n in range(len(steps)))
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", [["migrate"], ["audit", "verify"]])
def test_a_database_migrated_by_a_newer_tokentill_stops_an_older_one_with_one_line(command, scratch_url, monkeypatch):
    """A deploy rolled back: the database is at a revision this tokentill does not have. It says
    so and stops (it was Alembic's CommandError traceback)."""
    engine = create_engine(sync_url(scratch_url))
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        engine.dispose()
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", scratch_url)
    from api.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(command)
    assert stopped.value.code == (f"error: the database is at revision 9999, which this tokentill does not know "
                                  f"(it knows up to {runner.head_revision()}): run a tokentill at least as new "
                                  f"as the one that migrated it, or go back with that one's `tokentill migrate --to "
                                  f"{runner.head_revision()}`")


@pytest.mark.parametrize("serve", [["serve"], ["serve", "--workers", "2"]])
def test_serve_on_a_database_a_newer_tokentill_migrated_stops_with_that_one_line(serve, scratch_url, tmp_path):
    """The same, through the command line of `serve` and of `serve --workers 2` (whose parent
    migrates): one line on stderr after the start's own log line, exit 1, no traceback."""
    import os
    import subprocess
    import sys

    engine = create_engine(sync_url(scratch_url))
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0099_newer'"))
    finally:
        engine.dispose()
    env = {**os.environ, "TOKENTILL_DATABASE_URL": scratch_url, "TOKENTILL_SPOOL_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "api.cli", *serve, "--port", "0"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"error: the database is at revision 0099_newer, which this tokentill does not know (it knows up to "
        f"{runner.head_revision()}): run a tokentill at least as new as the one that migrated it, or go back with "
        f"that one's `tokentill migrate --to {runner.head_revision()}`")


def test_a_server_older_than_the_migrations_need_stops_them_in_one_line_before_any(server_url, monkeypatch):
    """The migrations need PostgreSQL 15 (0009's NULLS NOT DISTINCT keys): on an older server
    `migrate` applied 0001-0008 and ended in 0009's syntax-error traceback. No older server is at
    hand, so the floor is raised above the one the tests run on."""
    import uuid

    import psycopg

    from api.bench.common import scratch_database
    from api.cli import main

    with scratch_database(server_url, f"tokentill_old_{uuid.uuid4().hex[:8]}") as url:
        with psycopg.connect(url) as conn:
            major = conn.info.server_version // 10000
        monkeypatch.setattr(runner, "MIN_SERVER_VERSION", (major + 1) * 10000, raising=False)
        monkeypatch.setenv("TOKENTILL_DATABASE_URL", url)
        with pytest.raises(SystemExit) as stopped:
            main(["migrate"])
        message = stopped.value.code
        assert isinstance(message, str) and "\n" not in message, message
        assert message.startswith(f"error: the database server runs PostgreSQL {major}."), message
        assert message.endswith(f"; tokentill needs PostgreSQL {major + 1} or later"), message
        assert _revision(url) is None  # nothing was applied


def _revision(url: str) -> str | None:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return runner.current_revision(conn)
    finally:
        engine.dispose()


def test_migrate_to_an_older_revision_goes_down_and_migrate_goes_back_up(scratch_url, monkeypatch, capsys):
    """The README's way back from a deploy rolled back ('downgrade first with the newer one's
    migrations') had no command: `tokentill migrate --to 0031` was a usage error (exit 2), and
    plain `alembic` could not run these migrations at all."""
    from api.cli import main

    monkeypatch.setenv("TOKENTILL_DATABASE_URL", scratch_url)
    head = runner.head_revision()
    assert main(["migrate", "--to", "0030"]) == 0
    assert capsys.readouterr().out == "migrated to 0030\n"
    assert _revision(scratch_url) == "0030"
    assert main(["migrate", "--to", "0030"]) == 0  # again: nothing to do
    assert main(["migrate", "--to", "0031"]) == 0  # up, to a revision short of head
    assert _revision(scratch_url) == "0031"
    assert main(["migrate"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"migrated to {head}"
    assert _revision(scratch_url) == head


@pytest.mark.parametrize("target", ["0011", "9999", "base", "0031x"])
def test_migrate_to_a_revision_there_is_none_of_is_a_usage_error_and_changes_nothing(target, scratch_url,
                                                                                    monkeypatch, capsys):
    from api.cli import main

    monkeypatch.setenv("TOKENTILL_DATABASE_URL", scratch_url)
    with pytest.raises(SystemExit) as stopped:
        main(["migrate", "--to", target])
    assert stopped.value.code == 2
    assert f"no migration {target!r}" in capsys.readouterr().err
    assert _revision(scratch_url) == runner.head_revision()


def test_plain_alembic_runs_the_migrations_on_the_configured_database(scratch_url):
    """`alembic -c migrations/alembic.ini downgrade|upgrade` ended in env.py's KeyError: 'connection'."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    ini = Path(runner.__file__).parent / "alembic.ini"
    env = {**os.environ, "TOKENTILL_DATABASE_URL": scratch_url}

    def alembic(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "alembic", "-c", str(ini), *args], env=env,
                              capture_output=True, text=True, timeout=120)

    done = alembic("downgrade", "0031")
    assert done.returncode == 0, done.stderr
    assert _revision(scratch_url) == "0031"
    done = alembic("upgrade", "head")
    assert done.returncode == 0, done.stderr
    assert _revision(scratch_url) == runner.head_revision()
    done = alembic("upgrade", "head", "--sql")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--sql" in done.stderr


@pytest.mark.parametrize("revoke", [False, True])
def test_a_database_user_that_may_not_create_tables_is_told_so_in_one_line(revoke, server_url, monkeypatch):
    """A TOKENTILL_DATABASE_URL whose user does not own the database (PostgreSQL 15 and later let
    only the owner create in `public`): every command ended in a ProgrammingError traceback
    through alembic's CREATE TABLE alembic_version."""
    import uuid

    import psycopg

    from api.bench.common import scratch_database
    from api.cli import main

    role = f"weak_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with scratch_database(server_url, f"tokentill_weak_{uuid.uuid4().hex[:8]}") as url:
            if revoke:  # not even USAGE: no schema to create in
                with psycopg.connect(url, autocommit=True) as owner:
                    owner.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            weak = f"postgresql://{role}@" + url.split("@", 1)[1]
            monkeypatch.setenv("TOKENTILL_DATABASE_URL", weak)
            with pytest.raises(SystemExit) as stopped:
                main(["migrate"])
            message = stopped.value.code
            assert isinstance(message, str) and message.startswith("error: cannot migrate the database: "), message
            assert "\n" not in message
            assert "TOKENTILL_DATABASE_URL" in message and "CREATE" in message
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_alembic_upgrade_head_from_the_checkouts_root_runs_the_migrations(scratch_url):
    """`alembic upgrade head` where the project is: FAILED: No 'script_location' key found in
    configuration (there was an alembic.ini under migrations/ only)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(runner.__file__).resolve().parent.parent
    env = {**os.environ, "TOKENTILL_DATABASE_URL": scratch_url}

    def alembic(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "alembic", *args], cwd=root, env=env, capture_output=True,
                              text=True, timeout=120)

    head = runner.head_revision()
    before = runner.revisions()[-2]
    done = alembic("downgrade", before)
    assert done.returncode == 0, done.stderr
    assert _revision(scratch_url) == before
    done = alembic("upgrade", "head")
    assert done.returncode == 0, done.stderr
    done = alembic("current")
    assert done.returncode == 0 and f"{head} (head)" in done.stdout, (done.stdout, done.stderr)


def test_lanes_asked_of_a_database_made_with_others_is_a_warning_naming_both(scratch_url, monkeypatch, caplog):
    """TOKENTILL_LANES is read when the database is created (migration 0009) and fixed after:
    set on an existing database it was ignored without a word."""
    import logging

    from api.runtime import open_database
    from api.settings import Settings

    with caplog.at_level(logging.WARNING, logger="tokentill"):
        open_database(Settings(database_url=scratch_url, lanes=4)).close()
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning == ("TOKENTILL_LANES is 4, but this database was created with 16 lanes, fixed since: "
                       "TOKENTILL_LANES only counts for a database created now")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tokentill"):
        open_database(Settings(database_url=scratch_url, lanes=16)).close()
        open_database(Settings(database_url=scratch_url)).close()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("command", [["migrate"], ["audit", "verify"]])
def test_a_database_whose_recorded_transaction_ids_pass_the_servers_is_refused_naming_the_epoch(command, scratch_url,
                                                                                               monkeypatch):
    """Seals ending at transaction 99,999,999 and 10,000,000,000 (epoch 2), as a database restored
    into a new cluster (transaction ids in the thousands) carries: every command stops in one line,
    naming the highest id, by number, not by its text, and the epoch past it (3)."""
    engine = create_engine(sync_url(scratch_url))
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))  # as pg_restore writes them
            conn.execute(text("""INSERT INTO seals (from_txid, to_txid, entry_ids, entry_hashes, prev_hash, chain_hash)
                                 VALUES ('1', '99999999', '{}', '{}', '\\x00', '\\x00'),
                                        ('99999999', '10000000000', '{}', '{}', '\\x00', '\\x00')"""))
    finally:
        engine.dispose()
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", scratch_url)
    from api.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(command)
    message = str(stopped.value.code)
    assert message.startswith("error: the database's transaction ids are behind its journal's (it recorded "
                              "transaction 10000000000, the server is at "), message
    assert "`pg_resetwal --epoch=3 -D DATADIR`" in message and "\n" not in message


@pytest.mark.parametrize("how", ["migrate", "start"])
def test_a_database_user_limited_to_one_connection_migrates(server_url, monkeypatch, capsys, how):
    """A role with CONNECTION LIMIT 1 (a hosted database's migration user, say) owning its
    database could not migrate it: `tokentill migrate` and the start's migration first check
    that sessions are not shared by a pooler with two connections at once ("error: cannot reach
    the database: ... too many connections for role", exit 3), and a connection opened right
    after the last one closed is refused until the server's process for that one has exited."""
    import uuid

    import psycopg

    from api.bench.common import scratch_database
    from api.cli import main
    from api.runtime import open_database
    from api.settings import Settings

    role = f"single_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
    try:
        name = f"tokentill_single_{uuid.uuid4().hex[:8]}"
        with scratch_database(server_url, name) as url:
            with psycopg.connect(url, autocommit=True) as owner:
                owner.execute(f'ALTER DATABASE "{name}" OWNER TO {role}')
            monkeypatch.setenv("TOKENTILL_DATABASE_URL", f"postgresql://{role}@" + url.split("@", 1)[1])
            monkeypatch.setenv("TOKENTILL_LANES", "4")  # its check after the migration connects once more
            if how == "migrate":
                assert main(["migrate"]) == 0
                assert capsys.readouterr().out.strip() == f"migrated to {runner.head_revision()}"
            else:
                open_database(Settings.from_env()).close()
            assert _revision(url) == runner.head_revision()
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.parametrize("versions", [(2,), (3,), (1, 2, 3, 4)])
def test_migrations_go_down_to_base_and_back_up_with_seals_of_later_hash_versions(versions, scratch_url):
    """0042's and 0076's downgrades keep the seals' later hash versions aside in tables guarded by
    0001's ledger_reject_change(); down to base, 0001 dropped the seals but not them, and its
    DROP FUNCTION was refused (the triggers depend on it): nothing moved. Now base holds no table,
    and head again no seal and no table kept aside."""
    engine = create_engine(sync_url(scratch_url))
    try:
        with engine.connect() as conn:
            for n, version in enumerate(versions):
                conn.execute(text(
                    """INSERT INTO seals (from_txid, to_txid, entry_ids, entry_hashes, prev_hash, chain_hash,
                                          hash_version)
                       VALUES (CAST(:lo AS xid8), CAST(:hi AS xid8), '{}', '{}', :z, :z, :v)"""),
                    {"lo": str(n), "hi": str(n + 1), "z": bytes(32), "v": version})
            conn.commit()
            config = runner.alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
            conn.commit()
            assert runner.current_revision(conn) is None
            tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                       "AND tablename <> 'alembic_version'")).scalars().all()
            assert tables == []
            command.upgrade(config, "head")
            conn.commit()
            assert runner.current_revision(conn) == runner.head_revision()
            assert conn.execute(text("SELECT count(*) FROM seals")).scalar_one() == 0
            left = conn.execute(text("SELECT tablename FROM pg_tables WHERE tablename LIKE 'seal%'")).scalars().all()
            assert left == ["seals"]
    finally:
        engine.dispose()

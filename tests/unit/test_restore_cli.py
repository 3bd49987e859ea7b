"""`tokentill restore DUMP` given a path that is no backup: a bad argument."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def no_database(tmp_path, monkeypatch) -> list[object]:
    """A new TOKENTILL_DATA_DIR under tmp_path, and a list of every database the restore opens
    (it opens none: that raises)."""
    import api.restore

    opened: list[object] = []

    def open_database(*args, **kwargs):
        opened.append(args)
        raise AssertionError("the restore opened a database")

    monkeypatch.setattr(api.restore, "open_database", open_database)
    monkeypatch.setenv("TOKENTILL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TOKENTILL_DATABASE_URL", raising=False)
    return opened


def test_a_restore_of_a_dump_that_is_not_there_is_a_usage_error_before_any_database(tmp_path, no_database, capsys):
    """README (Configuration): a bad argument is a usage error, exit 2, as `audit verify --file`
    and `audit reconcile --payments` exit on a file they cannot read. `tokentill restore` of a path
    that names no file exited 1, the code of a refused database. It exits 2, naming the path,
    and opens no database (no embedded cluster is made in a new TOKENTILL_DATA_DIR)."""
    import api.cli

    missing = tmp_path / "tokentill.dump"
    status = api.cli.main(["restore", str(missing)])
    err = capsys.readouterr().err
    assert status == 2, status  # was: SystemExit, exit 1
    assert err == f"error: {missing}: no such file\n"
    assert no_database == [] and not (tmp_path / "data").exists()


def _directory(tmp_path: Path) -> Path:
    return tmp_path


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty.dump").write_bytes(b"")
    return tmp_path / "empty.dump"


def _plain_sql(tmp_path: Path) -> Path:  # pg_dump's default format: SQL for psql, which pg_restore refuses
    (tmp_path / "plain.sql").write_text("--\n-- PostgreSQL database dump\n--\n")
    return tmp_path / "plain.sql"


def _unreadable(tmp_path: Path) -> Path:  # read(2) at its offset 0 fails with EIO, for root too (a mode 000 would not)
    return Path("/proc/self/mem")


def _through_a_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_bytes(b"PGDMP")
    return tmp_path / "file" / "tokentill.dump"


@pytest.mark.parametrize("path, said", [
    (_directory, "a directory, not a backup file (pg_dump --format=custom writes one file)"),
    (_empty, "an empty file, not a backup (pg_dump --format=custom writes one that begins PGDMP)"),
    (_plain_sql, "not a backup: an archive of pg_dump --format=custom begins PGDMP"),
    (_unreadable, f"cannot be read: {os.strerror(5)}"),
    (_through_a_file, "no such file"),
])
def test_a_restore_of_a_path_that_is_no_backup_says_what_it_is_before_any_database(path, said, tmp_path, no_database,
                                                                                  capsys):
    """`tokentill restore /tmp` said `error: /tmp: no such file` (exit 2): the path is there, a
    directory. An empty file, one that is not an archive, or one that cannot be read went on to
    make the embedded cluster and handed pg_restore a file it refused (exit 1: 'pg_restore
    restored nothing: ... input file is too short'). Each is now a usage error, exit 2, saying
    what the path is, before any database is opened."""
    import api.cli

    given = path(tmp_path)
    status = api.cli.main(["restore", str(given)])
    assert (status, capsys.readouterr().err) == (2, f"error: {given}: {said}\n")
    assert no_database == [] and not (tmp_path / "data").exists()

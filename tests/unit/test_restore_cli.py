"""`tokentill restore DUMP` given a path that names no file: a bad argument."""
from __future__ import annotations


def test_a_restore_of_a_dump_that_is_not_there_is_a_usage_error_before_any_database(tmp_path, monkeypatch, capsys):
    """README (Configuration): a bad argument is a usage error, exit 2, as `audit verify --file`
    and `audit reconcile --payments` exit on a file they cannot read. `tokentill restore` of a path
    that names no file exited 1, the code of a refused database. It exits 2, naming the path,
    and opens no database (no embedded cluster is made in a new TOKENTILL_DATA_DIR)."""
    import api.cli
    import api.restore

    opened: list[object] = []

    def open_database(*args, **kwargs):
        opened.append(args)
        raise AssertionError("the restore opened a database")

    monkeypatch.setattr(api.restore, "open_database", open_database)
    monkeypatch.setenv("TOKENTILL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TOKENTILL_DATABASE_URL", raising=False)
    missing = tmp_path / "tokentill.dump"

    status = api.cli.main(["restore", str(missing)])
    err = capsys.readouterr().err
    assert status == 2, status  # was: SystemExit, exit 1
    assert err == f"error: {missing}: no such file\n"
    assert opened == [] and not (tmp_path / "data").exists()

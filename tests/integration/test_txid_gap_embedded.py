"""A dump restored by hand (pg_restore) into a new embedded cluster: its transaction ids lie below
those the journal recorded, and every command stops. The line named only `pg_resetwal --epoch=N
-D DATADIR`, a program not on the PATH (the wheel's) and a DATADIR to guess; on the embedded
cluster it now names `tokentill restore DUMP` (which moves the ids on itself), and the wheel's
pg_resetwal with this cluster's data dir."""
from __future__ import annotations

import tempfile
from pathlib import Path

import psycopg
import pytest

from api.cli import main
from ledger import embedded


@pytest.mark.parametrize("command", [["migrate"], ["audit", "verify"]])
def test_the_txid_gap_on_the_embedded_cluster_names_tokentill_restore_and_its_data_dir(command, monkeypatch):
    where = tempfile.TemporaryDirectory(prefix="tokentill-txid-gap-")  # one the server's user may reach
    pgdata = Path(where.name) / "pg"
    monkeypatch.delenv("TOKENTILL_DATABASE_URL", raising=False)
    monkeypatch.setenv("TOKENTILL_DATA_DIR", where.name)
    try:
        assert main(["migrate"]) == 0  # makes the cluster, and stops it on leaving
        cluster = embedded.start(pgdata)
        try:
            with psycopg.connect(cluster.url, autocommit=True) as conn, conn.transaction():
                conn.execute("SET LOCAL session_replication_role = replica")  # as pg_restore writes them
                conn.execute("""INSERT INTO seals (from_txid, to_txid, entry_ids, entry_hashes, prev_hash, chain_hash)
                                VALUES ('1', '10000000000', '{}', '{}', '\\x00', '\\x00')""")
        finally:
            cluster.stop()
        with pytest.raises(SystemExit) as stopped:
            main(command)
        message = str(stopped.value.code)
        resetwal = embedded.bin_dir() / "pg_resetwal"
        as_user = f" as {cluster.system_user}" if cluster.system_user else ""
        assert message.startswith("error: the database's transaction ids are behind its journal's (it recorded "
                                  "transaction 10000000000, the server is at "), message
        # 10,000,000,000 >> 32 is epoch 2: epoch 3 puts every new id past it
        assert message.endswith(
            "restore the dump with `tokentill restore DUMP` into a new TOKENTILL_DATA_DIR (it moves the ids past "
            f"the journal's itself), or stop every tokentill using {pgdata.resolve()} and run "
            f"`{resetwal} --epoch=3 -D {pgdata.resolve()}`{as_user} (README, Backups)"), message
        assert "\n" not in message
    finally:
        where.cleanup()

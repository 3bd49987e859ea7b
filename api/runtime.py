"""Where the database comes from: the configured server, or the embedded cluster; then migrate."""
from __future__ import annotations

from dataclasses import dataclass

from api.settings import Settings
from ledger import embedded
from ledger.db import sqlalchemy_url
from migrations import runner


@dataclass(slots=True)
class DatabaseHandle:
    url: str
    cluster: embedded.EmbeddedPostgres | None = None

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()


def open_database(settings: Settings, *, migrate: bool = True) -> DatabaseHandle:
    """Start or join the embedded cluster when no URL is set; apply migrations under a lock."""
    if settings.database_url:
        handle = DatabaseHandle(settings.database_url)
    else:
        cluster = embedded.start(settings.data_dir / "pg", keep=True)
        handle = DatabaseHandle(cluster.url, cluster)
    if migrate:
        runner.upgrade(sync_url(handle.url))
    return handle


def sync_url(url: str) -> str:
    return sqlalchemy_url(url).render_as_string(hide_password=False)

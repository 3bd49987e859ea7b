"""Every migration can be undone and redone: downgrade to nothing, then upgrade to head again."""
from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, text

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

"""Alembic environment: runs migrations on the connection handed in by migrations.runner (what
`tokentill migrate` does), or, under plain `alembic -c migrations/alembic.ini upgrade|downgrade
...`, on the database tokentill's settings name, under the same lock."""
from alembic import context


def run(connection) -> None:
    # A move down runs as one transaction (runner.upgrade says so): a downgrade that refuses (it
    # would destroy what an older revision cannot hold) leaves the database where it was.
    command = getattr(context.config.cmd_opts, "cmd", None)  # plain `alembic downgrade …`: (function, …)
    whole = bool(context.config.attributes.get("one_transaction")) or (
        command is not None and getattr(command[0], "__name__", "") == "downgrade")
    context.configure(connection=connection, transaction_per_migration=not whole)
    with context.begin_transaction():
        context.run_migrations()


if context.config.attributes.get("connection") is not None:
    run(context.config.attributes["connection"])
elif context.is_offline_mode():
    raise SystemExit("error: these migrations need the database (they read and move data): "
                     "they cannot be written out as SQL (--sql)")
else:
    from migrations.runner import configured_database

    with configured_database() as conn:
        conn.commit()  # each migration in a transaction of its own, as `tokentill migrate` runs them
        run(conn)

"""Migration 0007 keys usage events by (customer, event id) and keeps every row and key as it was."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from api.cli import main
from migrations import runner
from tests.integration.migration_steps import a_customer, downgrade_refused

EVENT = """INSERT INTO usage_events (event_id, customer_id, request_hash, model, occurred_at, usage)
           VALUES (:e, :c, '\\x01', 'model-a', now(), '{}')"""
CHARGE = """INSERT INTO charges (customer_id, event_id, request_id, final, request_hash, model, occurred_at,
                                 usage, price_book, price_version, lines, charged, from_hold, from_lots,
                                 from_receivable)
            VALUES (:c, :e, :e, true, '\\x01', 'model-a', now(), '{}', 'book', 'v1', '[]', 0, 0, 0, 0)"""


def test_event_ids_become_per_customer_and_existing_rows_and_keys_stay(migrating):
    conn, config = migrating
    command.downgrade(config, "0006")
    conn.commit()
    a_customer(conn, "mig-a")
    a_customer(conn, "mig-b")
    conn.execute(text("INSERT INTO api_keys (id, secret_hash, scope, customers) "
                      "VALUES ('key_mig', '\\xabcd', 'auditor', '{mig-a}')"))
    conn.execute(text(EVENT), {"e": "shared-evt-1", "c": "mig-a"})
    conn.execute(text(CHARGE), {"e": "shared-evt-1", "c": "mig-a"})
    conn.commit()
    with pytest.raises(IntegrityError):  # before 0007: one customer's id blocks another's
        conn.execute(text(EVENT), {"e": "shared-evt-1", "c": "mig-b"})
    conn.rollback()

    command.upgrade(config, "0007")
    conn.commit()
    key = conn.execute(text("SELECT secret_hash, scope, customers, revoked_at FROM api_keys "
                            "WHERE id = 'key_mig'")).one()
    assert (bytes(key.secret_hash), key.scope, key.customers, key.revoked_at) == (
        b"\xab\xcd", "auditor", ["mig-a"], None)
    conn.execute(text(EVENT), {"e": "shared-evt-1", "c": "mig-b"})
    conn.execute(text(CHARGE), {"e": "shared-evt-1", "c": "mig-b"})
    conn.commit()
    rows = conn.execute(text("SELECT e.customer_id FROM usage_events e JOIN charges c "
                             "USING (customer_id, event_id) WHERE event_id = 'shared-evt-1' "
                             "ORDER BY 1")).scalars().all()
    assert rows == ["mig-a", "mig-b"]
    with pytest.raises(IntegrityError):  # still one event per id and customer
        conn.execute(text(EVENT), {"e": "shared-evt-1", "c": "mig-a"})
    conn.rollback()
    with pytest.raises(IntegrityError):  # a charge names an event of its own customer
        conn.execute(text(CHARGE.replace(":e, :e", ":e, 'x'")), {"e": "never-sent", "c": "mig-a"})
    conn.rollback()

    downgrade_refused(conn, config, "0006", "shared-evt-1 is used by several customers")
    assert runner.current_revision(conn) == "0007"


def test_0007_goes_down_and_up_with_rows_in_place(migrating):
    conn, config = migrating
    a_customer(conn, "mig-c")
    conn.execute(text(EVENT), {"e": "evt-1", "c": "mig-c"})
    conn.execute(text(CHARGE), {"e": "evt-1", "c": "mig-c"})
    conn.commit()
    command.downgrade(config, "0006")
    conn.commit()
    assert conn.execute(text("SELECT count(*) FROM charges WHERE event_id = 'evt-1'")).scalar() == 1
    command.upgrade(config, "head")
    conn.commit()
    assert conn.execute(text("SELECT count(*) FROM usage_events e JOIN charges c "
                             "USING (customer_id, event_id)")).scalar() == 1


def test_a_downgrade_refused_on_a_shared_event_id_says_so_in_one_line_and_moves_nothing(migrating, scratch_url,
                                                                                        monkeypatch):
    """0007's downgrade refuses two customers sharing an event id with unique_violation (23505),
    not restrict_violation (23001), the one code the runner took for a refusal: `tokentill migrate
    --to 0006` was a traceback (psycopg's UniqueViolation). Any integrity constraint violation
    (class 23) a downgrade raises is now its refusal: one line, exit 1 (README: Migrations), and
    the database still at 0007 with both events."""
    conn, config = migrating
    command.downgrade(config, "0007")
    conn.commit()
    for customer in ("mig-d", "mig-e"):
        a_customer(conn, customer)
        conn.execute(text(EVENT), {"e": "shared-evt-2", "c": customer})
    conn.commit()
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", scratch_url)
    with pytest.raises(SystemExit) as refused:
        main(["migrate", "--to", "0006"])
    assert refused.value.code == (
        "error: cannot migrate the database down to 0006: usage event id shared-evt-2 is used by several "
        "customers; 0006 keys events by id alone; it is still at 0007")
    # plain `alembic downgrade`, from the checkout's root, the same
    done = subprocess.run([sys.executable, "-m", "alembic", "downgrade", "0006"], capture_output=True, text=True,
                          cwd=Path(runner.__file__).resolve().parent.parent, timeout=120,
                          env={**os.environ, "TOKENTILL_DATABASE_URL": scratch_url})
    assert (done.returncode, done.stderr.strip().splitlines()[-1:]) == (1, [
        "error: cannot migrate the database down: usage event id shared-evt-2 is used by several customers; "
        "0006 keys events by id alone; nothing was moved"]), done.stderr[-3000:]
    assert runner.current_revision(conn) == "0007"
    assert conn.execute(text("SELECT count(*) FROM usage_events WHERE event_id = 'shared-evt-2'")).scalar() == 2

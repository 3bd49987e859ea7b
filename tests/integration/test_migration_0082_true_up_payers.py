"""Migration 0082: `true_up_payers`, what each payer got of each charge from a true-up. Lane-
partitioned like `true_up_charges`, immutable, one row per true-up, charge and payer (the row
without a payer too), its customer and re-rate checked once per statement (0075's function); the
downgrade refuses to drop rows, and drops the empty table."""
from __future__ import annotations

import psycopg
import pytest
from alembic import command
from sqlalchemy import text

from migrations import runner
from tests.integration.migration_steps import a_customer, a_lane_customer, downgrade_refused

_ROW = ("INSERT INTO true_up_payers (lane, customer_id, period, rerate_id, charge_id, payer, units) "
        "VALUES (ledger_lane(%s), %s, '2026-11', %s, 7, %s, %s)")


def test_a_payer_row_is_once_per_true_up_charge_and_payer_immutable_and_names_its_customer(scratch_url):
    with psycopg.connect(scratch_url) as conn:
        lane = a_lane_customer(conn, "c80")
        conn.execute(_ROW, ("c80", "c80", None, "lot:a", 5))
        conn.execute(_ROW, ("c80", "c80", None, None, 2))  # what none of the charge's payers got
        conn.commit()
        for args, error in ((("c80", "c80", None, "lot:a", 1), psycopg.errors.UniqueViolation),
                            (("c80", "c80", None, None, 1), psycopg.errors.UniqueViolation),
                            (("c80", "c80", None, "lot:b", 0), psycopg.errors.CheckViolation),
                            (("c80", "c80", "no-such-rerate", "lot:a", 1), psycopg.errors.ForeignKeyViolation),
                            (("gone", "gone", None, "lot:a", 1), psycopg.errors.ForeignKeyViolation)):
            with pytest.raises(error):
                conn.execute(_ROW, args)
            conn.rollback()
        for sql in ("UPDATE true_up_payers SET units = 1", "DELETE FROM true_up_payers", "TRUNCATE true_up_payers",
                    f"TRUNCATE true_up_payers_l{lane}"):
            with pytest.raises(psycopg.errors.RestrictViolation, match="not allowed"):
                conn.execute(sql)
            conn.rollback()
        assert conn.execute("SELECT count(*) FROM true_up_payers").fetchone()[0] == 2


def test_the_downgrade_refuses_rows_and_drops_the_empty_table(migrating):
    conn, config = migrating
    a_customer(conn, "d80")
    conn.execute(text("INSERT INTO true_up_payers (lane, customer_id, period, charge_id, payer, units) "
                      "VALUES (ledger_lane('d80'), 'd80', '2026-11', 7, 'lot:a', 5)"))
    conn.commit()
    downgrade_refused(conn, config, "0081", "would lose it")
    assert runner.current_revision(conn) == "0082"
    conn.execute(text("SET session_replication_role = replica"))
    conn.execute(text("TRUNCATE true_up_payers"))
    conn.execute(text("SET session_replication_role = origin"))
    conn.commit()
    command.downgrade(config, "0081")
    conn.commit()
    assert conn.execute(text("SELECT to_regclass('true_up_payers')")).scalar() is None
    command.upgrade(config, "head")
    conn.commit()
    assert runner.current_revision(conn) == runner.head_revision()

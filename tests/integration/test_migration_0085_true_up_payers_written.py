"""Migration 0085: `true_up_payers.written`, each batch's payer rows numbered as written (one
sequence; verify orders each payer's true-ups by it, wallets/audit.py). Rows written before keep no
number (the upgrade rewrites nothing); a row written after gets one by default; the rows stay
immutable; the downgrade drops the column and its sequence, the rows kept."""
from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text

from migrations import runner
from tests.integration.migration_steps import a_customer

_ROW = ("INSERT INTO true_up_payers (lane, customer_id, period, charge_id, payer, units) "
        "VALUES (ledger_lane('d85'), 'd85', '2026-11', 7, :payer, 5)")


def test_rows_before_keep_no_number_rows_after_get_one_and_the_downgrade_keeps_the_rows(migrating):
    conn, config = migrating
    command.downgrade(config, "0084")
    conn.commit()
    a_customer(conn, "d85")
    conn.execute(text(_ROW), {"payer": "lot:a"})
    conn.commit()
    command.upgrade(config, "0085")
    conn.commit()
    conn.execute(text(_ROW), {"payer": "lot:b"})
    conn.commit()
    rows = dict(conn.execute(text("SELECT payer, written FROM true_up_payers WHERE customer_id = 'd85'")).all())
    assert rows["lot:a"] is None and rows["lot:b"] is not None, rows
    with pytest.raises(Exception, match="not allowed"):
        conn.execute(text("UPDATE true_up_payers SET written = 1"))
    conn.rollback()
    command.downgrade(config, "0084")
    conn.commit()
    assert conn.execute(text("SELECT count(*) FROM true_up_payers WHERE customer_id = 'd85'")).scalar() == 2
    assert conn.execute(text("SELECT to_regclass('true_up_payers_written')")).scalar() is None
    command.upgrade(config, "head")
    conn.commit()
    assert runner.current_revision(conn) == runner.head_revision()

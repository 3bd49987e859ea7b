"""Migration 0071: one row of `true_up_charges` per true-up (a close's, a re-rate's), rule and
charge. The code writes one; a database holding two, which only an insert by hand makes, stops the
upgrade naming them, with nothing changed; without them it upgrades, and a second row of one
true-up, rule and charge (a close's, a kept rule's without a charge) is refused from then on."""
from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from migrations import runner
from tests.integration.migration_steps import a_customer

ROW = """INSERT INTO true_up_charges (lane, customer_id, period, rule_id, charge_id, rerate_id, units)
         VALUES (ledger_lane('m69'), 'm69', '2026-11', :rule, :charge, NULL, :units)"""


def test_two_rows_of_one_true_up_and_charge_stop_the_upgrade_and_none_is_taken_after(migrating):
    conn, config = migrating
    command.downgrade(config, "0070")
    conn.commit()
    a_customer(conn, "m69")
    for units in (600, 600):  # the close's row of charge 7, inserted again by hand
        conn.execute(text(ROW), {"rule": "v-out", "charge": 7, "units": units})
    conn.execute(text(ROW), {"rule": "v-out", "charge": 8, "units": 400})
    conn.commit()
    with pytest.raises(DBAPIError, match=r"true_up_charges holds 2 rows of one true-up and charge \(customer "
                                         r"m69, period 2026-11, the close, rule v-out, charge 7\)"):
        command.upgrade(config, "head")
    conn.rollback()
    assert runner.current_revision(conn) == "0070"
    assert conn.execute(text("SELECT count(*) FROM true_up_charges")).scalar() == 3  # nothing changed
    conn.execute(text("SET session_replication_role = replica"))  # past the table's immutability
    conn.execute(text("DELETE FROM true_up_charges WHERE charge_id = 7 AND ctid IN ("
                      "SELECT max(ctid) FROM true_up_charges WHERE charge_id = 7)"))
    conn.execute(text("SET session_replication_role = origin"))
    conn.commit()
    command.upgrade(config, "head")
    conn.commit()
    assert runner.current_revision(conn) == runner.head_revision()
    conn.execute(text(ROW), {"rule": "v-in", "charge": None, "units": 0})  # a rule kept, nothing given
    conn.commit()
    for charge, rule, units in ((7, "v-out", 600), (8, "v-out", 1), (None, "v-in", 0)):
        with pytest.raises(IntegrityError, match="duplicate key value violates unique constraint"):
            conn.execute(text(ROW), {"rule": rule, "charge": charge, "units": units})
        conn.rollback()
    conn.execute(text(ROW), {"rule": "v-in", "charge": 7, "units": 5})  # another rule of the charge
    conn.commit()
    command.downgrade(config, "0070")  # the key goes; the rows stay
    conn.commit()
    assert conn.execute(text("SELECT count(*) FROM true_up_charges")).scalar() == 4
    command.upgrade(config, "head")
    conn.commit()

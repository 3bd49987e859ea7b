"""Migration 0075: `true_up_charges`' references to customers and re-rates are checked once per
statement (each distinct customer and re-rate of its rows probed once), not by a foreign key's
check per row (a close's or re-rate's write of 100,000 rows ran 100,000). They refuse what the keys
refused: a row naming a missing customer or re-rate fails its whole statement with
foreign_key_violation, through the parent or a lane partition by name; and the parents cannot go
away under the rows (no DELETE, no TRUNCATE, CASCADE or not). The downgrade restores the keys."""
from __future__ import annotations

import psycopg
import pytest
from alembic import command

from migrations import runner
from tests.integration.migration_steps import a_lane_customer, gone_of_lane

_ROW = ("INSERT INTO {table} (lane, customer_id, period, rule_id, charge_id, rerate_id, units) "
        "VALUES (ledger_lane(%s), %s, '2026-11', 'r1', %s, %s, 5)")


def _setup(conn: psycopg.Connection) -> int:
    lane = a_lane_customer(conn, "c75")
    conn.execute("INSERT INTO rerates (id, book_id, version, range_from, range_to) "
                 "VALUES ('rr75', 'b', 'v2', '2026-11-01', '2026-12-01')")
    return lane


def test_true_up_charges_has_no_row_level_foreign_key_and_a_statement_check_on_each_table(scratch_url):
    with psycopg.connect(scratch_url) as conn:
        keys = conn.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'true_up_charges'::regclass "
                            "AND contype = 'f'").fetchall()
        assert keys == []
        checked = {t for (t,) in conn.execute(
            "SELECT c.relname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid "
            "WHERE g.tgname = 'true_up_charges_refs' AND c.relname LIKE 'true_up_charges%'")}
        assert checked == {"true_up_charges", *(f"true_up_charges_l{k}" for k in range(16))}


@pytest.mark.parametrize("named", ["parent", "partition"])
def test_a_row_naming_a_missing_customer_or_re_rate_fails_its_whole_statement(scratch_url, named):
    with psycopg.connect(scratch_url) as conn:
        lane = _setup(conn)
        gone = gone_of_lane(conn, lane)
        conn.commit()
        table = "true_up_charges" if named == "parent" else f"true_up_charges_l{lane}"
        row = _ROW.format(table=table)
        # the close's row (no re-rate) and the re-rate's, each naming what exists, go in
        conn.execute(row, ("c75", "c75", 1, None))
        conn.execute(row, ("c75", "c75", 1, "rr75"))
        conn.commit()
        for customer, rerate, words in (("c75", "no-such-rerate", "no re-rate no-such-rerate"),
                                        (gone, None, f"no customer {gone}")):
            with pytest.raises(psycopg.errors.ForeignKeyViolation, match=words):
                # beside a good row in the same statement: neither goes in
                conn.execute(f"INSERT INTO {table} (lane, customer_id, period, rule_id, charge_id, rerate_id, units) "
                             f"VALUES ({lane}, 'c75', '2026-11', 'r1', 3, 'rr75', 5), "
                             f"({lane}, %s, '2026-11', 'r1', 2, %s, 5)", (customer, rerate))
            conn.rollback()
        assert conn.execute("SELECT count(*) FROM true_up_charges").fetchone()[0] == 2


@pytest.mark.parametrize("attack", ["DELETE FROM customers WHERE id = 'c75'", "DELETE FROM rerates WHERE id = 'rr75'",
                                    "UPDATE customers SET id = 'c76' WHERE id = 'c75'",
                                    "TRUNCATE customers", "TRUNCATE customers CASCADE",
                                    "TRUNCATE rerates", "TRUNCATE rerates CASCADE"])
def test_the_customer_and_re_rate_a_row_names_cannot_go_away(scratch_url, attack):
    with psycopg.connect(scratch_url) as conn:
        _setup(conn)
        conn.execute(_ROW.format(table="true_up_charges"), ("c75", "c75", 1, "rr75"))
        conn.commit()
        with pytest.raises(psycopg.Error):
            conn.execute(attack)
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM true_up_charges t JOIN customers c ON c.id = t.customer_id "
                            "JOIN rerates r ON r.id = t.rerate_id").fetchone()[0] == 1


def test_the_downgrade_restores_the_foreign_keys(migrating):
    conn, config = migrating
    command.downgrade(config, "0074")
    conn.commit()
    keys = {name for (name,) in conn.exec_driver_sql(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'true_up_charges'::regclass AND contype = 'f'")}
    assert keys == {"true_up_charges_customer_id_fkey", "true_up_charges_rerate_id_fkey"}
    command.upgrade(config, "head")
    conn.commit()
    assert runner.current_revision(conn) == runner.head_revision()


@pytest.mark.parametrize("named", ["parent", "partition"])
def test_copy_and_a_data_modifying_cte_naming_a_missing_customer_or_re_rate_fail(scratch_url, named):
    """COPY and an INSERT in a WITH fire the statement check as INSERT does (the keys checked each row)."""
    with psycopg.connect(scratch_url) as conn:
        lane = _setup(conn)
        gone = gone_of_lane(conn, lane)
        conn.commit()
        table = "true_up_charges" if named == "parent" else f"true_up_charges_l{lane}"
        for customer, rerate in ((gone, None), ("c75", "no-such-rerate")):
            with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():
                with conn.cursor().copy(f"COPY {table} (lane, customer_id, period, rule_id, charge_id, rerate_id, "
                                        "units) FROM STDIN") as copy:
                    copy.write_row((lane, "c75", "2026-11", "r1", 1, None, 5))
                    copy.write_row((lane, customer, "2026-11", "r1", 2, rerate, 5))
            with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():
                conn.execute(f"WITH w AS (INSERT INTO {table} (lane, customer_id, period, rule_id, charge_id, "
                             f"rerate_id, units) VALUES ({lane}, %s, '2026-11', 'r1', 2, %s, 5) RETURNING 1) "
                             "SELECT count(*) FROM w", (customer, rerate))
        assert conn.execute("SELECT count(*) FROM true_up_charges").fetchone()[0] == 0


@pytest.mark.parametrize("named", ["parent", "partition"])
@pytest.mark.parametrize("change", ["customer_id = '{gone}'", "rerate_id = 'no-such-rerate'"])
def test_a_row_cannot_be_updated_to_name_a_missing_customer_or_re_rate(scratch_url, named, change):
    """The keys checked an UPDATE too; the rows refuse UPDATE (the table's immutability trigger), so
    the statement check on INSERT alone is enough."""
    with psycopg.connect(scratch_url) as conn:
        lane = _setup(conn)
        gone = gone_of_lane(conn, lane)
        conn.execute(_ROW.format(table="true_up_charges"), ("c75", "c75", 1, "rr75"))
        conn.commit()
        table = "true_up_charges" if named == "parent" else f"true_up_charges_l{lane}"
        with pytest.raises(psycopg.Error):
            conn.execute(f"UPDATE {table} SET {change.format(gone=gone)}")
        conn.rollback()
        assert conn.execute("SELECT customer_id, rerate_id FROM true_up_charges").fetchall() == [("c75", "rr75")]


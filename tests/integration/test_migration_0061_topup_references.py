"""Migration 0061: the database holds one top-up per customer and payment reference. A database
credited twice under one reference before 3d5c05e upgrades all the same (its later entry is left
out of the index), and from then on that reference, as every other, takes no further top-up."""
from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from migrations import runner
from tests.integration.migration_steps import cash_and_lot, raw_entry


def _top_up(conn, key: str, customer: str, reference: str, cash: int, lot: int) -> str:
    """A raw top-up entry of 10 atomic units under `reference`, through ledger_post."""
    return raw_entry(conn, key, "topup", customer, {"lot_id": key, "reference": reference}, cash, lot)


def test_top_ups_credited_twice_before_upgrade_and_no_reference_takes_another_after(migrating):
    conn, config = migrating
    cash, lot = cash_and_lot(conn, config, "0060", "m61")
    for key, reference in (("a", "pi_twice"), ("b", "pi_twice"), ("c", "pi_once"), ("d", ""), ("e", "")):
        assert _top_up(conn, f"m61-{key}", "m61", reference, cash, lot) == "posted"
    command.upgrade(config, "head")
    conn.commit()
    assert runner.current_revision(conn) == runner.head_revision()
    for key, reference in (("f", "pi_twice"), ("g", "pi_once")):
        with pytest.raises(IntegrityError, match=rf"=\(\d+, m61, {reference}\) already exists"):
            _top_up(conn, f"m61-{key}", "m61", reference, cash, lot)
        conn.rollback()
    for key, reference in (("h", "pi_new"), ("i", ""), ("j", "")):
        assert _top_up(conn, f"m61-{key}", "m61", reference, cash, lot) == "posted"
    with pytest.raises(IntegrityError, match=r"=\(\d+, m61, pi_new\) already exists"):
        _top_up(conn, "m61-k", "m61", "pi_new", cash, lot)
    conn.rollback()
    assert _top_up(conn, "m61-l", "m61-other", "pi_new", cash, lot) == "posted"  # another customer's
    credited = conn.execute(text("SELECT sum(amount) FROM postings WHERE account_id = :a"),
                            {"a": cash}).scalar()
    assert credited == 10 * 9  # five before, four after
    command.downgrade(config, "0060")
    conn.commit()
    assert _top_up(conn, "m61-m", "m61", "pi_new", cash, lot) == "posted"  # no guard below 0061
    command.upgrade(config, "head")
    conn.commit()

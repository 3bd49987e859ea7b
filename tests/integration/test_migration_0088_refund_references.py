"""Migration 0088: the database holds one refund of a top-up per customer and refund reference
(re_...). A database that paid one out twice before the rule upgrades all the same (its later entry
is left out of the index), and from then on that reference takes no further refund; revocations
(no cash) and refunds without a reference are not guarded."""
from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from migrations import runner
from tests.integration.migration_steps import cash_and_lot, raw_entry


def _reversal(conn, key: str, customer: str, reference: str, kind: str, cash: int, lot: int) -> str:
    """A raw reversal entry of 10 atomic units (lot -> cash) under `reference`, through ledger_post."""
    metadata = {"lot_id": "l1", "reversal": kind, "reason": "", "reference": reference}
    return raw_entry(conn, key, "grant_reversal", customer, metadata, lot, cash)


def test_refunds_paid_twice_before_upgrade_and_no_reference_takes_another_after(migrating):
    conn, config = migrating
    cash, lot = cash_and_lot(conn, config, "0087", "m88")
    for key, reference in (("a", "re_twice"), ("b", "re_twice"), ("c", "re_once"), ("d", ""), ("e", "")):
        assert _reversal(conn, f"m88-{key}", "m88", reference, "refund", cash, lot) == "posted"
    command.upgrade(config, "head")
    conn.commit()
    assert runner.current_revision(conn) == runner.head_revision()
    for key, reference in (("f", "re_twice"), ("g", "re_once")):
        with pytest.raises(IntegrityError, match=rf"=\(\d+, m88, {reference}\) already exists"):
            _reversal(conn, f"m88-{key}", "m88", reference, "refund", cash, lot)
        conn.rollback()
    for key, reference, kind in (("h", "re_new", "refund"), ("i", "", "refund"), ("j", "", "refund"),
                                 ("k", "re_new", "revocation"), ("l", "re_new", "revocation")):
        assert _reversal(conn, f"m88-{key}", "m88", reference, kind, cash, lot) == "posted"
    with pytest.raises(IntegrityError, match=r"=\(\d+, m88, re_new\) already exists"):
        _reversal(conn, "m88-m", "m88", "re_new", "refund", cash, lot)
    conn.rollback()
    assert _reversal(conn, "m88-n", "m88-other", "re_new", "refund", cash, lot) == "posted"  # another customer's
    paid = conn.execute(text("SELECT -sum(amount) FROM postings WHERE account_id = :a"), {"a": cash}).scalar()
    assert paid == 10 * 11  # five before, six after
    command.downgrade(config, "0087")
    conn.commit()
    assert _reversal(conn, "m88-o", "m88", "re_new", "refund", cash, lot) == "posted"  # no guard below 0088
    command.upgrade(config, "head")
    conn.commit()

"""Migration 0089: a customer's refund reference names one payout, a top-up's refund or a refund of
overpaid credit. A database that paid one reference out both ways before the rule upgrades all
the same (the later entry is left out of the index), and from then on that reference, as every
other, takes no payout of either kind; revocations (no cash) and refunds without a reference are not
guarded, nor another customer's reference."""
from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from migrations import runner
from tests.integration.migration_steps import cash_and_lot, raw_entry


def _payout(conn, key: str, customer: str, reference: str, kind: str, cash: int, lot: int) -> str:
    """A raw payout of 10 atomic units (lot -> cash) under `reference`: `kind` a top-up's `refund`,
    a `revocation`, or `credit_refund` (its guards, 0051/0054/0059's constraint triggers, are off
    for the session: this one's lot is no correction's, and the index is what is tested)."""
    if kind == "credit_refund":
        metadata = {"refund_id": f"rfd_{key}", "reference": reference, "reason": "", "lots": [["l1", 10]]}
        return raw_entry(conn, key, "credit_refund", customer, metadata, lot, cash)
    metadata = {"lot_id": "l1", "reversal": kind, "reason": "", "reference": reference}
    return raw_entry(conn, key, "grant_reversal", customer, metadata, lot, cash)


def test_a_reference_paid_out_both_ways_before_upgrade_and_none_takes_another_kind_after(migrating):
    conn, config = migrating
    cash, lot = cash_and_lot(conn, config, "0088", "m89")
    conn.execute(text("SET session_replication_role = replica"))  # no triggers: a superuser's, as the cluster's
    for key, reference, kind in (("a", "re_both", "refund"), ("b", "re_both", "credit_refund"),
                                 ("c", "re_topup", "refund"), ("d", "re_credit", "credit_refund")):
        assert _payout(conn, f"m89-{key}", "m89", reference, kind, cash, lot) == "posted"
    command.upgrade(config, "head")
    conn.commit()
    assert runner.current_revision(conn) == runner.head_revision()
    for key, reference, kind in (("e", "re_both", "refund"), ("f", "re_both", "credit_refund"),
                                 ("g", "re_topup", "credit_refund"), ("h", "re_credit", "refund")):
        with pytest.raises(IntegrityError, match=rf"=\(\d+, m89, {reference}\) already exists"):
            _payout(conn, f"m89-{key}", "m89", reference, kind, cash, lot)
        conn.rollback()
    for key, customer, reference, kind in (("i", "m89", "re_topup", "revocation"), ("j", "m89", "", "refund"),
                                           ("k", "m89", "", "refund"), ("l", "m89-other", "re_credit", "refund")):
        assert _payout(conn, f"m89-{key}", customer, reference, kind, cash, lot) == "posted"
    command.downgrade(config, "0088")
    conn.commit()
    assert _payout(conn, "m89-m", "m89", "re_topup", "credit_refund", cash, lot) == "posted"  # below 0089
    command.upgrade(config, "head")  # and up again, that one left out as well
    conn.commit()
    with pytest.raises(IntegrityError, match=r"=\(\d+, m89, re_topup\) already exists"):
        _payout(conn, "m89-n", "m89", "re_topup", "credit_refund", cash, lot)
    conn.rollback()
    conn.execute(text("RESET session_replication_role"))
    conn.commit()

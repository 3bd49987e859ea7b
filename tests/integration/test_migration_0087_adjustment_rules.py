"""Migration 0087: `charge_adjustments.old_rules`, `new_rules` (the rules of a charge's usage at the
book's price by token type, before and after a re-rate): an adjustment that moves a charge's units
to another rule without changing its amounts or lines is kept; one that changes none of the three
is refused as before (and so is one that keeps no rules); a downgrade that would lose a rules-only
adjustment is refused."""
from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.integration.migration_steps import a_customer, downgrade_refused

_CHARGE = ("INSERT INTO charges (lane, customer_id, event_id, request_id, final, request_hash, model, occurred_at, "
           "usage, price_book, price_version, lines, charged, from_hold, from_lots, from_receivable) "
           "VALUES (ledger_lane('d87'), 'd87', 'e87', 'req1', true, '\\x00', 'm', '2026-11-05', '{}', 'b', 'v1', "
           "'[]', 12, 0, 0, 12) RETURNING id")
_EVENT = ("INSERT INTO usage_events (lane, event_id, customer_id, request_hash, model, occurred_at, usage) "
          "VALUES (ledger_lane('d87'), 'e87', 'd87', '\\x00', 'm', '2026-11-05', '{}')")
_ADJUSTMENT = ("INSERT INTO charge_adjustments (lane, charge_id, corrected_version, rerate_id, customer_id, period, "
               "old_amount, new_amount, old_lines, new_lines, old_rules, new_rules) "
               "VALUES (ledger_lane('d87'), :charge, :version, 'rr87', 'd87', '2026-11', 12, 12, "
               "'[[\"m\", \"input\", 12]]', '[[\"m\", \"input\", 12]]', "
               "CAST(:old AS jsonb), CAST(:new AS jsonb))")


def test_an_adjustment_moving_a_charge_to_another_rule_alone_is_kept_and_a_downgrade_would_not_lose_it(migrating):
    conn, config = migrating
    a_customer(conn, "d87")
    conn.execute(text("INSERT INTO rerates (id, book_id, version, range_from, range_to) "
                      "VALUES ('rr87', 'b', 'v3', '2026-11-01', '2026-11-15')"))
    conn.execute(text(_EVENT))
    charge = conn.execute(text(_CHARGE)).scalar()
    conn.commit()
    for version, old, new in (("v2", '{"input": "in"}', '{"input": "in"}'), ("v2", None, None),
                              ("v2", '{"input": "in"}', None)):
        with pytest.raises(DBAPIError, match="charge_adjustments_check"):
            conn.execute(text(_ADJUSTMENT), {"charge": charge, "version": version, "old": old, "new": new})
        conn.rollback()
    conn.execute(text(_ADJUSTMENT), {"charge": charge, "version": "v3", "old": '{"input": "in"}',
                                     "new": '{"input": "in-b"}'})
    conn.commit()
    downgrade_refused(conn, config, "0086", "would lose them")
    assert conn.execute(text("SELECT new_rules FROM charge_adjustments WHERE customer_id = 'd87'")).all() == [
        ({"input": "in-b"},)]

"""Migration 0074 drops `true_up_charges_period (lane, customer_id, period)`, the first three
columns of 0071's unique key `true_up_charges_once`, which serves the one read by customer and
period (store.true_up_given); the downgrade builds it again."""
from __future__ import annotations

import json
import re

from alembic import command
from sqlalchemy import text

from migrations import runner

_INDEXES = text("""
SELECT c.relname, array_agg(a.attname ORDER BY k.n)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
 WHERE i.indrelid = 'true_up_charges'::regclass AND i.indpred IS NULL
 GROUP BY c.relname ORDER BY 1""")


def _indexes(conn) -> dict[str, list[str]]:
    return {name: list(columns) for name, columns in conn.execute(_INDEXES)}


def test_no_index_of_true_up_charges_is_a_prefix_of_another_and_the_period_read_uses_the_unique_key(migrating):
    conn, _ = migrating
    indexes = _indexes(conn)
    assert indexes == {"true_up_charges_once": ["lane", "customer_id", "period", "rerate_id", "rule_id",
                                                "charge_id"]}
    conn.execute(text("SET enable_seqscan = off"))  # an empty table: the index the read would take
    plan = conn.execute(text(
        "EXPLAIN (FORMAT JSON) SELECT rule_id, charge_id, units::text FROM true_up_charges "
        "WHERE lane = 3 AND customer_id = 'c' AND period = '2026-11'")).scalar_one()
    used = set(re.findall(r'"Index Name": "([^"]+)"', json.dumps(plan)))
    parents = {p for (p,) in conn.execute(text(
        "SELECT parent.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class parent ON parent.oid = i.inhparent WHERE c.relname = ANY(:used)"), {"used": list(used)})}
    assert parents == {"true_up_charges_once"}, plan


def test_the_downgrade_builds_the_period_index_again_and_the_upgrade_drops_it(migrating):
    conn, config = migrating
    command.downgrade(config, "0073")
    conn.commit()
    assert _indexes(conn)["true_up_charges_period"] == ["lane", "customer_id", "period"]
    command.upgrade(config, "head")
    conn.commit()
    assert "true_up_charges_period" not in _indexes(conn)
    assert runner.current_revision(conn) == runner.head_revision()

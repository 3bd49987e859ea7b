"""The fold adds a counter's move down to its folded row: a negative delta sum no longer stops the lane.

A usage counter's deltas may be negative since 0036 (a re-rate that takes less of a free allowance,
a close's give-back to it), but the fold (0029, 0056: `wallets_fold_usage`) upserted each sum as
the row it proposes, and PostgreSQL checks a proposed row (`quantity >= 0`) before ON CONFLICT adds
it to the row it conflicts with. A counter folded at 10^9 with -6 * 10^8 queued failed the fold, so
every later fold of the lane failed as well, and so did every batch of the lane that reached the
fold's threshold (its usage events 500), for good. Now a sum below 0 is proposed as 0 and adds
itself to the folded row; a move down of a counter with no folded row still fails (the counter is
never below 0), now naming the counter.

Revision ID: 0057
Revises: 0056
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

from migrations.earlier import migration

revision = "0057"
down_revision = "0056"
branch_labels = None
depends_on = None

_COUNTED = """    counted AS (
        INSERT INTO usage_counters (lane, customer_id, period, book_id, rule_id, quantity)
        SELECT %1$s, customer_id, period, book_id, rule_id, sum(quantity)
          FROM (SELECT customer_id, period, unnest(books) AS book_id, unnest(rules) AS rule_id,
                       unnest(counts) AS quantity FROM deltas) x
         GROUP BY customer_id, period, book_id, rule_id
        ON CONFLICT (lane, customer_id, period, book_id, rule_id)
        DO UPDATE SET quantity = usage_counters.quantity + EXCLUDED.quantity)
    SELECT count(*) FROM gone$q$, fold_lane) INTO folded;  -- the deltas' CTEs run all the same
    RETURN folded;"""

# A proposed row is checked before ON CONFLICT: a sum below 0 is proposed as 0 and adds itself.
_MOVED = """    sums AS (
        SELECT customer_id, period, book_id, rule_id, sum(quantity) AS quantity
          FROM (SELECT customer_id, period, unnest(books) AS book_id, unnest(rules) AS rule_id,
                       unnest(counts) AS quantity FROM deltas) x
         GROUP BY customer_id, period, book_id, rule_id),
    counted AS (
        INSERT INTO usage_counters (lane, customer_id, period, book_id, rule_id, quantity)
        SELECT %1$s, customer_id, period, book_id, rule_id, greatest(quantity, 0) FROM sums
        ON CONFLICT (lane, customer_id, period, book_id, rule_id)
        DO UPDATE SET quantity = usage_counters.quantity + (
            SELECT s.quantity FROM sums s
             WHERE s.customer_id = EXCLUDED.customer_id AND s.period = EXCLUDED.period
               AND s.book_id = EXCLUDED.book_id AND s.rule_id = EXCLUDED.rule_id)),
    unfolded AS (  -- a move down of a counter that has no folded row: it would go below 0
        SELECT min(s.customer_id || ' ' || s.period || ' ' || s.book_id || ' ' || s.rule_id) AS counter
          FROM sums s
         WHERE s.quantity < 0 AND NOT EXISTS (
               SELECT 1 FROM usage_counters u
                WHERE u.lane = %1$s AND u.customer_id = s.customer_id AND u.period = s.period
                  AND u.book_id = s.book_id AND u.rule_id = s.rule_id))
    SELECT (SELECT count(*) FROM gone), (SELECT counter FROM unfolded)$q$, fold_lane)
      INTO folded, below;  -- the deltas' CTEs run all the same
    IF below IS NOT NULL THEN
        RAISE EXCEPTION 'usage counter % would go below 0', below USING ERRCODE = 'check_violation';
    END IF;
    RETURN folded;"""


def _fold_0056() -> str:
    rollups = migration("0056_usage_rollups_by_token_type")
    return migration("0029_period_deltas")._fold(rollups.AGGREGATE, rollups.KEY)


def fold() -> str:
    """0056's fold with the counters' moves down added to their folded rows."""
    before = _fold_0056()
    assert before.count(_COUNTED) == 1 and before.count("    folded bigint;\n") == 1
    return before.replace(_COUNTED, _MOVED).replace("    folded bigint;\n", "    folded bigint;\n    below text;\n")


def upgrade() -> None:
    op.execute(fold())


def downgrade() -> None:
    op.execute(_fold_0056())

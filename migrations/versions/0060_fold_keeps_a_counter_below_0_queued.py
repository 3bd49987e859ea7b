"""The fold leaves a period queued whose deltas would take a counter below 0: one row no longer stops a lane.

0057 still raised "usage counter … would go below 0" for a move down of a counter with nothing
folded (and a sum taking a folded row below 0 failed its CHECK): the whole fold of the lane failed,
every later one too, and every batch of the lane that reached the fold's threshold (its usage
events 500), for every customer of the lane, for good. Now the deltas of a customer's period whose
queued sum for a counter, with its folded row, is below 0 are not folded: they stay queued (every
reader adds the queued deltas itself, so it stays exact, and `tokentill audit verify`'s
usage_counters check compares counters plus deltas with the charges) and the fold warns, naming the
counter; the rest of the lane folds. A later delta that brings the counter back to 0 or more lets
the period fold. Only the customers' periods with a negative count queued are summed.

Revision ID: 0060
Revises: 0059
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

from migrations.earlier import migration

revision = "0060"
down_revision = "0059"
branch_labels = None
depends_on = None

_DELTAS = """    deltas AS (DELETE FROM period_deltas WHERE lane = %1$s
               RETURNING customer_id, period, items, quantities, amounts, books, rules, counts),"""

# A counter that the queued deltas, with its folded row, take below 0: its customer's period waits.
_KEPT = """    kept AS (
        SELECT s.customer_id, s.period, s.book_id, s.rule_id FROM (
            SELECT customer_id, period, book_id, rule_id, sum(quantity) AS quantity
              FROM (SELECT customer_id, period, unnest(books) AS book_id, unnest(rules) AS rule_id,
                           unnest(counts) AS quantity FROM period_deltas
                     WHERE lane = %1$s AND (customer_id, period) IN (
                           SELECT customer_id, period FROM period_deltas WHERE lane = %1$s AND 0 > ANY (counts))) x
             GROUP BY customer_id, period, book_id, rule_id HAVING sum(quantity) < 0) s
         WHERE s.quantity + coalesce((
               SELECT u.quantity FROM usage_counters u
                WHERE u.lane = %1$s AND u.customer_id = s.customer_id AND u.period = s.period
                  AND u.book_id = s.book_id AND u.rule_id = s.rule_id), 0) < 0),
    deltas AS (DELETE FROM period_deltas WHERE lane = %1$s
                  AND (customer_id, period) NOT IN (SELECT customer_id, period FROM kept)
               RETURNING customer_id, period, items, quantities, amounts, books, rules, counts),"""

_UNFOLDED = """,
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
    END IF;"""

_WARNED = """
    SELECT (SELECT count(*) FROM gone),
           (SELECT string_agg(customer_id || ' ' || period || ' ' || book_id || ' ' || rule_id, ', '
                              ORDER BY customer_id, period, book_id, rule_id) FROM kept)$q$, fold_lane)
      INTO folded, below;  -- the deltas' CTEs run all the same
    IF below IS NOT NULL THEN
        RAISE WARNING 'usage counters % would go below 0: their periods stay queued', below;
    END IF;"""


def fold() -> str:
    """0057's fold with a period that would take a counter below 0 left queued, not raised."""
    before = migration("0057_counter_moves_down_fold").fold()
    assert before.count(_DELTAS) == 1 and before.count(_UNFOLDED) == 1
    return before.replace(_DELTAS, _KEPT).replace(_UNFOLDED, _WARNED)


def upgrade() -> None:
    op.execute(fold())


def downgrade() -> None:
    op.execute(migration("0057_counter_moves_down_fold").fold())

"""A hard rolling minute's guard sums the seconds less than a minute from the one written, both
ways: a second ahead of it (written by a process whose clock runs ahead: hosts differ by a little)
shares a minute with it. The guard summed only the 59 seconds before, so a hold written in the
earlier second after one in the later second passed the limit between them unseen (900 + 200
tokens under a limit of 1,000). The wallet rule (wallets.core.budgets) counts the same seconds.

Revision ID: 0049
Revises: 0048
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0049"
down_revision = "0048"
branch_labels = None
depends_on = None

_GUARD = r"""
CREATE OR REPLACE FUNCTION budget_windows_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    b budgets%ROWTYPE;
    old_used numeric := CASE WHEN TG_OP = 'UPDATE' THEN OLD.used ELSE 0 END;
    old_held numeric := CASE WHEN TG_OP = 'UPDATE' THEN OLD.held ELSE 0 END;
    others numeric;
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'budget_windows: rows are never deleted' USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.used < 0 OR NEW.held < 0 OR (TG_OP = 'UPDATE' AND (NEW.lane, NEW.budget_id, NEW.window_start)
            IS DISTINCT FROM (OLD.lane, OLD.budget_id, OLD.window_start)) THEN
        RAISE EXCEPTION 'budget window %/%: used % and held % must stay 0 or more', NEW.budget_id,
            NEW.window_start, NEW.used, NEW.held USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.held <= old_held THEN
        RETURN NULL;
    END IF;
    SELECT * INTO b FROM budgets WHERE lane = NEW.lane AND id = NEW.budget_id;
    IF b.mode <> 'hard' THEN
        RETURN NULL;
    END IF;
    others := 0;
    IF b.window_kind = 'minute' THEN
        SELECT coalesce(sum(w.used + w.held), 0) INTO others FROM budget_windows w
         WHERE w.lane = NEW.lane AND w.budget_id = NEW.budget_id
           AND w.window_start > NEW.window_start - interval '60 seconds'
           AND w.window_start < NEW.window_start + interval '60 seconds' AND w.window_start <> NEW.window_start;
    END IF;
    IF others + old_used + NEW.held > b.limit_units THEN
        RAISE EXCEPTION 'budget %: holds % past its hard limit % (used %)', b.id, NEW.held, b.limit_units,
            others + old_used USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
"""


def upgrade() -> None:
    op.execute(_GUARD)


def downgrade() -> None:
    op.execute(_GUARD.replace(
        "AND w.window_start < NEW.window_start + interval '60 seconds' AND w.window_start <> NEW.window_start",
        "AND w.window_start < NEW.window_start"))

"""Budgets and quotas: a budget belongs to one customer (and so to its lane) and may narrow to an
API key, a model pattern and dimension values; its windows count what reservations used and
hold, and each reservation keeps what it holds in each budget's window (returned there exactly).

Counters in the same SERIALIZABLE transaction as the wallet hold, not ledger accounts of a
non-money asset: see the README (Budgets), measured both ways. The database guards them: a
window's figures never go below 0, a hard budget's holds never pass its limit, a reservation's
budget hold only shrinks and what it used only grows, and none of these rows is ever deleted.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TABLES = ("budgets", "budget_windows", "reservation_budgets")

SCHEMA = r"""
CREATE TABLE budgets (
    lane         smallint NOT NULL,
    id           text NOT NULL,
    customer_id  text NOT NULL REFERENCES customers (id),
    name         text NOT NULL DEFAULT '',
    api_key      text,
    model        text,
    dimensions   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(dimensions) = 'object'),
    window_kind  text NOT NULL CHECK (window_kind IN ('request', 'minute', 'day', 'month', 'lifetime')),
    metric       text NOT NULL CHECK (metric IN ('money', 'tokens', 'input_tokens', 'output_tokens', 'requests')),
    limit_units  numeric(38, 0) NOT NULL CHECK (limit_units > 0),
    mode         text NOT NULL CHECK (mode IN ('hard', 'soft')),
    thresholds   smallint[] NOT NULL DEFAULT '{}',
    time_zone    text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    PRIMARY KEY (lane, id),
    CHECK (lane = ledger_lane(customer_id))
) PARTITION BY LIST (lane);
CREATE INDEX budgets_customer ON budgets (lane, customer_id) WHERE deleted_at IS NULL;

CREATE TABLE budget_windows (
    lane         smallint NOT NULL,
    budget_id    text NOT NULL,
    window_start timestamptz NOT NULL,
    used         numeric(38, 0) NOT NULL DEFAULT 0,
    held         numeric(38, 0) NOT NULL DEFAULT 0,
    PRIMARY KEY (lane, budget_id, window_start),
    FOREIGN KEY (lane, budget_id) REFERENCES budgets (lane, id)
) PARTITION BY LIST (lane);

CREATE TABLE reservation_budgets (
    lane           smallint NOT NULL,
    reservation_id text NOT NULL,
    budget_id      text NOT NULL,
    window_start   timestamptz NOT NULL,
    metric         text NOT NULL,
    held           numeric(38, 0) NOT NULL CHECK (held >= 0),
    used           numeric(38, 0) NOT NULL CHECK (used >= 0),
    PRIMARY KEY (lane, reservation_id, budget_id),
    FOREIGN KEY (lane, budget_id, window_start) REFERENCES budget_windows (lane, budget_id, window_start)
        DEFERRABLE INITIALLY DEFERRED
) PARTITION BY LIST (lane);
"""

TRIGGERS = r"""
-- A budget's scope, window and metric never change (its windows' counts would mean something
-- else); its name, limit, mode, thresholds change, and it is deleted by marking it.
CREATE FUNCTION budgets_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       OR (NEW.lane, NEW.id, NEW.customer_id, NEW.api_key, NEW.model, NEW.dimensions, NEW.window_kind,
           NEW.metric, NEW.time_zone, NEW.created_at)
          IS DISTINCT FROM
          (OLD.lane, OLD.id, OLD.customer_id, OLD.api_key, OLD.model, OLD.dimensions, OLD.window_kind,
           OLD.metric, OLD.time_zone, OLD.created_at)
       OR OLD.deleted_at IS NOT NULL THEN
        RAISE EXCEPTION 'budgets: only the name, limit, mode and thresholds of a live budget change'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER budgets_guard BEFORE UPDATE OR DELETE ON budgets
    FOR EACH ROW EXECUTE FUNCTION budgets_guard();

-- A window never goes below 0, and the holds of a hard budget fit under its limit beside what
-- the window had used before the statement (usage that settles in the same statement happened,
-- and is never refused). A rolling minute sums the 60 one-second windows ending at this one.
CREATE FUNCTION budget_windows_guard() RETURNS trigger LANGUAGE plpgsql AS $$
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
           AND w.window_start > NEW.window_start - interval '60 seconds' AND w.window_start < NEW.window_start;
    END IF;
    IF others + old_used + NEW.held > b.limit_units THEN
        RAISE EXCEPTION 'budget %: holds % past its hard limit % (used %)', b.id, NEW.held, b.limit_units,
            others + old_used USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER budget_windows_guard AFTER INSERT OR UPDATE OR DELETE ON budget_windows
    FOR EACH ROW EXECUTE FUNCTION budget_windows_guard();

-- What a reservation holds in a budget only shrinks, what it used only grows; nothing else moves.
CREATE FUNCTION reservation_budgets_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       OR (NEW.lane, NEW.reservation_id, NEW.budget_id, NEW.window_start, NEW.metric)
          IS DISTINCT FROM (OLD.lane, OLD.reservation_id, OLD.budget_id, OLD.window_start, OLD.metric)
       OR NEW.held > OLD.held OR NEW.used < OLD.used THEN
        RAISE EXCEPTION 'reservation_budgets: the hold only shrinks and the usage only grows'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER reservation_budgets_guard BEFORE UPDATE OR DELETE ON reservation_budgets
    FOR EACH ROW EXECUTE FUNCTION reservation_budgets_guard();
"""

# Statement triggers fire only on the table named, and TRUNCATE is one: every partition gets one.
NO_TRUNCATE = r"""
CREATE FUNCTION budgets_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%: budgets and their counts are never truncated', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    lanes = int(op.get_bind().exec_driver_sql("SELECT lanes FROM ledger_settings").scalar())
    op.execute("".join(f"CREATE TABLE {table}_l{k} PARTITION OF {table} FOR VALUES IN ({k});\n"
                       for table in TABLES for k in range(lanes)))
    op.execute(TRIGGERS)
    op.execute(NO_TRUNCATE)
    op.execute("".join(
        f"CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {name} "
        "FOR EACH STATEMENT EXECUTE FUNCTION budgets_no_truncate();\n"
        for name in (*TABLES, *(f"{t}_l{k}" for t in TABLES for k in range(lanes)))))


def downgrade() -> None:
    op.execute("DROP TABLE reservation_budgets, budget_windows, budgets")
    op.execute("DROP FUNCTION budgets_no_truncate(), reservation_budgets_guard(), budget_windows_guard(), "
                "budgets_guard()")

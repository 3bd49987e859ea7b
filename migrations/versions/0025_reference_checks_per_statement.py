"""References into the partitioned journal checked once per statement, not once per row.

A foreign key to a partitioned table is checked by a query per inserted row, which PostgreSQL
re-plans on each call (a custom plan with partition pruning: the cached generic plan looks
costlier). Per usage event that was four such checks against `journal_entries` (the charge's, the
usage event's, and each of its two postings') and one against `usage_events` (the charge's):
~0.1 ms of planning each in pg_stat_statements, ~0.4 ms of PostgreSQL per event in all, the
largest cost after the usage rollups (issue 10, acceptance 5).

These foreign keys become statement-level checks over the statement's new rows (transition
tables), one primary-key probe per distinct reference, each lane's probes by a cached plan:
- `charges (lane, entry_id)` -> `journal_entries (lane, id)`;
- `charges (lane, customer_id, event_id)` -> `usage_events` (when the charge has an event);
- `usage_events (lane, entry_id)` -> `journal_entries (lane, id)`;
- `postings (lane, entry_id)` -> `journal_entries (lane, id)`, in `ledger_apply_postings`, which
  already probed each posting's entry (it must be of this transaction): a missing one now fails
  there.
They are as strong as the keys were. A row that names a missing parent fails its statement with
foreign_key_violation (23503), inserted through the parent table or into a partition by name
(statement triggers fire for the table a statement names, so each partition has its own). The
referencing rows cannot be changed afterwards (charges, usage events and postings are immutable,
row triggers), and the referenced rows cannot go away: journal entries and usage events refuse
UPDATE and DELETE (row triggers) and TRUNCATE (usage events gain that guard here; before, their
foreign key refused a TRUNCATE without CASCADE, and a CASCADE emptied the charges too). A parent
is never deleted, so the row lock a foreign-key check takes on it is not needed.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-03
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

FOREIGN_KEYS = {  # (table, constraint): its definition, dropped here and restored by the downgrade
    ("charges", "charges_lane_entry_id_fkey"): "FOREIGN KEY (lane, entry_id) REFERENCES journal_entries (lane, id)",
    ("charges", "charges_event_fkey"):
        "FOREIGN KEY (lane, customer_id, event_id) REFERENCES usage_events (lane, customer_id, event_id)",
    ("usage_events", "usage_events_lane_entry_id_fkey"):
        "FOREIGN KEY (lane, entry_id) REFERENCES journal_entries (lane, id)",
    ("postings", "postings_lane_entry_id_fkey"): "FOREIGN KEY (lane, entry_id) REFERENCES journal_entries (lane, id)",
}

UPGRADE = r"""
-- Each lane's references, probed one by one through the primary keys (LATERAL ... LIMIT 1: a
-- nested loop of index probes, never a scan of a lane's partition).
CREATE FUNCTION wallets_check_charge_refs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
    bad_entry bigint;
    bad_customer text;
    bad_event text;
BEGIN
    FOR r IN SELECT n.lane, array_agg(DISTINCT n.entry_id) FILTER (WHERE n.entry_id IS NOT NULL) AS entries,
                    array_agg(n.customer_id) FILTER (WHERE n.event_id IS NOT NULL) AS customers,
                    array_agg(n.event_id) FILTER (WHERE n.event_id IS NOT NULL) AS events
               FROM new_charges n GROUP BY n.lane LOOP
        SELECT e.id INTO bad_entry FROM unnest(r.entries) AS e(id)
          LEFT JOIN LATERAL (SELECT 1 AS hit FROM journal_entries j WHERE j.lane = r.lane AND j.id = e.id LIMIT 1) j
            ON true
         WHERE j.hit IS NULL LIMIT 1;
        IF bad_entry IS NOT NULL THEN
            RAISE EXCEPTION 'charges reference journal_entries: no entry (lane, id) = (%, %)',
                r.lane, bad_entry USING ERRCODE = 'foreign_key_violation';
        END IF;
        SELECT e.c, e.ev INTO bad_customer, bad_event FROM unnest(r.customers, r.events) AS e(c, ev)
          LEFT JOIN LATERAL (SELECT 1 AS hit FROM usage_events u
                              WHERE u.lane = r.lane AND u.customer_id = e.c AND u.event_id = e.ev LIMIT 1) u ON true
         WHERE u.hit IS NULL LIMIT 1;
        IF bad_event IS NOT NULL THEN
            RAISE EXCEPTION 'charges reference usage_events: no event (lane, customer_id, event_id) = (%, %, %)',
                r.lane, bad_customer, bad_event USING ERRCODE = 'foreign_key_violation';
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
ALTER FUNCTION wallets_check_charge_refs() SET plan_cache_mode = force_generic_plan;

CREATE FUNCTION wallets_check_usage_event_refs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
    bad_entry bigint;
BEGIN
    FOR r IN SELECT n.lane, array_agg(DISTINCT n.entry_id) FILTER (WHERE n.entry_id IS NOT NULL) AS entries
               FROM new_events n GROUP BY n.lane LOOP
        SELECT e.id INTO bad_entry FROM unnest(r.entries) AS e(id)
          LEFT JOIN LATERAL (SELECT 1 AS hit FROM journal_entries j WHERE j.lane = r.lane AND j.id = e.id LIMIT 1) j
            ON true
         WHERE j.hit IS NULL LIMIT 1;
        IF bad_entry IS NOT NULL THEN
            RAISE EXCEPTION 'usage_events reference journal_entries: no entry (lane, id) = (%, %)',
                r.lane, bad_entry USING ERRCODE = 'foreign_key_violation';
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
ALTER FUNCTION wallets_check_usage_event_refs() SET plan_cache_mode = force_generic_plan;

CREATE TRIGGER charges_refs AFTER INSERT ON charges REFERENCING NEW TABLE AS new_charges
    FOR EACH STATEMENT EXECUTE FUNCTION wallets_check_charge_refs();
CREATE TRIGGER usage_events_refs AFTER INSERT ON usage_events REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION wallets_check_usage_event_refs();
CREATE TRIGGER usage_events_no_truncate BEFORE TRUNCATE ON usage_events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
"""

PARTITION = r"""
CREATE TRIGGER charges_refs AFTER INSERT ON charges_l{k} REFERENCING NEW TABLE AS new_charges
    FOR EACH STATEMENT EXECUTE FUNCTION wallets_check_charge_refs();
CREATE TRIGGER usage_events_refs AFTER INSERT ON usage_events_l{k} REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION wallets_check_usage_event_refs();
CREATE TRIGGER usage_events_no_truncate BEFORE TRUNCATE ON usage_events_l{k}
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
"""

# 0020's probe of the postings' entries (each must be of this transaction) also finds a missing one.
_ENTRY_PROBE_0020 = """        SELECT j.id INTO bad_entry FROM journal_entries j  -- primary-key probes, in one lane
         WHERE j.lane = r.lane AND j.id = ANY (r.entries) AND j.txid <> pg_current_xact_id()
         LIMIT 1;
        IF bad_entry IS NOT NULL THEN
"""
_ENTRY_PROBE = """        SELECT e.id, j.txid IS NULL INTO bad_entry, missing FROM unnest(r.entries) AS e(id)
          LEFT JOIN LATERAL (SELECT j.txid FROM journal_entries j  -- primary-key probes, in one lane
                              WHERE j.lane = r.lane AND j.id = e.id LIMIT 1) j ON true
         WHERE j.txid IS DISTINCT FROM pg_current_xact_id()
         LIMIT 1;
        IF missing THEN
            RAISE EXCEPTION 'postings reference journal_entries: no entry (lane, id) = (%, %)',
                r.lane, bad_entry USING ERRCODE = 'foreign_key_violation';
        END IF;
        IF bad_entry IS NOT NULL THEN
"""


_GENERIC = "\nALTER FUNCTION ledger_apply_postings() SET plan_cache_mode = force_generic_plan;"


def _apply_postings_0020() -> str:
    path = Path(__file__).with_name("0020_set_based_posting.py")
    spec = importlib.util.spec_from_file_location("migration_0020_set_based_posting", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = re.search(r"CREATE OR REPLACE FUNCTION ledger_apply_postings\(\).*?END \$\$;", module.UPGRADE, re.S)
    assert found is not None
    return found.group(0)


def _apply_postings() -> str:
    previous = _apply_postings_0020()
    assert _ENTRY_PROBE_0020 in previous, "0020's ledger_apply_postings is not the one this migration rewrites"
    return (previous.replace(_ENTRY_PROBE_0020, _ENTRY_PROBE)
            .replace("    bad_entry bigint;\n", "    bad_entry bigint;\n    missing boolean;\n", 1))


def _lanes() -> int:
    return int(op.get_bind().exec_driver_sql("SELECT lanes FROM ledger_settings").scalar_one())


def upgrade() -> None:
    op.execute(UPGRADE)
    op.execute("".join(PARTITION.replace("{k}", str(k)) for k in range(_lanes())))
    op.execute(_apply_postings() + _GENERIC)
    op.execute("".join(f"ALTER TABLE {table} DROP CONSTRAINT {name};\n" for table, name in FOREIGN_KEYS))


def downgrade() -> None:
    op.execute("".join(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition};\n"
                       for (table, name), definition in FOREIGN_KEYS.items()))
    op.execute(_apply_postings_0020() + _GENERIC)
    op.execute("".join(f"DROP TRIGGER charges_refs ON charges_l{k};\n"
                       f"DROP TRIGGER usage_events_refs ON usage_events_l{k};\n"
                       f"DROP TRIGGER usage_events_no_truncate ON usage_events_l{k};\n" for k in range(_lanes())))
    op.execute("DROP TRIGGER charges_refs ON charges;\n"
               "DROP TRIGGER usage_events_refs ON usage_events;\n"
               "DROP TRIGGER usage_events_no_truncate ON usage_events;\n"
               "DROP FUNCTION wallets_check_charge_refs();\n"
               "DROP FUNCTION wallets_check_usage_event_refs();")

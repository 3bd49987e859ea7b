"""The database's checks and write functions find their tables in their own schema, not pg_temp.

A PL/pgSQL function (or an SQL function with a string body) resolves the names in its queries
through the caller's search_path when it runs, and the session's temporary schema is searched
first unless the path lists it. So a session that ran `CREATE TEMP TABLE customers (id text)` and
inserted an id wrote a true-up row (0075), or a period delta, naming a customer there is none of;
a temporary `journal_entries` or `usage_events` let charges and usage events (0025, 0028) name
missing entries and events; a temporary `accounts` with `account_balances` let postings name a
missing account, and a temporary `account_balances` alone took an entry's balance updates (the
real balances unmoved, the postings in); a temporary `postings` satisfied the deferred check of an
entry written without postings.

Every function that names a table (twenty; the guards that read only NEW and OLD, raise or notify
name none) gets `SET search_path = <the schema this migration runs in>, pg_temp`: pg_catalog is
searched first (unlisted), then the schema, and pg_temp last, for tables only (it is never searched
for functions or operators). The schema is the migration's current_schema(), so a database kept
in a schema of its own (`?options=-csearch_path%3Dbilling`) pins that one; pg_dump writes the
setting with the function, so a restore keeps it. One SET per call: a statement trigger's per
statement, ledger_post's per batch (several already set plan_cache_mode and enable_seqscan); the
row-level guards on the hot path (ledger_entry_txid) name no table and are left alone.

The downgrade resets the setting.

Revision ID: 0079
Revises: 0078
Create Date: 2026-12-06
"""
from __future__ import annotations

from alembic import op

revision = "0079"
down_revision = "0078"
branch_labels = None
depends_on = None

FUNCTIONS = (  # each function whose body names a table of the schema (migrations 0009-0078)
    "budget_windows_guard()",
    "ledger_account_created()",
    "ledger_account_guard()",
    "ledger_apply_postings()",
    "ledger_check_entry_balanced()",
    "ledger_check_statement_entries()",
    "ledger_post(jsonb, smallint[], bigint[], smallint[])",
    "ledger_post_each(jsonb, smallint[], bigint[], smallint[])",
    "price_overrides_append()",
    "wallets_check_charge_refs()",
    "wallets_check_delta_customers()",
    "wallets_check_true_up_charge_refs()",
    "wallets_check_usage_event_refs()",
    "wallets_credit_note_gapless()",
    "wallets_credit_refund_guard()",
    "wallets_customer_guard()",
    "wallets_fold_usage(smallint)",
    "wallets_invoice_gapless()",
    "wallets_invoice_paid_within_due()",
    "wallets_queue_usage()",
)


def upgrade() -> None:
    schema = op.get_bind().exec_driver_sql("SELECT quote_ident(current_schema())").scalar_one()
    op.execute("".join(f"ALTER FUNCTION {function} SET search_path = {schema}, pg_temp;\n"
                       for function in FUNCTIONS))


def downgrade() -> None:
    op.execute("".join(f"ALTER FUNCTION {function} RESET search_path;\n" for function in FUNCTIONS))

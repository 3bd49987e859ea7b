"""Migration 0073: `lots.paid_receivable` marks the top-up lots whose entry credits the customer's
receivable (what store.load_unapplied reads, on their index). The upgrade backfills it from the
postings: of two top-ups of `m73`, the one that paid $2.00 of the receivable is marked, the one
that made a lot of all of it is not, nor is a grant."""
from __future__ import annotations

from alembic import command
from sqlalchemy import text

from tests.integration.migration_steps import a_customer


def test_the_upgrade_marks_the_top_ups_that_paid_the_receivable(migrating):
    conn, config = migrating
    command.downgrade(config, "0072")
    conn.commit()
    a_customer(conn, "m73")
    conn.execute(text("SET session_replication_role = replica"))  # postings of one leg each: not balanced
    account = {}
    for code, kind in (("asset:customer:m73:receivable", "asset"),
                       ("liability:customer:m73:lot:paid", "liability"),
                       ("liability:customer:m73:lot:all", "liability"),
                       ("liability:customer:m73:lot:granted", "liability")):
        account[code] = conn.execute(text(
            "INSERT INTO accounts (code, type, asset, customer_id) VALUES (:code, :kind, 'USD', 'm73') "
            "RETURNING id"), {"code": code, "kind": kind}).scalar()
    for lot, kind, legs in (("paid", "topup", {"asset:customer:m73:receivable": -2_000_000_000,
                                               "liability:customer:m73:lot:paid": -1_000_000_000}),
                            ("all", "topup", {"liability:customer:m73:lot:all": -3_000_000_000}),
                            ("granted", "grant", {"liability:customer:m73:lot:granted": -1_000_000_000})):
        entry = conn.execute(text(
            "INSERT INTO journal_entries (lane, key, request_hash, kind, customer_id, occurred_at, metadata) "
            "VALUES (ledger_lane('m73'), :key, '\\x00', :kind, 'm73', now(), '{}') RETURNING id"),
            {"key": f"{kind}:{lot}", "kind": kind}).scalar()
        for code, amount in legs.items():
            conn.execute(text("INSERT INTO postings (lane, entry_id, account_id, amount) "
                              "VALUES (ledger_lane('m73'), :entry, :account, :amount)"),
                         {"entry": entry, "account": account[code], "amount": amount})
        code = f"liability:customer:m73:lot:{lot}"
        conn.execute(text(
            "INSERT INTO lots (lane, id, customer_id, kind, account_id, account_code, granted, priority, "
            "entry_id, created_at) VALUES (ledger_lane('m73'), :lot, 'm73', :kind, :account, :code, 1, 0, "
            ":entry, now())"), {"lot": lot, "kind": kind, "account": account[code], "code": code,
                               "entry": entry})
    conn.execute(text("SET session_replication_role = origin"))
    conn.commit()
    command.upgrade(config, "head")
    conn.commit()
    marked = dict(conn.execute(text("SELECT id, paid_receivable FROM lots WHERE customer_id = 'm73'")).all())
    assert marked == {"paid": True, "all": False, "granted": False}
    command.downgrade(config, "0072")
    conn.commit()
    command.upgrade(config, "head")
    conn.commit()

"""Steps the migration tests take on the `migrating` connection (tests/integration/conftest.py):
a customer to own the rows they write, a downgrade that must refuse to lose them, and raw entries
between two accounts (the reference guards of 0061 and 0088); and on a psycopg connection to
`scratch_url`, a customer and its lane, and a customer id of that lane there is none of."""
from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError


def a_customer(conn: Connection, customer_id: str) -> None:
    """Customer `customer_id` in USD (the asset made if missing), committed."""
    conn.execute(text("INSERT INTO assets (code, scale) VALUES ('USD', 9) ON CONFLICT DO NOTHING"))
    conn.execute(text("INSERT INTO customers (id, currency) VALUES (:id, 'USD')"), {"id": customer_id})
    conn.commit()


def a_lane_customer(conn: psycopg.Connection, customer_id: str) -> int:
    """Customer `customer_id` in USD (the asset made if missing), not committed: its lane."""
    conn.execute("INSERT INTO assets (code, scale) VALUES ('USD', 9) ON CONFLICT DO NOTHING")
    conn.execute("INSERT INTO customers (id, currency) VALUES (%s, 'USD')", (customer_id,))
    return conn.execute("SELECT ledger_lane(%s)", (customer_id,)).fetchone()[0]


def gone_of_lane(conn: psycopg.Connection, lane: int) -> str:
    """A customer id there is none of, of `lane` (a row's lane is its customer's)."""
    return next(f"gone{n}" for n in range(1000)
                if conn.execute("SELECT ledger_lane(%s)", (f"gone{n}",)).fetchone()[0] == lane)


def downgrade_refused(conn: Connection, config: Config, below: str, match: str) -> None:
    """The downgrade to `below` fails with `match`; its transaction is rolled back (the revisions
    above the refusing one may have gone down already: each is committed on its own)."""
    with pytest.raises(DBAPIError, match=match):
        command.downgrade(config, below)
    conn.rollback()


def cash_and_lot(conn: Connection, config: Config, below: str, tag: str) -> tuple[int, int]:
    """Down to `below`, then a USD cash account and a lot account of `tag` (ids), committed: what
    the reference guards' tests post raw entries between."""
    command.downgrade(config, below)
    conn.commit()
    conn.execute(text("INSERT INTO assets (code, scale) VALUES ('USD', 9) ON CONFLICT DO NOTHING"))
    cash, lot = (conn.execute(text("INSERT INTO accounts (code, type, asset) VALUES (:c, :t, 'USD') RETURNING id"),
                              {"c": c, "t": t}).scalar_one()
                 for c, t in ((f"asset:{tag}:cash", "asset"), (f"liability:{tag}:lot", "liability")))
    conn.commit()
    return cash, lot


def raw_entry(conn: Connection, key: str, kind: str, customer: str, metadata: dict[str, Any], debit: int,
              credit: int) -> str:
    """A raw entry of 10 atomic units (debit -> credit) through ledger_post, committed: its status."""
    batch = json.dumps([{"k": key, "h": "00", "kind": kind, "c": customer, "at": "2026-12-01T00:00:00+00:00",
                         "m": metadata, "p": [[debit, 0, 10], [credit, 0, -10]],
                         "d": [[debit, 0, 10, 0], [credit, 0, -10, 0]]}])
    row = conn.execute(text("SELECT status FROM ledger_post(CAST(:b AS jsonb), '{}', '{}', '{}')"), {"b": batch}).one()
    conn.commit()
    return row[0]

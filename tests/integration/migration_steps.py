"""Steps the migration tests take on the `migrating` connection (tests/integration/conftest.py):
a customer to own the rows they write, and a downgrade that must refuse to lose them."""
from __future__ import annotations

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


def downgrade_refused(conn: Connection, config: Config, below: str, match: str) -> None:
    """The downgrade to `below` fails with `match`; its transaction is rolled back (the revisions
    above the refusing one may have gone down already: each is committed on its own)."""
    with pytest.raises(DBAPIError, match=match):
        command.downgrade(config, below)
    conn.rollback()

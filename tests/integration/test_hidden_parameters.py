"""A database error's text names no value the statement was sent with: SQLAlchemy appends the
parameters to the error it raises ("[parameters: (...)]"), which the server logs whole when a
request fails unexpectedly; a statement writing a webhook signing secret (kept in the clear, to
sign with) or a customer's name would have put it in the log."""
from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ledger.db import connect

SECRET = "whsec_c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1iZS1sb2dnZWQ="


async def test_a_failed_statement_s_error_does_not_show_its_parameters(database_url):
    db = connect(database_url)
    try:
        with pytest.raises(DBAPIError) as failed:
            async with db.engine.connect() as conn:
                await conn.execute(text("SELECT length(CAST(:secret AS text)) / 0"), {"secret": SECRET})
    finally:
        await db.engine.dispose()
    assert "division by zero" in str(failed.value)  # the error says what went wrong ...
    assert SECRET not in str(failed.value)  # ... but not with what

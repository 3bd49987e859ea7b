"""Migration 0039 keeps a rotated-out webhook secret, in its grace or past it, as the first of the
arrays that now hold every one; its downgrade keeps the one whose grace ends last."""
from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text

from wallets.webhooks.rules import new_secret

ENDPOINT = """INSERT INTO webhook_endpoints (id, url, topics, secret, previous_secret, previous_secret_until)
              VALUES (:id, 'https://hooks.example.com/h', '{*}', :secret, :previous, :until)"""
UNTIL = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_a_rotated_out_secret_is_kept_up_and_the_last_to_end_kept_down(migrating):
    conn, config = migrating
    current, previous, older = new_secret(), new_secret(), new_secret()
    command.downgrade(config, "0038")
    conn.commit()
    conn.execute(text(ENDPOINT), {"id": "we_00000000000000a1", "secret": current, "previous": previous,
                                  "until": UNTIL})
    conn.execute(text(ENDPOINT), {"id": "we_00000000000000a2", "secret": current, "previous": None,
                                  "until": None})
    conn.commit()
    command.upgrade(config, "0039")
    conn.commit()
    up = conn.execute(text("SELECT id, previous_secrets, previous_secrets_until FROM webhook_endpoints "
                           "WHERE id LIKE 'we_00000000000000a_' ORDER BY id")).all()
    conn.execute(text("UPDATE webhook_endpoints SET previous_secrets = ARRAY[:p, :o], "
                      "previous_secrets_until = ARRAY[CAST(:u AS timestamptz), :l] "
                      "WHERE id = 'we_00000000000000a1'"),
                 {"p": previous, "o": older, "u": UNTIL, "l": LATER})
    conn.commit()
    command.downgrade(config, "0038")
    conn.commit()
    down = conn.execute(text("SELECT id, previous_secret, previous_secret_until FROM webhook_endpoints "
                             "WHERE id LIKE 'we_00000000000000a_' ORDER BY id")).all()
    command.upgrade(config, "head")
    conn.commit()
    assert [tuple(r) for r in up] == [("we_00000000000000a1", [previous], [UNTIL]), ("we_00000000000000a2", [], [])]
    assert [tuple(r) for r in down] == [("we_00000000000000a1", older, LATER), ("we_00000000000000a2", None, None)]

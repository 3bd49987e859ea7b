"""Migration 0038 copies the answers kept per API key under the customer scope of that key, so
that a rotated key finds them, and keeps every row it copied."""
from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text

from wallets.core.idempotency import http_scope

RECORD = """INSERT INTO idempotency_records (lane, scope, key, request_hash, status, response, created_at)
            VALUES (:lane, :scope, :key, :h, 0, CAST(:r AS jsonb), :at)"""
LEGACY = """INSERT INTO idempotency_keys (scope, key, request_hash, status, response, created_at)
            VALUES (:scope, :key, :h, 201, CAST(:r AS jsonb), :at)"""
KEYS = [("key_all", "inference", "{}"), ("key_one", "inference", "{mig-z}"), ("key_own", "customer:mig-z", "{}"),
        ("key_two", "admin", "{mig-z,mig-b,mig-z}"), ("key_two_again", "inference", "{mig-b,mig-z}")]


def _at(second: int) -> datetime:
    return datetime(2026, 11, 1, 0, 0, second, tzinfo=UTC)


def test_answers_kept_per_key_are_found_under_the_customers_the_key_acts_for(migrating):
    conn, config = migrating
    command.downgrade(config, "0037")
    conn.commit()
    for key_id, scope, customers in KEYS:
        conn.execute(text("INSERT INTO api_keys (id, secret_hash, scope, customers) "
                          "VALUES (:id, :h, :scope, CAST(:c AS text[]))"),
                     {"id": key_id, "h": key_id.encode(), "scope": scope, "c": customers})
    kept = [(3, "http:key_all", "k1", b"a", '{"code": "reserved", "body": {"id": "r1"}}', 1),
            (3, "http:key_one", "k2", b"b", '{"code": "settled", "body": {}}', 2),
            (5, "http:key_own", "k3", b"c", '{"code": "created", "body": {}}', 3),
            (5, "http:key_two", "k4", b"d", '{"code": "ok", "body": {}}', 4),
            (5, "http:key_two#claim", "k4", b"d", '{"code": "ok", "body": {}}', 4),
            # two keys of one scope used one Idempotency-Key: the earlier answer is copied
            (5, "http:key_two_again", "k4", b"e", '{"code": "ok", "body": {"late": 1}}', 5),
            (7, "http:bootstrap-admin", "k5", b"f", '{"code": "created", "body": {}}', 6)]
    for lane, scope, key, digest, response, second in kept:
        conn.execute(text(RECORD), {"lane": lane, "scope": scope, "key": key, "h": digest, "r": response,
                                    "at": _at(second)})
    conn.execute(text(LEGACY), {"scope": "http:key_one", "key": "old", "h": b"g",
                                "r": '{"json": "{}"}', "at": _at(7)})
    conn.commit()

    command.upgrade(config, "0038")
    conn.commit()
    rows = conn.execute(text("SELECT lane, scope, key, request_hash, response, created_at "
                             "FROM idempotency_records ORDER BY created_at, scope")).all()
    legacy = conn.execute(text("SELECT scope, key, request_hash FROM idempotency_keys "
                               "WHERE key = 'old' ORDER BY scope")).all()
    several = "http:cs:" + hashlib.sha256(b"mig-b,mig-z").hexdigest()
    assert (http_scope(None), http_scope(["mig-z"]), http_scope(["mig-z", "mig-b", "mig-z"]),
            http_scope(["mig-z"], own=True)) == ("http:*", "http:c:mig-z", several, "http:own:c:mig-z")
    copies = {(lane, scope, key): (bytes(digest), response, at) for lane, scope, key, digest, response, at in rows}
    assert len(rows) == len(kept) + 6  # every row kept, and one copy of each but the later k4
    assert copies[(3, "http:*", "k1")] == (b"a", {"code": "reserved", "body": {"id": "r1"}}, _at(1))
    assert copies[(3, "http:c:mig-z", "k2")][0] == b"b"
    assert copies[(5, "http:own:c:mig-z", "k3")][0] == b"c"  # customer:mig-z: mig-z's own key
    assert copies[(5, several, "k4")] == (b"d", {"code": "ok", "body": {}}, _at(4))
    assert copies[(5, several + "#claim", "k4")][0] == b"d"
    assert copies[(7, "http:*", "k5")][0] == b"f"  # the bootstrap admin acts for every customer
    for lane, scope, key, digest, _, _ in kept:
        assert copies[(lane, scope, key)][0] == digest
    assert [(s, k, bytes(h)) for s, k, h in legacy] == [("http:c:mig-z", "old", b"g"), ("http:key_one", "old", b"g")]

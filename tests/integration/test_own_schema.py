"""tokentill in a schema of its own, named by the URL's `options` (`-csearch_path=tokentill`), as a
database shared with other applications is usually laid out. `tokentill migrate` created its
tables there, but the server's pool passed `options` of its own (the idle timeout, the time zone),
which replaced the URL's: its sessions looked in `public`, and every request that touched the
database was a 500 ("relation price_books does not exist"); the webhook dispatcher failed every
round."""
from __future__ import annotations

import uuid
from urllib.parse import quote

import psycopg

from api.bench.common import scratch_database
from api.runtime import sync_url
from migrations import runner
from tests.live_server import serving

ADMIN = "own-schema-admin"


def test_a_url_that_names_a_schema_is_served_from_that_schema(server_url):
    with scratch_database(server_url, f"tokentill_schema_{uuid.uuid4().hex[:10]}") as plain:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA billing")
        options = quote("-csearch_path=billing", safe="")
        url = f"{plain}{'&' if '?' in plain else '?'}options={options}"
        runner.upgrade(sync_url(url), lanes=4)
        with serving(url, ADMIN) as tt:
            tt.post("/v1/price-books", {
                "id": "std", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "10"},
                          {"id": "out", "model": "model-a", "token_type": "output", "price": "20"}]})
            tt.post("/v1/customers", {"id": "acme", "currency": "USD", "price_book": "std"})
            tt.post("/v1/customers/acme/topups", {"amount": "20.00"})
            held = tt.post("/v1/reservations", {"customer_id": "acme", "request_id": "r1", "model": "model-a",
                                                "estimate": {"input_tokens": 1000, "max_output_tokens": 500}})
            assert tt.settle(held["id"], usage={"input_tokens": 1000, "output_tokens": 400})["charged"] == "0.018"
            assert tt.get("/v1/customers/acme/wallet")["available"] == "19.982"
            verify = tt.post("/v1/audit/verify", {})
            assert verify["ok"], [check for check in verify["checks"] if not check["ok"]]
        with psycopg.connect(plain) as conn:
            where = dict(conn.execute("SELECT schemaname, count(*) FROM pg_tables "
                                      "WHERE schemaname IN ('public', 'billing') GROUP BY 1").fetchall())
            entries = conn.execute("SELECT count(*) FROM billing.journal_entries").fetchone()[0]
    assert "public" not in where and where["billing"] > 50
    assert entries == 3  # the top-up, the hold, the settle

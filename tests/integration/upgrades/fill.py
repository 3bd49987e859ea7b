"""How the data of the upgrade test was made (not a test): run against a `tokentill serve` of
the old revision (TOKENTILL_ADMIN_KEY=up-admin, TOKENTILL_LANES=4, an empty database), as
`python fill.py http://127.0.0.1:PORT REVISION`; then that version's `tokentill audit verify`, and
`pg_dump --data-only --inserts -T alembic_version` (comments, blank lines and psql's \\restrict
lines left out), gzipped. See test_upgrades_with_data.py."""
from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import httpx

H = {"Authorization": "Bearer up-admin"}
BOOK = {"id": "seed", "currency": "USD", "effective_from": "2020-01-01T00:00:00Z", "rules": [
    {"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"},
    {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
    {"id": "call", "token_type": "request", "price": "0.01"}]}


def ok(r: httpx.Response, *codes: int) -> dict | None:
    assert r.status_code in (codes or (200, 201)), (r.request.url, r.status_code, r.text[:400])
    return r.json() if r.content else None


def fill(c: httpx.Client, revision: int) -> None:
    ok(c.post("/v1/price-books", json=BOOK))
    for i in range(6):
        cid = f"cust{i}"
        r = c.post("/v1/customers", json={"id": cid, "price_book": "seed", "currency": "USD"})
        if r.status_code == 422:  # before customers had a currency
            r = c.post("/v1/customers", json={"id": cid, "price_book": "seed"})
        ok(r)
        ok(c.post(f"/v1/customers/{cid}/topups", json={"amount": "20.00", "reference": f"ch_{cid}_1"},
                  headers={**H, "Idempotency-Key": f"top-{cid}"}))
        ok(c.post(f"/v1/customers/{cid}/grants", json={"amount": "1.50", "expires_at": "2030-01-01T00:00:00Z"}))
        for j in range(6):
            res = ok(c.post("/v1/reservations", json={
                "customer_id": cid, "request_id": f"req-{cid}-{j}", "model": "model-a",
                "estimate": {"input_tokens": 1000, "max_output_tokens": 500}}), 201)
            if j < 3:
                ok(c.post(f"/v1/reservations/{res['id']}/settle",
                          json={"usage": {"input_tokens": 900 + j, "output_tokens": 100 * j}}))
            elif j == 3:
                ok(c.post(f"/v1/reservations/{res['id']}/release", json={}))
        now = datetime.now(UTC)
        ok(c.post("/v1/usage-events", json=[{"event_id": f"ev-{cid}-{k}", "customer_id": cid, "model": "model-a",
               "timestamp": now.isoformat(), "usage": {"input_tokens": 1000, "output_tokens": 50}} for k in range(3)]))
    if revision >= 17:  # invoices
        for cid in ("post0", "post1"):
            ok(c.post("/v1/customers", json={"id": cid, "currency": "USD", "price_book": "seed",
                                             "billing": "postpaid"}))
            now = datetime.now(UTC)
            ok(c.post("/v1/usage-events", json=[{"event_id": f"pe-{cid}-{k}", "customer_id": cid, "model": "model-a",
                   "timestamp": now.isoformat(), "usage": {"input_tokens": 4000, "output_tokens": 500}}
                   for k in range(4)]))
            until = (now + timedelta(days=40)).replace(microsecond=0).isoformat()
            [invoice] = ok(c.post("/v1/billing/close", json={"until": until, "customer_id": cid}))["closed"]
            if cid == "post0":
                ok(c.post(f"/v1/invoices/{invoice['invoice_id']}/payments",
                          json={"amount": invoice["amount_due"], "reference": "pi_1"},
                          headers={**H, "Idempotency-Key": "pay-post0"}))


if __name__ == "__main__":
    with httpx.Client(base_url=sys.argv[1], headers=H, timeout=60) as client:
        fill(client, int(sys.argv[2]))

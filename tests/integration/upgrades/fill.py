"""How the data of the upgrade test was made (not a test): run against a `tokentill serve` of
the old revision (TOKENTILL_ADMIN_KEY=up-admin, TOKENTILL_LANES=4, an empty database), as
`python fill.py http://127.0.0.1:PORT REVISION`; then that version's `tokentill audit verify`, and
`pg_dump --data-only --inserts -T alembic_version` (comments, blank lines and psql's \\restrict
lines left out), gzipped. See test_upgrades_with_data.py.

From 0038 on the data is `fill_late` instead: what 0039-0043 migrate (webhook secrets rotated,
deleted, disabled; customer-set and operator budgets; postpaid customers with price overrides,
two early closes, one invoice paid, one customer blocked; usage recorded after its period closed,
one call of it paid whole by a free allowance; a re-rate with credit notes).

At 0047 it is `fill_late` and then `fill_revoked`: what 0048 migrates (grants revoked in whole, one
with a hold still open on it, one that took a released hold's piece back after, one revoked in
part, a top-up refunded in whole), with a reservation left capturing and events left in the
outbox (the server ran with TOKENTILL_WEBHOOKS=off)."""
from __future__ import annotations

import sys
import time
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


def event(eid: str, cid: str, at: datetime, tokens: int, out: int) -> dict:
    return {"event_id": eid, "customer_id": cid, "model": "model-a", "timestamp": at.isoformat(),
            "usage": {"input_tokens": tokens, "output_tokens": out}}


def fill_late(c: httpx.Client) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    ok(c.post("/v1/price-books", json=BOOK))
    for i in range(2):
        cid = f"cust{i}"
        ok(c.post("/v1/customers", json={"id": cid, "price_book": "seed", "currency": "USD"}))
        ok(c.post(f"/v1/customers/{cid}/topups", json={"amount": "20.00", "reference": f"ch_{cid}_1"},
                  headers={**H, "Idempotency-Key": f"top-{cid}"}))
        for j in range(3):
            res = ok(c.post("/v1/reservations", json={
                "customer_id": cid, "request_id": f"req-{cid}-{j}", "model": "model-a",
                "estimate": {"input_tokens": 1000, "max_output_tokens": 500}}), 201)
            if j == 0:
                ok(c.post(f"/v1/reservations/{res['id']}/settle",
                          json={"usage": {"input_tokens": 900, "output_tokens": 100}}))
            elif j == 1:
                ok(c.post(f"/v1/reservations/{res['id']}/release", json={}))
    ok(c.post("/v1/budgets", json={"customer_id": "cust0", "name": "cap", "window": "month", "metric": "money",
                                   "limit": "10.00", "mode": "hard", "thresholds": [50, 80, 100]}))
    own = ok(c.post("/v1/api-keys", json={"scope": "customer:cust1", "name": "own"}))
    ok(c.post("/v1/budgets", json={"customer_id": "cust1", "name": "mine", "window": "day", "metric": "requests",
                                   "limit": 100, "mode": "soft", "thresholds": [80]},
              headers={"Authorization": f"Bearer {own['key']}", "Idempotency-Key": "bud-1"}))
    hook = ok(c.post("/v1/webhook-endpoints", json={"url": "https://hooks.example.com/a", "topics": ["*"]},
                     headers={**H, "Idempotency-Key": "ep-a"}))
    for n, valid in enumerate(({}, {"previous_secret_valid_seconds": 3600})):
        ok(c.post(f"/v1/webhook-endpoints/{hook['id']}/rotate-secret", json=valid,
                  headers={**H, "Idempotency-Key": f"rot-{n}"}))
    gone = ok(c.post("/v1/webhook-endpoints", json={"url": "https://hooks.example.com/b", "topics": ["invoice.*"]}))
    ok(c.post(f"/v1/webhook-endpoints/{gone['id']}/rotate-secret", json={}))
    ok(c.delete(f"/v1/webhook-endpoints/{gone['id']}"))
    off = ok(c.post("/v1/webhook-endpoints", json={"url": "https://hooks.example.com/c", "topics": ["wallet.*"]}))
    ok(c.patch(f"/v1/webhook-endpoints/{off['id']}", json={"enabled": False}))
    # postpaid: post1 in New York from the 15th, post2 with an overdraft limit its usage passes
    for cid, cycle in (("post0", {}), ("post1", {"time_zone": "America/New_York", "billing_anchor_day": 15}),
                       ("post2", {"overdraft_limit": "0.05"})):
        ok(c.post("/v1/customers", json={"id": cid, "currency": "USD", "price_book": "seed", "billing": "postpaid",
                                         **cycle}))
        ok(c.post("/v1/usage-events", json=[event(f"pe-{cid}-{k}", cid, now, 4000, 500) for k in range(4)]))
    # post0's overrides from the next second: calls after it are paid whole by the allowance (no entry)
    ok(c.put("/v1/customers/post0/price-overrides", json={
        "effective_from": (now + timedelta(seconds=1)).isoformat(),
        "discounts": [{"id": "d10", "model": "model-a", "percent": "10"}],
        "free_allowances": [{"id": "free", "amount": "0.20"}]}))
    time.sleep(2)
    ok(c.post("/v1/usage-events", json=[event(f"free-post0-{k}", "post0", datetime.now(UTC), 100, 10)
                                        for k in range(2)]))
    # two periods closed early (the close's clock 70 days ahead); post0's first invoice paid
    closed = ok(c.post("/v1/billing/close", json={"until": (now + timedelta(days=70)).isoformat(), "early": True}))
    first = next(i for i in closed["closed"] if i["customer_id"] == "post0")
    ok(c.post(f"/v1/invoices/{first['invoice_id']}/payments", json={"amount": first["amount_due"], "reference": "pi_1"},
              headers={**H, "Idempotency-Key": "pay-post0"}))
    # usage of the closed period recorded now: billed in the first open one (post0's paid whole)
    ok(c.post("/v1/usage-events", json=[event("late-post0-free", "post0", now + timedelta(seconds=5), 100, 10),
                                        event("late-post1", "post1", now, 1000, 10),
                                        event("late-post2", "post2", now, 1000, 10)]))
    ok(c.post("/v1/price-books", json={**BOOK, "effective_from": "2020-06-01T00:00:00Z", "rules": [
        {"id": "a-in", "model": "model-a", "token_type": "input", "price": "8.00"}, *BOOK["rules"][1:]]}))
    version = ok(c.get("/v1/price-books/seed"))["versions"][-1]["version"]
    ok(c.post("/v1/rerate", json={"price_book": "seed", "version": version, "from": "2020-06-01T00:00:00Z",
                                  "to": (now + timedelta(days=1)).isoformat(), "mode": "apply"}))
    assert ok(c.post("/v1/audit/verify"))["ok"]


def fill_revoked(c: httpx.Client) -> None:
    ok(c.post("/v1/customers", json={"id": "rvk", "price_book": "seed", "currency": "USD"}))
    ok(c.post("/v1/customers/rvk/topups", json={"amount": "20.00", "reference": "ch_rvk_1"}))

    def grant(name: str, amount: str) -> str:
        return ok(c.post("/v1/customers/rvk/grants", json={"amount": amount, "priority": 10, "reason": name,
                                                            "expires_at": "2030-01-01T00:00:00Z"}))["grant_id"]

    def hold(request_id: str, amount: str) -> str:
        return ok(c.post("/v1/reservations", json={"customer_id": "rvk", "request_id": request_id,
                                                    "model": "model-a", "amount": amount}), 201)["id"]

    def reverse(lot: str, body: dict) -> None:
        ok(c.post(f"/v1/customers/rvk/grants/{lot}/reverse", json=body), 201)

    reverse(grant("whole", "1.00"), {"reason": "abuse"})          # closed: 0048 records it
    open_hold = grant("held", "3.00")
    hold("rvk-held", "2.00")                                       # drawn from "held" (priority 10)
    reverse(open_hold, {})                                         # 1.00 revoked, 2.00 held: closed
    back = grant("back", "2.00")
    released = hold("rvk-back", "1.50")
    reverse(back, {})                                              # 0.50 revoked: closed, then
    ok(c.post(f"/v1/reservations/{released}/release", json={}))   # 1.50 back into it: open again
    reverse(grant("part", "2.00"), {"amount": "0.50"})             # revoked in part: open, 1.50
    refunded = ok(c.post("/v1/customers/rvk/topups", json={"amount": "5.00", "reference": "ch_rvk_2",
                                                           "priority": 5}))["grant_id"]
    reverse(refunded, {"reference": "re_1"})                       # a top-up refunded in whole: open
    capturing = hold("rvk-cap", "0.10")                            # from "back" (priority 10, the older)
    ok(c.post(f"/v1/reservations/{capturing}/settle",
              json={"usage": {"input_tokens": 1000, "output_tokens": 100}, "final": False}))
    assert ok(c.post("/v1/audit/verify"))["ok"]


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
        if int(sys.argv[2]) >= 47:
            fill_late(client)
            fill_revoked(client)
        elif int(sys.argv[2]) >= 38:
            fill_late(client)
        else:
            fill(client, int(sys.argv[2]))

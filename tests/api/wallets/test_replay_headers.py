"""Replays by the name a call is kept under (a reserve's request_id, a payment's or a refund's
reference, a bulk call's or a budget's Idempotency-Key), over HTTP: the first answer has no
Idempotent-Replayed header; the same body again is the same body with `Idempotent-Replayed:
true` (its status as the route gives it: 200 for a request_id or a reference found, the first
status under a key); another body under the name is 409 idempotency_conflict; and nothing is
written twice (the wallet and the rows read back). Guards: these routes answered so already.

Book: model-a input $10.00 per 1M tokens, output $20.00 per 1M, $0.01 a call."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import AsyncTestClient

from tests.api.wallets.test_validation_before_replay import _available, _customer


async def _sent_again(client: AsyncTestClient, path: str, body: Any, other: Any, statuses: tuple[int, int],
                      key: str | None = None) -> Any:
    """`body` at `path` (under Idempotency-Key `key`, if any): the first answer (`statuses`[0], no
    Idempotent-Replayed), which the same body again replays (`statuses`[1], the header "true", the
    same body); `other` under the same name: 409 idempotency_conflict, no header."""
    headers = {} if key is None else {"Idempotency-Key": key}
    first = await client.post(path, json=body, headers=headers)
    assert (first.status_code, first.headers.get("idempotent-replayed")) == (statuses[0], None), first.text
    again = await client.post(path, json=body, headers=headers)
    assert (again.status_code, again.headers.get("idempotent-replayed")) == (statuses[1], "true"), again.text
    assert again.json() == first.json()
    refused = await client.post(path, json=other, headers=headers)
    assert (refused.status_code, refused.json()["code"]) == (409, "idempotency_conflict"), refused.text
    assert "idempotent-replayed" not in refused.headers
    return first.json()


async def _wallet(client: AsyncTestClient, cid: str) -> tuple[str, str, list[tuple[str, str, str]]]:
    w = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    return w["available"], w["reserved"], [(g["kind"], g["granted"], g["remaining"]) for g in w["grants"]]


async def test_a_reserve_under_a_known_request_id(client, book):
    """r-1 holds $1.00 (201); the same body again: 200, the same reservation, replayed; $2.00
    under r-1: 409. One hold: 10.00 - 1.00 = 9.00 available, 1.00 reserved."""
    cid = await _customer(client, book, "10.00")
    body = {"customer_id": cid, "request_id": "r-1", "model": "model-a", "amount": "1.00"}
    await _sent_again(client, "/v1/reservations", body, {**body, "amount": "2.00"}, (201, 200))
    assert await _wallet(client, cid) == ("9.00", "1.00", [("topup", "10.00", "9.00")])


async def test_a_top_up_under_a_known_payment_reference(client, book):
    """pi_1 credits 3.00 (201); again: 200, the first lot, replayed; 4.00 under pi_1: 409. One
    lot of 3.00: 3.00 available."""
    cid = await _customer(client, book)
    body = {"amount": "3.00", "reference": "pi_1"}
    await _sent_again(client, f"/v1/customers/{cid}/topups", body, {**body, "amount": "4.00"}, (201, 200))
    assert await _wallet(client, cid) == ("3.00", "0.00", [("topup", "3.00", "3.00")])


async def test_a_top_up_refund_under_a_known_refund_reference(client, book):
    """A 5.00 top-up refunded 1.00 under re_1 (201); again: 200, the same entry, replayed; 2.00
    under re_1: 409. One refund: 5.00 - 1.00 = 4.00 available, one refund entry."""
    cid = await _customer(client, book)
    lot = (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "5.00"})).json()["grant_id"]
    body = {"amount": "1.00", "reference": "re_1"}
    await _sent_again(client, f"/v1/customers/{cid}/grants/{lot}/reverse", body, {**body, "amount": "2.00"}, (201, 200))
    assert await _wallet(client, cid) == ("4.00", "0.00", [("topup", "5.00", "4.00")])
    journal = (await client.get(f"/v1/journal?customer={cid}&kind=grant_reversal")).json()
    assert len(journal["entries"]) == 1, journal


async def test_bulk_usage_under_a_known_idempotency_key(client, book):
    """One event of 1,000 input tokens under key u ($0.01 + $0.01 a call = $0.02): accepted 1;
    the batch again: the same answer, replayed; the event with 2,000 tokens under u: 409 (nothing
    recorded: the batch's key is refused before its events). 10.00 - 0.02 = 9.98 available."""
    cid = await _customer(client, book, "10.00")
    at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    batch = [{"event_id": "e-1", "customer_id": cid, "model": "model-a", "timestamp": at,
              "usage": {"input_tokens": 1000}}]
    first = await _sent_again(client, "/v1/usage-events", batch, [{**batch[0], "usage": {"input_tokens": 2000}}],
                              (200, 200), f"u-{cid}")
    assert first == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert await _available(client, cid) == "9.98"
    assert (await client.get(f"/v1/audit/charges/e-1?customer_id={cid}")).status_code == 200


async def test_bulk_settles_under_a_known_idempotency_key(client, book):
    """A $1.00 hold settled in bulk under key s with 1,000 input tokens ($0.02): its item 200;
    the call again: the same answer, replayed (the item too); 2,000 tokens under s: 409. Charged
    once: 10.00 - 0.02 = 9.98 available, nothing reserved."""
    cid = await _customer(client, book, "10.00")
    held = await client.post("/v1/reservations", json={"customer_id": cid, "request_id": "r-1",
                                                       "model": "model-a", "amount": "1.00"})
    items = [{"reservation_id": held.json()["id"], "usage": {"input_tokens": 1000}}]
    first = await _sent_again(client, "/v1/settlements", items, [{**items[0], "usage": {"input_tokens": 2000}}],
                              (200, 200), f"s-{cid}")
    [item] = first["results"]
    assert (item["status"], item["replayed"], item["body"]["charged"]) == (200, False, "0.02"), item
    assert await _wallet(client, cid) == ("9.98", "0.00", [("topup", "10.00", "9.98")])


async def test_a_budget_made_under_a_known_idempotency_key(client, book):
    """A day budget of 1,000 tokens under key b (201); again: 201, the same budget, replayed; a
    limit of 2,000 under b: 409. The customer has one budget, of 1,000."""
    cid = await _customer(client, book)
    body = {"customer_id": cid, "window": "day", "metric": "tokens", "limit": 1000}
    first = await _sent_again(client, "/v1/budgets", body, {**body, "limit": 2000}, (201, 201), f"b-{cid}")
    listed = (await client.get(f"/v1/budgets?customer_id={cid}")).json()["budgets"]
    assert [(b["id"], b["limit"]) for b in listed] == [(first["id"], 1000)]

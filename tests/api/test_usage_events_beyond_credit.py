"""`POST /v1/usage-events` for a prepaid customer whose credit does not cover the usage: usage
that already happened is never refused for money. Each event is paid from the lots, the rest goes
to the receivable, past the overdraft limit if need be, and the wallet is then blocked (new holds
402) until a top-up pays the receivable; an unknown customer's event beside them is rejected on
its own, and nothing of it is written.

Book: model-a input $10.00 per 1M tokens (figures by hand: 20,000 tokens $0.20, 10,000 $0.10)."""
from __future__ import annotations

from litestar.testing import AsyncTestClient

from tests.api.apps import book_customer


def _event(cid: str, event_id: str, tokens: int) -> dict:
    return {"event_id": event_id, "customer_id": cid, "model": "model-a", "timestamp": "2026-11-10T10:00:00Z",
            "usage": {"input_tokens": tokens}}


async def test_usage_beyond_a_prepaid_customers_credit_is_accepted_owed_and_blocks_new_holds(
        client: AsyncTestClient, tag: str):
    cid = await book_customer(client, f"ubc-{tag}", "input", billing="prepaid")  # overdraft_limit 0
    assert (await client.post(f"/v1/customers/{cid}/topups",
                              json={"amount": "0.25", "reference": f"ubc-{tag}"})).status_code == 201

    sent = await client.post("/v1/usage-events", json=[
        _event(cid, "e1", 20_000), _event(f"nobody-{tag}", "e2", 10_000), _event(cid, "e3", 10_000)])

    assert sent.status_code == 200, sent.text
    answer = sent.json()
    assert (answer["accepted"], answer["duplicates"]) == (2, 0)
    rejected = [(r["index"], r["customer_id"], r["code"]) for r in answer["rejected"]]
    assert rejected == [(1, f"nobody-{tag}", "not_found")]
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    # $0.30 used: the $0.25 lot, then $0.05 owed, past the prepaid limit of 0.00
    assert (wallet["available"], wallet["receivable"], wallet["blocked"]) == ("0.00", "0.05", True)
    held = await client.post("/v1/reservations", json={"customer_id": cid, "request_id": "r1", "model": "model-a",
                                                        "estimate": {"input_tokens": 10, "max_output_tokens": 0}})
    assert (held.status_code, held.json()["code"]) == (402, "insufficient_funds")

    topped = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00", "reference": f"ubc2-{tag}"})
    assert topped.status_code == 201, topped.text
    assert topped.json()["applied_to_receivable"] == "0.05"
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["receivable"], wallet["blocked"]) == ("0.95", "0.00", False)
    assert (await client.post("/v1/audit/verify")).json()["ok"] is True

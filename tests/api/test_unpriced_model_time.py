"""A usage event before its customer's price book was in force is refused unpriced_model, and the
refusal's detail writes the event's time as every answer writes times: UTC with a Z, where it
wrote `1000-01-01T00:00:00+00:00`. Customer on a book in force from 2026-01-01 (tests.api.apps)."""

from __future__ import annotations

from tests.api.apps import book_customer


async def test_an_unpriced_models_time_is_written_in_utc_with_a_z(client, tag):
    cid = await book_customer(client, f"unpriced-z-{tag}", "input")
    sent = await client.post(
        "/v1/usage-events",
        json=[
            {
                "event_id": "early",
                "customer_id": cid,
                "model": "model-a",
                "usage": {"input_tokens": 1000},
                "timestamp": "1000-01-01T00:00:00Z",
            },
            # 2025-12-31T23:30:00+05:30 is 18:00 UTC, before the book's 2026-01-01
            {
                "event_id": "india",
                "customer_id": cid,
                "model": "model-a",
                "usage": {"input_tokens": 1000},
                "timestamp": "2025-12-31T23:30:00+05:30",
            },
        ],
    )
    assert sent.status_code == 200, sent.text
    rejected = sent.json()["rejected"]
    assert [(r["index"], r["code"]) for r in rejected] == [(0, "unpriced_model"), (1, "unpriced_model")], rejected
    assert rejected[0]["detail"].endswith("in force at 1000-01-01T00:00:00Z"), rejected[0]
    assert rejected[1]["detail"].endswith("in force at 2025-12-31T18:00:00Z"), rejected[1]

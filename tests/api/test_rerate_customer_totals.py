"""A re-rate's customer totals are what the customer's re-rated charges stood at before and after,
every line of them counted (a line the re-rate left as it was too), in the preview, the apply and
the apply's replayed answer alike; `lines` lists the (model, token type) rows that changed.
Amounts worked by hand from the stated prices."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.api.apps import api_client
from tests.api.closing import utc

ADMIN = {"Authorization": "Bearer rct-admin"}
BOOK = f"rct-{uuid.uuid4().hex[:8]}"
VERSION = "v1"


@pytest.fixture(scope="module")
async def client(database_url):
    async with api_client(
        database_url,
        admin="rct-admin",
        books=[
            {
                "id": BOOK,
                "version": VERSION,
                "currency": "USD",
                "effective_from": "2026-01-01T00:00:00Z",
                "rules": [{"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"}],
            }
        ],
    ) as c:
        yield c


async def overrides(client, cid: str, at: datetime, percent: str) -> None:
    """From `at` on: a $0.005 free allowance and `percent` % off model-a."""
    put = await client.put(
        f"/v1/customers/{cid}/price-overrides",
        headers=ADMIN,
        json={
            "effective_from": utc(at),
            "free_allowances": [{"id": "free", "amount": "0.005"}],
            "discounts": [{"id": f"off-{percent}", "model": "model-a", "percent": percent}],
        },
    )
    assert put.status_code == 201, put.text


async def charged(client, cid: str, at: datetime) -> str:
    event_id = f"e-{uuid.uuid4().hex[:8]}"
    sent = await client.post(
        "/v1/usage-events",
        headers=ADMIN,
        json=[
            {
                "event_id": event_id,
                "customer_id": cid,
                "model": "model-a",
                "timestamp": utc(at),
                "usage": {"input_tokens": 1_000},
            }
        ],
    )
    assert sent.json()["accepted"] == 1, sent.text
    trace = (await client.get(f"/v1/audit/charges/{event_id}?customer_id={cid}", headers=ADMIN)).json()
    [charge] = trace["charges"]
    return charge["charged"]


async def test_the_customer_totals_count_the_lines_the_rerate_left_as_they_were(client) -> None:
    now = datetime.now(UTC)
    cid = f"rct-{uuid.uuid4().hex[:10]}"
    made = await client.post("/v1/customers", headers=ADMIN, json={"id": cid, "currency": "USD", "price_book": BOOK})
    assert made.status_code == 201, made.text
    topped = await client.post(f"/v1/customers/{cid}/topups", headers=ADMIN, json={"amount": "10.00"})
    assert topped.status_code == 201, topped.text
    await overrides(client, cid, now - timedelta(hours=2), "10")
    # 1,000 input tokens at $10/M: 0.010, 10 % off: 0.009; the first takes the whole 0.005 allowance
    assert await charged(client, cid, now - timedelta(minutes=50)) == "0.004"
    assert await charged(client, cid, now - timedelta(minutes=49)) == "0.009"
    await overrides(client, cid, now - timedelta(hours=1), "50")  # backdated: 50 % off
    body = {
        "price_book": BOOK,
        "version": VERSION,
        "from": utc(now - timedelta(hours=1)),
        "to": utc(now),
        "customer_id": cid,
    }
    # by hand: the charges stood at 0.004 + 0.009 = 0.013 (input 0.009 + 0.009 = 0.018 after the
    # discount, the allowance -0.005); at 50 % off, input 0.005 + 0.005 = 0.010, the allowance
    # -0.005 as before (it pays all of the first): 0.000 + 0.005 = 0.005; -0.008 in all. Only the
    # input line changed, so it alone is listed.
    expected = [
        {
            "customer_id": cid,
            "charges": 2,
            "old_amount": "0.013",
            "new_amount": "0.005",
            "delta": "-0.008",
            "lines": [
                {
                    "model": "model-a",
                    "token_type": "input",
                    "old_amount": "0.018",
                    "new_amount": "0.01",
                    "delta": "-0.008",
                }
            ],
        }
    ]
    seen = await client.post("/v1/rerate", headers=ADMIN, json={**body, "mode": "preview"})
    assert seen.status_code == 200, seen.text
    assert seen.json()["customers"] == expected
    assert seen.json()["delta"] == "-0.008"
    done = await client.post("/v1/rerate", headers=ADMIN, json={**body, "mode": "apply"})
    assert done.status_code == 200, done.text
    assert [{k: v for k, v in c.items() if k != "entry_ids"} for c in done.json()["customers"]] == expected
    again = await client.post("/v1/rerate", headers=ADMIN, json={**body, "mode": "apply"})
    assert again.json() == done.json()  # the replayed answer, read back from the adjustments
    wallet = (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()
    assert wallet["available"] == "9.995"  # 10.00 - 0.013 + 0.008

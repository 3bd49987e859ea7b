"""A version dated back over a hold of 0.00 (its model priced $0 when the call was reserved): what its
settle charges, by which version, and who pays it (neighbour of test_price_versions.py's back-dated
version over a priced hold)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from litestar.testing import AsyncTestClient


async def test_a_version_back_dated_over_a_free_hold_prices_its_settle_from_the_lots_then_the_receivable(
    client: AsyncTestClient, tag: str
):
    """A model priced $0 when its call was reserved (a hold of 0.00), then a correction dated back to
    before the reservation: $2 per 1M input, $8 per 1M output. The settle is rated by the correction
    (README: by the book as it stands at the settle, at the reservation's time), the hold covers
    nothing of it, and the charge comes from the lots, then the receivable.
    By hand: 1,000,000 input x $2 / 1M + 100,000 output x $8 / 1M = $2.00 + $0.80 = $2.80.
    A customer with a $5.00 top-up: its lot keeps 5.00 - 2.80 = 2.20, nothing owed. A customer with
    $1.00: the lot pays 1.00, the receivable 1.80."""
    book = f"backfree-{tag}"
    free = [
        {"id": "f-in", "model": "model-f", "token_type": "input", "price": "0"},
        {"id": "f-out", "model": "model-f", "token_type": "output", "price": "0"},
    ]
    posted = await client.post(
        "/v1/price-books", json={"id": book, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": free}
    )
    assert posted.status_code == 201, posted.text
    holds = {}
    for name, top_up in (("five", "5.00"), ("one", "1.00")):
        customer = f"backfree-{name}-{tag}"
        await client.post("/v1/customers", json={"id": customer, "currency": "USD", "price_book": book})
        await client.post(f"/v1/customers/{customer}/topups", json={"amount": top_up})
        held = await client.post(
            "/v1/reservations",
            json={
                "customer_id": customer,
                "request_id": "r1",
                "model": "model-f",
                "estimate": {"input_tokens": 1_000_000, "max_output_tokens": 100_000},
            },
        )
        assert (held.status_code, held.json()["amount"]) == (201, "0.00"), held.text
        holds[customer] = held.json()
    first = min(datetime.fromisoformat(h["created_at"]) for h in holds.values())
    priced = [{**free[0], "price": "2.00"}, {**free[1], "price": "8.00"}]
    corrected = await client.post(
        "/v1/price-books",
        json={
            "id": book,
            "currency": "USD",
            "rules": priced,
            "effective_from": (first - timedelta(seconds=1)).isoformat(),
        },
    )
    assert corrected.status_code == 201, corrected.text
    # the second owes past its overdraft limit of 0: blocked (new holds 402) until it pays
    expected = {f"backfree-five-{tag}": ("2.20", "0.00", False), f"backfree-one-{tag}": ("0.00", "1.80", True)}
    for customer, held in holds.items():
        settled = await client.post(
            f"/v1/reservations/{held['id']}/settle",
            json={"usage": {"input_tokens": 1_000_000, "output_tokens": 100_000}},
        )
        assert settled.status_code == 200, settled.text
        assert (settled.json()["charged"], settled.json()["released"]) == ("2.80", "0.00"), settled.text
        assert {ln["price_version"] for ln in settled.json()["lines"]} == {corrected.json()["version"]}
        trace = (await client.get(f"/v1/audit/charges/r1?customer_id={customer}")).json()
        assert [c["charged"] for c in trace["charges"]] == ["2.80"], trace
        assert {c["price_version"] for c in trace["charges"]} == {corrected.json()["version"]}, trace
        wallet = (await client.get(f"/v1/customers/{customer}/wallet")).json()
        assert (wallet["available"], wallet["receivable"], wallet["blocked"]) == expected[customer], wallet
        assert Decimal(wallet["reserved"]) == 0, wallet

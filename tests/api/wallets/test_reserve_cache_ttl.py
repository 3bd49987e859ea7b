"""A reserve's `cache_ttl` (c372216) beside the case its commit tested: a hold by amount, other
usage shapes, partial captures, a re-rate, usage events and replays. Book (format 2), per 1M
tokens: $10 input, $1 cache reads, $12.50 five-minute and $20 one-hour cache writes, $20 output;
$0.01 a call. The usage of the anthropic package's accumulated stream: 1,500 in, 100 read, 80
written split 50 five-minute + 0 one-hour (30 past the split), 40 out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

GROWN = {
    "input_tokens": 1500,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 80,
    "cache_creation": {"ephemeral_5m_input_tokens": 50, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 40,
}
# by hand: 1,500 x 10 = 15,000; 100 x 1 = 100; 50 x 12.50 = 625; 30 x 20 = 600; 40 x 20 = 800:
# 17,125 per 1M = 0.017125, and the call's 0.01
ONE_HOUR = Decimal("0.027125")
# the 30 at 12.50 (375) instead: 16,900 per 1M = 0.0169, + 0.01
FIVE_MINUTES = Decimal("0.0269")


def _rules(one_hour: str | None = "20.00") -> list[dict[str, Any]]:
    return [
        {"id": "call", "token_type": "request", "price": "0.01"},
        {"id": "in", "token_type": "input", "price": "10.00"},
        {"id": "read", "token_type": "cached_input", "price": "1.00"},
        {"id": "write", "token_type": "cache_write", "price": "12.50"},
        *([{"id": "write-1h", "token_type": "cache_write_1h", "price": one_hour}] if one_hour else []),
        {"id": "out", "token_type": "output", "price": "20.00"},
    ]


async def _customer(client: AsyncTestClient, tag: str, one_hour: str | None = "20.00") -> tuple[str, str]:
    """(customer, book): a book of `_rules` and a customer of it with $10.00."""
    book = f"ttl-{tag}-{uuid.uuid4().hex[:6]}"
    made = await client.post(
        "/v1/price-books",
        json={
            "id": book,
            "format": 2,
            "currency": "USD",
            "effective_from": "2026-01-01T00:00:00Z",
            "rules": _rules(one_hour),
        },
    )
    assert made.status_code == 201, made.text
    cid = f"ttl-{uuid.uuid4().hex[:10]}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    return cid, book


async def _reserve(client: AsyncTestClient, cid: str, **body: Any) -> Any:
    body = {"customer_id": cid, "request_id": f"r-{uuid.uuid4().hex[:10]}", "model": "claude-x", **body}
    return await client.post("/v1/reservations", json=body)


def _lines(settled: dict[str, Any]) -> dict[str, int]:
    return {line["token_type"]: line["quantity"] for line in settled["lines"]}


async def _available(client: AsyncTestClient, cid: str) -> tuple[Decimal, Decimal]:
    w = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    return Decimal(w["available"]), Decimal(w["reserved"])


async def test_a_hold_by_amount_naming_one_hour_charges_the_writes_past_the_split_at_it(client, tag):
    """`amount` and `cache_ttl: "1h"`: the hold is the amount ($0.05), the settle charges the 30
    writes past the split at $20/M: 0.027125, wallet 10.00 - 0.027125 = 9.972875."""
    cid, _ = await _customer(client, tag)
    held = await _reserve(client, cid, amount="0.05", cache_ttl="1h")
    assert held.status_code == 201, held.text
    assert Decimal(held.json()["amount"]) == Decimal("0.05")
    settled = await client.post(f"/v1/reservations/{held.json()['id']}/settle", json={"anthropic_usage": GROWN})
    assert settled.status_code == 200, settled.text
    assert Decimal(settled.json()["charged"]) == ONE_HOUR
    assert _lines(settled.json()) == {
        "input": 1500,
        "cached_input": 100,
        "cache_write": 50,
        "cache_write_1h": 30,
        "output": 40,
        "request": 1,
    }
    assert await _available(client, cid) == (Decimal("10") - ONE_HOUR, 0) == (Decimal("9.972875"), 0)


async def test_a_hold_by_amount_naming_one_hour_on_a_book_without_its_price_is_refused_at_the_reserve(client, tag):
    """A book that prices no one-hour write: a reserve by estimate naming "1h" is refused 422
    unpriced_model (c372216), else its settle would be refused and the call go unbilled. By
    amount the same: 422 unpriced_model, nothing held ($10.00 available, 0 reserved)."""
    cid, _ = await _customer(client, tag, one_hour=None)
    estimated = await _reserve(client, cid, estimate={"input_tokens": 2000, "max_output_tokens": 500}, cache_ttl="1h")
    assert (estimated.status_code, estimated.json()["code"]) == (422, "unpriced_model"), estimated.text
    held = await _reserve(client, cid, amount="0.05", cache_ttl="1h")
    assert (held.status_code, held.json().get("code")) == (422, "unpriced_model"), held.text
    assert await _available(client, cid) == (Decimal("10"), 0)


async def test_openai_and_canonical_usage_under_a_one_hour_hold_are_charged_as_they_say(client, tag):
    """Only Anthropic's writes past their split move. An OpenAI usage (1,000 prompt of which 200
    cached, 40 completion) under a "1h" hold: 800 x 10 + 200 x 1 + 40 x 20 = 9,000 per 1M = 0.009,
    + 0.01 = 0.019. A canonical usage naming 30 five-minute writes (cache_write_tokens) is the
    caller's word: 30 x 12.50 = 375 + 1,000 x 10 = 10,000 per 1M = 0.010375, + 0.01 = 0.020375."""
    cid, _ = await _customer(client, tag)
    for usage, charged, lines in (
        (
            {
                "openai_usage": {
                    "prompt_tokens": 1000,
                    "completion_tokens": 40,
                    "prompt_tokens_details": {"cached_tokens": 200},
                }
            },
            Decimal("0.019"),
            {"input": 800, "cached_input": 200, "output": 40, "request": 1},
        ),
        (
            {"usage": {"input_tokens": 1000, "cache_write_tokens": 30}},
            Decimal("0.020375"),
            {"input": 1000, "cache_write": 30, "request": 1},
        ),
    ):
        held = await _reserve(client, cid, estimate={"input_tokens": 2000, "max_output_tokens": 500}, cache_ttl="1h")
        assert held.status_code == 201, held.text
        settled = await client.post(f"/v1/reservations/{held.json()['id']}/settle", json=usage)
        assert settled.status_code == 200, settled.text
        assert (Decimal(settled.json()["charged"]), _lines(settled.json())) == (charged, lines)


async def test_partial_captures_under_a_one_hour_hold_each_move_their_own_writes_past_the_split(client, tag):
    """Two captures of one "1h" hold: the first (final: false) the grown usage, 30 past its
    split at $20/M: 0.027125 with the call's 0.01; the second (final) 200 in and 20 writes with no
    split at all (all 20 one-hour): 200 x 10 + 20 x 20 = 2,400 per 1M = 0.0024 (no second fee).
    Charged 0.029525; wallet 10.00 - 0.029525 = 9.970475, nothing held. The audit trace's stored
    canonical usage of each says the one-hour writes it was charged."""
    cid, _ = await _customer(client, tag)
    held = await _reserve(client, cid, estimate={"input_tokens": 2000, "max_output_tokens": 500}, cache_ttl="1h")
    rid, reservation = held.json()["request_id"], held.json()["id"]
    first = await client.post(
        f"/v1/reservations/{reservation}/settle", json={"anthropic_usage": GROWN, "final": False, "capture_id": "c1"}
    )
    assert first.status_code == 200, first.text
    assert Decimal(first.json()["charged"]) == ONE_HOUR and _lines(first.json())["cache_write_1h"] == 30
    last = await client.post(
        f"/v1/reservations/{reservation}/settle",
        json={
            "anthropic_usage": {"input_tokens": 200, "cache_creation_input_tokens": 20, "output_tokens": 0},
            "capture_id": "c2",
        },
    )
    assert last.status_code == 200, last.text
    assert Decimal(last.json()["charged"]) == Decimal("0.0024")
    assert _lines(last.json()) == {"input": 200, "cache_write_1h": 20}
    assert ONE_HOUR + Decimal("0.0024") == Decimal("0.029525")
    assert await _available(client, cid) == (Decimal("10") - Decimal("0.029525"), 0)
    charges = (await client.get(f"/v1/audit/charges/{rid}")).json()["charges"]
    canonical = [
        (c["usage"]["canonical"].get("cache_write_tokens"), c["usage"]["canonical"]["cache_write_1h_tokens"])
        for c in charges
    ]
    assert canonical == [(50, 30), (0, 20)]


async def test_a_re_rate_of_a_one_hour_charge_reads_the_writes_it_was_charged(client, tag):
    """The grown usage settled under a "1h" hold (0.027125), then re-rated (preview) with the very
    version that rated it: no difference. Had the stored canonical usage kept the 80 writes as
    five-minute ones, the re-rate would give back 30 x (20 - 12.50) = 225 per 1M = 0.000225."""
    cid, book = await _customer(client, tag)
    held = await _reserve(client, cid, estimate={"input_tokens": 2000, "max_output_tokens": 500}, cache_ttl="1h")
    settled = await client.post(f"/v1/reservations/{held.json()['id']}/settle", json={"anthropic_usage": GROWN})
    assert Decimal(settled.json()["charged"]) == ONE_HOUR
    version = settled.json()["price_version"]
    now = datetime.now(UTC)
    preview = await client.post(
        "/v1/rerate",
        json={
            "price_book": book,
            "version": version,
            "customer_id": cid,
            "mode": "preview",
            "from": (now - timedelta(hours=1)).isoformat(),
            "to": (now + timedelta(hours=1)).isoformat(),
        },
    )
    assert preview.status_code == 200, preview.text
    assert Decimal(preview.json()["delta"]) == 0, preview.json()


async def test_a_usage_event_with_writes_past_their_split_charges_them_five_minute(client, tag):
    """No reservation names a TTL: the 30 past the split are 5-minute writes (53ffcad), 0.0269."""
    cid, _ = await _customer(client, tag)
    sent = await client.post(
        "/v1/usage-events",
        json=[
            {
                "customer_id": cid,
                "model": "claude-x",
                "event_id": f"e-{uuid.uuid4().hex[:8]}",
                "timestamp": datetime.now(UTC).isoformat(),
                "anthropic_usage": GROWN,
            }
        ],
    )
    assert sent.status_code == 200 and sent.json()["accepted"] == 1, sent.text
    assert await _available(client, cid) == (Decimal("10") - FIVE_MINUTES, 0) == (Decimal("9.9731"), 0)


async def test_a_reserve_replayed_with_another_cache_ttl_is_a_conflict(client, tag):
    """One request id: the body with "1h", then without it and with "5m": 409
    idempotency_conflict (another body); the first body again: its hold replayed (0.06: (2,000 +
    500) x 20 per 1M + 0.01). The other order too: a body without it, then with "1h": 409. One
    hold each, 0.06 + the other's 0.04 ((2,000 x 10 + 500 x 20) per 1M + 0.01) held."""
    cid, _ = await _customer(client, tag)
    body = {"customer_id": cid, "model": "claude-x", "estimate": {"input_tokens": 2000, "max_output_tokens": 500}}
    one, other = f"r-{uuid.uuid4().hex[:8]}", f"r-{uuid.uuid4().hex[:8]}"
    first = await client.post("/v1/reservations", json={**body, "request_id": one, "cache_ttl": "1h"})
    assert first.status_code == 201 and Decimal(first.json()["amount"]) == Decimal("0.06"), first.text
    for ttl in ({}, {"cache_ttl": "5m"}):
        again = await client.post("/v1/reservations", json={**body, "request_id": one, **ttl})
        assert (again.status_code, again.json()["code"]) == (409, "idempotency_conflict"), again.text
    replay = await client.post("/v1/reservations", json={**body, "request_id": one, "cache_ttl": "1h"})
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"], replay.text
    plain = await client.post("/v1/reservations", json={**body, "request_id": other})
    assert plain.status_code == 201 and Decimal(plain.json()["amount"]) == Decimal("0.04"), plain.text
    late = await client.post("/v1/reservations", json={**body, "request_id": other, "cache_ttl": "1h"})
    assert (late.status_code, late.json()["code"]) == (409, "idempotency_conflict"), late.text
    assert await _available(client, cid) == (Decimal("10") - Decimal("0.10"), Decimal("0.10"))


async def test_the_reserve_schema_names_cache_ttl(client):
    """The OpenAPI document's reserve body names the field, and its two values."""
    schema = (await client.get("/schema/openapi.json")).json()
    body = schema["paths"]["/v1/reservations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    field = body["properties"]["cache_ttl"]
    assert field["anyOf"][0]["enum"] == ["1h", "5m"] and field["anyOf"][1] == {"type": "null"}, field
    assert "cache_ttl" not in body["required"]


@pytest.mark.parametrize(
    ("one_hour", "ttl", "hold"),
    [("5.00", "1h", "0.04"), ("20.00", "5m", "0.045"), ("20.00", "1h", "0.06")],
    ids=["1h-below-input", "5m-above-input", "1h-above-input"],
)
async def test_a_hold_prices_the_prompt_at_the_dearer_of_its_cache_write_and_input(client, tag, one_hour, ttl, hold):
    """2,000 prompt and 500 out ($20/M), $0.01 a call: a one-hour write at $5/M, below input's $10:
    held at input, (20,000 + 10,000) per 1M + 0.01 = 0.04; "5m" at $12.50: (25,000 + 10,000) per 1M
    + 0.01 = 0.045; "1h" at $20: (40,000 + 10,000) per 1M + 0.01 = 0.06."""
    cid, _ = await _customer(client, tag, one_hour=one_hour)
    held = await _reserve(client, cid, estimate={"input_tokens": 2000, "max_output_tokens": 500}, cache_ttl=ttl)
    assert held.status_code == 201, held.text
    assert Decimal(held.json()["amount"]) == Decimal(hold)

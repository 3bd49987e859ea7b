"""The charge trace page names each line's kind: a discount's and a free allowance's lines
read as what they are, not as usage lines with odd amounts."""
from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from api.demo import PRICE_BOOK
from api.gateway.settles import GatewaySettles, RoundsSpool, settle_record
from tests.api.apps import api_client, sign_in

ADMIN_KEY = "console-trace-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def test_a_traced_charge_with_a_discount_and_a_free_allowance_names_their_lines(database_url):
    """They showed as rows of token type 'input' (the discount, negative) and 'None' with rule
    'None' (the allowance), under the same headings as the usage line."""
    customer = f"trace-{uuid.uuid4().hex[:8]}"
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        await _customer(client, customer)
        now = datetime.now(UTC)
        overrides = await client.put(f"/v1/customers/{customer}/price-overrides", headers=ADMIN, json={
            "effective_from": (now - timedelta(days=40)).strftime("%Y-%m-%dT00:00:00Z"),
            "discounts": [{"id": "ten-off", "model": "model-a", "percent": "10"}],
            "free_allowances": [{"id": "free-1", "amount": "0.004"}]})
        assert overrides.status_code < 300, overrides.text
        sent = await client.post("/v1/usage-events", headers=ADMIN, json=[{
            "event_id": "traced-1", "customer_id": customer, "model": "model-a",
            "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "usage": {"input_tokens": 1000}}])
        assert sent.status_code == 200, sent.text
        trace = (await client.get("/v1/audit/charges/traced-1", headers=ADMIN,
                                  params={"customer_id": customer})).json()
        lines = trace["charges"][0]["lines"]
        assert {ln["kind"] for ln in lines} == {"usage", "discount", "free_allowance"}, lines
        await sign_in(client, ADMIN_KEY)
        page = await client.get("/console/audit/trace", params={"request_id": "traced-1", "customer_id": customer})
        assert page.status_code == 200
        rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td>", page.text.split("Journal entries")[0])
        assert len(rows) == len(lines)
        for line, (kind_column, rule_column) in zip(lines, rows, strict=True):
            if line["kind"] == "usage":
                assert kind_column == line["token_type"]
            elif line["kind"] == "discount":
                assert kind_column == f"{line['token_type']} (discount)"
            else:
                assert kind_column == "free allowance"
            for name in filter(None, (line["rule_id"], line["override_id"])):
                assert f"<code>{name}</code>" in rule_column, (line, rule_column)
        assert ">None<" not in page.text


async def test_a_traced_id_of_a_reservation_and_a_usage_event_shows_both_and_whose_each_charge_is(database_url):
    """The page showed the reservation alone, its usage event's charge nowhere."""
    customer = f"trace-{uuid.uuid4().hex[:8]}"
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        held = await _held(client, customer, "both-1")
        settled = await client.post(f"/v1/reservations/{held.json()['id']}/settle", headers=ADMIN,
                                    json={"usage": {"input_tokens": 1000}, "final": True})
        assert settled.status_code == 200, settled.text
        sent = await client.post("/v1/usage-events", headers=ADMIN, json=[{
            "event_id": "both-1", "customer_id": customer, "model": "model-a",
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "usage": {"input_tokens": 3000}}])
        assert sent.json()["accepted"] == 1, sent.text
        trace = (await client.get("/v1/audit/charges/both-1", headers=ADMIN,
                                  params={"customer_id": customer})).json()
        await sign_in(client, ADMIN_KEY)
        page = await client.get("/console/audit/trace", params={"request_id": "both-1", "customer_id": customer})
        assert page.status_code == 200
        assert f"Reservation <code>{held.json()['id']}</code>" in page.text
        assert "Usage event <code>both-1</code>" in page.text
        headings = re.findall(r"<h2>Charge (\d+) of the (reservation|usage event): ([^<]+)</h2>", page.text)
        assert headings == [(str(i), "usage event" if c["event_id"] else "reservation", c["charged"])
                            for i, c in enumerate(trace["charges"], 1)]
        assert [kind for _, kind, _ in headings] == ["reservation", "usage event"]
        captions = re.findall(r"<caption>Entry #(\d+)", page.text)
        assert {str(c["entry_id"]) for c in trace["charges"]} <= set(captions)


async def test_a_traced_gateway_charge_at_a_tier_the_answer_did_not_tell_says_it_was_assumed(database_url, tmp_path):
    """A gateway call that left its tier to the provider, whose answer did not tell it, is charged
    at the tier its hold was priced at (api.gateway.forwarding): its usage record names it in
    `assumed`, apart from what the provider reported, and the page says so beside the charge (it
    showed nothing of the tier). This book prices no priority: 1,000 input at 10 per million and
    the 0.01 call fee, 0.02."""
    customer = f"trace-{uuid.uuid4().hex[:8]}"
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        held = await _held(client, customer, "assumed-1")
        settles = GatewaySettles(RoundsSpool(tmp_path / "gw.jsonl"), client.app.state.services.wallets)
        await settles.settle_now(settle_record(customer, "assumed-1", held.json()["id"], "openai_usage",
                                               {"prompt_tokens": 1000, "completion_tokens": 0},
                                               {"service_tier": "priority"}))
        trace = (await client.get("/v1/audit/charges/assumed-1", headers=ADMIN,
                                  params={"customer_id": customer})).json()
        usage = trace["charges"][0]["usage"]
        assert usage["assumed"] == usage["dimensions"] == {"service_tier": "priority"}
        assert "service_tier" not in usage["reported"] and "service_tier" not in usage["canonical"]
        assert Decimal(trace["charges"][0]["charged"]) == 1000 * Decimal(10) / 1_000_000 + Decimal("0.01")
        await sign_in(client, ADMIN_KEY)
        page = await client.get("/console/audit/trace", params={"request_id": "assumed-1", "customer_id": customer})
        assert page.status_code == 200
        said = re.findall(r"<p data-assumed>(.*?)</p>", page.text)
        assert len(said) == 1 and "service_tier <code>priority</code>" in said[0], said
        assert "not reported by the provider" in said[0]


async def _customer(client, customer: str) -> None:
    """`customer` on a price book of its own, the demo's."""
    book = f"trbook-{uuid.uuid4().hex[:8]}"
    assert (await client.post("/v1/price-books", headers=ADMIN, json={**PRICE_BOOK, "id": book})).status_code == 201
    assert (await client.post("/v1/customers", headers=ADMIN,
                              json={"id": customer, "price_book": book})).status_code == 201


async def _held(client, customer: str, request_id: str):
    """`customer` (_customer) topped up $10.00, with a $0.10 hold for model-a under `request_id`."""
    await _customer(client, customer)
    assert (await client.post(f"/v1/customers/{customer}/topups", headers=ADMIN,
                              json={"amount": "10.00"})).status_code == 201
    held = await client.post("/v1/reservations", headers=ADMIN, json={
        "customer_id": customer, "request_id": request_id, "model": "model-a", "amount": "0.10"})
    assert held.status_code == 201, held.text
    return held

"""Per-key budgets bind a key that a customer holds on every path, not only through the gateway:
a key limited to customers (other than an admin key) is counted under its own id
(`dimensions.api_key`), which the server sets; another id from it is 403 `forbidden`."""
from __future__ import annotations

from litestar.testing import AsyncTestClient


async def _funded(client: AsyncTestClient, tag: str, book: str) -> str:
    cid = f"kb-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "100.00"})).status_code == 201
    return cid


async def _key(client: AsyncTestClient, scope: str, customers: list[str]) -> tuple[str, dict[str, str]]:
    made = await client.post("/v1/api-keys", json={"scope": scope, "customers": customers})
    assert made.status_code == 201, made.text
    return made.json()["id"], {"Authorization": f"Bearer {made.json()['key']}"}


async def _tpm(client: AsyncTestClient, cid: str, key_id: str, limit: int = 1000, window: str = "minute") -> str:
    made = await client.post("/v1/budgets", json={"customer_id": cid, "window": window, "metric": "tokens",
                                                  "limit": limit, "api_key": key_id})
    assert made.status_code == 201, made.text
    return made.json()["id"]


def _reservation(cid: str, request_id: str, tokens: int = 600, **dimensions) -> dict:
    return {"customer_id": cid, "request_id": request_id, "model": "model-a",
            "estimate": {"input_tokens": tokens, "max_output_tokens": 0}, "dimensions": dimensions}


async def test_a_customer_limited_key_reserving_directly_is_counted_in_its_own_keys_budget(
        client: AsyncTestClient, tag: str, book: str):
    cid = await _funded(client, tag, book)
    key_id, key = await _key(client, "inference", [cid])
    budget = await _tpm(client, cid, key_id)
    left_out = await client.post("/v1/reservations", json=_reservation(cid, "a", feature="chat"), headers=key)
    assert left_out.status_code == 201, left_out.text
    shown = (await client.get(f"/v1/reservations/{left_out.json()['id']}")).json()
    assert shown["dimensions"] == {"feature": "chat", "api_key": key_id}
    assert (await client.get(f"/v1/budgets/{budget}")).json()["held"] == 600
    # before: 201, counted in no budget (the key's 1,000 TPM let 1,200 through)
    claimed = await client.post("/v1/reservations", json=_reservation(cid, "b", api_key="someone-else"),
                                headers=key)
    assert claimed.status_code == 403, claimed.text
    assert claimed.json()["code"] == "forbidden" and "dimensions.api_key" in claimed.json()["detail"]
    own = await client.post("/v1/reservations", json=_reservation(cid, "c", api_key=key_id), headers=key)
    assert own.status_code == 429 and own.json()["budget_id"] == budget
    assert (await client.get(f"/v1/budgets/{budget}")).json()["held"] == 600


async def test_a_customer_limited_keys_reservation_replays_as_it_was_sent(
        client: AsyncTestClient, tag: str, book: str):
    cid = await _funded(client, tag, book)
    key_id, key = await _key(client, "inference", [cid])
    await _tpm(client, cid, key_id, limit=10_000)
    first = await client.post("/v1/reservations", json=_reservation(cid, "r"), headers=key)
    again = await client.post("/v1/reservations", json=_reservation(cid, "r"), headers=key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    keyed = {**key, "Idempotency-Key": f"idem-{tag}"}
    first = await client.post("/v1/reservations", json=_reservation(cid, "s"), headers=keyed)
    again = await client.post("/v1/reservations", json=_reservation(cid, "s"), headers=keyed)
    assert (first.status_code, again.status_code) == (201, 201) and again.json() == first.json()


async def test_an_admin_or_unlimited_inference_key_still_names_the_key_a_call_counts_for(
        client: AsyncTestClient, tag: str, book: str):
    cid = await _funded(client, tag, book)
    key_id, _ = await _key(client, "inference", [cid])
    budget = await _tpm(client, cid, key_id)
    _, platform = await _key(client, "inference", [])
    assert (await client.post("/v1/reservations", json=_reservation(cid, "p", api_key=key_id),
                              headers=platform)).status_code == 201
    assert (await client.post("/v1/reservations", json=_reservation(cid, "q", 300, api_key=key_id))).status_code == 201
    assert (await client.get(f"/v1/budgets/{budget}")).json()["held"] == 900


async def test_a_customer_limited_keys_usage_events_count_in_its_own_keys_budget(
        client: AsyncTestClient, tag: str, book: str):
    cid = await _funded(client, tag, book)
    key_id, key = await _key(client, "inference", [cid])
    budget = await _tpm(client, cid, key_id, window="lifetime")

    def event(event_id: str, **dimensions) -> dict:
        return {"event_id": event_id, "customer_id": cid, "model": "model-a", "timestamp": "2026-12-01T00:00:00Z",
                "usage": {"input_tokens": 400, "output_tokens": 0}, "dimensions": dimensions}

    sent = [event("e1"), event("e2", api_key="someone-else"), event("e3", api_key=key_id)]
    answer = await client.post("/v1/usage-events", json=sent, headers=key)
    assert answer.status_code == 200, answer.text
    # before: all 3 accepted, e1 and e2 counted in no budget
    assert (answer.json()["accepted"], [(r["event_id"], r["code"]) for r in answer.json()["rejected"]]) == \
        (2, [("e2", "forbidden")])
    again = await client.post("/v1/usage-events", json=[event("e1")], headers=key)
    assert (again.json()["accepted"], again.json()["duplicates"]) == (0, 1)
    trace = (await client.get(f"/v1/audit/charges/e1?customer_id={cid}")).json()
    assert trace["charges"][0]["dimensions"] == {"api_key": key_id}
    assert (await client.get(f"/v1/budgets/{budget}")).json()["used"] == 800  # e1 and e3

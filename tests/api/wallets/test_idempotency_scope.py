"""An Idempotency-Key belongs to the customers a key acts for, not to the key itself: after the
operator rotates a key (a new key for the same customers, the old one revoked), a client that
sends a call again under its Idempotency-Key is answered the first answer, byte for byte, and
nothing happens twice. A key limited to other customers never reads that answer."""
from __future__ import annotations

import uuid

from litestar.testing import AsyncTestClient


async def _key(client: AsyncTestClient, scope: str, customers: list[str]) -> tuple[str, dict[str, str]]:
    made = await client.post("/v1/api-keys", json={"scope": scope, "customers": customers})
    assert made.status_code == 201, made.text
    return made.json()["id"], {"Authorization": f"Bearer {made.json()['key']}"}


async def _rotated(client: AsyncTestClient, scope: str, customers: list[str],
                   old: str) -> dict[str, str]:
    """A new key for the same customers, the old one revoked (an operator's key rotation)."""
    assert (await client.delete(f"/v1/api-keys/{old}")).status_code == 200
    return (await _key(client, scope, customers))[1]


async def _send(client: AsyncTestClient, method: str, path: str, auth: dict[str, str], key: str,
                body: object = None):
    headers = {**auth, "Idempotency-Key": key}
    if body is None:
        return await client.request(method, path, headers=headers)
    return await client.request(method, path, json=body, headers=headers)


def _same_answer(first, again) -> None:
    assert (again.status_code, again.content) == (first.status_code, first.content), (first.text, again.text)
    assert again.headers.get("idempotent-replayed") == "true"


async def _customer(client: AsyncTestClient, book: str, cid: str, amount: str = "10.00") -> None:
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": amount})).status_code == 201


async def _available(client: AsyncTestClient, cid: str) -> tuple[str, str]:
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    return wallet["available"], wallet["reserved"]


async def test_an_inference_calls_resent_after_a_key_rotation_are_answered_their_first_answer(
        client: AsyncTestClient, tag: str, book: str):
    cid = f"rot-{tag}"
    await _customer(client, book, cid)
    old_id, old = await _key(client, "inference", [cid])
    calls = [  # each sent once with the old key
        ("POST", "/v1/reservations", {"customer_id": cid, "request_id": "a", "model": "model-a", "amount": "1.00"}),
        ("POST", "/v1/reservations", {"customer_id": cid, "request_id": "b", "model": "model-a", "amount": "2.00"}),
        ("POST", "/v1/reservations", {"customer_id": cid, "request_id": "c", "model": "model-a", "amount": "0.50"}),
        ("POST", "/v1/reservations", {"customer_id": cid, "request_id": "big", "model": "model-a",
                                      "amount": "99.00"}),  # refused: 402
    ]
    firsts = [await _send(client, m, p, old, f"{tag}-{i}", b) for i, (m, p, b) in enumerate(calls)]
    assert [r.status_code for r in firsts] == [201, 201, 201, 402]
    a, b, c = (r.json()["id"] for r in firsts[:3])
    more = [
        ("POST", f"/v1/reservations/{a}/settle", {"usage": {"input_tokens": 1000, "output_tokens": 10}}),
        ("POST", f"/v1/reservations/{b}/release", None),
        ("POST", f"/v1/reservations/{c}/extend", {"ttl_seconds": 3600}),
        ("POST", "/v1/usage-events", [{"event_id": "e1", "customer_id": cid, "model": "model-a",
                                        "timestamp": "2026-11-23T10:00:00Z", "usage": {"input_tokens": 1000}}]),
    ]
    for i, (m, p, body) in enumerate(more, start=len(calls)):
        firsts.append(await _send(client, m, p, old, f"{tag}-{i}", body))
        calls.append((m, p, body))
    assert [r.status_code for r in firsts[4:]] == [200, 200, 200, 200]
    assert firsts[4].json()["charged"] == "0.0202"  # 1,000 in at $10/M + $0.01 a call
    before = await _available(client, cid)
    assert before == ("9.4598", "0.50")  # 10 - 0.0202 charged - 0.50 held - the event: 0.01 in + 0.01 a call

    new = await _rotated(client, "inference", [cid], old_id)
    for i, (m, p, body) in enumerate(calls):
        _same_answer(firsts[i], await _send(client, m, p, new, f"{tag}-{i}", body))
    assert await _available(client, cid) == before  # nothing held, charged or released twice


async def test_an_admin_call_resent_after_its_key_is_rotated_is_answered_its_first_answer(
        client: AsyncTestClient, tag: str, book: str):
    cid = f"rota-{tag}"
    old_id, old = await _key(client, "admin", [])
    calls = [
        ("POST", "/v1/customers", {"id": cid, "price_book": book}),
        ("POST", f"/v1/customers/{cid}/topups", {"amount": "5.00", "reference": "pay-1"}),
        ("POST", f"/v1/customers/{cid}/grants", {"amount": "1.00"}),
        ("POST", "/v1/budgets", {"customer_id": cid, "name": "cap", "window": "month", "metric": "money",
                                 "limit": "3.00"}),
    ]
    firsts = [await _send(client, m, p, old, f"{tag}-{i}", b) for i, (m, p, b) in enumerate(calls)]
    assert [r.status_code for r in firsts] == [201, 201, 201, 201], [r.text for r in firsts]
    assert await _available(client, cid) == ("6.00", "0.00")

    new = await _rotated(client, "admin", [], old_id)
    for i, (m, p, body) in enumerate(calls):
        _same_answer(firsts[i], await _send(client, m, p, new, f"{tag}-{i}", body))
    assert await _available(client, cid) == ("6.00", "0.00")  # one top-up, one grant
    budgets = (await client.get(f"/v1/budgets?customer_id={cid}")).json()
    assert len(budgets["budgets"] if isinstance(budgets, dict) else budgets) == 1


async def test_a_key_made_under_an_idempotency_key_is_not_made_again_by_a_rotated_admin_key(
        client: AsyncTestClient, tag: str):
    old_id, old = await _key(client, "admin", [])
    body = {"scope": "inference", "customers": [f"made-{tag}"], "name": f"made-{tag}"}
    first = await _send(client, "POST", "/v1/api-keys", old, f"{tag}-k", body)
    assert first.status_code == 201 and first.json()["key"].startswith("tt_")
    _same_answer(first, await _send(client, "POST", "/v1/api-keys", old, f"{tag}-k", body))  # its own replay
    new = await _rotated(client, "admin", [], old_id)
    # the secret is sealed to the key that made it: another key cannot read it, nor make a second key
    again = await _send(client, "POST", "/v1/api-keys", new, f"{tag}-k", body)
    assert again.status_code == 409 and again.json()["code"] == "idempotency_conflict", again.text
    assert first.json()["key"] not in again.text
    made = [k for k in (await client.get("/v1/api-keys")).json() if k["name"] == f"made-{tag}"]
    assert [k["id"] for k in made] == [first.json()["id"]]


async def test_a_key_limited_to_another_customer_never_reads_the_answer(
        client: AsyncTestClient, tag: str, book: str):
    mine, theirs = f"iso-a-{tag}", f"iso-b-{tag}"
    await _customer(client, book, mine)
    await _customer(client, book, theirs)
    _, my_key = await _key(client, "inference", [mine])
    _, their_key = await _key(client, "inference", [theirs])
    key = str(uuid.uuid4())
    body = {"customer_id": mine, "request_id": "r", "model": "model-a", "amount": "1.00"}
    first = await _send(client, "POST", "/v1/reservations", my_key, key, body)
    assert first.status_code == 201
    # the same call by the other customer's key: refused for the customer it names, not replayed
    refused = await _send(client, "POST", "/v1/reservations", their_key, key, body)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert "idempotent-replayed" not in refused.headers
    # the same Idempotency-Key for its own customer is a call of its own: neither a replay nor a conflict
    own = await _send(client, "POST", "/v1/reservations", their_key, key, {**body, "customer_id": theirs})
    assert own.status_code == 201 and "idempotent-replayed" not in own.headers
    assert own.json()["id"] != first.json()["id"]
    assert await _available(client, theirs) == ("9.00", "1.00")


async def test_a_customers_own_key_and_the_operators_keys_never_share_an_idempotency_key(
        client: AsyncTestClient, tag: str, book: str):
    cid = f"own-{tag}"
    await _customer(client, book, cid)
    _, own = await _key(client, f"customer:{cid}", [])
    _, operator = await _key(client, "admin", [cid])
    body = {"customer_id": cid, "name": "cap", "window": "month", "metric": "money", "limit": "3.00"}
    mine = await _send(client, "POST", "/v1/budgets", own, f"{tag}-b", body)
    assert mine.status_code == 201, mine.text
    # the operator's call under the same Idempotency-Key is its own: a budget it set, not the customer's
    theirs = await _send(client, "POST", "/v1/budgets", operator, f"{tag}-b", body)
    assert theirs.status_code == 201 and "idempotent-replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]
    _same_answer(mine, await _send(client, "POST", "/v1/budgets", own, f"{tag}-b", body))

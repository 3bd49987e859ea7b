"""A call kept under its Idempotency-Key is answered again as kept, whatever has changed since in
what the route checks before it reads the key (2759e76's rule, run_once's `rules`): the operator's
webhook address policy, the price books a key limited to customers may read. Another body under
the key is refused by those checks (422) before it is told it conflicts (409)."""

from __future__ import annotations

import uuid

from tests.api.apps import api_client, bearer
from wallets.webhooks.rules import AddressPolicy, parse_networks

ADMIN = "kept-rules-admin"
RULES = [{"id": "in", "model": "model-a", "token_type": "input", "price": "10.00"}]


def _refused(answer, status: int, code: str, fields: list[str]) -> None:
    assert (answer.status_code, answer.json()["code"], [f["field"] for f in answer.json().get("fields", [])]) == (
        status,
        code,
        fields,
    ), answer.text


async def test_a_webhook_endpoint_kept_under_its_key_replays_after_the_address_policy_refuses_its_url(
    database_url: str,
):
    """An endpoint at http://10.1.2.3/hook made (201, its secret) under key k while the operator
    allowed 10.0.0.0/8 (TOKENTILL_WEBHOOK_ALLOWED_NETWORKS). With the allowance dropped (the server
    started again without it), the same call under k is answered as kept (201: the same endpoint and
    secret, the only way to get that secret again), not 422 naming url; another body under k at
    10.9.9.9 is 422 naming url, one at a public address 409 idempotency_conflict. One endpoint made."""
    key = {"Idempotency-Key": f"wh-{uuid.uuid4().hex[:10]}"}
    body = {"url": "http://10.1.2.3/hook", "topics": ["*"]}
    async with api_client(
        database_url, admin=ADMIN, send_admin=True, webhook_addresses=AddressPolicy(parse_networks("10.0.0.0/8"))
    ) as allowed:
        first = await allowed.post("/v1/webhook-endpoints", json=body, headers=key)
        assert first.status_code == 201, first.text
    made = first.json()
    try:
        async with api_client(database_url, admin=ADMIN, send_admin=True) as guarded:
            again = await guarded.post("/v1/webhook-endpoints", json=body, headers=key)
            assert again.status_code == 201, again.text
            assert (again.json()["id"], again.json()["secret"]) == (made["id"], made["secret"])
            _refused(
                await guarded.post("/v1/webhook-endpoints", json={**body, "url": "http://10.9.9.9/hook"}, headers=key),
                422,
                "validation_error",
                ["url"],
            )
            _refused(
                await guarded.post(
                    "/v1/webhook-endpoints", json={**body, "url": "https://hooks.example.com/"}, headers=key
                ),
                409,
                "idempotency_conflict",
                [],
            )
            listed = [e["id"] for e in (await guarded.get("/v1/webhook-endpoints")).json() if e["url"] == body["url"]]
            assert made["id"] in listed
    finally:
        async with api_client(database_url, admin=ADMIN, send_admin=True) as cleanup:
            assert (await cleanup.delete(f"/v1/webhook-endpoints/{made['id']}")).status_code == 200


async def test_a_customer_move_kept_under_its_key_replays_after_the_limited_key_may_no_longer_read_the_book(
    database_url: str,
):
    """A key limited to customers a and a2 moves a to a2's book under key k (200: a priced with it).
    The operator then moves a back to its own book, and a2 to a's too: no customer of the key is
    priced with a2's book, which the key may no longer read. The same move under k is answered as kept
    (200, a on a2's book as the first answer said; a stays where it is), not 422 naming price_book;
    another body under k, a move to b's book (never readable by the key), is 422 naming price_book,
    and a rename 409 idempotency_conflict. a's changes: the move, and the move back (2)."""
    tag = uuid.uuid4().hex[:8]
    async with api_client(database_url, admin=ADMIN, send_admin=True) as client:
        books, ids = {}, []
        for name in ("a", "a2", "b"):
            book = books[name] = f"kept-{name}-{tag}"
            made = await client.post(
                "/v1/price-books",
                json={"id": book, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": RULES},
            )
            assert made.status_code == 201, made.text
            ids.append(f"kept-{name}-{tag}")
            made = await client.post("/v1/customers", json={"id": ids[-1], "price_book": book, "billing": "postpaid"})
            assert made.status_code == 201, made.text
        a, a2, _ = ids
        created = await client.post("/v1/api-keys", json={"scope": "admin", "customers": [a, a2]})
        assert created.status_code == 201, created.text
        limited = {**bearer(created.json()["key"]), "Idempotency-Key": f"move-{tag}"}
        move = {"price_book": books["a2"]}
        first = await client.patch(f"/v1/customers/{a}", json=move, headers=limited)
        assert (first.status_code, first.json()["price_book"]) == (200, books["a2"]), first.text
        assert (await client.patch(f"/v1/customers/{a}", json={"price_book": books["a"]})).status_code == 200
        assert (await client.patch(f"/v1/customers/{a2}", json={"price_book": books["a"]})).status_code == 200
        assert (
            await client.get(f"/v1/price-books/{books['a2']}", headers=bearer(created.json()["key"]))
        ).status_code == 404  # no longer readable by the key
        again = await client.patch(f"/v1/customers/{a}", json=move, headers=limited)
        assert (again.status_code, again.json()) == (200, first.json()), again.text
        _refused(
            await client.patch(f"/v1/customers/{a}", json={"price_book": books["b"]}, headers=limited),
            422,
            "validation_error",
            ["price_book"],
        )
        _refused(
            await client.patch(f"/v1/customers/{a}", json={"name": "renamed"}, headers=limited),
            409,
            "idempotency_conflict",
            [],
        )
        assert (await client.get(f"/v1/customers/{a}")).json()["price_book"] == books["a"]
        assert len((await client.get(f"/v1/customers/{a}/changes")).json()["changes"]) == 2

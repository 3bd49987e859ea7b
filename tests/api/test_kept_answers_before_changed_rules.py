"""A call kept under its Idempotency-Key is answered again as kept, whatever has changed since in
what the route checks before it reads the key (2759e76's rule, run_once's `rules`): the operator's
webhook address policy, the price books a key limited to customers may read. Another body under
the key is refused by those checks (422) before it is told it conflicts (409)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

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
    10.9.9.9 is 422 naming url, one at a public address 409 idempotency_conflict. The same for its
    change of URL to http://10.1.2.4/hook under key p (200 then; as kept now; 10.9.9.9 under p 422,
    a description under p 409). One endpoint made, at 10.1.2.4."""
    key = {"Idempotency-Key": f"wh-{uuid.uuid4().hex[:10]}"}
    patch_key = {"Idempotency-Key": f"wh-patch-{uuid.uuid4().hex[:10]}"}
    body = {"url": "http://10.1.2.3/hook", "topics": ["*"]}
    async with api_client(
        database_url, admin=ADMIN, send_admin=True, webhook_addresses=AddressPolicy(parse_networks("10.0.0.0/8"))
    ) as allowed:
        first = await allowed.post("/v1/webhook-endpoints", json=body, headers=key)
        assert first.status_code == 201, first.text
        path, moved = f"/v1/webhook-endpoints/{first.json()['id']}", {"url": "http://10.1.2.4/hook"}
        changed = await allowed.patch(path, json=moved, headers=patch_key)
        assert (changed.status_code, changed.json()["url"]) == (200, moved["url"]), changed.text
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
            # its change of URL under p, the same: answered as kept (200); another URL refused 422, else 409
            again = await guarded.patch(path, json=moved, headers=patch_key)
            assert (again.status_code, again.json()) == (200, changed.json()), again.text
            _refused(
                await guarded.patch(path, json={"url": "http://10.9.9.9/hook"}, headers=patch_key),
                422,
                "validation_error",
                ["url"],
            )
            _refused(
                await guarded.patch(path, json={"description": "x"}, headers=patch_key), 409, "idempotency_conflict", []
            )
            listed = [e["url"] for e in (await guarded.get("/v1/webhook-endpoints")).json() if e["id"] == made["id"]]
            assert listed == [moved["url"]]
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


async def test_a_grant_kept_under_its_key_replays_after_its_expiry_passed(database_url: str):
    """Guard (review of 2759e76; passed before): a grant's expires_at must be in the future, checked
    after its Idempotency-Key is read (Batch.apply, then credits.opened_lot), so a grant of 5.00
    expiring 3 s on, sent again under its key once that time has passed, is answered as kept (201,
    the same grant), not 422 naming expires_at; another grant under the key with a past expiry is
    422 naming expires_at, not 409. The lot has expired: 0.00 available."""
    tag = uuid.uuid4().hex[:8]
    async with api_client(database_url, admin=ADMIN, send_admin=True) as client:
        book = f"kept-g-{tag}"
        made = await client.post(
            "/v1/price-books",
            json={"id": book, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": RULES},
        )
        assert made.status_code == 201, made.text
        assert (await client.post("/v1/customers", json={"id": book, "price_book": book})).status_code == 201
        expiry = datetime.now(UTC) + timedelta(seconds=3)
        grant, key = {"amount": "5.00", "expires_at": expiry.isoformat()}, {"Idempotency-Key": f"g-{tag}"}
        first = await client.post(f"/v1/customers/{book}/grants", json=grant, headers=key)
        assert first.status_code == 201, first.text
        await asyncio.sleep(max((expiry - datetime.now(UTC)).total_seconds(), 0) + 0.05)  # past its expiry
        again = await client.post(f"/v1/customers/{book}/grants", json=grant, headers=key)
        assert (again.status_code, again.json()["grant_id"]) == (201, first.json()["grant_id"]), again.text
        _refused(
            await client.post(f"/v1/customers/{book}/grants", json={**grant, "amount": "6.00"}, headers=key),
            422,
            "validation_error",
            ["expires_at"],
        )
        # the one lot made has expired: none left to draw from
        assert (await client.get(f"/v1/customers/{book}/wallet")).json()["available"] == "0.00"


async def test_a_price_book_version_in_another_currency_under_an_existing_id_is_a_currency_mismatch(
    database_url: str,
):
    """Guard (review of 59f32c3: the existing-id rule on the other create that takes a client id;
    passed before): book X made in USD with a version at 2026-01-01; the same version in EUR is 422
    currency_mismatch (the body against what never changes), not 409 price_version_conflict; other
    rules in USD at that time 409; the very version again 200. X keeps one version, in USD."""
    book = f"kept-pb-{uuid.uuid4().hex[:8]}"
    version = {"id": book, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": RULES}
    async with api_client(database_url, admin=ADMIN, send_admin=True) as client:
        assert (await client.post("/v1/price-books", json=version)).status_code == 201
        _refused(
            await client.post("/v1/price-books", json={**version, "currency": "EUR"}), 422, "currency_mismatch", []
        )
        other = [{**RULES[0], "price": "12.00"}]
        conflict = await client.post("/v1/price-books", json={**version, "rules": other})
        _refused(conflict, 409, "price_version_conflict", [])
        assert conflict.json()["field"] == "effective_from"
        assert (await client.post("/v1/price-books", json=version)).status_code == 200
        stored = (await client.get(f"/v1/price-books/{book}")).json()
        assert (stored["currency"], len(stored["versions"])) == ("USD", 1)

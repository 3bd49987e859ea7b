"""Which refusals an Idempotency-Key keeps (README, Idempotency): one rule for every keyed call.

A refusal of the request as sent (422 `validation_error`, `invalid_amount`, `currency_mismatch`:
a field it names is wrong, whoever decided it, the body's own rules, the operator's address
policy, or the books a key limited to customers may read) is never kept: nothing was done, the
client is told to change the request, and it may send it again under the same key, the same body
decided again (by the rules of then) or a corrected one carried out. A refusal of a request that
could be carried out as it is, by the state it met (402 `insufficient_funds`, 429 `budget_exceeded`),
is kept: the same body again under the key answers it as first answered (API.md: a replay returns
the first response), even once the state changed; another body is 409 `idempotency_conflict`."""

from __future__ import annotations

import uuid

from tests.api.apps import api_client, bearer
from wallets.webhooks.rules import AddressPolicy, parse_networks

ADMIN = "refusals-key-admin"
RULES = [{"id": "in", "model": "model-a", "token_type": "input", "price": "10.00"}]


def _status(answer) -> tuple[int, str | None, list[str], str | None]:
    body = answer.json()
    return (
        answer.status_code,
        body.get("code"),
        [f["field"] for f in body.get("fields", [])],
        answer.headers.get("idempotent-replayed"),
    )


async def _book_and_customer(client, name: str, **customer) -> str:
    """A USD book and a customer of the same id priced with it."""
    made = await client.post(
        "/v1/price-books",
        json={"id": name, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": RULES},
    )
    assert made.status_code == 201, made.text
    made = await client.post("/v1/customers", json={"id": name, "price_book": name, **customer})
    assert made.status_code == 201, made.text
    return name


async def test_a_limited_key_s_move_refused_under_a_key_is_decided_again_once_the_book_is_readable(
    database_url: str,
):
    """A key limited to customers a and a2 moves a to b's book under key k: 422 naming price_book (no
    customer of the key is priced with b's book). The operator moves a2 to b's book; the same move
    under k is now carried out (200, a on b's book), as the address policy's refusal and a budget
    rule's are: the refusal was not kept."""
    tag = uuid.uuid4().hex[:8]
    async with api_client(database_url, admin=ADMIN, send_admin=True) as client:
        a, a2, b = [await _book_and_customer(client, f"rk-{n}-{tag}", billing="postpaid") for n in ("a", "a2", "b")]
        created = await client.post("/v1/api-keys", json={"scope": "admin", "customers": [a, a2]})
        assert created.status_code == 201, created.text
        limited = {**bearer(created.json()["key"]), "Idempotency-Key": f"move-{tag}"}
        move = {"price_book": b}
        refused = await client.patch(f"/v1/customers/{a}", json=move, headers=limited)
        assert _status(refused) == (422, "validation_error", ["price_book"], None), refused.text
        assert (await client.patch(f"/v1/customers/{a2}", json={"price_book": b})).status_code == 200
        again = await client.patch(f"/v1/customers/{a}", json=move, headers=limited)
        assert (again.status_code, again.json().get("price_book")) == (200, b), again.text
        assert (await client.get(f"/v1/customers/{a}")).json()["price_book"] == b


async def test_a_top_up_finer_than_a_cent_under_a_key_leaves_the_key_to_the_corrected_top_up(database_url: str):
    """A top-up of "10.001" dollars under key t: 422 invalid_amount naming amount; "10.00" under t:
    201 (the corrected call, not 409), and once more: its replay. 10.00 available."""
    tag = uuid.uuid4().hex[:8]
    async with api_client(database_url, admin=ADMIN, send_admin=True) as client:
        cid = await _book_and_customer(client, f"rk-t-{tag}")
        key = {"Idempotency-Key": f"t-{tag}"}
        path = f"/v1/customers/{cid}/topups"
        refused = await client.post(path, json={"amount": "10.001"}, headers=key)
        assert _status(refused) == (422, "invalid_amount", ["amount"], None), refused.text
        made = await client.post(path, json={"amount": "10.00"}, headers=key)
        assert made.status_code == 201, made.text
        again = await client.post(path, json={"amount": "10.00"}, headers=key)
        assert (again.status_code, again.json(), again.headers.get("idempotent-replayed")) == (
            201,
            made.json(),
            "true",
        )
        assert (await client.get(f"/v1/customers/{cid}/wallet")).json()["available"] == "10.00"


async def test_a_webhook_endpoint_refused_by_the_address_policy_under_a_key_is_decided_again(database_url: str):
    """Guard: http://10.7.7.7/hook under key w while the operator allows no private network: 422
    naming url. With 10.0.0.0/8 allowed, the same call under w: 201 (made then)."""
    key = {"Idempotency-Key": f"wh-{uuid.uuid4().hex[:10]}"}
    body = {"url": "http://10.7.7.7/hook", "topics": ["*"]}
    async with api_client(database_url, admin=ADMIN, send_admin=True) as guarded:
        refused = await guarded.post("/v1/webhook-endpoints", json=body, headers=key)
        assert _status(refused) == (422, "validation_error", ["url"], None), refused.text
    networks = AddressPolicy(parse_networks("10.0.0.0/8"))
    async with api_client(database_url, admin=ADMIN, send_admin=True, webhook_addresses=networks) as allowed:
        made = await allowed.post("/v1/webhook-endpoints", json=body, headers=key)
        assert made.status_code == 201, made.text
        assert (await allowed.delete(f"/v1/webhook-endpoints/{made.json()['id']}")).status_code == 200


async def test_a_budget_refused_by_its_rules_under_a_key_leaves_the_key_to_the_corrected_budget(database_url: str):
    """Guard: a budget on model "gpt-4?" under key b: 422 naming model (a budget's only wildcard is
    *); the same budget on "gpt-4*" under b: 201, the customer's one budget."""
    tag = uuid.uuid4().hex[:8]
    async with api_client(database_url, admin=ADMIN, send_admin=True) as client:
        cid = await _book_and_customer(client, f"rk-b-{tag}")
        key = {"Idempotency-Key": f"b-{tag}"}
        body = {"customer_id": cid, "window": "day", "metric": "tokens", "limit": 1000, "model": "gpt-4?"}
        refused = await client.post("/v1/budgets", json=body, headers=key)
        assert _status(refused) == (422, "validation_error", ["model"], None), refused.text
        made = await client.post("/v1/budgets", json={**body, "model": "gpt-4*"}, headers=key)
        assert made.status_code == 201, made.text
        listed = (await client.get(f"/v1/budgets?customer_id={cid}")).json()["budgets"]
        assert [x["id"] for x in listed] == [made.json()["id"]]


async def test_a_budget_exceeded_under_a_key_replays_as_first_answered_after_the_budget_is_gone(
    database_url: str,
):
    """Guard: a hard day budget of $0.50; a $1.00 hold (request r1) under key h: 429 budget_exceeded.
    With the budget deleted, the same reserve under h answers the same 429 (Idempotent-Replayed: true),
    nothing held; another request id under h is 409 idempotency_conflict; r2 without a key holds."""
    tag = uuid.uuid4().hex[:8]
    async with api_client(database_url, admin=ADMIN, send_admin=True) as client:
        cid = await _book_and_customer(client, f"rk-h-{tag}")
        assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
        budget = await client.post(
            "/v1/budgets",
            json={"customer_id": cid, "window": "day", "metric": "money", "limit": "0.50", "mode": "hard"},
        )
        assert budget.status_code == 201, budget.text
        key = {"Idempotency-Key": f"h-{tag}"}
        hold = {"customer_id": cid, "request_id": "r1", "model": "model-a", "amount": "1.00"}
        refused = await client.post("/v1/reservations", json=hold, headers=key)
        assert _status(refused) == (429, "budget_exceeded", [], None), refused.text
        assert (await client.delete(f"/v1/budgets/{budget.json()['id']}")).status_code == 200
        again = await client.post("/v1/reservations", json=hold, headers=key)
        assert (again.status_code, again.json(), again.headers.get("idempotent-replayed")) == (
            429,
            refused.json(),
            "true",
        )
        other = await client.post("/v1/reservations", json={**hold, "request_id": "r2"}, headers=key)
        assert _status(other)[:2] == (409, "idempotency_conflict"), other.text
        held = await client.post("/v1/reservations", json={**hold, "request_id": "r2"})
        assert held.status_code == 201, held.text
        wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
        assert (wallet["available"], wallet["reserved"]) == ("9.00", "1.00")  # r2's hold alone


async def test_an_inverted_re_rate_range_under_a_key_leaves_the_key_to_the_corrected_re_rate(database_url: str):
    """Guard (no re-rate refusal was kept): a re-rate applied from 2026-12-01 to 2026-11-01 under
    key r: 422 invalid_range (`to` must be after `from`: decided from the body alone, a refusal of
    the request as sent); again under r: the same 422, decided again, not a replay; the corrected
    range, 2026-11-01 to 2026-12-01, under r: 200, carried out (its book has no charges: no
    customer corrected), and once more under r: the same answer, one re-rate."""
    tag = uuid.uuid4().hex[:8]
    async with api_client(database_url, admin=ADMIN, send_admin=True) as client:
        book = await _book_and_customer(client, f"rk-r-{tag}")
        [version] = [v["version"] for v in (await client.get(f"/v1/price-books/{book}")).json()["versions"]]
        key = {"Idempotency-Key": f"r-{tag}"}
        body = {"price_book": book, "version": version, "mode": "apply"}
        inverted = {**body, "from": "2026-12-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}
        for _ in range(2):
            refused = await client.post("/v1/rerate", json=inverted, headers=key)
            assert _status(refused) == (422, "invalid_range", [], None), refused.text
        corrected = {**body, "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
        made = await client.post("/v1/rerate", json=corrected, headers=key)
        assert (made.status_code, made.json()["customers"], made.json()["errors"]) == (200, [], []), made.text
        again = await client.post("/v1/rerate", json=corrected, headers=key)
        assert (again.status_code, again.json()) == (200, made.json())


async def test_a_missing_customer_s_404_under_a_key_leaves_the_key_to_the_call_once_the_customer_exists(
    database_url: str,
):
    """A 404 is never kept, wherever it is decided (README, Idempotency): nothing was done, and a
    client that creates what was missing and sends the call again under its key needs it carried out.
    In the unit of work (the lane's batch), a top-up of $10.00 to customer c under key t, and (run_once)
    a PATCH of c's name under key p: 404 not_found naming c (a top-up's 404 was kept: replayed 404,
    Idempotent-Replayed: true, after c existed). Decided by the route before it, a day budget of c
    under key b: 404. Once c is created: the top-up under t 201 (10.00 available), the PATCH under p
    200 (its name), the budget under b 201; each again under its key replays it."""
    tag = uuid.uuid4().hex[:8]
    cid = f"rk-nf-{tag}"
    top_up, rename = {"amount": "10.00"}, {"name": "renamed"}
    budget = {"customer_id": cid, "window": "day", "metric": "tokens", "limit": 1000}
    calls = [
        ("POST", f"/v1/customers/{cid}/topups", top_up, {"Idempotency-Key": f"t-{tag}"}, 201),
        ("PATCH", f"/v1/customers/{cid}", rename, {"Idempotency-Key": f"p-{tag}"}, 200),
        ("POST", "/v1/budgets", budget, {"Idempotency-Key": f"b-{tag}"}, 201),
    ]
    async with api_client(database_url, admin=ADMIN, send_admin=True) as client:
        for method, path, body, key, _ in calls:
            missing = await client.request(method, path, json=body, headers=key)
            assert _status(missing) == (404, "not_found", [], None), (path, missing.text)
            assert cid in missing.json()["detail"]
        await _book_and_customer(client, cid)
        for method, path, body, key, status in calls:
            made = await client.request(method, path, json=body, headers=key)
            assert (made.status_code, made.headers.get("idempotent-replayed")) == (status, None), (path, made.text)
            again = await client.request(method, path, json=body, headers=key)
            assert (again.status_code, again.json(), again.headers.get("idempotent-replayed")) == (
                status,
                made.json(),
                "true",
            ), path
        wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
        assert wallet["available"] == "10.00"  # the one top-up
        assert (await client.get(f"/v1/customers/{cid}")).json()["name"] == "renamed"

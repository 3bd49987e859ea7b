"""API keys (created, scoped, revoked at once) and problem+json for every kind of error."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from tests.api.apps import api_client

ADMIN = {"Authorization": "Bearer test-admin"}


@pytest.fixture
async def client(db, database_url):
    async with api_client(database_url) as client:
        yield client


async def _key(client, scope, customers=()):
    response = await client.post("/v1/api-keys", headers=ADMIN,
                                 json={"scope": scope, "customers": list(customers), "name": "t"})
    assert response.status_code == 201, response.text
    return response.json()


def bearer(key):
    return {"Authorization": f"Bearer {key['key']}"}


async def test_a_created_key_is_shown_once_and_listed_without_its_secret(client):
    created = await _key(client, "auditor")
    assert created["key"].startswith("tt_") and created["scope"] == "auditor"
    listed = (await client.get("/v1/api-keys", headers=ADMIN)).json()
    mine = [k for k in listed if k["id"] == created["id"]]
    assert mine and "key" not in mine[0]
    assert created["key"] not in (await client.get("/v1/api-keys", headers=ADMIN)).text


async def test_an_auditor_reads_the_trial_balance_and_a_customer_key_may_not(client):
    auditor, customer = await _key(client, "auditor"), await _key(client, "customer:acme")
    assert (await client.get("/v1/audit/trial-balance", headers=bearer(auditor))).status_code == 200
    refused = await client.get("/v1/audit/trial-balance", headers=bearer(customer))
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert (await client.get("/v1/api-keys", headers=bearer(auditor))).status_code == 403


async def test_a_revoked_key_is_refused_at_once(client):
    key = await _key(client, "auditor")
    assert (await client.post("/v1/audit/verify", headers=bearer(key))).status_code == 200
    revoked = await client.delete(f"/v1/api-keys/{key['id']}", headers=ADMIN)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    after = await client.post("/v1/audit/verify", headers=bearer(key))
    assert after.status_code == 401 and after.json()["code"] == "unauthorized"


async def test_key_requests_are_validated_field_by_field(client):
    bad = await client.post("/v1/api-keys", headers=ADMIN, json={"scope": "root"})
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    assert [f["field"] for f in bad.json()["fields"]] == ["scope"]
    # a customer id no customer can have (customers.id's CHECK) limited the key to nothing, silently
    nobody = await client.post("/v1/api-keys", headers=ADMIN, json={
        "scope": "inference", "customers": ["acme", "bad id!", "x" * 101, ""]})
    assert nobody.status_code == 422 and nobody.json()["code"] == "validation_error", nobody.text
    assert [f["field"] for f in nobody.json()["fields"]] == ["customers[1]", "customers[2]", "customers[3]"]
    colon = await client.post("/v1/api-keys", headers=ADMIN, json={"scope": "customer:a:b"})  # no customer's id
    assert colon.status_code == 422 and [f["field"] for f in colon.json()["fields"]] == ["scope"], colon.text
    fine = await client.post("/v1/api-keys", headers=ADMIN, json={"scope": "inference", "customers": ["acme.eu-1_a"]})
    assert fine.status_code == 201 and fine.json()["customers"] == ["acme.eu-1_a"], fine.text
    unknown = await client.delete("/v1/api-keys/key_nope", headers=ADMIN)
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"


async def test_the_document_states_the_customer_id_rule_of_a_keys_customers(client):
    # The route refuses an entry that is no customer id (above), but the OpenAPI document gave the
    # items no rule, so a schema-valid request ('' say) was refused: schemathesis's
    # positive_data_acceptance reported it. The items now carry the rule the route enforces.
    document = (await client.get("/schema/openapi.json")).json()
    schema = document["paths"]["/v1/api-keys"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    items = schema["properties"]["customers"]["items"]
    assert items["type"] == "string" and (items["minLength"], items["maxLength"]) == (1, 100)
    for refused in ("", "bad id!", "-acme", "x" * 101):
        assert not (1 <= len(refused) <= 100 and re.search(items["pattern"], refused)), refused
    for taken in ("acme", "acme.eu-1_a", "9", "x" * 100):
        assert re.search(items["pattern"], taken), taken
        created = await client.post("/v1/api-keys", headers=ADMIN, json={"scope": "inference", "customers": [taken]})
        assert created.status_code == 201, created.text


async def test_a_misspelt_customers_field_is_refused_not_dropped_into_an_unlimited_key(client):
    # before: 201, "customer" dropped: an inference key for every customer, the one thing it was not to be
    before = len((await client.get("/v1/api-keys", headers=ADMIN)).json())
    typo = await client.post("/v1/api-keys", headers=ADMIN, json={"scope": "inference", "customer": ["acme"]})
    assert typo.status_code == 422 and typo.json()["code"] == "validation_error", typo.text
    assert [f["field"] for f in typo.json()["fields"]] == ["customer"]
    assert len((await client.get("/v1/api-keys", headers=ADMIN)).json()) == before  # nothing written


async def test_a_customer_key_limited_away_from_its_own_customer_is_refused(client):
    # before: 201, a key that every route refused (403 on its own wallet)
    away = await client.post("/v1/api-keys", headers=ADMIN, json={"scope": "customer:acme", "customers": ["beta"]})
    assert away.status_code == 422 and [f["field"] for f in away.json()["fields"]] == ["customers"], away.text
    own = await client.post("/v1/api-keys", headers=ADMIN, json={"scope": "customer:acme", "customers": ["acme"]})
    assert own.status_code == 201, own.text


@pytest.mark.parametrize("body, content_type", [
    (b"{not json", "application/json"),
    (b'{"scope": 5}', "application/json"),
])
async def test_malformed_bodies_are_validation_problems(client, body, content_type):
    response = await client.post("/v1/api-keys", headers={**ADMIN, "Content-Type": content_type}, content=body)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_error"


async def test_framework_errors_are_problem_documents(client):
    too_big = await client.post("/v1/api-keys", headers={**ADMIN, "Content-Type": "application/json"},
                                content=b'{"name": "' + b"x" * 2_000_000 + b'"}')
    assert too_big.status_code == 413 and too_big.json()["code"] == "payload_too_large"
    wrong_method = await client.put("/v1/api-keys", headers=ADMIN)
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "method_not_allowed"
    assert set(wrong_method.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    for response in (too_big, wrong_method):
        assert response.headers["content-type"].startswith("application/problem+json")
        assert {"type", "title", "status", "code", "detail"} <= response.json().keys()


async def test_a_key_creation_replayed_by_its_idempotency_key_answers_the_first_key_and_makes_no_other(
        client, db, tag):
    """API.md: a mutating call replayed with its Idempotency-Key returns the first response; the
    same key with another body is idempotency_conflict. Before: ignored here, each call made a
    key (three calls, three live keys, one of them admin where an auditor was asked for first)."""
    name = f"idem-{tag}"
    sent = {**ADMIN, "Idempotency-Key": f"make-{tag}"}
    first = await client.post("/v1/api-keys", headers=sent, json={"scope": "auditor", "name": name})
    again = await client.post("/v1/api-keys", headers=sent, json={"scope": "auditor", "name": name})
    other = await client.post("/v1/api-keys", headers=sent, json={"scope": "admin", "name": name})
    assert first.status_code == 201 and again.status_code == 201, again.text
    assert again.content == first.content and again.headers.get("idempotent-replayed") == "true"
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict", other.text
    listed = [k for k in (await client.get("/v1/api-keys", headers=ADMIN)).json() if k["name"] == name]
    assert [k["id"] for k in listed] == [first.json()["id"]]
    secret = first.json()["key"]
    assert (await client.post("/v1/audit/verify", headers={"Authorization": f"Bearer {secret}"})).status_code == 200
    # the answer is kept for the replay, but not the secret as sent: only its caller can read it back
    async with db.engine.connect() as conn:
        kept = (await conn.execute(text(
            "SELECT count(*) FROM idempotency_records WHERE key = :k AND response::text LIKE :s"),
            {"k": f"make-{tag}", "s": f"%{secret[3:]}%"})).scalar()
    assert kept == 0
    another_admin = await _key(client, "admin")
    stolen = await client.post("/v1/api-keys", headers={**bearer(another_admin), "Idempotency-Key": f"make-{tag}"},
                               json={"scope": "auditor", "name": name})
    # Idempotency-Keys belong to the customers a key acts for (both admins: every customer), so the
    # call is not made again; its secret is sealed to the first caller, so it is refused, not shown
    assert stolen.status_code == 409 and stolen.json()["code"] == "idempotency_conflict", stolen.text
    assert secret[3:] not in stolen.text


async def test_a_customer_listed_twice_is_kept_once_in_first_seen_order(client):
    """`customers: ["acme", "beta", "acme"]` was stored and answered as given, the key listed
    with acme twice; a key's customers are a set: now each once, in the order first given, as
    `keys create --customer` keeps them."""
    made = await client.post("/v1/api-keys", headers=ADMIN, json={
        "scope": "inference", "customers": ["acme", "beta", "acme", "beta"], "name": "twice"})
    assert made.status_code == 201 and made.json()["customers"] == ["acme", "beta"], made.text
    listed = [k for k in (await client.get("/v1/api-keys", headers=ADMIN)).json() if k["id"] == made.json()["id"]]
    assert listed[0]["customers"] == ["acme", "beta"]


async def test_a_key_for_more_than_1000_customers_is_refused_naming_customers(client):
    """The CLI now refuses 1,001 as this does (test_cli_errors): the same bound, keys.CUSTOMERS_MOST."""
    many = await client.post("/v1/api-keys", headers=ADMIN, json={
        "scope": "inference", "customers": [f"c{i}" for i in range(1001)]})
    assert many.status_code == 422 and many.json()["code"] == "validation_error", many.text
    assert [f["field"] for f in many.json()["fields"]] == ["customers"], many.text

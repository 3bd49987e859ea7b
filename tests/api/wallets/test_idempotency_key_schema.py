"""The OpenAPI document names the Idempotency-Key header on every operation that honours it (README,
Idempotency: every mutating call, but for three that keep no answer), and on no other."""
from __future__ import annotations

from litestar.testing import AsyncTestClient

# README, Idempotency: "Three mutating calls are the exceptions, keeping no answer by the key".
KEEP_NO_ANSWER = {("post", "/v1/billing/close"), ("post", "/v1/price-books/import"),
                  ("delete", "/v1/api-keys/{key_id}")}
# Reads that are POSTs: verify changes nothing.
READS = {("post", "/v1/audit/verify")}
MUTATING = {"post", "put", "patch", "delete"}


async def test_every_operation_that_honours_an_idempotency_key_documents_the_header(client: AsyncTestClient):
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    operations = {(method, path): operation for path, item in paths.items() if path.startswith("/v1/")
                  for method, operation in item.items() if method in MUTATING | {"get"}}
    honouring = {op for op in operations if op[0] in MUTATING} - KEEP_NO_ANSWER - READS
    assert {("post", "/v1/reservations"), ("post", "/v1/rerate"), ("patch", "/v1/budgets/{budget_id}"),
            ("put", "/v1/customers/{customer_id}/price-overrides")} <= honouring
    documented = {}
    for op, operation in operations.items():
        named = [p for p in operation.get("parameters", []) if p["name"].lower() == "idempotency-key"]
        if named:
            documented[op] = named
    assert set(documented) == honouring, (sorted(honouring - set(documented)), sorted(set(documented) - honouring))
    for op, named in documented.items():
        assert len(named) == 1, op
        parameter = named[0]
        assert (parameter["in"], parameter.get("required", False)) == ("header", False), op
        assert (parameter["schema"]["type"], parameter["schema"]["minLength"], parameter["schema"]["maxLength"]) \
            == ("string", 1, 255), op
        assert parameter["description"], op
        assert "409" in operations[op]["responses"], op  # the key reused with another request


async def test_the_documented_bounds_are_the_ones_enforced(client: AsyncTestClient, tag: str, book: str):
    cid = f"sch-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    too_long = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"},
                                 headers={"Idempotency-Key": "k" * 256})
    assert too_long.status_code == 422 and too_long.json()["code"] == "validation_error"
    longest = await client.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"},
                                headers={"Idempotency-Key": "k" * 255})
    assert longest.status_code == 201

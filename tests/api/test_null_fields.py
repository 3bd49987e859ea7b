"""A PATCH field sent as null is refused, naming it, where null means nothing: ignored, a
`{"enabled": null}` answered 200 and changed nothing, while `PATCH /v1/customers/{id}` refuses a
null `price_book` with 422."""
from __future__ import annotations

import pytest

# The endpoints made here (`*`, at example.com) are deleted after each test (tests/conftest.py), a
# failed one's too: each test deleted its own as its last line, so one failing before it left a `*`
# endpoint enabled, handed every later file's events for a host nothing here reaches.
pytestmark = pytest.mark.usefixtures("no_endpoint_left")

@pytest.mark.parametrize("field", ["url", "topics", "description", "max_in_flight", "enabled"])
async def test_a_webhook_endpoint_patch_refuses_a_null_field(client, field):
    created = await client.post("/v1/webhook-endpoints", json={"url": "https://example.com/hook", "topics": ["*"]})
    assert created.status_code == 201, created.text
    endpoint = {k: v for k, v in created.json().items() if k != "secret"}  # shown once, at creation
    response = await client.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={field: None})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert [f["field"] for f in response.json()["fields"]] == [field]
    after = await client.get(f"/v1/webhook-endpoints/{endpoint['id']}")
    assert after.json() == endpoint  # nothing changed


async def test_a_customer_patch_refuses_a_null_price_book_as_a_webhook_patch_does(client):
    assert (await client.post("/v1/customers", json={"id": "c-null-fields"})).status_code in (200, 201)
    response = await client.patch("/v1/customers/c-null-fields", json={"price_book": None})
    assert response.status_code == 422 and response.json()["fields"][0]["field"] == "price_book"


async def test_a_webhook_endpoint_patch_still_changes_what_it_is_given(client):
    created = await client.post("/v1/webhook-endpoints", json={"url": "https://example.com/hook", "topics": ["*"]})
    endpoint = created.json()
    changed = await client.patch(f"/v1/webhook-endpoints/{endpoint['id']}",
                                 json={"enabled": False, "max_in_flight": 2, "description": "d"})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["status"], changed.json()["max_in_flight"], changed.json()["description"]) == \
        ("disabled", 2, "d")
    assert changed.json()["url"] == endpoint["url"] and changed.json()["topics"] == endpoint["topics"]

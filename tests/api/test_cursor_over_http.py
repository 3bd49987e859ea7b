"""The longest cursor the document allows reaches the app through the real HTTP server and is
answered as problem+json (found by schemathesis: the document allowed 200,000 characters, and
the server's HTTP layer refused anything over about 65,500 with a text/plain 400)."""
from __future__ import annotations

import httpx

from tests.api.test_sdk_durability import ADMIN


def test_a_cursor_of_the_documented_maximum_length_is_a_problem_not_a_transport_error(live):
    url, _ = live
    document = httpx.get(f"{url}/schema/openapi.json").json()
    [cursor] = [p for p in document["paths"]["/v1/journal"]["get"]["parameters"] if p["name"] == "cursor"]
    longest = cursor["schema"]["maxLength"]
    headers = {"Authorization": f"Bearer {ADMIN}"}
    for length, status, code in ((longest, 400, "invalid_cursor"), (longest + 1, 422, "validation_error")):
        response = httpx.get(f"{url}/v1/journal", params={"cursor": "a" * length}, headers=headers, timeout=30)
        assert response.headers["content-type"].startswith("application/problem+json"), (length, response.text)
        assert (response.status_code, response.json()["code"]) == (status, code), length

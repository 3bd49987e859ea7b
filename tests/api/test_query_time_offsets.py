"""A time in a query string with a `+` offset sent unencoded arrives with a space where the `+`
was (form decoding): the 422 says so, naming the field, instead of only asking for an offset the
caller did give."""
from __future__ import annotations

import pytest

from tests.api.apps import api_client

ADMIN = {"Authorization": "Bearer qt-admin"}


@pytest.fixture
async def client(database_url):
    async with api_client(database_url, admin="qt-admin") as c:
        yield c


@pytest.mark.parametrize("path", ["/v1/customers/qt-nobody/usage", "/v1/journal"])
async def test_an_unencoded_plus_offset_in_a_query_is_a_422_that_says_to_encode_it(client, path) -> None:
    answer = await client.get(f"{path}?from=2026-11-10T01:00:00+01:00", headers=ADMIN)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["code"] == "validation_error" and problem["fields"][0]["field"] == "from", problem
    assert "%2B" in problem["fields"][0]["message"], problem


async def test_the_same_offset_encoded_is_taken(client) -> None:
    answer = await client.get("/v1/journal?from=2026-11-10T01:00:00%2B01:00", headers=ADMIN)
    assert answer.status_code == 200, answer.text

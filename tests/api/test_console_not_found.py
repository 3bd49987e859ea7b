"""A console address that matches no page is answered as a page (the browser's user reads it),
the API's as problem+json."""
from __future__ import annotations

import pytest

from tests.api.apps import api_client


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/console/customer/acme", 404),  # a typo: it was a problem+json document in the browser
    ("GET", "/console/audit/journals", 404),
    ("GET", "/console/sign-out", 405),  # a bookmarked sign-out
])
async def test_a_console_address_without_a_page_is_an_error_page(database_url, method, path, status):
    async with api_client(database_url, admin="nf-admin", console=True) as client:
        answer = await client.request(method, path, follow_redirects=False)
        assert answer.status_code == status
        assert answer.headers["content-type"].startswith("text/html"), answer.headers["content-type"]
        assert f"<h1>{status} · " in answer.text and "Sign in" in answer.text
        assert answer.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", ["/v1/nothing-here", "/console/static/nothing.js", "/consoles"])
async def test_other_addresses_stay_problem_json(database_url, path):
    async with api_client(database_url, admin="nf-admin", console=True) as client:
        answer = await client.get(path)
        assert answer.status_code == 404 and answer.headers["content-type"] == "application/problem+json"

"""An app on the session database, and helpers that speak the HTTP contract."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from litestar.testing import AsyncTestClient

from tests.api.apps import api_client

ADMIN = {"Authorization": "Bearer test-admin"}

BOOK = {"id": "standard", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"},
    {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
    {"id": "call", "token_type": "request", "price": "0.01"},
]}


@pytest.fixture(scope="session")
async def client(database_url: str) -> AsyncIterator[AsyncTestClient]:
    # No webhook dispatcher: one living through the whole session would claim the deliveries of
    # the webhook tests' loopback receivers, which its default address policy refuses.
    async with api_client(database_url, send_admin=True, webhooks=False) as c:
        yield c


@pytest.fixture
async def book(client: AsyncTestClient, tag: str) -> str:
    """A price book of the test's own: model-a at $10 in / $20 out per 1M tokens, $0.01 a call."""
    response = await client.post("/v1/price-books", json={**BOOK, "id": f"book-{tag}"})
    assert response.status_code == 201, response.text
    return f"book-{tag}"

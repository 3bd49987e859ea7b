"""What a fuzzing session found by hand past schemathesis (round 12): each is a bad input that
answered something other than a clear problem+json naming what to fix, and that now does."""
from __future__ import annotations

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.settings import Settings
from tests.api.test_sdk_durability import ADMIN as LIVE_ADMIN

ADMIN = {"Authorization": "Bearer test-admin"}


@pytest.fixture
async def app(db, database_url) -> Litestar:
    return create_app(Settings(admin_key="test-admin", scheduler=False), database_url)


@pytest.fixture
async def client(app: Litestar):
    async with AsyncTestClient(app=app) as c:
        c.headers.update(ADMIN)
        yield c


async def _customer(client: AsyncTestClient, tag: str, billing: str = "prepaid") -> str:
    """A customer on a book of $10/M input and $20/M output tokens for model-a, with $100.00."""
    book = {"id": f"book-{tag}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
            "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "10.00"},
                      {"id": "out", "model": "model-a", "token_type": "output", "price": "20.00"}]}
    assert (await client.post("/v1/price-books", json=book)).status_code == 201
    cid = f"fz-{billing}-{tag}"
    created = await client.post("/v1/customers", json={"id": cid, "price_book": f"book-{tag}", "billing": billing})
    assert created.status_code == 201, created.text
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "100.00"})).status_code == 201
    return cid


async def _available(client: AsyncTestClient, cid: str) -> str:
    return (await client.get(f"/v1/customers/{cid}/wallet")).json()["available"]


def _live_customer(http: httpx.Client, book: str, tag: str) -> str:
    cid = f"fz-live-{tag}"
    assert http.post("/v1/customers", json={"id": cid, "price_book": book}).status_code == 201
    assert http.post(f"/v1/customers/{cid}/topups", json={"amount": "100.00"}).status_code == 201
    return cid


# Litestar's test transport folds repeated header lines into one ("a, b"), as a proxy may; two
# separate lines reach the app only through a real server.
def test_two_idempotency_keys_on_one_request_are_refused_naming_the_header(live, tag):
    """Two `Idempotency-Key` lines mean two keys: the first was kept silently, so a proxy or log
    that reads the last one keys the call differently from the server. Refused, nothing posted."""
    url, book = live
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {LIVE_ADMIN}"}) as http:
        cid = _live_customer(http, book, tag)
        headers = [("Idempotency-Key", f"first-{tag}"), ("Idempotency-Key", f"second-{tag}")]
        answer = http.post(f"/v1/customers/{cid}/topups", json={"amount": "1.00"}, headers=headers)
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["code"] == "validation_error"
        assert [f["field"] for f in answer.json()["fields"]] == ["Idempotency-Key"]
        assert http.get(f"/v1/customers/{cid}/wallet").json()["available"] == "100.00"
        # neither key was taken: each is free for a call of its own
        for key in (f"first-{tag}", f"second-{tag}"):
            single = http.post(f"/v1/customers/{cid}/topups", json={"amount": "2.00"},
                               headers={"Idempotency-Key": key})
            assert single.status_code == 201, single.text
        assert http.get(f"/v1/customers/{cid}/wallet").json()["available"] == "104.00"


def test_two_idempotency_keys_are_refused_on_a_rerate_too(live, tag):
    """`POST /v1/rerate` reads its key by itself; the same rule holds there."""
    url, book = live
    rerate = {"price_book": book, "version": "2026-01-01T00:00:00Z", "from": "2026-01-01T00:00:00Z",
              "to": "2026-02-01T00:00:00Z", "mode": "apply"}
    headers = [("Authorization", f"Bearer {LIVE_ADMIN}"), ("Idempotency-Key", f"a-{tag}"),
               ("Idempotency-Key", f"b-{tag}")]
    answer = httpx.post(f"{url}/v1/rerate", json=rerate, headers=headers)
    assert answer.status_code == 422, answer.text
    assert [f["field"] for f in answer.json()["fields"]] == ["Idempotency-Key"]


"""The SDK's journal reads against a live server: every page followed, sync and async."""
from __future__ import annotations

import uuid

from api.client import AsyncClient, Client
from tests.api.test_sdk_durability import ADMIN


def _customer(tt: Client, book: str) -> str:
    customer = f"sdkj-{uuid.uuid4().hex[:10]}"
    tt.post("/v1/customers", {"id": customer, "currency": "USD", "price_book": book})
    tt.post(f"/v1/customers/{customer}/topups", {"amount": "10.00"})
    with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
        r.record(input_tokens=1000, output_tokens=400)
    return customer


def test_the_journal_and_a_statement_are_read_to_their_last_page(live):
    url, book = live
    with Client(url, ADMIN) as tt:
        customer = _customer(tt, book)
        entries = list(tt.journal(customer=customer, limit=1))
        assert [e["kind"] for e in entries] == ["topup", "reserve", "settle"]
        assert [e["kind"] for e in tt.journal(customer=customer, kind="settle")] == ["settle"]
        reserved = f"liability:customer:{customer}:reserved"
        pages = list(tt.statement_pages(reserved, limit=1))
        assert len(pages) == 3  # a hold and its settle, then an empty last page
        assert [p["amount"] for page in pages for p in page["postings"]] == ["-0.03", "0.03"]
        assert {(page["opening_balance"], page["closing_balance"]) for page in pages} == {("0.00", "0.00")}


async def test_the_async_client_reads_the_same_journal(live):
    url, book = live
    with Client(url, ADMIN) as tt:
        customer = _customer(tt, book)
    async with AsyncClient(url, ADMIN) as tt:
        kinds = [e["kind"] async for e in tt.journal(customer=customer, limit=2)]
        assert kinds == ["topup", "reserve", "settle"]
        pages = [page async for page in tt.statement_pages(f"liability:customer:{customer}:reserved", limit=5)]
        assert [p["balance"] for p in pages[0]["postings"]] == ["-0.03", "0.00"]

"""The console's customer list: every customer a key sees is reachable, a page at a time."""
from __future__ import annotations

import html
import re
import uuid

from api.console import session
from api.demo import PRICE_BOOK
from tests.api.apps import api_client, sign_in

ADMIN_KEY = "console-customers-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
LISTED = re.compile(r'<tr data-customer="([^"]+)">')
NEXT = re.compile(r'<a href="([^"]+)" rel="next">')


async def test_every_customer_is_reachable_a_page_at_a_time(database_url):
    """105 customers that share a prefix: the list showed the first 100 ("narrow the search") and
    no way to the other 5 short of knowing their ids."""
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        book = f"cbook-{uuid.uuid4().hex[:8]}"
        assert (await client.post("/v1/price-books", headers=ADMIN, json={**PRICE_BOOK, "id": book})).status_code == 201
        prefix = f"many-{uuid.uuid4().hex[:6]}-"
        ids = [f"{prefix}{n:03d}" for n in range(session.CUSTOMERS_PAGE + 5)]
        for customer in ids:
            created = await client.post("/v1/customers", headers=ADMIN, json={"id": customer, "price_book": book})
            assert created.status_code == 201
        await sign_in(client, ADMIN_KEY)
        seen: list[str] = []
        url: str | None = f"/console/?customer={prefix}"
        while url is not None and len(seen) <= len(ids):
            page = await client.get(url)
            assert page.status_code == 200, page.text
            seen += LISTED.findall(page.text)
            found = NEXT.search(page.text)
            url = None if found is None else html.unescape(found.group(1))
        assert seen == ids
        bad = await client.get("/console/", params={"customer": prefix, "cursor": "bm90LW91cnM"})
        assert bad.status_code == 400 and "invalid_cursor" in bad.text

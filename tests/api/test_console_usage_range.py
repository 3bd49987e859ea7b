"""The usage page's range of days: a range the API cannot express is refused as the API
refuses it (422, a page naming the field), never a 500."""
from __future__ import annotations

import re
import uuid

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.settings import Settings

ADMIN_KEY = "console-usage-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.mark.parametrize("query", ["from=9999-12-01&to=9999-12-31", "from=0999-12-01&to=0999-12-31",
                                   "from=2026-03-10&to=2026-03-01", "from=2026-02-30"])
async def test_a_range_out_of_bounds_is_a_422_page(database_url, query):
    """The last day of year 9999 has no next day to end the range at: it was a 500."""
    app = create_app(Settings(admin_key=ADMIN_KEY, scheduler=False), database_url)
    customer = f"range-{uuid.uuid4().hex[:8]}"
    async with AsyncTestClient(app=app, base_url="https://console.test") as client:
        assert (await client.post("/v1/customers", headers=ADMIN, json={"id": customer})).status_code == 201
        token = re.search(r'name="_csrf_token" value="([^"]+)"', (await client.get("/console/sign-in")).text).group(1)
        await client.post("/console/sign-in", data={"key": ADMIN_KEY, "_csrf_token": token})
        page = await client.get(f"/console/customers/{customer}/usage?{query}")
        assert page.status_code == 422 and "text/html" in page.headers["content-type"], page.status_code
        assert 'role="alert"' in page.text

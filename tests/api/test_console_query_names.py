"""A console page refusing a query parameter names it as the address spells it (`from`, `customer`),
never as the handler's Python argument (`start`, `prefix`)."""

from __future__ import annotations

import pytest

from tests.api.apps import api_client, sign_in

ADMIN_KEY = "console-query-names-admin"


@pytest.mark.parametrize(
    ("address", "named", "not_named"),
    [
        # 129 characters where the id prefix takes 128: the page said "prefix : Expected `str` of length <= 128"
        ("/console/?customer=" + "a" * 129, "customer", "prefix"),
        # 11 characters where a day takes 10: "start : …", "end : …"
        ("/console/customers/acme/usage?from=2026-12-011", "from", "start"),
        ("/console/customers/acme/usage?to=2026-12-011", "to", "end"),
        ("/console/audit/journal?from=2026-12-011", "from", "start"),
        ("/console/audit/export/download?format=" + "x" * 17, "format", "fmt"),
        ("/console/sign-in?next=/console/" + "a" * 2000, "next", "next_page"),
    ],
)
async def test_a_refused_query_parameter_is_named_as_the_address_spells_it(database_url, address, named, not_named):
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        await sign_in(client, ADMIN_KEY)
        page = await client.get(address)
        assert page.status_code == 422, page.text
        assert f"<strong>{named}</strong>: Expected" in page.text, page.text
        assert f"<strong>{not_named}</strong>" not in page.text, page.text

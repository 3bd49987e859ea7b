"""The operator's and the auditor's lists of what is wrong: every item shown, none cut off."""
from __future__ import annotations

import re

from api.console import auditor
from api.metrics import APP, REQUESTS
from api.routes.audit import CheckResponse, VerifyResponse
from tests.api.apps import api_client, sign_in

ADMIN_KEY = "console-operator-admin"


async def test_every_status_code_of_the_requests_counter_is_listed(database_url):
    """The breakdown by label stopped at the first 12 in alphabetical order: with 13 or more
    status codes counted, the last ones (the 5xx among them) were not shown at all."""
    codes = [str(code) for code in range(587, 600)]
    for n, code in enumerate(codes, 1):
        REQUESTS.labels("GET", "/operator-test", code, APP).inc(n)
    try:
        async with api_client(database_url, admin=ADMIN_KEY, signed_in=True) as client:
            page = await client.get("/console/operator")
    finally:  # the process's registry: leave no made-up series for the tests after
        for code in codes:
            REQUESTS.remove("GET", "/operator-test", code, APP)
        assert page.status_code == 200
        requests = page.text.split("<code>tokentill_requests_total</code>")[1].split("</tr>")[0]
        shown = dict(re.findall(r'<span class="mono">status_code=(\d+)</span>: ([\d,]+)', requests))
        assert {code: shown.get(code) for code in ("587", "599")} == {"587": "1", "599": "13"}, shown


async def test_verify_lists_every_problem_the_api_names(database_url, monkeypatch):
    """A failing check names up to 50 problems (its detail counts them all); the page listed the
    first 20 and dropped the rest without a word."""
    problems = [f"entry {n} does not balance" for n in range(50)]

    async def failing(services, principal):
        return VerifyResponse(False, [CheckResponse("entries_balanced", False, f"50 found; first: {problems[0]}",
                                                    problems)])

    monkeypatch.setattr(auditor, "verify_report", failing)
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        csrf = await sign_in(client, ADMIN_KEY)
        page = await client.post("/console/audit/verify", data={"_csrf_token": csrf})
        assert page.status_code == 200 and 'data-verify="failed"' in page.text
        assert re.findall(r'<li class="mono">([^<]*)</li>', page.text) == problems

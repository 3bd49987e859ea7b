"""A forged top-up from a sibling origin, in a real browser. The console's CSRF token was a
double-submit one, not tied to the sign-in: whoever opens the sign-in page gets a valid token and
its cookie. A page on another origin of the same site (here another port of 127.0.0.1: cookies
ignore ports, and SameSite counts it the same site) writes that cookie for /console and posts the
form with the token, while the admin is signed in in the same browser. Before the console
checked Sec-Fetch-Site, Chromium sent the post with the admin's session cookie and the written
token, and the console recorded the 500.00 top-up (303 "Top-up recorded")."""
from __future__ import annotations

import re
import uuid

import httpx
from playwright.sync_api import Page

from api.bench.common import free_port
from tests.e2e.conftest import Console
from tests.e2e.test_console import sign_in


def test_a_top_up_forged_from_a_sibling_origin_with_a_valid_token_is_refused(page: Page, console: Console):
    customer = f"forged-{uuid.uuid4().hex[:8]}"
    assert console.api.post("/v1/customers", json={"id": customer}).status_code == 201
    sign_in(page, console.keys["admin"])  # the victim, signed in
    with httpx.Client(base_url=console.url) as attacker:  # the attacker's own valid token
        token = re.search(r'name="_csrf_token" value="([^"]+)"', attacker.get("/console/sign-in").text).group(1)
    sibling = f"http://127.0.0.1:{free_port()}"
    page.route(f"{sibling}/**", lambda route: route.fulfill(content_type="text/html", body=f"""<!doctype html>
        <form method="post" action="{console.url}/console/customers/{customer}/top-up">
          <input name="_csrf_token" value="{token}"><input name="idempotency_key" value="forged-{uuid.uuid4().hex}">
          <input name="amount" value="500.00"><input name="priority" value="100"></form>
        <script>document.cookie = "tokentill_csrf={token}; path=/";
                document.forms[0].submit();</script>"""))
    with page.expect_response(re.compile(r"/top-up$")) as posted:
        page.goto(f"{sibling}/prize")
    answer = posted.value
    assert answer.status == 403, (answer.status, answer.headers)
    assert console.api.get(f"/v1/customers/{customer}/wallet").json()["grants"] == []

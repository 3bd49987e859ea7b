"""The console at its edges, in a browser: names too long for their column."""
from __future__ import annotations

import uuid

from playwright.sync_api import Page, expect

from tests.e2e.conftest import Console
from tests.e2e.test_console import sign_in


def _overflow(page: Page) -> int:
    """How far the page reaches past the window's right edge, in CSS pixels (0: nothing does)."""
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def test_a_long_unbroken_name_and_reference_stay_inside_the_page(page: Page, console: Console):
    customer = f"long-{uuid.uuid4().hex[:8]}"
    name = "Ω" + "W" * 199
    assert console.api.post("/v1/customers", json={"id": customer, "name": name}).status_code == 201
    topped = console.api.post(f"/v1/customers/{customer}/topups",
                              json={"amount": "1.00", "reference": "wire-" + "7" * 495})
    assert topped.status_code == 201, topped.text
    sign_in(page, console.keys["admin"])
    for path in (f"/console/customers/{customer}", f"/console/customers/{customer}/reservations",
                 f"/console/customers/{customer}/top-up"):
        page.goto(path)
        expect(page.get_by_role("heading", level=1)).to_have_text(name)  # escaped text, whole
        assert _overflow(page) == 0, path


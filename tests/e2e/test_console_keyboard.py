"""The main flows with the keyboard alone, in a browser: signing in, the skip link, an admin's
top-up (a refusal included), a customer's usage range and invoice, an auditor's trace. Each
step checks where the focus is, as a keyboard user finds it."""
from __future__ import annotations

import uuid

from playwright.sync_api import Page, expect

from tests.e2e.conftest import Console


def _focused(page: Page) -> str:
    """The focused element as `tag#id` (or `tag:text` for a link or a button)."""
    return page.evaluate("""() => { const e = document.activeElement;
        return e.tagName.toLowerCase() + (e.id ? '#' + e.id : ':' + e.textContent.trim()); }""")


def _tab_to(page: Page, target: str, limit: int = 40) -> None:
    """Tab forward until `target` (as _focused names it) has the focus."""
    seen = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        seen.append(_focused(page))
        if seen[-1] == target:
            return
    raise AssertionError(f"{target} never got the focus: {seen}")


def _sign_in(page: Page, key: str) -> None:
    page.goto("/console/sign-in")
    assert _focused(page) == "input#key"  # the one field has the focus on arrival
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "/sign-in" not in url)
    page.wait_for_load_state()


def test_the_skip_link_is_the_first_stop_and_moves_the_focus_to_the_content(page: Page, console: Console):
    _sign_in(page, console.keys["acme"])
    expect(page).to_have_url(f"{console.url}/console/customers/acme")
    page.keyboard.press("Tab")
    assert _focused(page) == "a:Skip to content"
    expect(page.get_by_role("link", name="Skip to content")).to_be_visible()  # shown when focused
    page.keyboard.press("Enter")
    assert _focused(page) == "main#content"
    page.keyboard.press("Tab")  # the next stop is in the content, past the header's links
    assert page.evaluate("document.getElementById('content').contains(document.activeElement)")


def test_an_admin_tops_up_with_the_keyboard_alone(page: Page, console: Console):
    customer = f"keys-{uuid.uuid4().hex[:8]}"
    assert console.api.post("/v1/customers", json={"id": customer}).status_code == 201
    _sign_in(page, console.keys["admin"])
    page.goto(f"/console/customers/{customer}")
    _tab_to(page, "a:Top up")
    page.keyboard.press("Enter")
    expect(page).to_have_title(f"Top up · {customer} · tokentill")
    _tab_to(page, "input#amount")
    page.keyboard.type("10.001")
    page.keyboard.press("Tab")
    assert _focused(page) == "input#reference"
    page.keyboard.type("wire-keys")
    page.keyboard.press("Enter")  # Enter in a field sends the form
    expect(page.get_by_role("alert")).to_contain_text("USD amounts have 2 decimals")
    _tab_to(page, "input#amount")  # the refused form: the typed values, the amount marked invalid
    expect(page.locator("input#amount")).to_have_value("10.001")
    expect(page.locator("input#amount")).to_have_attribute("aria-invalid", "true")
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("10.00")
    _tab_to(page, "button:Record the top-up")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Top-up recorded")
    grants = console.api.get(f"/v1/customers/{customer}/wallet").json()["grants"]
    assert [(g["granted"], g["reference"]) for g in grants] == [("10.00", "wire-keys")]


def test_a_customer_picks_a_usage_range_and_opens_its_invoices_with_the_keyboard(page: Page, console: Console):
    _sign_in(page, console.keys["acme"])
    _tab_to(page, "a:Usage")
    page.keyboard.press("Enter")
    expect(page).to_have_title("Usage · acme · tokentill")
    _tab_to(page, "input#from")
    _tab_to(page, "button:Show")
    page.keyboard.press("Enter")  # htmx swaps the region; the focus stays on the form
    expect(page.get_by_role("heading", level=2, name="Usage from")).to_be_visible()
    assert _focused(page) == "button:Show"
    _tab_to(page, "a:Invoices", limit=80)  # on from the form, through the figures, back round to the tabs
    page.keyboard.press("Enter")
    expect(page).to_have_title("Invoices · acme · tokentill")


def test_an_auditor_traces_a_charge_with_the_keyboard(page: Page, console: Console):
    _sign_in(page, console.keys["auditor"])
    page.goto("/console/audit/trace")
    _tab_to(page, "input#request_id")
    page.keyboard.type("req-traced")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=2).first).to_contain_text("req-traced")

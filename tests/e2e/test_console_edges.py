"""The console at its edges, in a browser: names too long for their column, a form whose request
fails while the page is open, a phone's narrow window, a Beancount export its accounts' names clash in."""
from __future__ import annotations

import uuid

import psycopg
from playwright.sync_api import Page, expect

from tests.api.test_console_audit_forms import CLASH
from tests.e2e.conftest import Console
from tests.e2e.test_accessibility import AXE
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


def test_a_form_whose_request_fails_says_so(page: Page, console: Console):
    """The usage form swaps its region with htmx; an answer it does not swap (a 503 while the
    database restarts, a 500) left the page as it was, as if Show had not been pressed."""
    sign_in(page, console.keys["acme"])
    page.goto("/console/customers/acme/usage")
    expect(page.locator("[data-usage-chart] canvas")).to_be_visible()
    page.route("**/console/customers/acme/usage?*", lambda route: route.fulfill(
        status=503, headers={"Retry-After": "1", "Content-Type": "text/html"}, body="<p>unavailable</p>"))
    page.get_by_label("From", exact=True).fill("2026-03-01")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("alert")).to_contain_text("503")
    page.unroute("**/console/customers/acme/usage?*")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", name="Usage from 2026-03-01")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_count(0)


PHONE_PAGES = {"acme": ["/console/customers/acme", "/console/customers/acme/usage",
                        "/console/customers/acme/reservations", "/console/customers/acme/budgets",
                        "/console/customers/acme/invoices", "/console/customers/acme/invoices/upcoming"],
               "auditor": ["/console/audit", "/console/audit/journal", "/console/audit/trace?request_id=req-traced"]}


def test_on_a_phone_a_wide_table_scrolls_in_its_place_not_the_page(browser, console: Console):
    """At 390 px the wallet and the reservations pages reached 252 px past the window (the budgets
    120, the invoices 65): the whole page, header and figures included, scrolled sideways. Now a
    wide table scrolls within itself, still a table to assistive technology, reachable by keyboard."""
    context = browser.new_context(base_url=console.url, viewport={"width": 390, "height": 800}, bypass_csp=True)
    page = context.new_page()
    for who, paths in PHONE_PAGES.items():
        page.context.clear_cookies()
        sign_in(page, console.keys[who])
        for path in paths:
            page.goto(path)
            assert _overflow(page) == 0, path
            assert page.get_by_role("table").count() > 0, path
            page.add_script_tag(path=str(AXE))
            result = page.evaluate("axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}})")
            serious = [v["id"] for v in result["violations"] if v["impact"] in ("serious", "critical")]
            assert serious == [], (path, serious)
    context.close()


def test_a_beancount_export_whose_account_names_clash_is_refused_on_its_form(page: Page, console: Console):
    """Two accounts whose Beancount names would be one (tests/api/test_console_audit_forms.py's
    CLASH) stop that export; the browser got a download that failed, empty, and no reason. Now
    the form says why, and nothing downloads. Last in this module: accounts are never deleted,
    so every Beancount export of this database is refused after it."""
    with psycopg.connect(console.database_url, autocommit=True) as conn:
        for code in CLASH:
            conn.execute("INSERT INTO accounts (code, type, asset) VALUES (%s, 'asset', 'USD')", (code,))
    downloads: list = []
    page.on("download", lambda download: downloads.append(download))
    sign_in(page, console.keys["auditor"])
    page.get_by_role("link", name="Export").click()
    page.get_by_label("Format").select_option("beancount")
    page.get_by_role("button", name="Download").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "Nothing exported: accounts '" + "' and '".join(sorted(CLASH)) + "' would share the Beancount name "
        "'Assets:X------------------" + "--9045347d'")
    expect(page.get_by_label("Format")).to_have_value("beancount")
    assert downloads == []

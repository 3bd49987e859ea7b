"""Issue 16, acceptance 4: axe-core (vendored from the npm registry for this test only) finds no
serious or critical violation of WCAG 2 A/AA on the console's main pages."""
from __future__ import annotations

import pytest

from tests.e2e.conftest import Console
from tests.e2e.test_console import sign_in

AXE = __import__("pathlib").Path(__file__).parent / "vendor" / "axe-core-4.14.1.min.js"
PAGES = {
    "acme": ["/console/customers/acme", "/console/customers/acme/usage", "/console/customers/acme/reservations",
             "/console/customers/acme/budgets", "/console/customers/acme/invoices",
             "/console/customers/acme/invoices/upcoming", "/console/customers/acme/usage?from=2026-03-10&to=2026-03-01",
             "/console/customer/acme"],
    "auditor": ["/console/audit", "/console/audit/journal", "/console/audit/trace?request_id=req-traced",
                "/console/audit/verify", "/console/audit/statement?account=liability:customer:acme:reserved"],
    "admin": ["/console", "/console/operator", "/console/customers/globex/top-up", "/console/audit/journal?cursor=x"],
}


@pytest.mark.parametrize("who", list(PAGES))
def test_no_serious_accessibility_violation_on_the_main_pages(browser, console: Console, who):
    # The console's CSP admits only its own scripts; the test's injected axe is let in here alone.
    context = browser.new_context(base_url=console.url, bypass_csp=True)
    page = context.new_page()
    sign_in(page, console.keys[who])
    found = {}
    for path in [*PAGES[who], "/console/sign-in"]:
        page.goto(path)
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}})")
        serious = [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
                   for v in result["violations"] if v["impact"] in ("serious", "critical")]
        if serious:
            found[path] = serious
        assert result["passes"], path  # axe ran and checked something
    context.close()
    assert found == {}

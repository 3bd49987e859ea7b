"""The console in a real browser: each flow of issue 16's first acceptance item."""
from __future__ import annotations

import re
import uuid
from decimal import Decimal

from playwright.sync_api import Page, expect

from ledger.offline import verify_file
from tests.e2e.conftest import ARTIFACTS, Console


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, key: str) -> None:
    page.goto("/console/sign-in")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_a_customer_signs_in_and_sees_the_wallet_the_api_reports(page: Page, console: Console):
    sign_in(page, console.keys["acme"])
    expect(page).to_have_url(re.compile(r"/console/customers/acme$"))
    wallet = console.client("acme").get("/v1/customers/acme/wallet").json()
    expect(page.locator("[data-figure=available] .value")).to_contain_text(wallet["available"])
    expect(page.locator("[data-figure=held] .value")).to_contain_text(wallet["reserved"])
    expect(page.locator("[data-figure=owed] .value")).to_contain_text(wallet["receivable"])
    for lot in wallet["grants"]:
        expect(page.get_by_role("row").filter(has_text=lot["id"])).to_contain_text(lot["remaining"])
    expect(page.get_by_role("row").filter(has_text="req-open")).to_contain_text("held")
    shot(page, "customer-wallet")
    assert page.errors == []


def test_the_usage_chart_draws_exactly_what_the_usage_api_reports(page: Page, console: Console):
    sign_in(page, console.keys["acme"])
    page.get_by_role("link", name="Usage").click()
    expect(page.locator("[data-usage-chart] canvas")).to_be_visible()
    drawn = page.evaluate("window.tokentillCharts.usage.data")
    api = console.client("acme").get("/v1/customers/acme/usage", params=drawn["api"]).json()
    assert api["rows"], "the seed posted usage this month"
    from_api = {(r["day"], r["model"], r["token_type"]): r["amount"] for r in api["rows"]}
    from_chart = {(day, s["model"], s["token_type"]): amount for s in drawn["series"]
                  for day, amount in zip(drawn["days"], s["amounts"], strict=True) if amount not in ("0", "0.00")}
    assert from_chart == from_api
    plotted = page.evaluate("window.tokentillCharts.usage.chart.series.length")
    assert plotted == 1 + len({(m, t) for _, m, t in from_api})  # the time axis, then one line each
    shot(page, "customer-usage")
    assert page.errors == []


def test_a_customer_opens_an_invoice_as_the_invoice_api_has_it(page: Page, console: Console):
    sign_in(page, console.keys["acme"])
    page.get_by_role("link", name="Invoices").click()
    listed = console.client("acme").get("/v1/customers/acme/invoices").json()["invoices"]
    assert listed, "the seed closed acme's period"
    invoice = listed[-1]
    expect(page.locator(f"tr[data-invoice='{invoice['id']}']")).to_contain_text(invoice["total"])
    shot(page, "customer-invoices")
    page.get_by_role("link", name=invoice["number"]).click()
    expect(page.get_by_role("heading", name=f"Invoice {invoice['number']}")).to_be_visible()
    expect(page.locator("[data-figure=invoice-total]")).to_have_text(invoice["total"])
    expect(page.locator("[data-figure=amount-due]")).to_have_text(invoice["amount_due"])
    for line in invoice["lines"]:
        row = page.get_by_role("row").filter(has_text=line["token_type"] or line["kind"])  # or the rounding line
        row = row.filter(has_text=line["model"] or "all models")
        expect(row.first).to_contain_text(line["amount"])
    shot(page, "customer-invoice")
    with page.expect_download() as download:
        page.get_by_role("link", name="lines as CSV").click()
    saved = download.value.path().read_text()
    for line in invoice["lines"]:
        assert line["amount"] in saved
    pdf = page.request.get(f"/console/invoices/{invoice['id']}/pdf")
    assert pdf.ok and pdf.headers["content-type"] == "application/pdf" and pdf.body().startswith(b"%PDF")
    page.goto("/console/customers/acme/invoices/upcoming")
    expect(page.get_by_role("heading", name="Upcoming invoice (not final)")).to_be_visible()
    assert page.request.get("/console/customers/acme/invoices/upcoming/html").ok
    assert page.errors == []


def test_another_customer_gets_a_403_page_for_an_invoice(page: Page, console: Console):
    invoice = console.client("acme").get("/v1/customers/acme/invoices").json()["invoices"][-1]
    sign_in(page, console.keys["globex"])
    response = page.goto(f"/console/invoices/{invoice['id']}")
    assert response.status == 403
    assert invoice["number"] not in page.content() and invoice["total"] not in page.locator("main").inner_text()
    assert page.request.get(f"/console/invoices/{invoice['id']}/pdf").status == 403


def test_a_customer_sees_its_budgets_as_the_budgets_api_reads_them(page: Page, console: Console):
    sign_in(page, console.keys["acme"])
    page.get_by_role("link", name="Budgets").click()
    budgets = console.client("acme").get("/v1/budgets", params={"customer_id": "acme"}).json()["budgets"]
    assert budgets
    for budget in budgets:
        row = page.locator(f"tr[data-budget='{budget['id']}']")
        for figure in ("limit", "used", "held", "remaining"):
            expect(row).to_contain_text(str(budget[figure]))
    shot(page, "customer-budgets")
    assert page.errors == []


def test_an_auditor_downloads_an_export_that_verifies_offline(page: Page, console: Console, tmp_path):
    sign_in(page, console.keys["auditor"])
    page.get_by_role("link", name="Export").click()
    page.get_by_label("Format").select_option("jsonl")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.suffix == ".jsonl"
    report = verify_file(str(saved))
    assert report.ok, report.problems
    journal, cursor = [], None
    while True:  # every entry, through the journal API
        page_of = console.client("auditor").get("/v1/journal", params={"limit": 1000, "cursor": cursor}
                                                if cursor else {"limit": 1000}).json()
        journal += page_of["entries"]
        if not (cursor := page_of["next_cursor"]):
            break
    assert report.entries >= len(journal) > 0
    shot(page, "audit-export")


def test_the_usage_range_form_reads_without_javascript(browser, console: Console):
    context = browser.new_context(base_url=console.url, java_script_enabled=False)
    page = context.new_page()
    sign_in(page, console.keys["acme"])
    page.goto("/console/customers/acme/usage?from=2020-01-01&to=2020-01-31")
    expect(page.get_by_role("heading", name="Usage from 2020-01-01 to 2020-01-31")).to_be_visible()
    expect(page.get_by_text("No usage in this range.")).to_be_visible()
    page.goto("/console/customers/acme/usage")
    rows = console.client("acme").get("/v1/customers/acme/usage", params={"group_by": ""}).json()["rows"]
    total = sum(Decimal(row["amount"]) for row in rows)  # a row per token type: the footer is their sum
    shown = f"{total:.2f}" if total == total.quantize(Decimal("0.01")) else format(total.normalize(), "f")
    expect(page.locator("tfoot")).to_contain_text(shown)
    context.close()


def test_a_usage_range_that_ends_before_it_starts_says_so(page: Page, console: Console):
    """The range form swaps the usage region with htmx: a refused range (422) was not swapped
    and the page did nothing at all when "Show" was pressed."""
    sign_in(page, console.keys["acme"])
    page.goto("/console/customers/acme/usage")
    expect(page.locator("[data-usage-chart] canvas")).to_be_visible()
    page.get_by_label("From", exact=True).fill("2026-03-10")
    page.get_by_label("To (included)", exact=True).fill("2026-03-01")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#usage-region").get_by_role("alert")).to_contain_text("on or after the first day")
    expect(page.locator("[data-usage-chart] canvas")).to_have_count(0)  # no chart of the range shown before
    page.get_by_label("To (included)", exact=True).fill("2026-03-31")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", name="Usage from 2026-03-10 to 2026-03-31")).to_be_visible()
    expect(page.locator("#usage-region").get_by_role("alert")).to_have_count(0)
    assert [e for e in page.errors if "status of 422" not in e] == []  # Chromium logs the refusal's status


def test_no_page_of_a_customers_is_kept_in_the_browsers_storage(page: Page, console: Console):
    """htmx kept a copy of the page in localStorage (its history cache) whenever the usage
    form pushed a new URL: the wallet's figures outlived the no-store pages and the sign-out,
    readable by whoever used the browser next (and restored by Back without the server)."""
    sign_in(page, console.keys["acme"])
    page.goto("/console/customers/acme/usage")
    page.get_by_label("From", exact=True).fill("2020-01-01")
    page.get_by_label("To (included)", exact=True).fill("2020-01-31")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"from=2020-01-01"))
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))
    stored = page.evaluate("JSON.stringify(Object.assign({}, window.localStorage, window.sessionStorage))")
    assert "acme" not in stored.lower(), stored[:300]
    page.go_back()  # to the range the form pushed: asked of the server again, which wants a sign-in
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
    assert "Acme Inc." not in page.content()


def test_the_range_form_after_the_sign_in_has_lapsed_goes_to_the_sign_in_page(page: Page, console: Console):
    """htmx followed the redirect to the sign-in page and looked there for the usage region:
    finding none, it emptied the region, and the customer was left with a blank page."""
    sign_in(page, console.keys["acme"])
    page.goto("/console/customers/acme/usage")
    page.context.clear_cookies(name="tokentill_console")  # the session lapses (8 hours, a revoked key)
    page.get_by_label("From", exact=True).fill("2020-01-01")
    page.get_by_label("To (included)", exact=True).fill("2020-01-31")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next=%2Fconsole%2Fcustomers%2Facme%2Fusage"))
    expect(page.get_by_label("API key")).to_be_visible()


def test_an_auditor_reads_the_trial_balance_traces_a_charge_and_runs_verify(page: Page, console: Console):
    sign_in(page, console.keys["auditor"])
    expect(page).to_have_url(re.compile(r"/console/audit$"))
    tb = console.client("auditor").get("/v1/audit/trial-balance").json()
    expect(page.locator("tfoot")).to_contain_text(tb["total_debits"])
    expect(page.get_by_text("yes", exact=True)).to_be_visible()
    shot(page, "audit-trial-balance")
    page.get_by_role("link", name="Journal").click()
    api = console.client("auditor")
    first = api.get("/v1/journal", params={"limit": 50}).json()
    second = api.get("/v1/journal", params={"limit": 50, "cursor": first["next_cursor"]}).json()
    assert first["next_cursor"], "the seed wrote more than one page of entries"
    for entry in first["entries"]:
        expect(page.locator(f"tr[data-entry='{entry['id']}']")).to_be_visible()
    shot(page, "audit-journal")
    page.get_by_role("link", name="Next page").click()
    shown = page.locator("tr[data-entry]").evaluate_all("rows => rows.map(r => Number(r.dataset.entry))")
    assert shown == [e["id"] for e in second["entries"]]
    account = "liability:customer:acme:reserved"
    page.get_by_role("link", name=account).first.click()
    statement = api.get(f"/v1/accounts/{account}/statement").json()
    expect(page.locator("[data-figure=closing]")).to_have_text(statement["closing_balance"])
    expect(page.locator("[data-figure=opening]")).to_have_text(statement["opening_balance"])
    shot(page, "audit-statement")
    page.get_by_role("link", name="Charge trace").click()
    page.get_by_label("Request id").fill("req-traced")
    page.get_by_role("button", name="Trace").click()
    trace = console.client("auditor").get("/v1/audit/charges/req-traced").json()
    for entry in trace["entries"]:
        expect(page.locator("caption", has_text=f"Entry #{entry['id']} ")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="a-input")).to_contain_text(trace["charges"][0]["lines"][0]["amount"])
    shot(page, "audit-trace")
    page.get_by_role("link", name="Verify").click()
    page.get_by_role("button", name="Run verify").click()
    expect(page.locator("[data-verify]")).to_have_attribute("data-verify", "ok")
    api = console.client("auditor").post("/v1/audit/verify").json()
    for check in api["checks"]:
        row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=check["name"], exact=True))
        expect(row).to_contain_text("passed")
    shot(page, "audit-verify")
    assert page.errors == []


def test_a_customer_key_gets_403_pages_for_another_customer_and_for_audit_pages(page: Page, console: Console):
    sign_in(page, console.keys["acme"])
    for path in ("/console/customers/globex", "/console/customers/globex/usage",
                 "/console/customers/globex/reservations", "/console/customers/globex/budgets",
                 "/console/customers/globex/invoices", "/console/customers/globex/invoices/upcoming",
                 "/console/customers/globex/invoices/upcoming/pdf",
                 "/console/audit", "/console/audit/journal", "/console/audit/export",
                 "/console/audit/export/download?format=csv",
                 "/console/audit/statement?account=liability:customer:acme:reserved",
                 "/console/audit/trace?request_id=req-traced", "/console/audit/verify",
                 "/console/operator", "/console/customers/acme/top-up"):
        response = page.goto(path)
        assert response.status == 403, path
        expect(page.get_by_role("heading", level=1)).to_contain_text("403")
        expect(page.get_by_role("alert")).not_to_contain_text("Globex")
        assert "100.00" not in page.content()  # globex's balance appears nowhere
    shot(page, "forbidden")


def test_a_form_post_without_the_csrf_token_is_refused(page: Page, console: Console):
    sign_in(page, console.keys["admin"])
    page.goto("/console/customers/globex/top-up")
    before = console.api.get("/v1/customers/globex/wallet").json()["available"]
    refused = page.request.post("/console/customers/globex/top-up",
                                form={"amount": "7.00", "idempotency_key": "x" * 16})
    assert refused.status == 403 and "CSRF token is missing or wrong" in refused.text()  # the 403 page
    forged = page.request.post("/console/customers/globex/top-up",
                               form={"amount": "7.00", "idempotency_key": "x" * 16, "_csrf_token": "forged"})
    assert forged.status == 403
    assert console.api.get("/v1/customers/globex/wallet").json()["available"] == before


def test_an_admin_tops_up_once_however_often_the_form_is_sent(page: Page, console: Console):
    sign_in(page, console.keys["admin"])
    page.goto("/console/customers/globex/top-up")
    before = console.api.get("/v1/customers/globex/wallet").json()
    page.get_by_label("Amount (USD)").fill("abc")
    page.get_by_role("button", name="Record the top-up").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "Amount: an amount more than 0 and at most 1000000000, such as 100.00, at most 2 decimals")
    page.get_by_label("Amount (USD)").fill("25.50")
    page.get_by_label("Payment reference").fill("wire-77")
    sent = {name: page.locator(f"main form [name={name}]").input_value()
            for name in ("_csrf_token", "idempotency_key", "amount", "reference", "priority", "expires_on")}
    page.get_by_role("button", name="Record the top-up").click()
    expect(page.get_by_role("status")).to_contain_text("Top-up recorded")
    again = page.request.post("/console/customers/globex/top-up", form=sent)  # the same form, sent again
    after = console.api.get("/v1/customers/globex/wallet").json()
    assert len(after["grants"]) == len(before["grants"]) + 1
    lot = next(g for g in after["grants"] if g["reference"] == "wire-77")
    assert lot["granted"] == "25.50"
    assert again.ok and f"Top-up recorded: lot <code>{lot['id']}</code>" in again.text()  # not "lot None"
    shot(page, "admin-top-up")


def test_back_after_a_top_up_and_sending_the_form_again_does_not_top_up_twice(page: Page, console: Console):
    """After a top-up, Back showed the form with the amount and reference as typed (the browser
    restores a form's fields on Back) but a new one-time key (the page is fetched again): one more
    click recorded a second top-up of the same amount. Back now shows an empty form."""
    customer = f"back-{uuid.uuid4().hex[:8]}"
    assert console.api.post("/v1/customers", json={"id": customer}).status_code == 201
    sign_in(page, console.keys["admin"])
    page.goto(f"/console/customers/{customer}/top-up")
    page.get_by_label("Amount (USD)").fill("12.00")
    page.get_by_label("Payment reference").fill("wire-back")
    page.get_by_role("button", name="Record the top-up").click()
    expect(page.get_by_role("status")).to_contain_text("Top-up recorded")
    page.go_back()
    expect(page.get_by_role("button", name="Record the top-up")).to_be_visible()
    page.get_by_role("button", name="Record the top-up").click()  # the required amount stops an empty form
    page.wait_for_load_state("networkidle")
    grants = console.api.get(f"/v1/customers/{customer}/wallet").json()["grants"]
    assert [(g["granted"], g["reference"]) for g in grants] == [("12.00", "wire-back")]
    expect(page.get_by_label("Amount (USD)")).to_have_value("")
    expect(page.get_by_label("Payment reference")).to_have_value("")


def test_an_admin_sees_the_operator_page(page: Page, console: Console):
    sign_in(page, console.keys["admin"])
    page.goto("/console/operator")
    ready = console.api.get("/readyz").json()
    expect(page.get_by_text("ready", exact=True)).to_be_visible()
    expect(page.locator(".figure").filter(has_text="Migration")).to_contain_text(ready["migration"])
    expect(page.get_by_role("row").filter(has_text="tokentill_requests_total")).to_be_visible()
    shot(page, "operator")
    assert page.errors == []


def test_signing_out_ends_the_session(page: Page, console: Console):
    sign_in(page, console.keys["acme"])
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))
    page.goto("/console/customers/acme")
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))


def test_a_wrong_key_is_refused_and_a_revoked_key_is_signed_out(page: Page, console: Console):
    sign_in(page, "tt_not-a-key")
    expect(page.get_by_role("alert")).to_contain_text("unknown or revoked key")
    made = console.api.post("/v1/api-keys", json={"scope": "customer:globex"}).json()
    sign_in(page, made["key"])
    expect(page).to_have_url(re.compile(r"/console/customers/globex$"))
    console.api.delete(f"/v1/api-keys/{made['id']}")
    page.goto("/console/customers/globex")
    expect(page).to_have_url(re.compile(r"/console/sign-in"))

"""Acceptance 7: the seed example's invoice as JSON, as a printable HTML page, as a PDF (its text
extracted with pypdf) and its lines as CSV show the same lines and total, worked out by hand; an
Accept the API cannot answer is a 406 problem."""
from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
from pypdf import PdfReader

from tests.api.apps import api_client
from wallets.periods import Cycle, period_of

ADMIN = {"Authorization": "Bearer render-admin"}
SEED = {"id": "seed", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"},
    {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
    {"id": "b-in", "model": "model-b", "token_type": "input", "price": "5.00"},
    {"id": "b-out", "model": "model-b", "token_type": "output", "price": "10.00"},
    {"id": "call", "token_type": "request", "price": "0.01"}]}
# By hand: model-a, three calls of 1,000 input and 500 output tokens: 3,000 x $10/M = $0.03,
# 1,500 x $20/M = $0.03, 3 x $0.01; model-b, two calls of 2,000 input and 1,000 output tokens:
# 4,000 x $5/M = $0.02, 2,000 x $10/M = $0.02, 2 x $0.01. Total $0.15, all due (postpaid).
HAND_ROWS = [
    ["model-a input", "3,000", "10.00 per 1M", "0.03"],
    ["model-a output", "1,500", "20.00 per 1M", "0.03"],
    ["model-a requests", "3", "0.01 each", "0.03"],
    ["model-b input", "4,000", "5.00 per 1M", "0.02"],
    ["model-b output", "2,000", "10.00 per 1M", "0.02"],
    ["model-b requests", "2", "0.01 each", "0.02"],
]
HAND_CSV = [  # kind, model, token type, quantity, unit price, per, amount
    ("usage", "model-a", "input", "3000", "10.00", "1000000", "0.03"),
    ("usage", "model-a", "output", "1500", "20.00", "1000000", "0.03"),
    ("request", "model-a", "request", "3", "0.01", "1", "0.03"),
    ("usage", "model-b", "input", "4000", "5.00", "1000000", "0.02"),
    ("usage", "model-b", "output", "2000", "10.00", "1000000", "0.02"),
    ("request", "model-b", "request", "2", "0.01", "1", "0.02"),
]


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="render-admin", books=[SEED]) as c:
        yield c


async def _seed_invoice(client) -> dict:
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": "acme", "currency": "USD", "price_book": "seed", "billing": "postpaid"})
    assert created.status_code == 201, created.text
    now = datetime.now(UTC)
    calls = [("model-a", 1000, 500)] * 3 + [("model-b", 2000, 1000)] * 2
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": f"e{i}", "customer_id": "acme", "model": model, "timestamp": now.isoformat(),
         "usage": {"input_tokens": tin, "output_tokens": tout}} for i, (model, tin, tout) in enumerate(calls)])
    assert sent.json()["accepted"] == 5, sent.text
    period = period_of(now, Cycle("UTC", None))
    closed = await client.post("/v1/billing/close", headers=ADMIN, json={
        "until": (period.end + timedelta(hours=1, seconds=1)).isoformat(), "customer_id": "acme", "early": True})
    [one] = closed.json()["closed"]
    answer = await client.get(f"/v1/invoices/{one['invoice_id']}", headers=ADMIN)
    assert answer.headers["content-type"].startswith("application/json")
    return answer.json()


class Tables(HTMLParser):
    """The text of every table row, cell by cell, and of every <dd>."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data) -> None:
        if self.cell is not None:
            self.cell.append(data)


async def test_html_pdf_and_csv_show_the_json_invoices_lines_and_total(client) -> None:
    invoice = await _seed_invoice(client)
    assert invoice["total"] == "0.15" and invoice["amount_due"] == "0.15" and len(invoice["lines"]) == 6
    path = f"/v1/invoices/{invoice['id']}"

    page = await client.get(path, headers={**ADMIN, "Accept": "text/html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.text
    assert "script" not in page.headers["content-security-policy"]
    tables = Tables()
    tables.feed(page.text)
    assert tables.rows[1:7] == HAND_ROWS  # row 0 is the heading
    assert ["Total", "0.15 USD"] in tables.rows and ["Amount due", "0.15 USD"] in tables.rows
    assert invoice["number"] in page.text and invoice["content_hash"] in page.text

    document = await client.get(path, headers={**ADMIN, "Accept": "application/pdf"})
    assert document.status_code == 200 and document.headers["content-type"] == "application/pdf"
    assert document.content.startswith(b"%PDF-")
    assert f'filename="{invoice["number"]}.pdf"' in document.headers["content-disposition"]
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(document.content)).pages)
    printed = [" ".join(line.split()) for line in text.splitlines()]
    for row in HAND_ROWS:
        assert " ".join(row) in printed, (row, printed)
    assert "Total 0.15 USD" in printed and "Amount due 0.15 USD" in printed
    assert f"Invoice {invoice['number']}" in printed

    sheet = await client.get(path, headers={**ADMIN, "Accept": "text/csv"})
    # one charset: it read text/csv; charset=utf-8; charset=utf-8 (Litestar adds one to a text/ type)
    assert sheet.status_code == 200 and sheet.headers["content-type"] == "text/csv; charset=utf-8"
    records = list(csv.DictReader(io.StringIO(sheet.text)))
    assert [(r["kind"], r["model"], r["token_type"], r["quantity"], r["unit_price"], r["per"], r["amount"])
            for r in records] == HAND_CSV
    assert {(r["number"], r["period"], r["currency"]) for r in records} == \
        {(invoice["number"], invoice["period"]["label"], "USD")}
    assert sum(int(r["amount"].replace(".", "")) for r in records) == 15  # cents: the lines add up to the total


async def _postpaid_with_usage(client, cid: str, model: str, input_tokens: int, output_tokens: int) -> None:
    """A postpaid customer on the seed book with one usage event now: its upcoming invoice has lines."""
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": cid, "currency": "USD", "price_book": "seed", "billing": "postpaid"})
    assert created.status_code == 201
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": f"{cid}-1", "customer_id": cid, "model": model, "timestamp": datetime.now(UTC).isoformat(),
         "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}])
    assert sent.json()["accepted"] == 1


async def test_the_upcoming_invoice_renders_as_html_too(client) -> None:
    await _postpaid_with_usage(client, "soon", "model-b", 2000, 1000)
    page = await client.get("/v1/customers/soon/invoices/upcoming", headers={**ADMIN, "Accept": "text/html"})
    assert page.status_code == 200, page.text
    tables = Tables()
    tables.feed(page.text)
    assert tables.rows[1:4] == [["model-b input", "2,000", "5.00 per 1M", "0.01"],
                                ["model-b output", "1,000", "10.00 per 1M", "0.01"],
                                ["model-b requests", "1", "0.01 each", "0.01"]]
    assert "Invoice (upcoming)" in page.text and ["Total", "0.03 USD"] in tables.rows


async def test_an_accept_the_api_cannot_answer_is_406_and_json_is_the_default(client) -> None:
    invoice = await _seed_invoice(client)
    path = f"/v1/invoices/{invoice['id']}"
    refused = await client.get(path, headers={**ADMIN, "Accept": "image/png"})
    assert refused.status_code == 406, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "not_acceptable"
    anything = await client.get(path, headers={**ADMIN, "Accept": "*/*"})
    assert anything.headers["content-type"].startswith("application/json") and anything.json() == invoice
    preferred = await client.get(path, headers={**ADMIN, "Accept": "application/pdf;q=0.5, text/csv"})
    assert preferred.headers["content-type"].startswith("text/csv")
    unknown = await client.get("/v1/invoices/nope", headers={**ADMIN, "Accept": "text/html"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"


async def test_a_customer_key_renders_its_own_invoice_only(client) -> None:
    invoice = await _seed_invoice(client)
    keys = {}
    for cid in ("acme", "other"):
        if cid == "other":
            await client.post("/v1/customers", headers=ADMIN, json={"id": "other", "currency": "USD",
                                                                    "price_book": "seed"})
        made = await client.post("/v1/api-keys", headers=ADMIN, json={"scope": f"customer:{cid}"})
        assert made.status_code == 201, made.text
        keys[cid] = {"Authorization": f"Bearer {made.json()['key']}"}
    own = await client.get(f"/v1/invoices/{invoice['id']}", headers={**keys["acme"], "Accept": "application/pdf"})
    assert own.status_code == 200 and own.content.startswith(b"%PDF-")
    theirs = await client.get(f"/v1/invoices/{invoice['id']}", headers={**keys["other"], "Accept": "application/pdf"})
    assert theirs.status_code == 403 and theirs.headers["content-type"].startswith("application/problem+json")


async def test_a_rounding_line_renders_with_the_rounded_lines(client) -> None:
    await _postpaid_with_usage(client, "cents", "model-a", 1340, 670)
    path = "/v1/customers/cents/invoices/upcoming"
    # By hand: $0.0134 and $0.0134 show $0.01 each, the request $0.01; exact total $0.0368, rounding $0.0068.
    page = await client.get(path, headers={**ADMIN, "Accept": "text/html"})
    tables = Tables()
    tables.feed(page.text)
    assert tables.rows[1:5] == [["model-a input", "1,340", "10.00 per 1M", "0.01"],
                                ["model-a output", "670", "20.00 per 1M", "0.01"],
                                ["model-a requests", "1", "0.01 each", "0.01"],
                                ["Rounding difference (each line rounded to 0.01, half to even)", "", "", "0.0068"]]
    assert ["Total", "0.0368 USD"] in tables.rows
    sheet = await client.get(path, headers={**ADMIN, "Accept": "text/csv"})
    records = list(csv.DictReader(io.StringIO(sheet.text)))
    assert [(r["kind"], r["quantity"], r["amount"]) for r in records] == [
        ("usage", "1340", "0.01"), ("usage", "670", "0.01"), ("request", "1", "0.01"), ("rounding", "", "0.0068")]
    # README: "the rounding line has only its kind and amount" (beside the invoice's period, currency and
    # customer: "cents" has no name); its `per` said 1, units of a price it does not have
    assert {k for k, v in records[-1].items() if v} == {"period", "kind", "amount", "currency", "customer_id"}
    document = await client.get(path, headers={**ADMIN, "Accept": "application/pdf"})
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(document.content)).pages)
    printed = [" ".join(line.split()) for line in text.splitlines()]
    assert "Rounding difference (each line rounded to 0.01, half to even) 0.0068" in printed, printed


async def test_the_upcoming_invoice_shows_what_a_top_up_paid_and_what_remains(client) -> None:
    """A prepaid customer's top-up that paid the period's usage off the receivable pays its
    invoice at the close; the upcoming invoice (JSON, printable page, console page) showed the
    whole amount due and nothing paid."""
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": "topped", "currency": "USD", "price_book": "seed", "overdraft_limit": "1.00"})
    assert created.status_code == 201, created.text
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[  # 5 x $0.03 on the receivable
        {"event_id": f"t{i}", "customer_id": "topped", "model": "model-a", "timestamp": datetime.now(UTC).isoformat(),
         "usage": {"input_tokens": 1000, "output_tokens": 500}} for i in range(5)])
    assert sent.json()["accepted"] == 5, sent.text
    topped = await client.post("/v1/customers/topped/topups", headers=ADMIN, json={"amount": "0.10"})
    assert topped.json()["applied_to_receivable"] == "0.10", topped.text
    path = "/v1/customers/topped/invoices/upcoming"
    upcoming = (await client.get(path, headers=ADMIN)).json()
    assert (upcoming["amount_due"], upcoming["amount_paid"], upcoming["amount_remaining"]) == ("0.15", "0.10", "0.05")
    page = await client.get(path, headers={**ADMIN, "Accept": "text/html"})
    tables = Tables()
    tables.feed(page.text)
    assert ["Paid on this invoice", "0.10 USD"] in tables.rows and ["Amount remaining", "0.05 USD"] in tables.rows
    document = await client.get(path, headers={**ADMIN, "Accept": "application/pdf"})
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(document.content)).pages)
    assert "Amount remaining 0.05 USD" in [" ".join(line.split()) for line in text.splitlines()]
    async with api_client(app=client.app, admin="render-admin", signed_in=True) as browser:
        console = Tables()
        console.feed((await browser.get("/console/customers/topped/invoices/upcoming")).text)
        assert ["Paid on this invoice", "0.10"] in console.rows and ["Amount remaining", "0.05"] in console.rows


async def test_the_upcoming_invoice_s_renderings_count_its_volume_true_up_in_what_is_due(client) -> None:
    """The upcoming invoice showed its volume true-up as a line but left it out of the amount due
    and the amount remaining, in JSON, on the printable page and PDF, and in the console: the
    customer read $23.00 due where the close would finalize $13.00.
    By hand: model-v output, volume-tiered, 600,000 then 700,000 tokens rated graduated as they
    came, 1,000,000 at $20/M and 300,000 at $10/M = $23.00; all 1,300,000 at the tier reached,
    $10/M, is $13.00: a true-up of -$10.00, and $13.00 due (postpaid)."""
    volume = {"id": "volume", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
        {"id": "v-out", "model": "model-v", "token_type": "output", "tier_mode": "volume",
         "tiers": [{"up_to": 1_000_000, "price": "20"}, {"up_to": None, "price": "10"}]}]}
    assert (await client.post("/v1/price-books", headers=ADMIN, json=volume)).status_code == 201
    created = await client.post("/v1/customers", headers=ADMIN, json={
        "id": "tiered", "currency": "USD", "price_book": "volume", "billing": "postpaid"})
    assert created.status_code == 201, created.text
    for i, tokens in enumerate((600_000, 700_000)):
        sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
            {"event_id": f"v{i}", "customer_id": "tiered", "model": "model-v",
             "timestamp": datetime.now(UTC).isoformat(), "usage": {"input_tokens": 0, "output_tokens": tokens}}])
        assert sent.json()["accepted"] == 1, sent.text
    path = "/v1/customers/tiered/invoices/upcoming"
    upcoming = (await client.get(path, headers=ADMIN)).json()
    assert [(ln["kind"], ln["amount"]) for ln in upcoming["lines"]] == [
        ("usage", "20.00"), ("usage", "3.00"), ("volume_true_up", "-10.00")]
    assert (upcoming["total"], upcoming["charged_to_account"], upcoming["amount_due"], upcoming["amount_remaining"]) \
        == ("13.00", "13.00", "13.00", "13.00")
    assert upcoming["closing_balance"]["receivable"] == "13.00"
    page = await client.get(path, headers={**ADMIN, "Accept": "text/html"})
    tables = Tables()
    tables.feed(page.text)
    assert ["Amount due", "13.00 USD"] in tables.rows and ["Amount remaining", "13.00 USD"] in tables.rows
    document = await client.get(path, headers={**ADMIN, "Accept": "application/pdf"})
    printed = [" ".join(line.split()) for p in PdfReader(io.BytesIO(document.content)).pages
               for line in p.extract_text().splitlines()]
    assert "Amount due 13.00 USD" in printed and "Amount remaining 13.00 USD" in printed, printed
    async with api_client(app=client.app, admin="render-admin", signed_in=True) as browser:
        console = Tables()
        console.feed((await browser.get("/console/customers/tiered/invoices/upcoming")).text)
        assert ["Amount due", "13.00"] in console.rows and ["Amount remaining", "13.00"] in console.rows
        listed = (await browser.get("/console/customers/tiered/invoices")).text
        remaining = re.search(r'Amount remaining</div><div class="value">([^<]+)<', listed)
        assert remaining is not None and remaining.group(1) == "13.00", listed

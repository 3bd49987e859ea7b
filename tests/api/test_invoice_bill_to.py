"""The customer's name on its invoices and credit notes: "Bill to: Acme Inc. (acme)" in the
JSON (`customer_name`), the printable page, the PDF, the CSV and the console, frozen in the
invoice's content when it is issued, so renaming the customer later changes no issued invoice
(its content hash and verify stay as they were). An invoice issued before the name was recorded
has none in its content: it renders with the id alone, and verify is still ok."""
from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import psycopg
import pytest
from pypdf import PdfReader

from api import renderings
from tests.api.apps import api_client
from tests.api.test_invoice_renderings import SEED
from wallets.core import invoicing
from wallets.periods import Cycle, period_of

ADMIN = {"Authorization": "Bearer billto-admin"}


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="billto-admin", books=[SEED]) as c:
        yield c


class Facts(HTMLParser):
    """The printable page's facts: each <dt> and its <dd>, as text."""

    def __init__(self) -> None:
        super().__init__()
        self.facts: dict[str, str] = {}
        self.tag: str | None = None
        self.label = ""

    def handle_starttag(self, tag, attrs) -> None:
        self.tag = tag if tag in ("dt", "dd") else None
        if tag == "dd":
            self.facts[self.label] = ""

    def handle_endtag(self, tag) -> None:
        self.tag = None

    def handle_data(self, data) -> None:
        if self.tag == "dt":
            self.label += data
        elif self.tag == "dd":
            self.facts[self.label] += data
            self.label = ""


async def _customer_with_usage(client, cid: str, name: str | None) -> None:
    body = {"id": cid, "currency": "USD", "price_book": "seed", "billing": "postpaid"}
    created = await client.post("/v1/customers", headers=ADMIN, json=body if name is None else {**body, "name": name})
    assert created.status_code == 201, created.text
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": f"{cid}-1", "customer_id": cid, "model": "model-a", "timestamp": datetime.now(UTC).isoformat(),
         "usage": {"input_tokens": 1000, "output_tokens": 500}}])
    assert sent.json()["accepted"] == 1, sent.text


async def _close(client, cid: str) -> dict:
    period = period_of(datetime.now(UTC), Cycle("UTC", None))
    closed = await client.post("/v1/billing/close", headers=ADMIN, json={
        "until": (period.end + timedelta(hours=1, seconds=1)).isoformat(), "customer_id": cid, "early": True})
    [one] = closed.json()["closed"]
    answer = await client.get(f"/v1/invoices/{one['invoice_id']}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def _page_facts(client, path: str) -> tuple[str, dict[str, str]]:
    page = await client.get(path, headers={**ADMIN, "Accept": "text/html"})
    assert page.status_code == 200, page.text
    facts = Facts()
    facts.feed(page.text)
    return page.text, facts.facts


async def _pdf_lines(client, path: str) -> list[str]:
    document = await client.get(path, headers={**ADMIN, "Accept": "application/pdf"})
    assert document.status_code == 200, document.text
    return [" ".join(line.split()) for p in PdfReader(io.BytesIO(document.content)).pages
            for line in p.extract_text().splitlines()]


async def _csv_rows(client, path: str) -> list[dict[str, str]]:
    sheet = await client.get(path, headers={**ADMIN, "Accept": "text/csv"})
    assert sheet.status_code == 200, sheet.text
    return list(csv.DictReader(io.StringIO(sheet.text)))


async def _console(client, path: str) -> str:
    async with api_client(app=client.app, admin="billto-admin", signed_in=True) as browser:
        page = await browser.get(path)
        assert page.status_code == 200, page.text
        return page.text


def _rename(url: str, cid: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("UPDATE customers SET name = %s WHERE id = %s", (name, cid)).rowcount == 1


async def _verified(client) -> None:
    verify = await client.post("/v1/audit/verify", headers=ADMIN)
    assert verify.status_code == 200 and verify.json()["ok"], verify.text


async def test_the_invoice_bills_the_customer_by_name_in_every_rendering(client) -> None:
    await _customer_with_usage(client, "acme", "Acme Inc.")
    invoice = await _close(client, "acme")
    assert (invoice["customer_id"], invoice["customer_name"]) == ("acme", "Acme Inc.")
    path = f"/v1/invoices/{invoice['id']}"
    _, facts = await _page_facts(client, path)
    assert facts["Bill to"] == "Acme Inc. (acme)", facts
    assert "Bill to Acme Inc. (acme)" in await _pdf_lines(client, path)
    rows = await _csv_rows(client, path)
    assert rows and {(r["customer_id"], r["customer_name"]) for r in rows} == {("acme", "Acme Inc.")}
    console = await _console(client, f"/console/invoices/{invoice['id']}")
    assert re.search(r"Bill to:?\s*(<[^>]+>)*\s*Acme Inc\. \(acme\)", console), console
    listed = (await client.get("/v1/customers/acme/invoices", headers=ADMIN)).json()
    assert [i["customer_name"] for i in listed["invoices"]] == ["Acme Inc."]


async def test_renaming_the_customer_changes_no_issued_invoice(client, scratch_url) -> None:
    await _customer_with_usage(client, "acme", "Acme Inc.")
    invoice = await _close(client, "acme")
    path = f"/v1/invoices/{invoice['id']}"
    _rename(scratch_url, "acme", "Acme Renamed GmbH")
    assert (await client.get("/v1/customers/acme", headers=ADMIN)).json()["name"] == "Acme Renamed GmbH"
    again = (await client.get(path, headers=ADMIN)).json()
    assert again == invoice  # the same frozen document, the same content hash
    _, facts = await _page_facts(client, path)
    assert facts["Bill to"] == "Acme Inc. (acme)", facts
    assert "Bill to Acme Inc. (acme)" in await _pdf_lines(client, path)
    assert {r["customer_name"] for r in await _csv_rows(client, path)} == {"Acme Inc."}
    console = await _console(client, f"/console/invoices/{invoice['id']}")
    assert "Acme Inc. (acme)" in console and "Bill to" in console
    # the invoice still to come is not issued: it bills the name as it is now
    await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": "acme-2", "customer_id": "acme", "model": "model-a", "timestamp": datetime.now(UTC).isoformat(),
         "usage": {"input_tokens": 1000, "output_tokens": 500}}])
    upcoming = (await client.get("/v1/customers/acme/invoices/upcoming", headers=ADMIN)).json()
    assert upcoming["customer_name"] == "Acme Renamed GmbH"
    await _verified(client)


async def test_an_invoice_issued_before_names_were_recorded_renders_by_id_and_verifies(client, monkeypatch) -> None:
    """As the close wrote documents before: no `customer_name` in the frozen content."""
    issue = invoicing.document

    def without_name(*args, **kwargs):
        content = issue(*args, **kwargs)
        content.pop("customer_name")
        return content

    monkeypatch.setattr(invoicing, "document", without_name)
    await _customer_with_usage(client, "old", "Old Customer Ltd")
    invoice = await _close(client, "old")
    monkeypatch.undo()
    assert invoice["customer_name"] is None  # none recorded at issue: not today's name
    path = f"/v1/invoices/{invoice['id']}"
    _, facts = await _page_facts(client, path)
    assert facts["Bill to"] == "old", facts
    assert "Bill to old" in await _pdf_lines(client, path)
    assert {(r["customer_id"], r["customer_name"]) for r in await _csv_rows(client, path)} == {("old", "")}
    console = await _console(client, f"/console/invoices/{invoice['id']}")
    assert re.search(r"Bill to:?\s*(<[^>]+>)*\s*old\b", console), console
    await _verified(client)


async def test_a_customer_without_a_name_is_billed_by_its_id(client) -> None:
    await _customer_with_usage(client, "anon", None)
    invoice = await _close(client, "anon")
    assert invoice["customer_name"] is None
    _, facts = await _page_facts(client, f"/v1/invoices/{invoice['id']}")
    assert facts["Bill to"] == "anon", facts


async def test_a_name_with_markup_renders_as_text(client) -> None:
    name = '<script>alert("x")</script> & Sons'
    await _customer_with_usage(client, "marked", name)
    invoice = await _close(client, "marked")
    assert invoice["customer_name"] == name
    path = f"/v1/invoices/{invoice['id']}"
    page, facts = await _page_facts(client, path)
    assert "<script>" not in page and "&lt;script&gt;" in page and "&amp; Sons" in page
    assert facts["Bill to"] == f"{name} (marked)", facts  # the parser unescapes: the reader sees the name
    console = await _console(client, f"/console/invoices/{invoice['id']}")
    assert "<script>alert" not in console and "&lt;script&gt;alert" in console
    upcoming = await _console(client, "/console/customers/marked/invoices/upcoming")
    assert "<script>alert" not in upcoming and "&lt;script&gt;alert" in upcoming


async def test_a_name_a_spreadsheet_would_run_is_text_in_the_csv(client) -> None:
    await _customer_with_usage(client, "formula", "=HYPERLINK(\"http://example.invalid\")")
    invoice = await _close(client, "formula")
    rows = await _csv_rows(client, f"/v1/invoices/{invoice['id']}")
    assert {r["customer_name"] for r in rows} == {"'=HYPERLINK(\"http://example.invalid\")"}


@pytest.mark.skipif(renderings.unicode_font() is None or renderings.cjk_font() is None,
                    reason="no Unicode or no CJK TrueType font on this system (.ci/run installs both)")
async def test_the_pdf_prints_a_name_outside_latin_1_as_other_pdf_text(client) -> None:
    """Greek, Polish, Cyrillic print as written (Liberation Sans or DejaVu), and so does CJK, in
    the CJK font (without one it prints '?': tests/unit/test_invoice_pdf_text.py)."""
    await _customer_with_usage(client, "intl", "Ωmega Łódź ООО 株式会社")
    invoice = await _close(client, "intl")
    assert "Bill to Ωmega Łódź ООО 株式会社 (intl)" in await _pdf_lines(client, f"/v1/invoices/{invoice['id']}")


async def rerated_note(client) -> dict:
    """The current UTC month's model-a input re-rated from $10/M to $5/M (the seed book's v2): the
    re-rate's one credit note (of an invoice closed before)."""
    period = period_of(datetime.now(UTC), Cycle("UTC", None))
    start, end = (at.isoformat().replace("+00:00", "Z") for at in (period.start, period.end))
    fixed = {**SEED, "version": "v2", "effective_from": start,
             "rules": [{**r, "price": "5.00"} if r["id"] == "a-in" else r for r in SEED["rules"]]}
    assert (await client.post("/v1/price-books", headers=ADMIN, json=fixed)).status_code == 201
    applied = await client.post("/v1/rerate", headers=ADMIN, json={
        "price_book": "seed", "version": "v2", "from": start, "to": end, "mode": "apply"})
    assert applied.status_code == 200, applied.text
    [note] = applied.json()["credit_notes"]
    return note


async def test_a_credit_note_bills_the_customer_by_the_name_it_had_when_issued(client, scratch_url) -> None:
    await _customer_with_usage(client, "acme", "Acme Inc.")
    invoice = await _close(client, "acme")
    note = await rerated_note(client)
    assert note["invoice_id"] == invoice["id"]
    path = f"/v1/credit-notes/{note['id']}"
    document = (await client.get(path, headers=ADMIN)).json()
    assert (document["customer_id"], document["customer_name"]) == ("acme", "Acme Inc.")
    _rename(scratch_url, "acme", "Acme Renamed GmbH")
    assert (await client.get(path, headers=ADMIN)).json() == document
    _, facts = await _page_facts(client, path)
    assert facts["Bill to"] == "Acme Inc. (acme)", facts
    assert "Bill to Acme Inc. (acme)" in await _pdf_lines(client, path)
    listed = (await client.get("/v1/customers/acme/credit-notes", headers=ADMIN)).json()
    assert [n["customer_name"] for n in listed["credit_notes"]] == ["Acme Inc."]
    await _verified(client)


async def test_the_invoice_finalized_webhook_carries_the_name_as_issued(client, scratch_url) -> None:
    """`invoice.finalized` carried the invoice's id, number and money but not whom it bills: a
    receiver had to look the customer up, and got the name as it is now, not as invoiced. Its
    payload has the invoice's frozen `customer_name` (null for a customer without a name)."""
    await _customer_with_usage(client, "acme", "Acme Inc.")
    await _customer_with_usage(client, "anon", None)
    named, unnamed = await _close(client, "acme"), await _close(client, "anon")
    _rename(scratch_url, "acme", "Acme Renamed GmbH")
    with psycopg.connect(scratch_url) as conn:
        rows = conn.execute("SELECT payload FROM outbox WHERE topic = 'invoice.finalized' ORDER BY id").fetchall()
    payloads = {row[0]["invoice_id"]: row[0] for row in rows}
    assert payloads[named["id"]]["customer_name"] == "Acme Inc." == named["customer_name"]
    assert payloads[unnamed["id"]]["customer_name"] is None and unnamed["customer_name"] is None
    assert payloads[named["id"]]["amount_due"] == named["amount_due"]

"""A bidi control (U+202E right-to-left override and the like) in a customer-controlled string,
a customer's name, a model name, an event id, no longer reorders the text printed after it.
Before, "Bill to: \u202eEvil Corp (bidi)" read "Bill to: )idib( proC livE" in a browser: the
override ran on to the end of the paragraph, over the id and whatever followed. Now what such a
string opens is closed right after it (display only: the stored name is as sent), the console
prints it isolated (<bdi>), the PDF (fpdf2 draws text in its logical order, without reordering)
prints no control at all where it printed each as '?', and the CSV closes it in its own cell.

`_open_at` follows UAX #9's matching rules X1-X8 (PDF closes the last embedding or override
unless an isolate is open inside it; PDI closes its isolate and whatever opened inside it;
unmatched closers do nothing) to say what is still open at a position of a text."""
from __future__ import annotations

import csv
import io
import re

import pytest

from api import renderings
from tests.api.apps import api_client
from tests.api.test_invoice_bill_to import (
    ADMIN,
    Facts,
    _close,
    _console,
    _csv_rows,
    _customer_with_usage,
    _pdf_lines,
)
from tests.api.test_invoice_renderings import SEED

EMBEDDINGS = "\u202a\u202b\u202d\u202e"  # LRE RLE LRO RLO
ISOLATES = "\u2066\u2067\u2068"  # LRI RLI FSI
CONTROLS = EMBEDDINGS + ISOLATES + "\u202c\u2069"
NAMES = ["\u202eEvil Corp", "\u2067Evil Corp", "\u202bEvil \u202dCorp", "\u2069\u202eEvil Corp",
         "Evil\u202c\u202e Corp", "\u2068Evil\u202e Corp\u2069\u2069\u202e"]


def _open_at(text: str, end: int) -> list[str]:
    stack: list[str] = []
    for ch in text[:end]:
        if ch in EMBEDDINGS or ch in ISOLATES:
            stack.append(ch)
        elif ch == "\u202c" and stack and stack[-1] in EMBEDDINGS:
            stack.pop()
        elif ch == "\u2069" and any(c in ISOLATES for c in stack):
            while stack.pop() not in ISOLATES:
                pass
    return stack


def _visible(text: str) -> str:
    return "".join(ch for ch in text if ch not in CONTROLS)


@pytest.mark.parametrize("name", NAMES)
def test_bill_to_closes_what_the_name_opens_before_the_id(name):
    shown = renderings.bill_to({"customer_name": name, "customer_id": "acme"})
    assert shown.endswith(" (acme)")
    at = shown.rindex(" (acme)")
    assert _open_at(shown, at) == [], repr(shown)
    assert _visible(shown[:at]) == _visible(name)  # nothing of the name is lost


def test_a_line_s_model_closes_what_it_opens_before_its_unit():
    document = {"lines": [{"kind": "usage", "model": "\u202emodel-x", "token_type": "input",
                           "quantity": 1000, "unit_price": "1.00", "amount": "0.01"}]}
    [row] = renderings.rows(document)
    at = row.description.index(" input")
    assert _open_at(row.description, at) == [], repr(row.description)


@pytest.fixture
async def client(scratch_url):
    async with api_client(scratch_url, admin="billto-admin", books=[SEED]) as c:
        yield c


async def test_every_rendering_of_the_invoice_keeps_the_id_after_the_name_in_order(client):
    await _customer_with_usage(client, "bidi", "\u202eEvil Corp")
    invoice = await _close(client, "bidi")
    assert invoice["customer_name"] == "\u202eEvil Corp"  # the stored name is as sent
    path = f"/v1/invoices/{invoice['id']}"
    page = await client.get(path, headers={**ADMIN, "Accept": "text/html"})
    facts = Facts()
    facts.feed(page.text)
    shown = facts.facts["Bill to"]
    assert _open_at(shown, shown.rindex(" (bidi)")) == [], repr(shown)
    assert "Bill to Evil Corp (bidi)" in await _pdf_lines(client, path)  # no '?' for the control
    for row in await _csv_rows(client, path):
        assert all(_open_at(cell, len(cell)) == [] for cell in row.values()), row
    sheet = await client.get(path, headers={**ADMIN, "Accept": "text/csv"})
    for line in sheet.text.splitlines():  # read as text, no cell runs over into the next
        cells = next(csv.reader(io.StringIO(line)))
        assert _open_at(line, line.rindex(cells[-1])) == [], repr(line)
    console = await _console(client, f"/console/invoices/{invoice['id']}")
    bill = re.search(r"Bill to:?\s*(?:<[^>]+>)*\s*(.*?) \(bidi\)", console)
    assert bill and _open_at(bill.group(1), len(bill.group(1))) == [], console
    wallet = await _console(client, "/console/customers/bidi")
    assert re.search(r"<h1><bdi>\u202eEvil Corp\u202c</bdi></h1>", wallet), wallet


async def test_the_trace_page_isolates_an_event_id_and_a_model_in_its_sentence(client):
    await _customer_with_usage(client, "bidi2", None)
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[
        {"event_id": "\u202eevt-9", "customer_id": "bidi2", "model": "model-a",
         "timestamp": "2026-12-01T10:00:00Z", "usage": {"input_tokens": 10}}])
    assert sent.json()["accepted"] == 1, sent.text
    async with api_client(app=client.app, admin="billto-admin", signed_in=True) as browser:
        page = await browser.get("/console/audit/trace", params={"request_id": "\u202eevt-9"})
    assert page.status_code == 200, page.text
    sentence = re.search(r"<p data-usage-event>(.*?)</p>", page.text, re.S).group(1)
    assert "<bdi>\u202eevt-9\u202c</bdi>" in sentence, sentence
    assert _open_at(sentence, sentence.index(", model")) == [], sentence

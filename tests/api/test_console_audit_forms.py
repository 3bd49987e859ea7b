"""The journal's and the statement's filter forms: a filter the API refuses is said in the page,
beside the form as it was sent, so it can be corrected (not an error page that loses it)."""
from __future__ import annotations

import html
import json
import re
import uuid
from urllib.parse import urlencode

import psycopg
import pytest

from api.console import auditor
from ledger import offline
from tests.api.apps import api_client

ADMIN_KEY = "console-audit-forms-admin"


@pytest.fixture(scope="module")
async def console(database_url):
    async with api_client(database_url, admin=ADMIN_KEY, signed_in=True) as client:
        yield client


def _value(text: str, field: str) -> str:
    return re.search(rf'<input id="{field}" name="{field}"[^>]*? value="([^"]*)"', text).group(1)


@pytest.mark.parametrize(("query", "field", "message"), [
    ({"from": "2026-13-45", "customer": "acme", "kind": "settle"}, "from", "a date, YYYY-MM-DD"),
    ({"from": "2026-03-10", "to": "2026-03-01", "customer": "acme"}, "to", "must not be before from"),
])
async def test_a_refused_journal_filter_is_said_beside_the_form(console, query, field, message):
    page = await console.get("/console/audit/journal", params=query)
    assert page.status_code == 422
    assert re.search(rf'role="alert".*<strong>{field}</strong>: {message}', page.text, re.S), page.text
    for name, value in query.items():
        assert _value(page.text, name) == value
    assert "No entry matches" not in page.text


async def test_a_refused_statement_filter_is_said_beside_the_form(console):
    query = {"account": "platform:cash", "from": "not-a-day!"}
    page = await console.get("/console/audit/statement", params=query)
    assert page.status_code == 422
    assert re.search(r'role="alert".*<strong>from</strong>: a date, YYYY-MM-DD', page.text, re.S), page.text
    assert _value(page.text, "account") == "platform:cash" and _value(page.text, "from") == "not-a-day!"


async def test_an_unknown_account_is_said_beside_the_statement_form(console):
    page = await console.get("/console/audit/statement", params={"account": "liability:customer:nobody:reserved"})
    assert page.status_code == 404
    assert re.search(r'role="alert".*no account by that code', page.text, re.S)
    assert _value(page.text, "account") == "liability:customer:nobody:reserved"


async def test_a_later_statement_page_links_back_to_the_first(console, monkeypatch):
    """A statement's second page had a Next page link and no way back to the first page (the
    journal's pages have one)."""
    monkeypatch.setattr(auditor, "JOURNAL_PAGE", 1)
    customer = f"stmt-{uuid.uuid4().hex[:8]}"
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert (await console.post("/v1/customers", headers=admin, json={"id": customer})).status_code == 201
    for n in range(3):
        topped = await console.post(f"/v1/customers/{customer}/topups", json={"amount": "1.00"},
                                    headers={**admin, "Idempotency-Key": f"{customer}-{n}"})
        assert topped.status_code == 201
    query = {"account": "asset:platform:cash:USD", "from": "2026-01-01"}
    first = await console.get("/console/audit/statement", params=query)
    assert first.status_code == 200 and "First page" not in first.text
    second = await console.get(html.unescape(re.search(r'<a href="([^"]+)" rel="next">', first.text).group(1)))
    assert second.status_code == 200
    back = re.search(r'<a href="([^"]+)">First page</a>', second.text)
    assert back is not None and html.unescape(back.group(1)) == "/console/audit/statement?" + urlencode(
        {**query, "to": ""})


async def test_the_journal_says_the_order_it_lists_entries_in(console):
    """The journal lists entries by when they occurred, then by id (a usage event may carry a time
    earlier than entries recorded before it): the caption said "Entries in id order"."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    customer = f"order-{uuid.uuid4().hex[:8]}"
    assert (await console.post("/v1/customers", headers=admin, json={"id": customer})).status_code == 201
    for n in range(2):
        topped = await console.post(f"/v1/customers/{customer}/topups", json={"amount": "1.00"},
                                    headers={**admin, "Idempotency-Key": f"{customer}-{n}"})
        assert topped.status_code == 201
    page = await console.get("/console/audit/journal", params={"customer": customer})
    assert page.status_code == 200
    assert "in time order (when each occurred, then by id)" in page.text and "in id order" not in page.text


@pytest.mark.parametrize(("query", "field", "message"), [
    ({"format": "jsonl", "from": "2026-13-45", "to": ""}, "from", "a date, YYYY-MM-DD"),
    ({"format": "csv", "from": "2026-03-10", "to": "2026-03-01"}, "to", "must not be before from"),
    ({"format": "xml", "from": "", "to": ""}, "format", "beancount, csv or jsonl"),
])
async def test_a_refused_export_is_said_beside_its_form(console, query, field, message):
    """The export's form answered a refused filter with a bare error page, the form gone."""
    page = await console.get("/console/audit/export/download", params=query)
    assert page.status_code == 422 and page.headers["content-type"].startswith("text/html")
    assert re.search(rf'role="alert".*<strong>{field}</strong>: {message}', page.text, re.S), page.text
    assert _value(page.text, "from") == query["from"] and _value(page.text, "to") == query["to"]
    assert "Content-Disposition" not in page.headers


async def test_an_empty_window_downloads_as_the_journal_and_the_command_take_it(console):
    """From and to the same day (`to` is "Before": [March 10th, March 10th), no day) was refused
    beside the form, 'to: after the first day', where GET /v1/journal answers that window 200 with no
    entry and `tokentill audit export --from T --to T` writes an export of none (0e23f73). Now the
    download is that export: JSON lines of a header, the accounts, no entry and no seal, and the
    end record (0, 0, 0),
    which verifies offline; a day before the first is still refused, in the API's words."""
    window = {"from": "2026-03-10T00:00:00Z", "to": "2026-03-10T00:00:00Z"}
    journal = await console.get("/v1/journal", params=window, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert (journal.status_code, journal.json()["entries"]) == (200, []), journal.text  # guard: the API's answer
    download = await console.get("/console/audit/export/download",
                                 params={"format": "jsonl", "from": "2026-03-10", "to": "2026-03-10"})
    assert download.status_code == 200, download.text
    assert download.headers["content-disposition"] == \
        'attachment; filename="tokentill-journal-2026-03-10-to-2026-03-10.jsonl"'
    records = [json.loads(line) for line in download.text.splitlines()]
    kinds = [r["type"] for r in records]
    assert (kinds[0], kinds[-1], {"entry", "seal"} & set(kinds)) == ("export", "end", set()), kinds  # the accounts'
    assert (records[0]["whole"], records[0]["from"], records[0]["to"]) == (False, *["2026-03-10T00:00:00.000000Z"] * 2)
    assert records[-1] == {"type": "end", "entries": 0, "seals": 0, "unsealed": 0, "payers": 0}
    report = offline.verify_lines(download.content.splitlines())
    assert (report.ok, report.entries, report.seals) == (True, 0, 0), report.problems


@pytest.mark.parametrize(("fmt", "media"), [("beancount", "text/plain; charset=utf-8"),
                                            ("csv", "text/csv; charset=utf-8"),
                                            ("jsonl", "application/jsonl; charset=utf-8")])
async def test_an_export_download_says_its_charset_once(console, fmt, media):
    """A text export read `text/csv; charset=utf-8; charset=utf-8` (Litestar adds a charset to a
    text/ media type that has one): a duplicate parameter, which strict parsers refuse."""
    download = await console.get("/console/audit/export/download", params={"format": fmt, "from": "", "to": ""})
    assert download.status_code == 200
    assert download.headers["content-type"] == media


# Two lossy codes that both sanitize to `Assets:X` and 18 dashes and whose sha256 both begin
# 9045347d (tests/unit/ledger/test_export_names.py): their Beancount names would be one.
CLASH = ("asset:.___.___...._.____", "asset:.._._.._.___...._.")


async def test_a_beancount_export_whose_account_names_clash_is_refused_before_any_byte(scratch_url):
    """The export refuses two accounts that would share a Beancount name, but the download had
    begun: the browser got 200 with the file's headers and then an empty, unfinished file. The
    refusal now comes before the download, beside the form (409); csv still downloads."""
    async with api_client(scratch_url, admin="export-clash-admin", signed_in=True) as console:
        admin = {"Authorization": "Bearer export-clash-admin"}
        assert (await console.post("/v1/customers", headers=admin, json={"id": "clash"})).status_code == 201
        async with await psycopg.AsyncConnection.connect(scratch_url, autocommit=True) as conn:
            for code in CLASH:
                await conn.execute("INSERT INTO accounts (code, type, asset) VALUES (%s, 'asset', 'USD')", (code,))
        query = {"format": "beancount", "from": "2026-03-01", "to": ""}
        page = await console.get("/console/audit/export/download", params=query)
        assert page.status_code == 409 and page.headers["content-type"].startswith("text/html")
        assert "Content-Disposition" not in page.headers
        alert = html.unescape(re.search(r'<div class="notice bad" role="alert">(.*?)</div>', page.text, re.S).group(1))
        name = "Assets:X" + "-" * 18 + "--9045347d"
        assert alert.startswith("Nothing exported: ") and f"would share the Beancount name {name!r}" in alert
        assert all(repr(code) in alert for code in CLASH)
        assert _value(page.text, "from") == "2026-03-01"
        assert re.search(r'<option value="beancount" selected>', page.text)
        csv_download = await console.get("/console/audit/export/download", params={**query, "format": "csv"})
        assert csv_download.status_code == 200 and "Content-Disposition" in csv_download.headers


@pytest.mark.parametrize("customer_id", ["bad$$id", "a" * 101, "acme\n", "a" * 129])
async def test_a_traced_customer_id_that_cannot_be_an_id_is_said_beside_the_form(console, customer_id):
    """The trace's customer_id takes what `GET /v1/audit/charges/{id}?customer_id=` takes: a
    customer's id (`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`, all of it: 1 + 99 characters at most).
    The console capped it at 128 characters alone: `bad$$id`, 101 a's and `acme` with a trailing
    newline were looked up, 404 "no reservation or usage event r-1" (under a name no customer can
    have), and 129 a's an error page that lost the form. Now each is 422, said beside the form as
    it was sent, naming customer_id."""
    page = await console.get("/console/audit/trace", params={"request_id": "r-1", "customer_id": customer_id})
    assert page.status_code == 422, page.text
    assert re.search(r'role="alert".*<strong>customer_id</strong>: must match the pattern', page.text, re.S), page.text
    assert _value(page.text, "request_id") == "r-1"
    assert html.unescape(_value(page.text, "customer_id")) == customer_id


@pytest.mark.parametrize(("field", "value"), [("customer", "bad$$id"), ("customer", "acme\n"), ("kind", "topup\n")])
async def test_a_journal_filter_the_api_would_refuse_is_said_beside_the_form(console, field, value):
    """The journal page calls the API's route function itself, past the request guard that holds
    the query patterns to all of a value: a customer `bad$$id` (or `acme` and a newline) and a
    kind `topup` and a newline were looked up, 200 "No entry matches", where `GET /v1/journal`
    answers 422 naming the field. Now 422 beside the form, naming it."""
    page = await console.get("/console/audit/journal", params={field: value})
    assert page.status_code == 422, page.text
    assert re.search(rf'role="alert".*<strong>{field}</strong>: must match the pattern', page.text, re.S), page.text
    assert "No entry matches" not in page.text

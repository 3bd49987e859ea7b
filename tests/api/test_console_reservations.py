"""The console's open reservations: every one reachable a page at a time, and what each still
holds after partial captures."""
from __future__ import annotations

import html
import re
import uuid
from datetime import datetime, timedelta

import pytest

from api.console import customer as console_customer
from api.demo import PRICE_BOOK
from tests.api.apps import api_client, sign_in

ADMIN_KEY = "console-reservations-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ROW = re.compile(r'<tr data-reservation="([^"]+)">(.*?)</tr>', re.S)
MORE = re.compile(r'<a[^>]*rel="next"[^>]*href="([^"]+)"|<a[^>]*href="([^"]+)"[^>]*rel="next"')


@pytest.fixture(scope="module")
async def console(database_url):
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        book = f"rbook-{uuid.uuid4().hex[:8]}"
        assert (await client.post("/v1/price-books", headers=ADMIN, json={**PRICE_BOOK, "id": book})).status_code == 201
        await sign_in(client, ADMIN_KEY)
        yield client, book


async def _customer(client, book: str, credit: str) -> str:
    customer = f"holds-{uuid.uuid4().hex[:8]}"
    assert (await client.post("/v1/customers", headers=ADMIN,
                              json={"id": customer, "price_book": book})).status_code == 201
    topped = await client.post(f"/v1/customers/{customer}/topups", headers={**ADMIN, "Idempotency-Key": customer},
                               json={"amount": credit, "reference": "test"})
    assert topped.status_code in (200, 201), topped.text
    return customer


async def _hold(client, customer: str, request_id: str, amount: str) -> str:
    held = await client.post("/v1/reservations", headers=ADMIN, json={
        "customer_id": customer, "request_id": request_id, "model": "model-a", "ttl_seconds": 3600,
        "amount": amount})
    assert held.status_code == 201, held.text
    return held.json()["id"]


def _rows(text: str) -> dict[str, str]:
    return {rid: cells for rid, cells in ROW.findall(text)}


def _next(text: str) -> str | None:
    found = MORE.search(text)
    return None if found is None else html.unescape(found.group(1) or found.group(2))


async def test_every_open_reservation_is_reachable_a_page_at_a_time(console):
    """A customer with more open holds than a page: the pages list each exactly once, newest
    first, and the last has no next link. The page listed the newest 200 and no more."""
    client, book = console
    customer = await _customer(client, book, "1000.00")
    ids = [await _hold(client, customer, f"req-{n:04d}", "0.01") for n in range(230)]
    seen: list[str] = []
    url: str | None = f"/console/customers/{customer}/reservations"
    pages = 0
    while url is not None:
        page = await client.get(url)
        assert page.status_code == 200, page.text
        rows = list(_rows(page.text))
        assert 0 < len(rows) <= console_customer.RESERVATIONS_PAGE
        seen += rows
        url = _next(page.text)
        pages += 1
        assert pages <= 10
    assert len(seen) == len(set(seen)) == 230
    assert seen == list(reversed(ids))  # created one after another: newest first
    assert pages == -(-230 // console_customer.RESERVATIONS_PAGE)


async def test_a_cursor_that_is_not_ours_is_a_400_page_not_the_first_page(console):
    client, book = console
    customer = await _customer(client, book, "10.00")
    page = await client.get(f"/console/customers/{customer}/reservations", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert page.status_code == 400
    assert "invalid_cursor" in page.text


async def test_a_cursor_of_another_customer_is_refused(console):
    client, book = console
    first, second = await _customer(client, book, "10.00"), await _customer(client, book, "10.00")
    for n in range(console_customer.RESERVATIONS_PAGE + 1):
        await _hold(client, first, f"r-{n}", "0.01")
    more = _next((await client.get(f"/console/customers/{first}/reservations")).text)
    assert more is not None
    cursor = re.search(r"cursor=([^&]+)", more).group(1)
    other = await client.get(f"/console/customers/{second}/reservations", params={"cursor": cursor})
    assert other.status_code == 400 and "invalid_cursor" in other.text


async def test_the_held_column_shows_what_remains_held_after_partial_captures(console):
    """A 1.00 hold that captured 0.11 (10,000 input tokens and the call) still holds 0.89: the
    page said Held 1.00, as if nothing had been captured."""
    client, book = console
    customer = await _customer(client, book, "10.00")
    reservation = await _hold(client, customer, "partial", "1.00")
    captured = await client.post(f"/v1/reservations/{reservation}/settle", headers=ADMIN,
                                 json={"usage": {"input_tokens": 10_000, "output_tokens": 0}, "final": False})
    assert captured.status_code == 200, captured.text
    assert captured.json()["status"] == "capturing" and captured.json()["charged"] == "0.11"
    for url in (f"/console/customers/{customer}/reservations", f"/console/customers/{customer}"):
        page = await client.get(url)
        cells = re.findall(r'data-figure="([^"]+)"[^>]*>([^<]*)<', _rows(page.text)[reservation])
        assert dict(cells) == {"still-held": "0.89", "original-hold": "1.00", "captured": "0.11"}, cells
    wallet = (await client.get(f"/v1/customers/{customer}/wallet", headers=ADMIN)).json()
    assert wallet["reserved"] == "0.89"


async def test_the_charge_trace_says_what_a_partly_captured_reservation_still_holds(console):
    """The trace of an open reservation read "held 1.00, charged 0.11, released 0.00" after a
    partial capture, as if 1.00 were still held."""
    client, book = console
    customer = await _customer(client, book, "10.00")
    reservation = await _hold(client, customer, "traced-partial", "1.00")
    captured = await client.post(f"/v1/reservations/{reservation}/settle", headers=ADMIN,
                                 json={"usage": {"input_tokens": 10_000, "output_tokens": 0}, "final": False})
    assert captured.status_code == 200, captured.text
    page = await client.get("/console/audit/trace", params={"request_id": "traced-partial", "customer_id": customer})
    assert page.status_code == 200
    figures = dict(re.findall(r'data-figure="([^"]+)"[^>]*>([^<]*)<', page.text))
    assert figures == {"original-hold": "1.00", "captured": "0.11", "released": "0.00", "still-held": "0.89",
                       "charged": "0.11"}, figures


async def test_the_charge_trace_of_a_hold_past_its_expiry_says_what_it_still_holds_until_the_job(console):
    """Past its expires_at a reservation reads `expired` (3ec7ad7) while its hold stays reserved
    until the expiry job gives it back; the trace said still held 0.00 (captured 0.11, released
    0.00 of a 1.00 hold: figures that did not add up, 0.89 in the reserved account)."""
    client, book = console
    customer = await _customer(client, book, "10.00")
    reservation = await _hold(client, customer, "traced-expired", "1.00")
    captured = await client.post(f"/v1/reservations/{reservation}/settle", headers=ADMIN,
                                 json={"usage": {"input_tokens": 10_000, "output_tokens": 0}, "final": False})
    assert captured.status_code == 200, captured.text
    view = (await client.get(f"/v1/reservations/{reservation}", headers=ADMIN)).json()
    wallets = client.app.state.services.wallets
    clocks = wallets.clock, wallets.engine.clock
    later = datetime.fromisoformat(view["expires_at"].replace("Z", "+00:00")) + timedelta(seconds=1)
    wallets.clock = wallets.engine.clock = lambda: later
    try:
        page = await client.get("/console/audit/trace", params={"request_id": "traced-expired",
                                                                "customer_id": customer})
    finally:
        wallets.clock, wallets.engine.clock = clocks
    assert page.status_code == 200
    assert 'class="badge">expired<' in page.text
    figures = dict(re.findall(r'data-figure="([^"]+)"[^>]*>([^<]*)<', page.text))
    assert figures == {"original-hold": "1.00", "captured": "0.11", "released": "0.00", "still-held": "0.89",
                       "charged": "0.11"}, figures

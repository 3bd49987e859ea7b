"""The console's top-up form (admins): a refused form never reads as a recorded top-up, and a
corrected form goes through."""
from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from api.demo import PRICE_BOOK
from tests.api.apps import api_client, sign_in

ADMIN_KEY = "console-top-up-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _field(html: str, name: str) -> str:
    return re.search(rf'name="{name}"[^>]*? value="([^"]*)"', html).group(1)


@pytest.fixture(scope="module")
async def console(database_url):
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        book = f"tbook-{uuid.uuid4().hex[:8]}"
        assert (await client.post("/v1/price-books", headers=ADMIN, json={**PRICE_BOOK, "id": book})).status_code == 201
        token = await sign_in(client, ADMIN_KEY)
        yield client, book, token


async def _customer(client, book: str) -> str:
    customer = f"topup-{uuid.uuid4().hex[:8]}"
    created = await client.post("/v1/customers", headers=ADMIN, json={"id": customer, "price_book": book})
    assert created.status_code == 201
    return customer


async def _lots(client, customer: str) -> list[dict]:
    return (await client.get(f"/v1/customers/{customer}/wallet", headers=ADMIN)).json()["grants"]


async def test_a_refused_top_up_sent_again_is_refused_again_not_reported_as_recorded(console):
    """The form sent twice (a reload, a double click) after the first was refused (an expiry in
    the past): the second is a replay of the refusal. It redirected to the wallet with
    "Top-up recorded: lot None" while nothing was recorded."""
    client, book, token = console
    customer = await _customer(client, book)
    form = await client.get(f"/console/customers/{customer}/top-up")
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    sent = {"_csrf_token": token, "idempotency_key": _field(form.text, "idempotency_key"), "amount": "25.00",
            "reference": "wire 7", "priority": "100", "expires_on": yesterday}
    for _ in range(2):
        answer = await client.post(f"/console/customers/{customer}/top-up", data=sent, follow_redirects=False)
        assert answer.status_code == 422, (answer.status_code, answer.headers.get("location"))
        assert "The top-up was not recorded" in answer.text and "must be in the future" in answer.text
        assert "Top-up recorded" not in answer.text
    assert await _lots(client, customer) == []


async def test_a_refused_top_up_corrected_and_sent_again_is_recorded_once(console):
    """After a refusal the form comes back with the admin's values and a new one-time key: the
    corrected form is a new top-up. It came back with the refused form's key, so the corrected
    form was refused as "Idempotency-Key … was used with another request" until a reload."""
    client, book, token = console
    customer = await _customer(client, book)
    form = await client.get(f"/console/customers/{customer}/top-up")
    first = _field(form.text, "idempotency_key")
    sent = {"_csrf_token": token, "idempotency_key": first, "amount": "25.00", "reference": "wire 8",
            "priority": "100", "expires_on": (datetime.now(UTC) - timedelta(days=1)).date().isoformat()}
    refused = await client.post(f"/console/customers/{customer}/top-up", data=sent, follow_redirects=False)
    assert refused.status_code == 422
    assert _field(refused.text, "amount") == "25.00" and _field(refused.text, "reference") == "wire 8"
    again = _field(refused.text, "idempotency_key")
    assert again != first
    corrected = {**sent, "idempotency_key": again, "expires_on": ""}
    for _ in range(2):  # a double click: one top-up
        done = await client.post(f"/console/customers/{customer}/top-up", data=corrected, follow_redirects=False)
        assert done.status_code == 303, done.text[:500]
    lots = await _lots(client, customer)
    assert [(lot["kind"], lot["granted"], lot["reference"]) for lot in lots] == [("topup", "25.00", "wire 8")]
    assert done.headers["location"] == f"/console/customers/{customer}?credited={lots[0]['id']}"


async def test_the_wallet_confirms_only_a_top_up_that_is_one_of_the_customers_lots(console):
    """`?credited=` on the wallet page said "Top-up recorded: lot X" for any X: a link could
    tell an admin a top-up was recorded when none was."""
    client, book, token = console
    customer = await _customer(client, book)
    forged = await client.get(f"/console/customers/{customer}?credited=lot_paid_in_full")
    assert forged.status_code == 200 and "Top-up recorded" not in forged.text
    form = await client.get(f"/console/customers/{customer}/top-up")
    done = await client.post(f"/console/customers/{customer}/top-up", follow_redirects=False, data={
        "_csrf_token": token, "idempotency_key": _field(form.text, "idempotency_key"), "amount": "3.50",
        "reference": "", "priority": "100", "expires_on": ""})
    lot = (await _lots(client, customer))[0]["id"]
    shown = await client.get(done.headers["location"])
    assert f"Top-up recorded: lot <code>{lot}</code>" in shown.text
    other = await _customer(client, book)  # another customer's lot is not this wallet's top-up
    assert "Top-up recorded" not in (await client.get(f"/console/customers/{other}?credited={lot}")).text


async def test_a_top_up_that_only_paid_what_was_owed_is_confirmed_too(console):
    """A prepaid customer's top-up first pays what is owed: a top-up of exactly that leaves an
    empty lot, which the wallet no longer lists; the page still confirms it."""
    client, book, token = console
    customer = await _customer(client, book)
    used = await client.post("/v1/usage-events", headers=ADMIN, json=[{
        "event_id": f"owed-{customer}", "customer_id": customer, "model": "model-a",
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "usage": {"input_tokens": 1000}}])
    assert used.status_code == 200, used.text
    owed = (await client.get(f"/v1/customers/{customer}/wallet", headers=ADMIN)).json()["receivable"]
    assert owed != "0.00"
    form = await client.get(f"/console/customers/{customer}/top-up")
    done = await client.post(f"/console/customers/{customer}/top-up", follow_redirects=False, data={
        "_csrf_token": token, "idempotency_key": _field(form.text, "idempotency_key"), "amount": owed,
        "reference": "", "priority": "100", "expires_on": ""})
    assert done.status_code == 303
    wallet = (await client.get(f"/v1/customers/{customer}/wallet", headers=ADMIN)).json()
    assert wallet["receivable"] == "0.00" and wallet["grants"] == []
    lot = done.headers["location"].partition("credited=")[2]
    assert f"Top-up recorded: lot <code>{lot}</code>" in (await client.get(done.headers["location"])).text


async def test_a_reference_longer_than_the_api_takes_is_refused_not_cut(console):
    """A 600-character payment reference (the API refuses one over 500): the form recorded the
    top-up with its first 500 characters, so the lot no longer matched the bank's reference."""
    client, book, token = console
    customer = await _customer(client, book)
    form = await client.get(f"/console/customers/{customer}/top-up")
    reference = "wire " + "7" * 595
    answer = await client.post(f"/console/customers/{customer}/top-up", follow_redirects=False, data={
        "_csrf_token": token, "idempotency_key": _field(form.text, "idempotency_key"), "amount": "5.00",
        "reference": reference, "priority": "100", "expires_on": ""})
    assert answer.status_code == 422, answer.headers.get("location")
    assert "The top-up was not recorded" in answer.text
    assert "<strong>Payment reference</strong>: at most 500 characters" in answer.text
    assert _field(answer.text, "reference") == reference  # given back whole, to correct
    assert await _lots(client, customer) == []


@pytest.mark.parametrize("priority", ["٧", "+7", " 7", "7_0", "101", "9" * 5000])
async def test_a_priority_that_is_not_plain_digits_is_refused(console, priority):
    """Python's int() reads "٧" (an Arabic-Indic seven), "+7", " 7" and "7_0" as numbers: the form
    recorded top-ups at priorities 7 and 70 that no one typed as such."""
    client, book, token = console
    customer = await _customer(client, book)
    form = await client.get(f"/console/customers/{customer}/top-up")
    answer = await client.post(f"/console/customers/{customer}/top-up", follow_redirects=False, data={
        "_csrf_token": token, "idempotency_key": _field(form.text, "idempotency_key"), "amount": "5.00",
        "reference": "", "priority": priority, "expires_on": ""})
    assert answer.status_code == 422, answer.headers.get("location")
    assert "<strong>Priority</strong>: a whole number from 0 to 100" in answer.text
    assert await _lots(client, customer) == []


@pytest.mark.parametrize(("currency", "example", "decimals"), [
    ("USD", "100.00", "at most 2 decimals"), ("JPY", "100", "no decimals"), ("KWD", "100.000", "at most 3 decimals")])
async def test_the_amount_hint_shows_an_example_with_the_currencys_own_decimals(console, currency, example, decimals):
    """The hint read "A decimal such as 100.00" for every currency: for a yen wallet (no minor
    unit) it suggested decimals the invoices never show, for a dinar one too few (KWD has 3).
    It then said "at most 9 decimals" for every currency, while a top-up is cash, refused finer
    than the currency's minor unit ("USD amounts have 2 decimals: 10.001")."""
    client, _, _ = console
    book = f"hint-{currency.lower()}-{uuid.uuid4().hex[:8]}"
    assert (await client.post("/v1/price-books", headers=ADMIN, json={
        "id": book, "currency": currency, "effective_from": "2026-01-01T00:00:00Z",
        "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "1"}]})).status_code == 201
    customer = f"hint-{uuid.uuid4().hex[:8]}"
    assert (await client.post("/v1/customers", headers=ADMIN, json={
        "id": customer, "currency": currency, "price_book": book})).status_code == 201
    form = await client.get(f"/console/customers/{customer}/top-up")
    assert form.status_code == 200
    hint = re.search(r'<span class="hint" id="amount-hint">([^<]*)</span>', form.text).group(1)
    assert hint == f"An amount such as {example}; {decimals}.", hint


@pytest.mark.parametrize(("field", "value", "label"), [("reference", "wire\x007", "Payment reference"),
                                                      ("idempotency_key", "abc\x00defghij", "Form key")])
async def test_a_nul_in_a_field_is_refused_on_the_form_before_the_wallet_sees_it(console, field, value, label):
    """A U+0000 in the payment reference (pasted from a bank export) or the form's key went on to
    the wallet's batch, which PostgreSQL refused: the admin got a bare error page ("a value in the
    request cannot be stored", field `body`) instead of the form with what was typed, and the
    batch's other commands (other customers' charges and top-ups) failed with it. The API refuses
    such a body before the wallet sees it; the form now does too."""
    client, book, token = console
    customer = await _customer(client, book)
    form = await client.get(f"/console/customers/{customer}/top-up")
    sent = {"_csrf_token": token, "idempotency_key": _field(form.text, "idempotency_key"), "amount": "5.00",
            "reference": "wire 7", "priority": "100", "expires_on": "", field: value}
    answer = await client.post(f"/console/customers/{customer}/top-up", follow_redirects=False, data=sent)
    assert answer.status_code == 422, answer.headers.get("location")
    assert "The top-up was not recorded" in answer.text
    assert f"<strong>{label}</strong>: must not contain U+0000 (NUL)" in answer.text
    assert _field(answer.text, "amount") == "5.00"
    assert await _lots(client, customer) == []


def _described(html: str, field: str) -> str:
    """The text of what the field's aria-describedby names, ids in order, joined."""
    tag = re.search(rf'<input id="{field}"[^>]*>', html).group(0)
    ids = re.search(r'aria-describedby="([^"]*)"', tag)
    texts = []
    for name in (ids.group(1).split() if ids else []):
        found = re.search(rf'id="{name}"[^>]*>([^<]*)<', html)
        texts.append(found.group(1) if found else "")
    return " ".join(texts)


@pytest.mark.parametrize(("sent", "field", "label", "said"), [
    ({"expires_on": "2020-01-01"}, "expires_on", "Expires on", "must be in the future"),
    ({"amount": "10.001"}, "amount", "Amount", "USD amounts have 2 decimals: 10.001"),
    ({"priority": "101"}, "priority", "Priority", "a whole number from 0 to 100"),
])
async def test_a_refusal_names_the_field_as_the_form_labels_it_and_is_read_with_the_field(
        console, sent, field, label, said):
    """An expiry in the past was refused as "expires_at: must be in the future": a field the
    form does not have (it asks "Expires on"), and a screen reader on the field heard nothing of
    why it was invalid (aria-invalid, no description). The notice now names the label and each
    field is described by its own message."""
    client, book, token = console
    customer = await _customer(client, book)
    form = await client.get(f"/console/customers/{customer}/top-up")
    answer = await client.post(f"/console/customers/{customer}/top-up", follow_redirects=False, data={
        "_csrf_token": token, "idempotency_key": _field(form.text, "idempotency_key"), "amount": "5.00",
        "reference": "", "priority": "100", "expires_on": "", **sent})
    assert answer.status_code == 422
    notice = re.search(r'<div class="notice bad" role="alert">(.*?)</div>', answer.text, re.S).group(1)
    assert f"<strong>{label}</strong>: {said}" in notice, notice
    assert "expires_at" not in notice
    assert said in _described(answer.text, field), _described(answer.text, field)
    assert await _lots(client, customer) == []


@pytest.mark.parametrize("amount", ["", "-5", "abc", "1e3", "10,50", "2000000000"])
async def test_an_amount_that_is_not_one_is_refused_in_the_currencys_terms(console, amount):
    """An amount that is no amount at all was refused with the API's general wording, "a decimal
    string, such as "10.00": at most 1000000000, with at most 9 decimals", beside a hint saying
    "at most 2 decimals": a dollar top-up with 9 decimals is refused too (cash)."""
    client, book, token = console
    customer = await _customer(client, book)
    form = await client.get(f"/console/customers/{customer}/top-up")
    answer = await client.post(f"/console/customers/{customer}/top-up", follow_redirects=False, data={
        "_csrf_token": token, "idempotency_key": _field(form.text, "idempotency_key"), "amount": amount,
        "reference": "", "priority": "100", "expires_on": ""})
    assert answer.status_code == 422
    notice = re.search(r'<div class="notice bad" role="alert">(.*?)</div>', answer.text, re.S).group(1)
    assert "<strong>Amount</strong>: an amount more than 0 and at most 1000000000, such as 100.00, " \
           "at most 2 decimals" in notice, notice
    assert "9 decimals" not in notice
    assert _field(answer.text, "amount") == amount
    assert await _lots(client, customer) == []


async def test_a_form_refused_or_not_found_under_its_key_is_decided_again_when_sent_again(console):
    """Guard (the rules of README, Idempotency, for the console's one-time key): a form is refused,
    or its customer is not found, and nothing is kept under its key; the form sent again under the
    same key (the browser's back button) is decided again. Customer c does not exist yet: the form
    (25.00, no expiry) under key k1 is 404 (the console reads the customer before the form: its
    currency says what an amount may be). Once c exists, the same form under k1 is recorded: 303 to
    the wallet, one lot of 25.00; again under k1, the same 303 (a replay, nothing more credited).
    Under k2, 25.001 (three decimals, USD has 2): 422 twice, nothing recorded; 1.00 under k2 is
    recorded. Worked by hand: lots 25.00 and 1.00, 26.00 available."""
    client, book, token = console
    customer = f"topup-{uuid.uuid4().hex[:8]}"
    first = {"_csrf_token": token, "idempotency_key": f"k1-{uuid.uuid4().hex[:10]}", "amount": "25.00",
             "reference": "", "priority": "100", "expires_on": ""}
    url = f"/console/customers/{customer}/top-up"
    missing = await client.post(url, data=first, follow_redirects=False)
    assert missing.status_code == 404, missing.text[:300]
    created = await client.post("/v1/customers", headers=ADMIN, json={"id": customer, "price_book": book})
    assert created.status_code == 201, created.text
    done = await client.post(url, data=first, follow_redirects=False)
    assert done.status_code == 303, done.text[:500]
    again = await client.post(url, data=first, follow_redirects=False)
    assert (again.status_code, again.headers["location"]) == (303, done.headers["location"])
    finer = {**first, "idempotency_key": f"k2-{uuid.uuid4().hex[:10]}", "amount": "25.001"}
    for _ in range(2):
        refused = await client.post(url, data=finer, follow_redirects=False)
        assert refused.status_code == 422, (refused.status_code, refused.headers.get("location"))
        assert "The top-up was not recorded" in refused.text and "Top-up recorded" not in refused.text
    corrected = await client.post(url, data={**finer, "amount": "1.00"}, follow_redirects=False)
    assert corrected.status_code == 303, corrected.text[:500]
    assert sorted(lot["granted"] for lot in await _lots(client, customer)) == ["1.00", "25.00"]
    wallet = (await client.get(f"/v1/customers/{customer}/wallet", headers=ADMIN)).json()
    assert wallet["available"] == "26.00"

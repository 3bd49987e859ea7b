"""The auditor's journal over HTTP: filters, cursor pages, seal status, statements, balances at T,
and what keys limited to customers may read. Worked amounts: a $10.00 top-up, a $1.00 hold, a
settle of 1,000 input and 500 output tokens of model-a ($0.01 + $0.01 + $0.01 a call = $0.03)."""
from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from litestar.testing import AsyncTestClient

from ledger.db import connect
from tests.api.apps import api_client
from wallets.jobs import seal_journal

ADMIN = {"Authorization": "Bearer journal-admin"}
BOOK = {"id": "journal-book", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"},
    {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
    {"id": "call", "token_type": "request", "price": "0.01"},
]}
FAR_FUTURE = "9000-01-01T00:00:00Z"


@pytest.fixture(scope="module")
async def client(database_url: str) -> AsyncIterator[AsyncTestClient]:
    async with api_client(database_url, admin="journal-admin", send_admin=True) as c:
        await c.post("/v1/price-books", json=BOOK)
        yield c


async def _lifecycle(client: AsyncTestClient) -> dict[str, str]:
    """A customer with a top-up, and one reservation settled: three entries."""
    customer, request_id = f"jr-{uuid.uuid4().hex[:10]}", f"req-{uuid.uuid4().hex[:8]}"
    assert (await client.post("/v1/customers", json={"id": customer, "currency": "USD",
                                                     "price_book": "journal-book"})).status_code == 201
    topup = (await client.post(f"/v1/customers/{customer}/topups", json={"amount": "10.00"})).json()
    held = (await client.post("/v1/reservations", json={
        "customer_id": customer, "request_id": request_id, "model": "model-a", "amount": "1.00"})).json()
    settled = await client.post(f"/v1/reservations/{held['id']}/settle",
                                json={"usage": {"input_tokens": 1000, "output_tokens": 500}})
    assert settled.json()["charged"] == "0.03", settled.text
    lot = f"liability:customer:{customer}:lot:{topup['grant_id']}"
    return {"customer": customer, "request_id": request_id, "lot": lot}


async def _key(client: AsyncTestClient, scope: str, customers: list[str] = ()) -> dict[str, str]:
    created = (await client.post("/v1/api-keys", json={"scope": scope, "customers": list(customers)})).json()
    return {"Authorization": f"Bearer {created['key']}"}


async def _all_pages(client: AsyncTestClient, path: str, params: dict, headers=None, field="entries") -> list:
    items, cursor = [], None
    while True:
        page = await client.get(path, params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        items += body[field]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


async def test_a_customers_journal_lists_its_entries_in_order_with_balanced_postings(client):
    c = await _lifecycle(client)
    page = (await client.get("/v1/journal", params={"customer": c["customer"]})).json()
    entries = page["entries"]
    assert [e["kind"] for e in entries] == ["topup", "reserve", "settle"]
    order = [(datetime.fromisoformat(e["occurred_at"]), e["id"]) for e in entries]
    assert order == sorted(order)
    assert page["next_cursor"] is None
    topup = entries[0]
    assert {p["account"]: p["amount"] for p in topup["postings"]} == {
        "asset:platform:cash:USD": "10.00", c["lot"]: "-10.00"}
    settle = entries[2]
    amounts = {p["account"]: p["amount"] for p in settle["postings"]}
    assert amounts[f"liability:customer:{c['customer']}:reserved"] == "1.00"
    assert amounts["income:platform:usage:USD"] == "-0.03"
    assert amounts[c["lot"]] == "-0.97"
    assert settle["metadata"]["request_id"] == c["request_id"]
    assert all(e["customer_id"] == c["customer"] for e in entries)


async def test_filters_by_request_id_kind_account_and_time(client):
    c = await _lifecycle(client)
    other = await _lifecycle(client)
    by_request = (await client.get("/v1/journal", params={"request_id": c["request_id"],
                                                          "customer": c["customer"]})).json()["entries"]
    assert [e["kind"] for e in by_request] == ["reserve", "settle"]
    by_kind = (await client.get("/v1/journal", params={"kind": "topup", "customer": c["customer"]})).json()
    assert [e["kind"] for e in by_kind["entries"]] == ["topup"]
    by_account = await _all_pages(client, "/v1/journal", {"account": c["lot"]})
    assert [e["kind"] for e in by_account] == ["topup", "reserve", "settle"]
    reserve_at = by_request[0]["occurred_at"]
    since = await _all_pages(client, "/v1/journal", {"customer": c["customer"], "from": reserve_at})
    assert [e["kind"] for e in since] == ["reserve", "settle"]
    until = await _all_pages(client, "/v1/journal", {"customer": c["customer"], "to": reserve_at})
    assert [e["kind"] for e in until] == ["topup"]
    assert not {e["customer_id"] for e in by_account} & {other["customer"]}


async def test_pages_of_one_entry_follow_the_cursor_to_the_end(client):
    c = await _lifecycle(client)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"customer": c["customer"], "limit": 1, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/v1/journal", params=params)).json()
        pages += 1
        seen += [e["kind"] for e in body["entries"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["topup", "reserve", "settle"]
    assert pages == 4  # the fourth page is empty and ends the listing


async def test_a_bad_cursor_is_a_400_with_a_stable_code(client):
    c = await _lifecycle(client)
    first = (await client.get("/v1/journal", params={"customer": c["customer"], "limit": 1})).json()
    forged_snapshot = base64.urlsafe_b64encode(json.dumps(
        [1, json.loads(base64.urlsafe_b64decode(first["next_cursor"] + "=="))[1], "1:9000000000000:", [0]]
    ).encode()).decode()
    cid, made = c["customer"], first["next_cursor"]
    for params in ({"customer": cid, "cursor": "not-a-cursor"}, {"customer": cid, "cursor": "W10"},  # "[]"
                   {"customer": cid, "kind": "topup", "cursor": made},  # other filters
                   {"cursor": made},  # without the customer filter it was made for
                   {"customer": cid, "cursor": forged_snapshot}):  # a snapshot from the future
        response = await client.get("/v1/journal", params=params)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["code"] == "invalid_cursor"


async def test_seal_status_turns_from_pending_to_sealed_with_the_seals_hash(client, database_url):
    c = await _lifecycle(client)
    before = (await client.get("/v1/journal", params={"customer": c["customer"]})).json()["entries"]
    assert {e["seal"]["status"] for e in before} == {"pending"}
    db = connect(database_url, pool_size=1)
    try:
        await seal_journal(db)
    finally:
        await db.dispose()
    after = (await client.get("/v1/journal", params={"customer": c["customer"]})).json()["entries"]
    assert {e["seal"]["status"] for e in after} == {"sealed"}
    assert all(len(e["seal"]["hash"]) == 64 and e["seal"]["seal_id"] for e in after)


async def test_a_customer_key_sees_only_its_own_entries_and_accounts(client):
    mine, theirs = await _lifecycle(client), await _lifecycle(client)
    key = await _key(client, f"customer:{mine['customer']}")
    everything = await _all_pages(client, "/v1/journal", {"limit": 1000}, headers=key)
    assert [e["kind"] for e in everything] == ["topup", "reserve", "settle"]
    assert (await client.get("/v1/journal", params={"customer": theirs["customer"]}, headers=key)).status_code == 403
    assert (await client.get("/v1/journal", params={"account": theirs["lot"]}, headers=key)).status_code == 404
    assert (await client.get(f"/v1/accounts/{theirs['lot']}/statement", headers=key)).status_code == 404
    platform = await client.get("/v1/accounts/income:platform:usage:USD/statement", headers=key)
    assert platform.status_code == 403 and platform.json()["code"] == "forbidden"
    # the platform account as a filter: only this customer's entries that post to it
    revenue = await _all_pages(client, "/v1/journal", {"account": "income:platform:usage:USD"}, headers=key)
    assert [e["kind"] for e in revenue] == ["settle"]
    limited = await _key(client, "auditor", [mine["customer"]])
    assert {e["customer_id"] for e in await _all_pages(client, "/v1/journal", {"limit": 1000}, headers=limited)} \
        == {mine["customer"]}


async def test_a_statement_runs_from_opening_to_closing_balance(client):
    c = await _lifecycle(client)
    full = (await client.get(f"/v1/accounts/{c['lot']}/statement")).json()
    assert full["normal_balance"] == "credit" and full["currency"] == "USD"
    assert full["opening_balance"] == "0.00"
    assert [(p["kind"], p["amount"], p["balance"]) for p in full["postings"]] == [
        ("topup", "-10.00", "-10.00"), ("reserve", "1.00", "-9.00"), ("settle", "-0.97", "-9.97")]
    assert full["closing_balance"] == "-9.97"
    assert (full["total_debits"], full["total_credits"]) == ("1.00", "10.97")
    reserve_at = full["postings"][1]["occurred_at"]
    later = (await client.get(f"/v1/accounts/{c['lot']}/statement", params={"from": reserve_at})).json()
    assert later["opening_balance"] == "-10.00" and later["closing_balance"] == "-9.97"
    assert [p["balance"] for p in later["postings"]] == ["-9.00", "-9.97"]
    paged = await _all_pages(client, f"/v1/accounts/{c['lot']}/statement", {"limit": 1}, field="postings")
    assert paged == full["postings"]


async def test_balances_at_an_instant_and_now(client):
    c = await _lifecycle(client)
    lines = (await client.get(f"/v1/accounts/{c['lot']}/statement")).json()["postings"]
    path = f"/v1/accounts/{c['lot']}/balance"
    assert (await client.get(path, params={"at": lines[0]["occurred_at"]})).json()["balance"] == "0.00"
    assert (await client.get(path, params={"at": lines[1]["occurred_at"]})).json()["balance"] == "-10.00"
    now = (await client.get(path)).json()
    assert now["at"] is None and now["balance"] == "-9.97"
    assert (await client.get(path, params={"at": FAR_FUTURE})).json()["balance"] == "-9.97"
    revenue = "income:platform:usage:USD"
    assert (await client.get(f"/v1/accounts/{revenue}/balance", params={"at": FAR_FUTURE})).json() == {
        **(await client.get(f"/v1/accounts/{revenue}/balance")).json(), "at": FAR_FUTURE}


async def test_a_bound_a_fraction_of_a_microsecond_after_an_entry_counts_the_entry_before_it(client):
    """A time may carry 9 digits of a second; entries are kept to the microsecond. The top-up
    occurred at T0 (say .123456); T = T0 + 100 ns (.123456100) is after it, so the top-up occurred
    before T: the lot's balance at T is -10.00 (its -10.00 credit), the journal `to` T lists the
    top-up alone and `from` T the reserve and settle alone, the statement from T opens at -10.00,
    and the trial balance at T has the lot at -10.00. T was read as T0 (the digits past the
    microsecond dropped): the balance was 0.00, `to` T listed nothing and `from` T all three."""
    c = await _lifecycle(client)
    lines = (await client.get(f"/v1/accounts/{c['lot']}/statement")).json()["postings"]
    t0 = datetime.fromisoformat(lines[0]["occurred_at"])
    after = t0.strftime("%Y-%m-%dT%H:%M:%S.%f") + "100Z"
    at = {"at": after}
    assert (await client.get(f"/v1/accounts/{c['lot']}/balance", params=at)).json()["balance"] == "-10.00"
    until = (await client.get("/v1/journal", params={"customer": c["customer"], "to": after})).json()
    assert [e["kind"] for e in until["entries"]] == ["topup"]
    since = (await client.get("/v1/journal", params={"customer": c["customer"], "from": after})).json()
    assert [e["kind"] for e in since["entries"]] == ["reserve", "settle"]
    statement = (await client.get(f"/v1/accounts/{c['lot']}/statement", params={"from": after})).json()
    assert statement["opening_balance"] == "-10.00" and len(statement["postings"]) == 2
    trial = (await client.get("/v1/audit/trial-balance", params=at)).json()
    assert {a["account"]: a["balance"] for a in trial["accounts"]}[c["lot"]] == "-10.00"
    # at T0 itself, as documented: the top-up did not occur before T0
    assert (await client.get(f"/v1/accounts/{c['lot']}/balance",
                             params={"at": lines[0]["occurred_at"]})).json()["balance"] == "0.00"


async def test_the_trial_balance_at_a_future_instant_equals_the_cached_one(client):
    await _lifecycle(client)
    cached = (await client.get("/v1/audit/trial-balance")).json()
    computed = (await client.get("/v1/audit/trial-balance", params={"at": FAR_FUTURE})).json()
    assert computed.pop("at") == FAR_FUTURE
    assert computed == cached and cached["balanced"] is True


async def test_the_trial_balance_before_the_first_entry_is_empty_and_balanced(client):
    empty = (await client.get("/v1/audit/trial-balance", params={"at": "2000-01-01T00:00:00Z"})).json()
    assert empty["total_debits"] == empty["total_credits"] == "0.00" and empty["balanced"] is True
    assert all(a["balance"] == "0.00" for a in empty["accounts"])


async def test_malformed_parameters_are_validation_errors(client):
    for path, params in (("/v1/journal", {"from": "yesterday"}), ("/v1/journal", {"limit": 0}),
                         ("/v1/journal", {"limit": 1001}), ("/v1/journal", {"customer": "bad id!"}),
                         ("/v1/audit/trial-balance", {"at": "2026-13-01T00:00:00Z"}),
                         ("/v1/journal", {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
                         ("/v1/accounts/income:platform:usage:USD/statement",
                          {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"})):
        response = await client.get(path, params=params)
        assert response.status_code == 422 and response.json()["code"] == "validation_error", (params, response.text)
    missing = await client.get("/v1/accounts/no:such:account/statement")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_an_entry_changed_or_slipped_in_after_its_seal_reads_as_altered_or_unlisted(scratch_url):
    """Triggers forbid the change; a superuser who turns them off still cannot hide it."""
    async with api_client(scratch_url, admin="journal-admin", send_admin=True) as c:
        assert (await c.post("/v1/price-books", json=BOOK)).status_code == 201
        lifecycle = await _lifecycle(c)
        db = connect(scratch_url, pool_size=1)
        try:
            await seal_journal(db)
            entries = (await c.get("/v1/journal", params={"customer": lifecycle["customer"]})).json()["entries"]
            async with db.engine.begin() as conn:
                await conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
                await conn.exec_driver_sql(
                    "UPDATE journal_entries SET metadata = metadata || '{\"note\": \"edited\"}' WHERE id = %s",
                    (entries[1]["id"],))
                await conn.exec_driver_sql(  # when it was written, covered since hash version 2
                    "UPDATE journal_entries SET recorded_at = recorded_at + interval '1 second' WHERE id = %s",
                    (entries[2]["id"],))
                await conn.exec_driver_sql(  # an entry slipped into the first one's sealed transaction
                    """INSERT INTO journal_entries (lane, key, request_hash, kind, customer_id, occurred_at, txid)
                       SELECT lane, 'forged', request_hash, kind, customer_id, occurred_at, txid
                         FROM journal_entries WHERE id = %s""", (entries[0]["id"],))
        finally:
            await db.dispose()
        after = (await c.get("/v1/journal", params={"customer": lifecycle["customer"]})).json()["entries"]
    assert [(e["key"] == "forged", e["seal"]["status"]) for e in after] == [
        (False, "sealed"), (True, "unlisted"), (False, "altered"), (False, "altered")]
    assert after[2]["seal"]["hash"] == entries[1]["seal"]["hash"]  # what the seal stored, not the new hash


@pytest.mark.parametrize(("start", "end"), [("06.7890129", "06.7890121"), ("06.789013", "06.7890125")])
async def test_a_to_a_fraction_of_a_microsecond_before_from_is_422_naming_it(client, start, end):
    """`.7890121` is before `.7890129`, and `.7890125` before `.789013`, though each pair is read as
    one microsecond, `.789013` (a bound finer than one is read as the next): the range ends before it
    starts, a 422 naming `to`, as any `to` before `from` is, on the journal and a statement alike.
    Compared as read (equal), each answered 200 with nothing listed (the re-drive's `until`, 428f8ca)."""
    day = "2001-02-03T04:05:"
    for path in ("/v1/journal", "/v1/accounts/income:platform:usage:USD/statement"):
        response = await client.get(path, params={"from": f"{day}{start}Z", "to": f"{day}{end}Z"})
        assert response.status_code == 422, (path, response.text)
        assert (response.json()["code"], response.json()["fields"][0]["field"]) == ("validation_error", "to"), (
            path, response.text)


async def test_an_empty_currency_for_the_trial_balance_is_a_422_naming_it(client):
    """`?currency=` (sent empty: a form's blank choice, a script's unset variable) was read as no
    currency and answered 200 with the USD trial balance, a currency the caller did not ask for;
    every other text filter of these routes (`kind=`, `account=`, `request_id=`) is a 422 when empty.
    Now it is one too, naming `currency`; `?currency=USD` still answers USD (on a ledger without
    USD, the empty one was a 404 `no currency USD`)."""
    await _lifecycle(client)  # a USD customer: the ledger holds USD
    empty = await client.get("/v1/audit/trial-balance", params={"currency": ""})
    assert empty.status_code == 422, empty.text
    assert empty.json()["code"] == "validation_error"
    assert [f["field"] for f in empty.json()["fields"]] == ["currency"]
    usd = await client.get("/v1/audit/trial-balance", params={"currency": "USD"})
    assert usd.status_code == 200 and usd.json()["currency"] == "USD"

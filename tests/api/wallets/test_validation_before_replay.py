"""A body that is invalid is refused as invalid (422) even where its reference, request id,
capture id or Idempotency-Key is known: validation of the body comes before telling it apart from
the call kept under that name, which only the very body kept answers again (200, or its replay).
Before, a top-up of "10.001" dollars (more digits than the dollar's two) under a payment
reference credited at "10.00" was 409 idempotency_conflict, where 422 invalid_amount is what is
wrong with it; so was a top-up refund of "2.001" under a refund reference paid, and a settle whose
usage is refused under a key (or capture id) of another settle.

Book: model-a input $10.00 per 1M tokens, output $20.00 per 1M, $0.01 a call."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import AsyncTestClient


async def _customer(client: AsyncTestClient, book: str, top_up: str | None = None) -> str:
    cid = f"vbr-{uuid.uuid4().hex[:10]}"
    made = await client.post("/v1/customers", json={"id": cid, "price_book": book, "billing": "prepaid"})
    assert made.status_code == 201, made.text
    if top_up is not None:
        assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": top_up})).status_code == 201
    return cid


def _invalid_amount(answer) -> None:
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_amount"), answer.text
    assert [f["field"] for f in answer.json()["fields"]] == ["amount"]


async def _available(client: AsyncTestClient, cid: str) -> str:
    return (await client.get(f"/v1/customers/{cid}/wallet")).json()["available"]


async def _invalid_under_a_known_reference(client: AsyncTestClient, path: str, amounts: tuple[str, str, str],
                                           reference: str, named: str) -> None:
    """`amounts` (kept, finer than a cent, another) under `reference` at `path`: the kept one 201,
    the finer one 422 invalid_amount, the kept one again 200 (the first, by its `named` id), the
    other 409 idempotency_conflict."""
    kept, finer, other = ({"amount": a, "reference": reference} for a in amounts)
    first = await client.post(path, json=kept)
    assert first.status_code == 201, first.text
    _invalid_amount(await client.post(path, json=finer))
    again = await client.post(path, json=kept)
    assert (again.status_code, again.json()[named]) == (200, first.json()[named]), again.text
    refused = await client.post(path, json=other)
    assert (refused.status_code, refused.json()["code"]) == (409, "idempotency_conflict"), refused.text


async def test_a_top_up_finer_than_a_cent_under_a_payment_reference_credited_is_invalid(client, book):
    """pi_1 credited 10.00; "10.001" under pi_1: 422 invalid_amount (before: 409); "10.00" under
    it again: 200, the first lot; "5.00" under it: 409. 10.00 available, one lot."""
    cid = await _customer(client, book)
    path = f"/v1/customers/{cid}/topups"
    await _invalid_under_a_known_reference(client, path, ("10.00", "10.001", "5.00"), "pi_1", "grant_id")
    assert await _available(client, cid) == "10.00"


async def test_a_top_up_refund_finer_than_a_cent_under_a_refund_reference_paid_is_invalid(client, book):
    """A 10.00 top-up refunded 2.00 under re_1; "2.001" under re_1: 422 invalid_amount (before:
    409); "2.00" again: 200, nothing posted; "3.00" under it: 409. 10.00 - 2.00 = 8.00 available."""
    cid = await _customer(client, book)
    lot = (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).json()["grant_id"]
    path = f"/v1/customers/{cid}/grants/{lot}/reverse"
    await _invalid_under_a_known_reference(client, path, ("2.00", "2.001", "3.00"), "re_1", "entry_id")
    assert await _available(client, cid) == "8.00"


async def test_a_settle_whose_usage_is_refused_under_another_settle_s_key_or_capture_id_is_invalid(client, book):
    """A $1.00 hold settled under key k with 1,000 input tokens ($0.01 + $0.01 a call = $0.02);
    {"usage": {}} (no count) under k: 422 validation_error naming usage (before: 409); the first
    body under k again replays it. Another $1.00 hold captured under capture id c1 with 1,000
    output tokens ($0.02 + $0.01 = $0.03); {"usage": {}} under c1: 422 (not 409). 10.00 - 0.02
    - 0.03 - 0.97 held = 8.98 available (hold 2: 1.00 - 0.03 captured from it)."""
    cid = await _customer(client, book, "10.00")

    async def held(request_id: str) -> str:
        made = await client.post("/v1/reservations", json={"customer_id": cid, "request_id": request_id,
                                                           "model": "model-a", "amount": "1.00"})
        assert made.status_code == 201, made.text
        return made.json()["id"]

    rid, captured = await held("r-1"), await held("r-2")
    key = {"Idempotency-Key": f"k-{cid}"}
    body = {"usage": {"input_tokens": 1000}}
    first = await client.post(f"/v1/reservations/{rid}/settle", json=body, headers=key)
    assert (first.status_code, first.json()["charged"]) == (200, "0.02"), first.text
    refused = await client.post(f"/v1/reservations/{rid}/settle", json={"usage": {}}, headers=key)
    assert (refused.status_code, refused.json()["code"], [f["field"] for f in refused.json()["fields"]]) == (
        422, "validation_error", ["usage"]), refused.text
    again = await client.post(f"/v1/reservations/{rid}/settle", json=body, headers=key)
    assert (again.status_code, again.headers.get("idempotent-replayed"), again.json()) == (200, "true", first.json())
    capture = {"usage": {"output_tokens": 1000}, "final": False, "capture_id": "c1"}
    took = await client.post(f"/v1/reservations/{captured}/settle", json=capture)
    assert (took.status_code, took.json()["charged"]) == (200, "0.03"), took.text
    refused = await client.post(f"/v1/reservations/{captured}/settle", json={**capture, "usage": {}})
    assert (refused.status_code, [f["field"] for f in refused.json()["fields"]]) == (422, ["usage"]), refused.text
    assert await _available(client, cid) == "8.98"


async def test_a_reserve_whose_body_is_invalid_under_a_known_request_id_is_invalid(client, book):
    """A guard: request id r-1 held $1.00; under r-1 an amount of "-1.00", one of ten decimals and a
    ttl_seconds of 0 are each 422 validation_error (the route's checks, before the lane's request-id
    replay), and the first body again is 200, its reservation. 10.00 - 1.00 = 9.00 available."""
    cid = await _customer(client, book, "10.00")
    body = {"customer_id": cid, "request_id": "r-1", "model": "model-a", "amount": "1.00"}
    first = await client.post("/v1/reservations", json=body)
    assert first.status_code == 201, first.text
    for bad in ({"amount": "-1.00"}, {"amount": "1.0000000001"}, {"ttl_seconds": 0}):
        refused = await client.post("/v1/reservations", json={**body, **bad})
        assert (refused.status_code, refused.json()["code"]) == (422, "validation_error"), (bad, refused.text)
    again = await client.post("/v1/reservations", json=body)
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"]), again.text
    assert await _available(client, cid) == "9.00"


@pytest.mark.parametrize("kind", ["grants", "topups"])
async def test_a_credit_finer_than_a_cent_under_a_known_idempotency_key_is_invalid(client, book, kind):
    """A grant (or a top-up) of 5.00 under Idempotency-Key g; "5.001" under g (more digits than
    the dollar's two): 422 invalid_amount naming amount (before: 409 idempotency_conflict, the key
    looked up before the amount was checked); "5.00" under g again: the first answer replayed (201
    as it was, Idempotent-Replayed: true, the same lot); "6.00" under g: 409. One lot: 5.00 available."""
    cid = await _customer(client, book)
    path, key = f"/v1/customers/{cid}/{kind}", {"Idempotency-Key": f"g-{cid}"}
    first = await client.post(path, json={"amount": "5.00"}, headers=key)
    assert (first.status_code, first.headers.get("idempotent-replayed")) == (201, None), first.text
    _invalid_amount(await client.post(path, json={"amount": "5.001"}, headers=key))
    again = await client.post(path, json={"amount": "5.00"}, headers=key)
    assert (again.status_code, again.headers.get("idempotent-replayed"), again.json()["grant_id"]) == (
        201, "true", first.json()["grant_id"]), again.text
    other = await client.post(path, json={"amount": "6.00"}, headers=key)
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict"), other.text
    assert await _available(client, cid) == "5.00"


def _refused(answer, status: int, code: str, fields: list[str]) -> None:
    body = answer.json()
    assert (answer.status_code, body["code"], [f["field"] for f in body.get("fields", [])]) == (
        status, code, fields), answer.text


async def test_a_customer_whose_body_is_invalid_under_a_known_idempotency_key_is_invalid(client, book):
    """POST /v1/customers under key c made customer A (USD, the USD book). Under c, customer B with
    an overdraft_limit of "0.001" (finer than the dollar's two decimals), and customer B in EUR on
    that USD book, were 409 idempotency_conflict: the key looked up in run_once before the body's
    rules, which only the transaction checks, ran. Now 422 invalid_amount naming overdraft_limit,
    and 422 validation_error naming price_book, as without the key; B is not made (404). A's body
    again under c replays its 201; B valid under c is 409."""
    a = f"vbr-{uuid.uuid4().hex[:10]}"
    b, key = f"{a}-b", {"Idempotency-Key": f"c-{a}"}
    made = {"id": a, "price_book": book, "currency": "USD"}
    first = await client.post("/v1/customers", json=made, headers=key)
    assert first.status_code == 201, first.text
    _refused(await client.post("/v1/customers", json={**made, "id": b, "overdraft_limit": "0.001"}, headers=key),
             422, "invalid_amount", ["overdraft_limit"])
    _refused(await client.post("/v1/customers", json={**made, "id": b, "currency": "EUR"}, headers=key),
             422, "validation_error", ["price_book"])
    again = await client.post("/v1/customers", json=made, headers=key)
    assert (again.status_code, again.headers.get("idempotent-replayed"), again.json()) == (201, "true", first.json())
    _refused(await client.post("/v1/customers", json={**made, "id": b}, headers=key), 409, "idempotency_conflict", [])
    assert (await client.get(f"/v1/customers/{b}")).status_code == 404


async def test_a_customer_change_whose_body_is_invalid_under_a_known_idempotency_key_is_invalid(client, book):
    """PATCH overdraft_limit "5.00" under key p (200). Under p, "5.001" and a price book that does
    not exist were 409 idempotency_conflict; now 422 invalid_amount naming overdraft_limit and 422
    validation_error naming price_book (the lane's checks, run before telling the body apart from
    the kept one). "5.00" again replays the 200; "6.00" under p is 409. One change logged, the
    limit 5.00, the book unchanged."""
    cid = await _customer(client, book)
    path, key = f"/v1/customers/{cid}", {"Idempotency-Key": f"p-{cid}"}
    first = await client.patch(path, json={"overdraft_limit": "5.00"}, headers=key)
    assert first.status_code == 200, first.text
    _refused(await client.patch(path, json={"overdraft_limit": "5.001"}, headers=key),
             422, "invalid_amount", ["overdraft_limit"])
    _refused(await client.patch(path, json={"price_book": f"no-{cid}"}, headers=key),
             422, "validation_error", ["price_book"])
    again = await client.patch(path, json={"overdraft_limit": "5.00"}, headers=key)
    assert (again.status_code, again.headers.get("idempotent-replayed"), again.json()) == (200, "true", first.json())
    _refused(await client.patch(path, json={"overdraft_limit": "6.00"}, headers=key), 409, "idempotency_conflict", [])
    now = (await client.get(path)).json()
    assert (now["overdraft_limit"], now["price_book"]) == ("5.00", book)
    assert len((await client.get(f"{path}/changes")).json()["changes"]) == 1


async def test_a_price_version_in_another_currency_under_a_known_idempotency_key_is_refused_as_such(client):
    """Book P in USD, its first version posted under key v (201). Under v, a version of P in EUR
    was 409 idempotency_conflict; now 422 currency_mismatch, as without the key. The first body
    again replays its 201; a USD version of February under v is 409. P keeps one version."""
    pid = f"vbr-{uuid.uuid4().hex[:10]}"
    version = {"id": pid, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
               "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "1.00"}]}
    key, february = {"Idempotency-Key": f"v-{pid}"}, {"effective_from": "2026-02-01T00:00:00Z"}
    first = await client.post("/v1/price-books", json=version, headers=key)
    assert first.status_code == 201, first.text
    _refused(await client.post("/v1/price-books", json={**version, **february, "currency": "EUR"}, headers=key),
             422, "currency_mismatch", [])
    again = await client.post("/v1/price-books", json=version, headers=key)
    assert (again.status_code, again.headers.get("idempotent-replayed"), again.json()) == (201, "true", first.json())
    _refused(await client.post("/v1/price-books", json={**version, **february}, headers=key),
             409, "idempotency_conflict", [])
    assert len((await client.get(f"/v1/price-books/{pid}")).json()["versions"]) == 1


async def test_price_overrides_of_a_model_not_priced_under_a_known_idempotency_key_are_invalid(client, book):
    """A 10% discount on model-a put under key o (201). Under o, the discount on model-zzz, which no
    rule of the customer's book prices, was 409 idempotency_conflict; now 422 validation_error
    naming discounts[0].model, as without the key. The first body again replays its 201; a 20%
    discount under o is 409. One version of the overrides."""
    cid = await _customer(client, book)
    path, key = f"/v1/customers/{cid}/price-overrides", {"Idempotency-Key": f"o-{cid}"}
    discount = {"id": "d", "model": "model-a", "percent": "10"}
    first = await client.put(path, json={"discounts": [discount]}, headers=key)
    assert first.status_code == 201, first.text
    _refused(await client.put(path, json={"discounts": [{**discount, "model": "model-zzz"}]}, headers=key),
             422, "validation_error", ["discounts[0].model"])
    again = await client.put(path, json={"discounts": [discount]}, headers=key)
    assert (again.status_code, again.headers.get("idempotent-replayed"), again.json()) == (201, "true", first.json())
    _refused(await client.put(path, json={"discounts": [{**discount, "percent": "20"}]}, headers=key),
             409, "idempotency_conflict", [])
    assert len((await client.get(path)).json()["versions"]) == 1


async def test_a_customer_whose_body_is_invalid_under_an_existing_id_is_invalid(client, book):
    """Customer A (USD, the USD book, prepaid: overdraft 0.00) made. POST /v1/customers of A again
    with an overdraft_limit of "0.001" (finer than the dollar's two decimals), and of A in EUR on
    that USD book, were 409 customer_exists: the existing id was found before the body's rules ran.
    Now 422 invalid_amount naming overdraft_limit and 422 validation_error naming price_book, as for
    a new id (e5d607f's rule: a body's own refusal before a conflict with what is kept). A body that
    could be carried out is still 409: A on a book not created yet (creation takes one, README) or
    with an overdraft of "5.00". A's own definition again is 200. A is unchanged: 0.00, USD, the book."""
    cid = f"vbr-{uuid.uuid4().hex[:10]}"
    made = {"id": cid, "price_book": book, "currency": "USD", "billing": "prepaid"}
    assert (await client.post("/v1/customers", json=made)).status_code == 201
    _refused(await client.post("/v1/customers", json={**made, "overdraft_limit": "0.001"}),
             422, "invalid_amount", ["overdraft_limit"])
    _refused(await client.post("/v1/customers", json={**made, "currency": "EUR"}), 422, "validation_error",
             ["price_book"])
    for other in ({"price_book": f"later-{cid}"}, {"overdraft_limit": "5.00"}):
        _refused(await client.post("/v1/customers", json={**made, **other}), 409, "customer_exists", [])
    assert (await client.post("/v1/customers", json=made)).status_code == 200
    now = (await client.get(f"/v1/customers/{cid}")).json()
    assert (now["overdraft_limit"], now["currency"], now["price_book"]) == ("0.00", "USD", book)


async def test_an_amount_for_a_customer_that_does_not_exist_is_not_found_and_a_grant_s_expiry_is_invalid(
        client, book):
    """Guards (passed before). A PATCH of overdraft_limit "5.001", and a top-up of "0.001", for a
    customer that does not exist are 404 not_found: how fine an amount may be is its customer's
    currency's (two decimals for USD, none for JPY, three for BHD, where "0.001" is a fils), so with
    no customer there is no such refusal of the body ("abc", no amount in any currency, is 422). A
    grant of 5.00 expiring in 30 days under key g (201); under g, a grant of 6.00 expiring 30 days
    ago or at "not-a-time" is 422 validation_error naming expires_at, not 409. One lot: 5.00."""
    missing = f"vbr-{uuid.uuid4().hex[:10]}-none"
    _refused(await client.patch(f"/v1/customers/{missing}", json={"overdraft_limit": "5.001"}), 404, "not_found", [])
    _refused(await client.post(f"/v1/customers/{missing}/topups", json={"amount": "0.001"}), 404, "not_found", [])
    _refused(await client.post(f"/v1/customers/{missing}/topups", json={"amount": "abc"}), 422, "validation_error",
             ["amount"])
    cid = await _customer(client, book)
    path, key = f"/v1/customers/{cid}/grants", {"Idempotency-Key": f"g-{cid}"}
    now = datetime.now(UTC)
    first = await client.post(path, json={"amount": "5.00", "expires_at": (now + timedelta(days=30)).isoformat()},
                              headers=key)
    assert first.status_code == 201, first.text
    for expiry in ((now - timedelta(days=30)).isoformat(), "not-a-time"):
        _refused(await client.post(path, json={"amount": "6.00", "expires_at": expiry}, headers=key),
                 422, "validation_error", ["expires_at"])
    assert await _available(client, cid) == "5.00"

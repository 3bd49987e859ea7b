"""An idempotency key is an id the caller makes up: held to the rule of free text (pricing.text)
as a request or capture id is, and read as UTF-8 from the Idempotency-Key header, as the same key
is read from a bulk item's JSON `idempotency_key`, so that either way it is one key.

Before, the header was read as Latin-1: "clé-€" sent as UTF-8 was kept as "clÃ©-â\\x82¬", another
key than the bulk item's "clé-€", and a capture sent once each way was charged twice; and a key
with a tab, a NEL (U+0085) or a line separator was taken and kept."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from litestar.testing import AsyncTestClient

from api.routes.wire import idempotency_key
from wallets.errors import WalletValidationError

CAPTURE = {"usage": {"output_tokens": 100}, "final": False}  # model-a: 100 x $20/M + $0.01 a call = $0.012


async def _customer(client: AsyncTestClient, book: str, tag: str) -> str:
    cid = f"keytext-{tag}-{uuid.uuid4().hex[:6]}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    return cid


async def _reserve(client: AsyncTestClient, cid: str) -> str:
    reserved = await client.post(
        "/v1/reservations",
        json={"customer_id": cid, "request_id": f"req-{uuid.uuid4().hex}", "model": "model-a", "amount": "0.10"},
    )
    assert reserved.status_code == 201, reserved.text
    return reserved.json()["id"]


async def test_a_key_with_a_control_character_or_a_line_separator_in_the_header_is_422_and_nothing_kept(
    client: AsyncTestClient, book: str, tag: str
):
    cid = await _customer(client, book, tag)
    for sent, said in [(b"ab\tc", "U+0009"), ("ab\u0085c".encode(), "U+0085"), ("ab\u2028c".encode(), "U+2028")]:
        answer = await client.post(
            f"/v1/customers/{cid}/topups", json={"amount": "1.00"}, headers={"Idempotency-Key": sent}
        )
        assert answer.status_code == 422, (sent, answer.text)
        problem = answer.json()
        assert problem["code"] == "validation_error", problem
        [field] = problem["fields"]
        assert field["field"] == "Idempotency-Key", problem
        assert field["message"].startswith(f"must not contain {said} at position 3"), problem
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert wallet["available"] == "10.00", wallet  # the first top-up only


def test_a_key_not_in_utf_8_is_422_naming_the_header():
    """Read from the ASGI scope as a server gets it (the test client re-encodes a header it was
    given as bytes: a Latin-1 é would reach the app as UTF-8)."""
    sent = SimpleNamespace(scope={"headers": [(b"idempotency-key", b"caf\xe9")]})  # Latin-1 é: not UTF-8
    with pytest.raises(WalletValidationError) as refused:
        idempotency_key(sent)
    assert refused.value.context["fields"] == [{"field": "Idempotency-Key", "message": "must be UTF-8"}]
    utf_8 = SimpleNamespace(scope={"headers": [(b"idempotency-key", " clé-€ ".encode())]})
    assert idempotency_key(utf_8) == "clé-€"


async def test_a_bulk_item_s_key_with_a_line_separator_is_422_naming_it(client: AsyncTestClient, book: str, tag: str):
    cid = await _customer(client, book, tag)
    rid = await _reserve(client, cid)
    answer = await client.post(
        "/v1/settlements", json=[{**CAPTURE, "reservation_id": rid, "idempotency_key": "ab\u2028c"}]
    )
    assert answer.status_code == 200, answer.text
    [item] = answer.json()["results"]
    assert item["status"] == 422 and item["body"]["code"] == "validation_error", item
    [field] = item["body"]["fields"]
    assert field["field"] == "idempotency_key", item
    assert field["message"].startswith("must not contain U+2028 at position 3"), item
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["reserved"]) == ("9.90", "0.10"), wallet  # nothing captured


async def test_a_non_ascii_key_sent_in_the_header_and_in_a_bulk_item_is_one_key_charged_once(
    client: AsyncTestClient, book: str, tag: str
):
    """A capture of 100 output tokens ($0.012) under "clé-€" by the single route (the header, in
    UTF-8), then by the bulk route (the item's key): the second is the first's replay. Charged
    $0.012 once: 10.00 - 0.10 held = 9.90 available; the hold keeps 0.10 - 0.012 = 0.088 (twice:
    0.076)."""
    cid = await _customer(client, book, tag)
    rid = await _reserve(client, cid)
    single = await client.post(
        f"/v1/reservations/{rid}/settle", json=CAPTURE, headers={"Idempotency-Key": "clé-€".encode()}
    )
    assert single.status_code == 200, single.text
    bulk = await client.post("/v1/settlements", json=[{**CAPTURE, "reservation_id": rid, "idempotency_key": "clé-€"}])
    [item] = bulk.json()["results"]
    assert item["status"] == 200 and item["replayed"], item
    assert item["body"] == single.json()
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["reserved"]) == ("9.90", "0.088"), wallet


async def test_a_re_rate_s_key_is_held_to_the_same_rule(client: AsyncTestClient):
    """Guard: POST /v1/rerate reads its Idempotency-Key itself (api.routes.rerates, not through
    wire.idempotency): a tab in it is the same 422 naming the header, before the re-rate looks for
    its book (none here: a key it took would answer 404)."""
    body = {
        "price_book": f"no-book-{uuid.uuid4().hex[:6]}",
        "version": "v1",
        "mode": "apply",
        "from": "2026-11-01T00:00:00Z",
        "to": "2026-12-01T00:00:00Z",
    }
    answer = await client.post("/v1/rerate", json=body, headers={"Idempotency-Key": b"ab\tc"})
    assert answer.status_code == 422, answer.text
    [field] = answer.json()["fields"]
    assert field["field"] == "Idempotency-Key" and field["message"].startswith("must not contain U+0009 at position 3")
    taken = await client.post("/v1/rerate", json=body, headers={"Idempotency-Key": b"abc"})
    assert taken.status_code == 404, taken.text  # the same call under a good key reaches the re-rate

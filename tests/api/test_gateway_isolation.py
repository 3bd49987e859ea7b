"""Tenants kept apart on the gateway: a key limited to one customer bills that customer only,
whatever x-tokentill-customer names; request ids (x-tokentill-request-id) are per customer, so
two customers may send the same one and neither learns of the other's; a revoked key is refused
at once, and a call it made before the revocation is billed as admitted. Driven by the official
`openai` package against the local fake upstream, as tests/api/test_gateway.py."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import httpx
import openai
import pytest

from tests.api.test_gateway import (
    CHAT_CHARGE,
    HI,
    admin,
    customer,
    fake,  # noqa: F401 - the module's fixture
    oai,
    serving,
    wallet,
)


@pytest.fixture(scope="module")
def live(database_url, fake) -> Iterator[tuple[str, str]]:  # noqa: F811
    yield from serving(database_url, fake)


def _charged(url: str, request_id: str, customer_id: str) -> Decimal:
    """The customer's charge for its request id (named: another customer may use the id too)."""
    with admin(url) as http:
        trace = http.get(f"/v1/audit/charges/{request_id}", params={"customer_id": customer_id}).json()
    assert trace["customer_id"] == customer_id and trace["reservation"]["status"] == "settled", trace
    return sum((Decimal(c["charged"]) for c in trace["charges"]), Decimal(0))


def test_a_key_limited_to_one_customer_naming_another_is_refused_as_naming_no_customer_at_all(live, fake):  # noqa: F811
    """The refusal depends on the key and the name sent, never on whether the other customer
    exists: a customer that does not exist is refused in the same words, and nothing is held or
    sent upstream."""
    url, _ = live
    a, key_a = customer(live)
    b, _ = customer(live)
    nobody = f"gw-nobody-{uuid.uuid4().hex[:6]}"
    before = len(fake.fake.calls)
    answers = {}
    for named in (b, nobody):
        with pytest.raises(openai.PermissionDeniedError) as raised:
            oai(url, key_a, default_headers={"x-tokentill-customer": named}).chat.completions.create(
                model="gpt-test", messages=HI)
        assert raised.value.body["code"] == "forbidden", raised.value.body
        answers[named] = raised.value.body["message"].replace(named, "<named>")
    assert answers[b] == answers[nobody]
    assert len(fake.fake.calls) == before
    assert wallet(url, a) == wallet(url, b) == (Decimal("10"), 0)
    # its own customer, named, is billed as if not named
    raw = oai(url, key_a, default_headers={"x-tokentill-customer": a}).chat.completions.with_raw_response.create(
        model="gpt-test", messages=HI)
    assert _charged(url, raw.headers["x-tokentill-request-id"], a) == CHAT_CHARGE
    assert wallet(url, b) == (Decimal("10"), 0)


def test_two_customers_may_send_the_same_request_id_and_each_is_billed_its_own_call(live):
    url, _ = live
    a, key_a = customer(live)
    b, key_b = customer(live)
    shared = f"r1-{uuid.uuid4().hex[:8]}"
    for key in (key_b, key_a):  # B first: A's call is A's first with that id, not a replay of B's
        raw = oai(url, key, default_headers={"x-tokentill-request-id": shared}
                  ).chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
        assert raw.headers["x-tokentill-request-id"] == shared
    for cid in (a, b):
        assert _charged(url, shared, cid) == CHAT_CHARGE
        assert wallet(url, cid) == (Decimal("10") - CHAT_CHARGE, 0)
    # A's own id again is refused as A's (never billed twice), in words that never name B
    with pytest.raises(openai.ConflictError) as raised:
        oai(url, key_a, default_headers={"x-tokentill-request-id": shared}).chat.completions.create(
            model="gpt-test", messages=HI)
    assert b not in str(raised.value.body) and b not in raised.value.response.text
    assert wallet(url, a) == wallet(url, b) == (Decimal("10") - CHAT_CHARGE, 0)


def test_a_revoked_key_is_refused_at_once_and_its_call_in_flight_is_billed_as_admitted(live, fake):  # noqa: F811
    """The revocation refuses the key's next call at once, before anything is held or sent
    upstream. A stream the key opened before it was revoked was admitted and held for: it runs to
    its end and is charged its usage (cutting it would not undo the tokens the provider bills)."""
    url, _ = live
    cid, key = customer(live)
    with admin(url) as http:
        key_id = next(k["id"] for k in http.get("/v1/api-keys").json() if k["customers"] == [cid])
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as caller:
        with caller.stream("POST", "/openai/v1/chat/completions", json={
                "model": "gpt-test-hold", "messages": HI, "stream": True}) as stream:
            assert stream.status_code == 200
            request_id = stream.headers["x-tokentill-request-id"]
            chunks = stream.iter_raw()
            next(chunks)  # the upstream is under way, held after its first token
            with admin(url) as http:
                assert http.delete(f"/v1/api-keys/{key_id}").status_code == 200
            before = len(fake.fake.calls)
            refused = caller.post("/openai/v1/chat/completions", json={"model": "gpt-test", "messages": HI})
            assert refused.status_code == 401, refused.text
            assert refused.headers["x-tokentill-charged"] == "0" and len(fake.fake.calls) == before
            fake.fake.release()
            body = b"".join(chunks).decode()
    assert body.endswith(f"request_id={request_id}\n\n"), body[-300:]
    assert _charged(url, request_id, cid) == CHAT_CHARGE
    assert wallet(url, cid) == (Decimal("10") - CHAT_CHARGE, 0)

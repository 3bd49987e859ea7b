"""One rule for free text (pricing.text), on every field a caller writes it in and on every route
that takes the field, create and update, REST, the gateway's headers and the console's form: no
character of Unicode category Cc (the C0 and C1 controls), Zl (U+2028) or Zp (U+2029), a 422
`validation_error` naming the field and saying which character, where (from 1). Before, a BEL, a
NEL (U+0085) or a line separator was taken as it came in a customer's name, a usage dimension, an
event or request id, a webhook endpoint's description and the rest, and cut the line of a log, a
CSV or a page where none was written. Cf stays allowed: bidi marks and joiners are part of names.

Each field is sent "ab" + the character + "c" (the character at position 3); the paths name
nothing that exists, where the route needs something (a reservation, an invoice): a body refused
in itself is 422 before 404 (test_validation_before_not_found)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from api.demo import PRICE_BOOK
from tests.api.apps import api_client, sign_in
from tests.api.test_gateway import HI, customer, fake, serving  # noqa: F401 (fake: a fixture)

ADMIN = "free-text-admin"
MISSING = f"text-missing-{uuid.uuid4().hex[:8]}"
DAY = {"customer_id": MISSING, "window": "day", "metric": "money", "limit": "1.00"}
RULE = {"id": "in", "model": "model-a", "token_type": "input", "price": "1"}
BOOK = {"id": "free-text", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [RULE]}
EVENT = {
    "event_id": "e1",
    "customer_id": MISSING,
    "model": "model-a",
    "timestamp": "2026-11-10T10:00:00Z",
    "usage": {"input_tokens": 1},
}
RESERVE = {"customer_id": MISSING, "request_id": "r1", "model": "model-a", "amount": "0.01"}
SETTLE = {"usage": {"input_tokens": 1}, "final": False}
HOOK = {"url": "https://hooks.example.com/t", "topics": ["invoice.finalized"]}
X = "\x00"  # where the bad text goes in a body (replaced by it)

# (id, method, path, body with X where the text goes, the field the 422 names)
CASES = [
    ("customer-name", "POST", "/v1/customers", {"id": MISSING, "name": X}, "name"),
    ("customer-rename", "PATCH", f"/v1/customers/{MISSING}", {"name": X}, "name"),
    ("topup-reference", "POST", f"/v1/customers/{MISSING}/topups", {"amount": "1.00", "reference": X}, "reference"),
    ("grant-reason", "POST", f"/v1/customers/{MISSING}/grants", {"amount": "1.00", "reason": X}, "reason"),
    ("reversal-reason", "POST", f"/v1/customers/{MISSING}/grants/lot_{MISSING}/reverse", {"reason": X}, "reason"),
    (
        "reversal-reference",
        "POST",
        f"/v1/customers/{MISSING}/grants/lot_{MISSING}/reverse",
        {"reference": X},
        "reference",
    ),
    ("refund-reference", "POST", f"/v1/customers/{MISSING}/refunds", {"amount": "1.00", "reference": X}, "reference"),
    (
        "refund-reason",
        "POST",
        f"/v1/customers/{MISSING}/refunds",
        {"amount": "1.00", "reference": "w", "reason": X},
        "reason",
    ),
    (
        "payment-reference",
        "POST",
        f"/v1/invoices/inv_{MISSING}/payments",
        {"amount": "1.00", "reference": X},
        "reference",
    ),
    ("budget-name", "POST", "/v1/budgets", {**DAY, "name": X}, "name"),
    ("budget-rename", "PATCH", f"/v1/budgets/bud_{MISSING}", {"name": X}, "name"),
    ("budget-model", "POST", "/v1/budgets", {**DAY, "model": X}, "model"),
    ("budget-api-key", "POST", "/v1/budgets", {**DAY, "api_key": X}, "api_key"),
    ("budget-dimension-value", "POST", "/v1/budgets", {**DAY, "dimensions": {"feature": X}}, "dimensions.feature"),
    ("budget-dimension-name", "POST", "/v1/budgets", {**DAY, "dimensions": {X: "chat"}}, "dimensions"),
    ("reserve-request-id", "POST", "/v1/reservations", {**RESERVE, "request_id": X}, "request_id"),
    ("reserve-model", "POST", "/v1/reservations", {**RESERVE, "model": X}, "model"),
    (
        "reserve-dimension-value",
        "POST",
        "/v1/reservations",
        {**RESERVE, "dimensions": {"feature": X}},
        "dimensions.feature",
    ),
    ("reserve-dimension-name", "POST", "/v1/reservations", {**RESERVE, "dimensions": {X: "chat"}}, "dimensions"),
    ("settle-capture-id", "POST", f"/v1/reservations/res_{MISSING}/settle", {**SETTLE, "capture_id": X}, "capture_id"),
    ("bulk-capture-id", "POST", "/v1/settlements", [{**SETTLE, "reservation_id": "r", "capture_id": X}], "capture_id"),
    ("event-id", "POST", "/v1/usage-events", [{**EVENT, "event_id": X}], "[0].event_id"),
    ("event-model", "POST", "/v1/usage-events", [{**EVENT, "model": X}], "[0].model"),
    (
        "event-dimension-value",
        "POST",
        "/v1/usage-events",
        [{**EVENT, "dimensions": {"feature": X}}],
        "[0].dimensions.feature",
    ),
    ("event-dimension-name", "POST", "/v1/usage-events", [{**EVENT, "dimensions": {X: "chat"}}], "[0].dimensions"),
    ("endpoint-description", "POST", "/v1/webhook-endpoints", {**HOOK, "description": X}, "description"),
    ("endpoint-redescribed", "PATCH", f"/v1/webhook-endpoints/we_{MISSING}", {"description": X}, "description"),
    ("api-key-name", "POST", "/v1/api-keys", {"scope": "auditor", "name": X}, "name"),
    ("rule-id", "POST", "/v1/price-books", {**BOOK, "rules": [{**RULE, "id": X}]}, "rules[0].id"),
    ("rule-model", "POST", "/v1/price-books", {**BOOK, "rules": [{**RULE, "model": X}]}, "rules[0].model"),
    (
        "rule-match-value",
        "POST",
        "/v1/price-books",
        {**BOOK, "rules": [{**RULE, "match": {"feature": X}}]},
        "rules[0].match.feature",
    ),
    (
        "rule-match-name",
        "POST",
        "/v1/price-books",
        {**BOOK, "rules": [{**RULE, "match": {X: "chat"}}]},
        "rules[0].match",
    ),
    ("rule-source", "POST", "/v1/price-books", {**BOOK, "rules": [{**RULE, "source": X}]}, "rules[0].source"),
    ("rule-label", "POST", "/v1/price-books", {**BOOK, "format": 2, "rules": [{**RULE, "label": X}]}, "rules[0].label"),
    (
        "override-id",
        "PUT",
        f"/v1/customers/{MISSING}/price-overrides",
        {"discounts": [{"id": X, "percent": "10"}]},
        "discounts[0].id",
    ),
    (
        "override-model",
        "PUT",
        f"/v1/customers/{MISSING}/price-overrides",
        {"discounts": [{"id": "d", "percent": "10", "model": X}]},
        "discounts[0].model",
    ),
    ("gateway-request-id", "GATEWAY", "x-tokentill-request-id", X, "x-tokentill-request-id"),
    ("gateway-dimension-value", "GATEWAY", "x-tokentill-dimensions", {"feature": X}, "x-tokentill-dimensions.feature"),
    ("console-top-up-reference", "CONSOLE", "reference", X, "Payment reference"),
]
# each kind the rule refuses: a C0 control, a C1 control, the line and the paragraph separator
CHARACTERS = ["\x07", "\x85", "\u2028", "\u2029"]


def _put(value: Any, bad: str) -> Any:
    """`value` with each X (a value or a key) replaced by `bad`."""
    if isinstance(value, dict):
        return {_put(k, bad): _put(v, bad) for k, v in value.items()}
    if isinstance(value, list):
        return [_put(v, bad) for v in value]
    return bad if value == X else value


@pytest.fixture(scope="module")
async def client(database_url):
    async with api_client(database_url, admin=ADMIN, send_admin=True, console=True) as client:
        book = f"text-{uuid.uuid4().hex[:8]}"
        assert (await client.post("/v1/price-books", json={**PRICE_BOOK, "id": book})).status_code == 201
        token = await sign_in(client, ADMIN)
        yield client, book, token


@pytest.fixture(scope="module")
def gateway(database_url, fake) -> Iterator[tuple[str, str]]:  # noqa: F811 (fake: the imported fixture)
    yield from serving(database_url, fake)


def _problem(answer: Any) -> tuple[int, str, str, str]:
    """(status, code, first field, its message) of a 422, or of a bulk call's first item."""
    body = answer.json()
    if isinstance(body.get("results"), list):
        item = body["results"][0]
        answer_status, body = item["status"], item["body"]
    else:
        answer_status = answer.status_code
    first = (body.get("fields") or [{}])[0]
    return answer_status, body.get("code"), first.get("field"), first.get("message", "")


async def _console(client: Any, book: str, token: str, bad: str) -> tuple[int, str]:
    cid = f"text-{uuid.uuid4().hex[:8]}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    form = await client.get(f"/console/customers/{cid}/top-up")
    key = re.search(r'name="idempotency_key"[^>]*? value="([^"]*)"', form.text).group(1)
    answer = await client.post(
        f"/console/customers/{cid}/top-up",
        follow_redirects=False,
        data={
            "_csrf_token": token,
            "idempotency_key": key,
            "amount": "5.00",
            "reference": bad,
            "priority": "100",
            "expires_on": "",
        },
    )
    lots = (await client.get(f"/v1/customers/{cid}/wallet")).json()["grants"]
    assert lots == [], lots  # nothing recorded
    return answer.status_code, answer.text


def _gateway(live: tuple[str, str], header: str, value: Any) -> httpx.Response:
    _, key = customer(live)
    sent = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return httpx.post(
        f"{live[0]}/openai/v1/chat/completions",
        timeout=30,
        json={"model": "gpt-test", "messages": HI},
        headers={"Authorization": f"Bearer {key}", header: sent.encode()},
    )


@pytest.mark.parametrize("bad", CHARACTERS, ids=["U+0007", "U+0085", "U+2028", "U+2029"])
@pytest.mark.parametrize("method, path, body, field", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_free_text_with_a_control_character_or_a_line_separator_is_422_naming_the_field_and_the_character(
    request, client, method: str, path: str, body: Any, field: str, bad: str
):
    if method == "GATEWAY" and bad < " ":
        bad = "\t"  # the C0 control HTTP carries in a header: h11 answers 400 to U+0007 before the gateway
    said = f"must not contain U+{ord(bad):04X} at position 3"
    sent = _put(body, f"ab{bad}c")
    if method == "CONSOLE":
        status, page = await _console(*client, bad=f"ab{bad}c")
        assert status == 422 and f"<strong>{field}</strong>: {said}" in page, page
        return
    if method == "GATEWAY":
        answer = _gateway(request.getfixturevalue("gateway"), path, sent)
        assert answer.status_code == 422, answer.text
        assert f"{field}: {said}" in answer.text or f"{field} {said}" in answer.text, answer.text
        return
    answer = await client[0].request(method, path, json=sent)
    status, code, named, message = _problem(answer)
    assert (status, code, named) == (422, "validation_error", field), answer.text
    assert message.startswith(("a key " + said) if field.endswith(("dimensions", "match")) else said), message


async def test_bidi_marks_and_joiners_are_taken_in_free_text(client):
    """Guard: Cf is not refused (U+200D zero width joiner, U+200F right-to-left mark, U+202E
    right-to-left override: the renderings close what it opens); the name is kept as sent."""
    cid = f"text-cf-{uuid.uuid4().hex[:8]}"
    name = "\U0001f469\u200d\U0001f4bb Acme\u200f \u202eCorp"
    made = await client[0].post("/v1/customers", json={"id": cid, "name": name, "price_book": client[1]})
    assert made.status_code == 201, made.text
    assert (await client[0].get(f"/v1/customers/{cid}")).json()["name"] == name


async def test_a_name_stored_before_the_rule_still_reads(client, db):
    """Guard: the rule refuses what is sent, not what is kept: a customer's name written with a
    BEL before it (here by SQL) reads back as it was, and the customer takes a top-up."""
    cid = f"text-old-{uuid.uuid4().hex[:8]}"
    assert (await client[0].post("/v1/customers", json={"id": cid, "price_book": client[1]})).status_code == 201
    await db.run(
        lambda conn: conn.execute(
            text("UPDATE customers SET name = :n WHERE id = :id"), {"n": "old\x07name", "id": cid}
        )
    )
    assert (await client[0].get(f"/v1/customers/{cid}")).json()["name"] == "old\x07name"
    topped = await client[0].post(f"/v1/customers/{cid}/topups", json={"amount": "1.00", "reference": "wire 1"})
    assert topped.status_code == 201, topped.text


async def test_a_budget_on_an_empty_dimension_value_binds_the_calls_that_send_it(client):
    """A usage dimension's string value may be "" (0 to 200 characters: a reserve and a usage event
    take it, README), and a budget must be able to bind any value a call sends: a budget on
    {"feature": ""} was 422 (`dimensions[...]`, at least 1 character) while such calls were taken.
    Limit $1.00 a day: the first $0.60 call with feature "" is held, a second would make $1.20 >
    $1.00 (429); a call with feature "chat", or none, is not the budget's (held)."""
    cid = f"text-empty-{uuid.uuid4().hex[:8]}"
    http = client[0]
    assert (await http.post("/v1/customers", json={"id": cid, "price_book": client[1]})).status_code == 201
    assert (await http.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    budget = await http.post(
        "/v1/budgets",
        json={"customer_id": cid, "window": "day", "metric": "money", "limit": "1.00", "dimensions": {"feature": ""}},
    )
    assert budget.status_code == 201, budget.text
    assert budget.json()["dimensions"] == {"feature": ""}

    async def reserve(rid: str, **dimensions: str) -> int:
        body = {"customer_id": cid, "request_id": rid, "model": "model-a", "amount": "0.60", "dimensions": dimensions}
        return (await http.post("/v1/reservations", json=body)).status_code

    assert [
        await reserve("r1", feature=""),
        await reserve("r2", feature=""),
        await reserve("r3", feature="chat"),
        await reserve("r4"),
    ] == [201, 429, 201, 201]

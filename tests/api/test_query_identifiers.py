"""A query parameter naming a customer takes only what can be a customer's id (its pattern, as
the customers' CHECK says, and as the OpenAPI document publishes), one naming a currency only
what can be an asset code: anything else is a 422 `validation_error` naming the parameter, never
an empty answer, a default, or a 404 for a lookup under a name nothing can have."""
from __future__ import annotations

import pytest

from tests.api.apps import book_customer

pytestmark = pytest.mark.usefixtures("no_endpoint_left")

# (path, the parameter naming a customer there)
ROUTES = [("/v1/budgets", "customer_id"), ("/v1/journal", "customer"), ("/v1/receivables/ageing", "customer"),
          ("/v1/audit/charges/r-1", "customer_id")]


@pytest.fixture
async def customer(client, tag) -> str:
    return await book_customer(client, f"qid-{tag}", "input", billing="prepaid")


def _refused_naming(response, name: str, bad: str) -> None:
    assert response.headers["content-type"].startswith("application/problem+json"), (bad, response.text)
    assert (response.status_code, response.json()["code"]) == (422, "validation_error"), (bad, response.text)
    assert [f["field"] for f in response.json()["fields"]] == [name], (bad, response.text)


@pytest.mark.parametrize(("path", "name"), ROUTES)
async def test_a_customer_query_parameter_that_cannot_be_an_id_is_a_422_naming_it(client, customer, path, name):
    """An empty id, `bad$$id` and one of 101 characters (the pattern allows 1 + 99) cannot name a
    customer. The charge trace's `customer_id` had no bound at all: an admin key was answered 404
    "no reservation or usage event r-1", looked up under "" (or `bad$$id`, or the 101 a's), where
    the budgets list, the journal and the ageing answer 422. Now it too is 422
    `validation_error` with `fields` naming it; the customer's own id is still taken (the charge
    trace then answers 404: r-1 was never reserved)."""
    for bad in ("", "bad$$id", "a" * 101):
        _refused_naming(await client.get(path, params={name: bad}), name, bad)
    taken = await client.get(path, params={name: customer})
    assert taken.status_code == (404 if "charges" in path else 200), taken.text


@pytest.mark.parametrize(("path", "name"), ROUTES)
async def test_a_customers_id_and_a_trailing_newline_is_not_its_id(client, customer, path, name):
    """The pattern `^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$` was checked as msgspec checks one, with
    `re.search`, where `$` also matches before a trailing newline (formats.matches says so): the
    customer's id followed by "\\n" (one character more, within the 100) passed, and its budgets
    were 200 `{"budgets": []}`, its journal 200 `{"entries": []}`, its ageing 404 "no customer
    <id>\\n" (the charge trace, once bounded, likewise). Now the whole value must be in the
    pattern: 422 `validation_error` naming the parameter."""
    bad = f"{customer}\n"
    _refused_naming(await client.get(path, params={name: bad}), name, bad)


@pytest.mark.parametrize("path", ["/v1/audit/trial-balance", "/v1/receivables/ageing"])
async def test_a_currency_query_parameter_that_cannot_be_a_currency_is_a_422_naming_it(client, customer, path):
    """`currency` names an asset code (1 to 16 of `A-Z a-z 0-9 _ . -`, as the ageing's pattern
    publishes). The trial balance bounded it by length only (1 to 16 since d1b8a44; before, `currency=`
    answered the default, USD): `US$` was 404 "no currency US$", a lookup under a code no asset can
    have, where the ageing answers 422. Now both routes answer each of "", `US$` and `USD` with a
    trailing newline 422 `validation_error` naming `currency`; USD (this database's currency) is
    still taken."""
    for bad in ("", "US$", "USD\n"):
        _refused_naming(await client.get(path, params={"currency": bad}), "currency", bad)
    taken = await client.get(path, params={"currency": "USD"})
    assert taken.status_code == 200, taken.text


async def test_a_journal_kind_and_a_trailing_newline_is_a_422_naming_kind(client, customer):
    """An entry's kind is a snake_case word (`topup`, `settle`, `credit_refund`); `kind` was bounded
    by length alone (1 to 64), so `topup` and "\\n" (6 characters) was looked up as a kind no entry
    has: 200 `{"entries": []}` for the customer's one top-up. Now `kind` has a pattern, checked
    whole (wire._check_query): "topup\\n", "Top-Up" and "" are 422 `validation_error` naming
    `kind`; `topup` still lists the customer's one top-up of $10.00."""
    assert (await client.post(f"/v1/customers/{customer}/topups", json={"amount": "10.00"})).status_code == 201
    for bad in ("topup\n", "Top-Up", ""):
        _refused_naming(await client.get("/v1/journal", params={"customer": customer, "kind": bad}), "kind", bad)
    listed = await client.get("/v1/journal", params={"customer": customer, "kind": "topup"})
    assert [e["kind"] for e in listed.json()["entries"]] == ["topup"], listed.text

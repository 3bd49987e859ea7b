"""A budget's limit is checked by one rule on POST /v1/budgets and PATCH /v1/budgets/{id}: the
same bad limit on a budget of the same metric is the same 422 (code, field and words) by either
verb. msgspec refused some before the metric was known, in its own words and in words that
differed by verb (a boolean: "Expected `int | str`, got `bool`" by POST, "... `int | str | null`
..." by PATCH), and a money budget's -1 or 10**18 + 1 was told "Expected `int` >= 1" as if an
integer would do."""
from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from api.routes.formats import AMOUNT_TEXT
from pricing.errors import NOT_AN_INTEGER

MONEY_LIMIT = 'a money limit is a decimal string, such as "10.00"'  # README, Budgets
MONEY_TEXT = "must be more than 0: " + AMOUNT_TEXT  # a money string that is not an amount, as a top-up's
TOKENS = "a tokens limit is an integer"
TOKENS_RANGE = "a tokens limit is an integer from 1 to 1000000000000000000"  # 10**18: the schema's bound

# (metric, the limit as JSON text, the message naming `limit`): money takes a decimal string only,
# more than 0, at most 1,000,000,000 (10**9 units), at most 9 decimals; a count a JSON integer of
# 1 to 10**18, a number with a fraction or an exponent told as every integer field is told
TABLE = [
    ("money", "10.0", MONEY_LIMIT), ("money", "1e1", MONEY_LIMIT), ("money", "1.5", MONEY_LIMIT),
    ("money", "10", MONEY_LIMIT), ("money", "-1", MONEY_LIMIT), ("money", "0", MONEY_LIMIT),
    ("money", "1000000000000000001", MONEY_LIMIT), ("money", "true", MONEY_LIMIT),
    ("money", "false", MONEY_LIMIT), ("money", "{}", MONEY_LIMIT), ("money", "[]", MONEY_LIMIT),
    ("money", '"ten"', MONEY_TEXT), ("money", '"-1.00"', "must be more than 0, not -1.00"),
    ("money", '"0"', "must be more than 0, not 0"),  # each told what is wrong with it (was MONEY_TEXT)
    ("money", '"1000000000.01"', "1000000000.01 is more than 1000000000, the most an amount may be"),  # 10**9 + 1c
    ("tokens", "10.0", NOT_AN_INTEGER), ("tokens", "1e1", NOT_AN_INTEGER), ("tokens", "1.5", NOT_AN_INTEGER),
    ("tokens", "-1", TOKENS_RANGE), ("tokens", "0", TOKENS_RANGE),
    ("tokens", "1000000000000000001", TOKENS_RANGE), ("tokens", "100000000000000000000", TOKENS_RANGE),
    ("tokens", '"10"', TOKENS), ("tokens", '"ten"', TOKENS), ("tokens", "true", TOKENS),
    ("tokens", "false", TOKENS), ("tokens", "{}", TOKENS), ("tokens", "[]", TOKENS),
]
GOOD = {"money": '"5.00"', "tokens": "5"}
JSON = {"Content-Type": "application/json"}


async def _customer(client: AsyncTestClient, tag: str, book: str) -> str:
    cid = f"lim-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    return cid


def _post(cid: str, metric: str, limit: str) -> str:
    return f'{{"customer_id": "{cid}", "window": "day", "metric": "{metric}", "limit": {limit}}}'


def _refusal(response) -> tuple:
    body = response.json()
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return response.status_code, body["code"], body["fields"]


@pytest.mark.parametrize(("metric", "limit", "message"), TABLE)
async def test_a_bad_limit_is_refused_alike_by_post_and_patch(client, tag, book, metric, limit, message):
    cid = await _customer(client, tag, book)
    made = await client.post("/v1/budgets", content=_post(cid, metric, GOOD[metric]), headers=JSON)
    assert made.status_code == 201, made.text
    budget = made.json()
    posted = await client.post("/v1/budgets", content=_post(cid, metric, limit), headers=JSON)
    patched = await client.patch(f"/v1/budgets/{budget['id']}", content=f'{{"limit": {limit}}}', headers=JSON)
    assert _refusal(posted) == _refusal(patched)
    assert _refusal(posted) == (422, "validation_error", [{"field": "limit", "message": message}])
    # nothing written: the one budget, its limit as made
    listed = (await client.get("/v1/budgets", params={"customer_id": cid})).json()["budgets"]
    assert [(b["id"], b["limit"]) for b in listed] == [(budget["id"], budget["limit"])]


@pytest.mark.parametrize("metric", ["money", "tokens"])
async def test_a_null_limit_is_refused_by_post_and_leaves_the_limit_as_it_is_by_patch(client, tag, book, metric):
    """A change's null is a field left as it is (name, mode, thresholds alike); a budget has a limit."""
    cid = await _customer(client, tag, book)
    posted = await client.post("/v1/budgets", content=_post(cid, metric, "null"), headers=JSON)
    assert _refusal(posted) == (422, "validation_error",
                                [{"field": "limit", "message": MONEY_LIMIT if metric == "money" else TOKENS}])
    made = await client.post("/v1/budgets", content=_post(cid, metric, GOOD[metric]), headers=JSON)
    patched = await client.patch(f"/v1/budgets/{made.json()['id']}", content='{"limit": null, "name": "n"}',
                                 headers=JSON)
    assert patched.status_code == 200, patched.text
    assert (patched.json()["limit"], patched.json()["name"]) == (made.json()["limit"], "n")


@pytest.mark.parametrize(("metric", "limit", "shown"), [("money", '"1000000000"', "1000000000.00"),
                                                       ("tokens", "1000000000000000000", 10**18)])
async def test_the_largest_limit_is_taken_by_post_and_patch(client, tag, book, metric, limit, shown):
    cid = await _customer(client, tag, book)
    posted = await client.post("/v1/budgets", content=_post(cid, metric, limit), headers=JSON)
    assert posted.status_code == 201, posted.text
    assert posted.json()["limit"] == shown
    made = await client.post("/v1/budgets", content=_post(cid, metric, GOOD[metric]), headers=JSON)
    patched = await client.patch(f"/v1/budgets/{made.json()['id']}", content=f'{{"limit": {limit}}}', headers=JSON)
    assert patched.status_code == 200, patched.text
    assert patched.json()["limit"] == shown


@pytest.mark.parametrize(("metric", "words"), [("input_tokens", "an input_tokens limit is an integer"),
                                               ("output_tokens", "an output_tokens limit is an integer"),
                                               ("requests", "a requests limit is an integer")])
async def test_a_count_limit_is_refused_in_its_own_metrics_words(client, tag, book, metric, words):
    """The refusal names the metric with its article: "a input_tokens limit" was English for none."""
    cid = await _customer(client, tag, book)
    made = await client.post("/v1/budgets", content=_post(cid, metric, "5"), headers=JSON)
    assert made.status_code == 201, made.text
    for limit, message in (('"10"', words), ("0", words + " from 1 to 1000000000000000000")):
        posted = await client.post("/v1/budgets", content=_post(cid, metric, limit), headers=JSON)
        patched = await client.patch(f"/v1/budgets/{made.json()['id']}", content=f'{{"limit": {limit}}}',
                                     headers=JSON)
        for answer in (posted, patched):
            assert _refusal(answer) == (422, "validation_error", [{"field": "limit", "message": message}])

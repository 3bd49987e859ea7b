"""A usage report grouped by a usage dimension named as one of the row's own fields (`quantity`,
`amount`, `charges`; `currency`, a column of its CSV): before, the row's sum of that name
overwrote the dimension's value (grouped by a dimension `amount`, the row said "0.01" where the
events said "big", and two rows of different values looked alike); now such a group is refused,
422 `validation_error` naming `group_by` and the name, and the stable row shape stays flat.

Book: model-a input $10.00 per 1M tokens."""
from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from tests.api.apps import book_customer, send_usage


@pytest.fixture
async def customer(client: AsyncTestClient, tag: str) -> str:
    cid = await book_customer(client, f"unames-{tag}", "input")
    clash = {"quantity": "many", "amount": "big", "charges": "some", "currency": "EUR", "feature": "chat"}
    await send_usage(client, cid, [{"event_id": "e1", "timestamp": "2026-11-10T10:00:00Z",
                                    "usage": {"input_tokens": 1000}, "dimensions": clash}])
    return cid


@pytest.mark.parametrize("name", ["quantity", "amount", "charges", "currency"])
async def test_a_dimension_named_as_a_row_field_is_refused_naming_it(client, customer, name):
    for accept in ("application/json", "text/csv"):
        report = await client.get(f"/v1/customers/{customer}/usage", params={"group_by": f"model,{name}"},
                                  headers={"Accept": accept})
        assert report.status_code == 422, report.text
        assert report.json()["code"] == "validation_error"
        assert [f["field"] for f in report.json()["fields"]] == ["group_by"]
        assert repr(name) in report.json()["fields"][0]["message"]


async def test_other_dimensions_still_group_with_their_own_values(client, customer):
    report = await client.get(f"/v1/customers/{customer}/usage", params={"group_by": "feature"})
    assert report.status_code == 200, report.text
    assert report.json()["rows"] == [
        {"feature": "chat", "token_type": "input", "quantity": 1000, "amount": "0.01", "charges": 1}]


@pytest.mark.parametrize("group_by", ["model,model", "token_type,model,token_type", "feature, feature"])
async def test_a_group_named_twice_is_refused_naming_it(client, customer, group_by):
    # before, `model,model` answered group_by ["model", "model", "token_type"] and a CSV whose
    # header named `model` twice, each row's model written twice (pandas reads a `model.1`)
    name = group_by.split(",")[-1].strip()
    for accept in ("application/json", "text/csv"):
        report = await client.get(f"/v1/customers/{customer}/usage", params={"group_by": group_by},
                                  headers={"Accept": accept})
        assert report.status_code == 422, report.text
        assert report.json()["code"] == "validation_error"
        assert [f["field"] for f in report.json()["fields"]] == ["group_by"]
        assert repr(name) in report.json()["fields"][0]["message"]


async def test_more_than_16_group_names_are_refused_naming_the_limit(client, customer):
    # c385f476 let group_by carry 16 x 202 characters so that a name may have 200: about 1,600
    # names fit (676 two-letter names in 2,027 characters), each a column and a GROUP BY term of the report's query. The
    # limit is 16 names: model, token_type and 14 dimensions (16) answer; one more (17) is 422.
    sixteen = ",".join(["model", "token_type", *(f"d{i}" for i in range(14))])
    report = await client.get(f"/v1/customers/{customer}/usage", params={"group_by": sixteen})
    assert report.status_code == 200, report.text  # guard: 16 names
    assert len(report.json()["group_by"]) == 16
    letters = "abcdefghijklmnopqrstuvwxyz"
    many = ",".join(a + b for a in letters for b in letters)  # 676 names in 2,027 characters
    for group_by in (sixteen + ",d14", many):
        for accept in ("application/json", "text/csv"):
            report = await client.get(f"/v1/customers/{customer}/usage", params={"group_by": group_by},
                                      headers={"Accept": accept})
            assert report.status_code == 422, report.text
            assert report.json()["code"] == "validation_error"
            assert [f["field"] for f in report.json()["fields"]] == ["group_by"]
            assert "at most 16 names" in report.json()["fields"][0]["message"]

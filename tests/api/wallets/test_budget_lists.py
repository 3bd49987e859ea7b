"""How many budgets a customer may have, and the admin listing of every customer's budgets a page
at a time."""
from __future__ import annotations

import asyncio
import base64

import httpx
import psycopg
from litestar.testing import AsyncTestClient

from wallets.budgets import page_query


async def _customer(client: httpx.AsyncClient, cid: str, book: str) -> str:
    assert (await client.post("/v1/customers", json={"id": cid, "price_book": book})).status_code == 201
    return cid


async def _budgets(client: httpx.AsyncClient, cid: str, count: int, headers: dict | None = None) -> list[str]:
    async def one(i: int) -> str:
        made = await client.post("/v1/budgets", headers=headers, json={
            "customer_id": cid, "window": "day", "metric": "requests", "limit": 1000 + i, "name": f"b{i}"})
        assert made.status_code == 201, made.text
        return made.json()["id"]

    ids: list[str] = []
    for start in range(0, count, 10):  # ten at a time: the session's pool is shared
        ids += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 10))))
    return ids


async def test_a_customer_has_at_most_100_live_budgets_of_each_setter_and_a_deleted_one_makes_room(
        http: tuple[httpx.AsyncClient, str], tag: str, book: str):
    client, _ = http  # the live server: the ten budgets racing for the last five places are in flight together
    cid = await _customer(client, f"cap-{tag}", book)
    made = await client.post("/v1/api-keys", json={"scope": f"customer:{cid}"})
    own = {"Authorization": f"Bearer {made.json()['key']}"}
    ids = await _budgets(client, cid, 95, own)
    racing = await asyncio.gather(*(client.post("/v1/budgets", headers=own, json={
        "customer_id": cid, "window": "minute", "metric": "tokens", "limit": 10 + i}) for i in range(10)))
    assert sorted(r.status_code for r in racing) == [201] * 5 + [409] * 5  # counted under the customer's lock
    ids += [r.json()["id"] for r in racing if r.status_code == 201]
    # before: the 101st (and the 10,000th) was 201, and every reserve of the customer matched each
    refused = await client.post("/v1/budgets", headers=own, json={
        "customer_id": cid, "window": "day", "metric": "requests", "limit": 5})
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    body = refused.json()
    assert (body["code"], body["customer_id"], body["limit"], body["set_by"]) == ("too_many_budgets", cid, 100,
                                                                                  "customer")
    # the customer's full allowance does not lock the operator out of setting its plan's quota
    quota = await client.post("/v1/budgets", json={"customer_id": cid, "window": "month", "metric": "money",
                                                   "limit": "50.00"})
    assert quota.status_code == 201, quota.text
    ids.append(quota.json()["id"])
    listed = (await client.get(f"/v1/budgets?customer_id={cid}&limit=1000")).json()["budgets"]
    assert sorted(b["id"] for b in listed) == sorted(ids)  # nothing else written
    assert (await client.delete(f"/v1/budgets/{ids[0]}", headers=own)).status_code == 200
    again = await client.post("/v1/budgets", headers=own, json={
        "customer_id": cid, "window": "day", "metric": "requests", "limit": 5})
    assert again.status_code == 201, again.text


async def test_the_operator_too_has_at_most_100_live_budgets_on_a_customer(
        client: AsyncTestClient, tag: str, book: str):
    cid = await _customer(client, f"cap-{tag}", book)
    await _budgets(client, cid, 100)
    refused = await client.post("/v1/budgets", json={"customer_id": cid, "window": "day", "metric": "requests",
                                                     "limit": 5})
    assert (refused.status_code, refused.json()["code"], refused.json()["set_by"]) == \
        (409, "too_many_budgets", "operator")


async def _pages(client: AsyncTestClient, query: str, headers: dict | None = None) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        page = await client.get(f"/v1/budgets?{query}" + (f"&cursor={cursor}" if cursor else ""), headers=headers)
        assert page.status_code == 200, page.text
        pages.append(page.json()["budgets"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return pages


async def test_budgets_are_listed_a_page_at_a_time_by_customer_then_id(
        client: AsyncTestClient, tag: str, book: str):
    first = await _customer(client, f"pa-{tag}", book)
    second = await _customer(client, f"pb-{tag}", book)
    ids = {first: await _budgets(client, first, 3), second: await _budgets(client, second, 2)}
    # before: `limit` was not read and there was no next_cursor: every budget of every customer at once
    pages = await _pages(client, f"customer_id={first}&limit=2")
    assert [len(p) for p in pages] == [2, 1]
    assert [b["id"] for p in pages for b in p] == sorted(ids[first])
    made = await client.post("/v1/api-keys", json={"scope": "inference", "customers": [second, first]})
    limited = {"Authorization": f"Bearer {made.json()['key']}"}
    pages = await _pages(client, "limit=2", limited)  # the key's customers, across their boundary
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [(b["customer_id"], b["id"]) for p in pages for b in p] == \
        [(first, i) for i in sorted(ids[first])] + [(second, i) for i in sorted(ids[second])]
    everyone = [b["id"] for p in await _pages(client, "limit=1000") for b in p]  # an admin: every customer's
    assert len(everyone) == len(set(everyone)) and set(ids[first] + ids[second]) <= set(everyone)
    default = (await client.get(f"/v1/budgets?customer_id={first}")).json()
    assert len(default["budgets"]) == 3 and default["next_cursor"] is None  # 100 a page: a customer's all


async def test_a_budget_cursor_is_checked_never_trusted(client: AsyncTestClient, tag: str, book: str):
    cid = await _customer(client, f"pc-{tag}", book)
    other = await _customer(client, f"pd-{tag}", book)
    await _budgets(client, cid, 2)
    cursor = (await client.get(f"/v1/budgets?customer_id={cid}&limit=1")).json()["next_cursor"]
    for query in (f"customer_id={other}&cursor={cursor}", "cursor=not-a-cursor",
                  f"customer_id={cid}&cursor=WzEsIngiLCIiLFsxXV0"):
        refused = await client.get(f"/v1/budgets?{query}")
        assert (refused.status_code, refused.json()["code"]) == (400, "invalid_cursor"), query
    for limit in ("0", "1001", "x"):
        assert (await client.get(f"/v1/budgets?limit={limit}")).status_code in (400, 422)


def _nodes(plan: dict) -> list[dict]:
    return [plan] + [n for child in plan.get("Plans", []) for n in _nodes(child)]


def test_a_page_of_budgets_reads_its_rows_in_index_order_never_sorting_every_live_budget(scratch_url: str):
    """30,000 live budgets of 3,000 customers: each page (an admin's first, one further on, a key's
    two customers) is read in (customer, id) order from an index, a page's worth a lane at most."""
    with psycopg.connect(scratch_url, autocommit=True) as conn:
        conn.execute("INSERT INTO assets (code, scale) VALUES ('USD', 9) ON CONFLICT DO NOTHING")
        conn.execute("INSERT INTO customers (id, currency) SELECT format('c%s', lpad(n::text, 4, '0')), 'USD' "
                     "FROM generate_series(1, 3000) n")
        conn.execute("""INSERT INTO budgets (lane, id, customer_id, window_kind, metric, limit_units, mode)
                        SELECT c.lane, format('b%s-%s', b, c.id), c.id, 'day', 'requests', 10, 'hard'
                          FROM customers c, generate_series(1, 10) b""")
        conn.execute("ANALYZE budgets")
        lanes = conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'budgets'::regclass").fetchone()[0]
        pages = ((None, None), (None, ("c1500", "b5-c1500")), (["c0042", "c2999"], ("c0042", "b3-c0042")))
        for customers, after in pages:
            sql, params = page_query(customers, after, 100)
            [[[explained]]] = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params).fetchall()
            nodes = _nodes(explained["Plan"])
            # before (no index on (customer_id, id)): a Sort of every live budget the filter kept, 30,000
            assert not [n for n in nodes if "Sort" in n["Node Type"]], (customers, after, nodes)
            scans = [n for n in nodes if n["Node Type"].endswith("Scan")]
            assert scans and all(n["Node Type"].startswith("Index") for n in scans), scans
            assert sum(n["Actual Rows"] for n in scans) <= lanes * 101, scans
            rows = conn.execute(sql, params).fetchall()
            assert len(rows) == (101 if customers is None else 16)  # c0042 b4-b9, c2999 b1-b10
            conn.execute("SET enable_indexscan = off")  # the same page by a sort: the same rows
            conn.execute("SET enable_bitmapscan = off")
            assert conn.execute(sql, params).fetchall() == rows
            conn.execute("RESET enable_indexscan")
            conn.execute("RESET enable_bitmapscan")


async def test_a_budget_cursor_forged_with_a_lone_surrogate_or_a_nul_is_an_invalid_cursor(
        client: AsyncTestClient, tag: str, book: str):
    """A cursor is JSON (base64) that json.loads reads, lone surrogates ("\\ud800") and NULs
    included, and its position is no hash's: a position edited to hold one went to the database
    as a parameter, a 500 internal_error (the surrogate, which text cannot encode) or a 422
    validation_error on `body` (the NUL; there was no body). Each is 400 `invalid_cursor`."""
    from api.routes import cursors

    cid = await _customer(client, f"pe-{tag}", book)
    await _budgets(client, cid, 2)
    for position in ([cid, "\ud800"], ["a\udc00", "b"], [cid, "b\x00"]):
        forged = cursors.encode_position("budgets", [cid], position)
        refused = await client.get("/v1/budgets", params={"customer_id": cid, "cursor": forged})
        assert refused.headers["content-type"].startswith("application/problem+json"), position
        assert (refused.status_code, refused.json()["code"]) == (400, "invalid_cursor"), (position, refused.text)
    deep = base64.urlsafe_b64encode(b"[" * 2000 + b"]" * 2000).decode().rstrip("=")  # json.loads: RecursionError
    refused = await client.get("/v1/budgets", params={"customer_id": cid, "cursor": deep})
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_cursor"), refused.text


async def test_a_customer_id_that_cannot_be_a_customers_is_422_naming_it_not_an_empty_list(
        client: AsyncTestClient, tag: str, book: str):
    """`customer_id` is a customer's id (its pattern in the OpenAPI document, as the journal's
    `customer`): one empty, a space, `bad$$id` or 101 characters long cannot name a customer,
    and an admin key was answered 200 `{"budgets": []}`, as for a customer with no budgets, where
    `GET /v1/journal?customer=` of the same is a 422 naming it. Now 422 `validation_error` on
    `customer_id`; the customer's own id still lists its one budget."""
    cid = await _customer(client, f"pq-{tag}", book)
    [made] = await _budgets(client, cid, 1)
    for bad in ("", " ", "bad$$id", "a" * 101, "-leading-dash"):
        refused = await client.get("/v1/budgets", params={"customer_id": bad})
        assert refused.headers["content-type"].startswith("application/problem+json"), (bad, refused.text)
        assert (refused.status_code, refused.json()["code"]) == (422, "validation_error"), (bad, refused.text)
        assert refused.json()["fields"][0]["field"] == "customer_id", (bad, refused.text)
    listed = await client.get("/v1/budgets", params={"customer_id": cid})
    assert [b["id"] for b in listed.json()["budgets"]] == [made]


async def test_the_default_page_holds_a_customers_every_budget_at_the_default_caps(
        client: AsyncTestClient, tag: str, book: str):
    """README: `limit` defaults to "a customer's all, at the default cap". The cap became 100 live
    budgets set by the operator and 100 by the customer itself (a9408b9), 200 in all, ten minutes
    after the default page of 100 was written for one cap of 100: a customer at both caps was
    listed 100 of its 200 budgets and a next_cursor. By hand: 100 + 100 = 200 budgets, one page of
    200, next_cursor null; at limit=100, two pages of 100."""
    cid = await _customer(client, f"pd-{tag}", book)
    made = await client.post("/v1/api-keys", json={"scope": f"customer:{cid}"})
    own = {"Authorization": f"Bearer {made.json()['key']}"}
    ids = await _budgets(client, cid, 100) + await _budgets(client, cid, 100, own)
    page = (await client.get("/v1/budgets", params={"customer_id": cid})).json()
    assert (len(page["budgets"]), page["next_cursor"]) == (200, None)
    assert [b["id"] for b in page["budgets"]] == sorted(ids)
    assert [len(p) for p in await _pages(client, f"customer_id={cid}&limit=100")] == [100, 100]

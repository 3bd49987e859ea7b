"""Budgets at their edges through HTTP: what a create or a change refuses (422 naming the field,
nothing written), a budget gone, and a limit lowered under what its window already holds."""
from __future__ import annotations

from decimal import Decimal

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from ledger.db import Database
from tests.api.wallets.test_budgets_api import _budget, _funded, _reserve
from wallets.chart import ASSET_SCALE
from wallets.core import budgets as rules
from wallets.periods import new_zone

BAD_CREATES = [
    ({"limit": "99999999999999999999999.00"}, "limit"), ({"limit": "1e3"}, "limit"), ({"limit": "0.00"}, "limit"),
    ({"limit": 10, "metric": "money"}, "limit"), ({"limit": "10", "metric": "tokens"}, "limit"),
    ({"limit": 10.5, "metric": "tokens"}, "limit"), ({"limit": 10**19, "metric": "tokens"}, "limit"),
    ({"limit": True, "metric": "tokens"}, "limit"),
    ({"time_zone": "Not/AZone"}, "time_zone"), ({"time_zone": "../../etc/passwd"}, "time_zone"),
    ({"time_zone": "/etc/localtime"}, "time_zone"), ({"time_zone": "zone.tab"}, "time_zone"),
    ({"time_zone": "America"}, "time_zone"), ({"time_zone": " UTC"}, "time_zone"),
    # files beside the zones, not zones: the host's own (/etc/localtime: windows differing by host),
    # leap-second copies (right/America/New_York put December's midnight at 04:00 UTC, not 05:00)
    ({"time_zone": "localtime"}, "time_zone"), ({"time_zone": "posixrules"}, "time_zone"),
    ({"time_zone": "right/America/New_York"}, "time_zone"), ({"time_zone": "posix/Europe/Berlin"}, "time_zone"),
    # tzdata's "no zone": a zone of its list whose local time is "-00", at UTC, not a place's time
    ({"time_zone": "Factory"}, "time_zone"),
    ({"thresholds": [50, 50]}, "thresholds"), ({"thresholds": [0]}, "thresholds[0]"),
    ({"thresholds": [1001]}, "thresholds[0]"), ({"window": "week"}, "window"),
    ({"window": "request", "metric": "requests", "limit": 3}, "metric"), ({"model": ""}, "model"),
    ({"dimensions": {"a": 1}}, "dimensions"), ({"name": "x" * 201}, "name"),
    # a misspelt field was dropped: "timezone" made a budget of UTC days, "threshold" one that never alerts
    ({"timezone": "America/New_York"}, "timezone"), ({"threshold": [80]}, "threshold"),
    # only `*` is a wildcard (README): `?` and `[` were fnmatch's, so "gpt-4?" bound gpt-41 and gpt-4o,
    # and "model-[1m]" (a literal name) bound model-1 and model-m, not itself
    ({"model": "gpt-4?"}, "model"), ({"model": "model-[1m]"}, "model"), ({"model": "gpt-[!4]*"}, "model"),
    # a time zone sets where a day or a month begins: on a rolling minute, a request or the lifetime it
    # was 201, kept and shown, and changed nothing (README: "`day` and `month` ... in `time_zone`")
    ({"window": "minute", "metric": "tokens", "limit": 1000, "time_zone": "Asia/Tokyo"}, "time_zone"),
    ({"window": "request", "time_zone": "Asia/Tokyo"}, "time_zone"),
    ({"window": "lifetime", "time_zone": "UTC"}, "time_zone"),
    # the key twice, two keys: a call counts under one key (dimensions.api_key), so a budget on k1 that
    # also wants dimensions.api_key k2 bound no call at all (201, and the cap set on k1 capped nothing)
    ({"api_key": "k1", "dimensions": {"api_key": "k2"}}, "dimensions.api_key"),
]


@pytest.mark.parametrize("change, field", BAD_CREATES)
async def test_a_budget_that_cannot_mean_anything_is_422_naming_the_field_and_nothing_is_written(
        client: AsyncTestClient, tag: str, book: str, change: dict, field: str):
    cid = await _funded(client, tag, book)
    body = {"customer_id": cid, "window": "month", "metric": "money", "limit": "10.00", **change}
    refused = await client.post("/v1/budgets", json=body)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "validation_error"
    assert refused.json()["fields"][0]["field"].startswith(field), refused.text
    assert (await client.get(f"/v1/budgets?customer_id={cid}")).json()["budgets"] == []


@pytest.mark.parametrize("change", [{"limit": "abc"}, {"limit": 5}, {"mode": "x"}, {"thresholds": [2000]},
                                    {"limit": "99999999999.00"}, {"name": None, "limit": "0.00"}])
async def test_a_bad_change_is_422_and_leaves_the_budget_as_it_was(client: AsyncTestClient, tag: str, book: str,
                                                                  change: dict):
    cid = await _funded(client, tag, book)
    b = await _budget(client, customer_id=cid, window="month", metric="money", limit="10.00")
    refused = await client.patch(f"/v1/budgets/{b['id']}", json=change)
    assert refused.status_code == 422 and refused.json()["code"] == "validation_error", refused.text
    now = (await client.get(f"/v1/budgets/{b['id']}")).json()
    assert (now["limit"], now["mode"], now["thresholds"]) == ("10.00", "hard", [])


async def test_a_deleted_budget_is_gone_for_every_route(client: AsyncTestClient, tag: str, book: str):
    cid = await _funded(client, tag, book)
    b = await _budget(client, customer_id=cid, window="day", metric="requests", limit=2, time_zone="Pacific/Kiritimati")
    assert (await client.delete(f"/v1/budgets/{b['id']}")).status_code == 200
    for answer in (await client.delete(f"/v1/budgets/{b['id']}"), await client.get(f"/v1/budgets/{b['id']}"),
                   await client.patch(f"/v1/budgets/{b['id']}", json={"limit": 3})):
        assert answer.status_code == 404 and answer.json()["code"] == "not_found", answer.text
    for path in ("/v1/budgets/" + "x" * 5000, "/v1/budgets/%00"):
        assert (await client.get(path)).status_code in (404, 422)


async def test_a_limit_lowered_under_what_is_held_refuses_new_holds_but_lets_the_old_ones_close(
        client: AsyncTestClient, tag: str, book: str):
    cid = await _funded(client, tag, book)
    b = await _budget(client, customer_id=cid, window="minute", metric="requests", limit=3)
    held = [await _reserve(client, cid, f"q{i}", amount="1.00") for i in range(3)]
    assert [h.status_code for h in held] == [201] * 3
    assert (await client.patch(f"/v1/budgets/{b['id']}", json={"limit": 1})).json()["remaining"] == 0
    refused = await _reserve(client, cid, "q3", amount="1.00")
    assert refused.status_code == 429 and refused.json()["code"] == "budget_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) == refused.json()["retry_after_seconds"] <= 60
    released = await client.post(f"/v1/reservations/{held[0].json()['id']}/release")
    settled = await client.post(f"/v1/reservations/{held[1].json()['id']}/settle",
                                json={"usage": {"input_tokens": 10, "output_tokens": 1}})
    assert (released.status_code, settled.status_code) == (200, 200), settled.text
    now = (await client.get(f"/v1/budgets/{b['id']}")).json()
    assert (now["used"], now["held"], now["remaining"]) == (1, 1, 0)
    assert (await client.patch(f"/v1/budgets/{b['id']}", json={"mode": "soft"})).status_code == 200
    assert (await _reserve(client, cid, "q4", amount="1.00")).status_code == 201  # soft: allowed past the limit


async def test_a_change_can_clear_the_thresholds_and_the_name(client: AsyncTestClient, tag: str, book: str):
    cid = await _funded(client, tag, book)
    b = await _budget(client, customer_id=cid, name="cap", window="day", metric="tokens", limit=100,
                      thresholds=[80, 50], time_zone="Asia/Kathmandu")
    assert b["thresholds"] == [80, 50] and b["window_start"].endswith(":15:00Z")  # +05:45: local midnight
    changed = await client.patch(f"/v1/budgets/{b['id']}", json={"thresholds": [], "name": ""})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["thresholds"], changed.json()["name"]) == ([], "")
    assert (await client.get(f"/v1/budgets/{b['id']}")).json()["thresholds"] == []


async def test_a_hold_taken_before_its_budget_was_deleted_still_returns_and_verify_agrees(
        client: AsyncTestClient, db: Database, tag: str, book: str):
    cid = await _funded(client, tag, book)
    old = await _budget(client, customer_id=cid, window="month", metric="money", limit="5.00")
    held = [await _reserve(client, cid, f"d{i}", amount="2.00") for i in range(2)]
    assert [h.status_code for h in held] == [201, 201]
    assert (await client.delete(f"/v1/budgets/{old['id']}")).status_code == 200
    new = await _budget(client, customer_id=cid, window="month", metric="money", limit="5.00")
    assert new["held"] == "4.00"  # a budget made mid-window counts the holds open in it (README, Budgets)
    assert (await _reserve(client, cid, "d2", amount="1.01")).status_code == 429
    assert (await _reserve(client, cid, "d2", amount="1.00")).status_code == 201
    assert (await client.post(f"/v1/reservations/{held[0].json()['id']}/release")).status_code == 200
    settled = await client.post(f"/v1/reservations/{held[1].json()['id']}/settle",
                                json={"usage": {"input_tokens": 1000, "output_tokens": 0}})
    assert settled.status_code == 200, settled.text
    rows = await db.read(lambda conn: conn.execute(text(
        "SELECT used, held FROM budget_windows WHERE budget_id = :b"), {"b": old["id"]}))
    charged = int(Decimal(settled.json()["charged"]).scaleb(ASSET_SCALE))
    assert [(int(u), int(h)) for u, h in rows] == [(charged, 0)]  # the release returned, the settle counted
    now = (await client.get(f"/v1/budgets/{new['id']}")).json()
    assert (now["used"], now["held"]) == (settled.json()["charged"], "1.00")  # they returned to the new one too
    verify = (await client.post("/v1/audit/verify")).json()
    assert next(c for c in verify["checks"] if c["name"] == "budgets")["ok"]


async def test_a_budget_on_a_true_or_false_dimension_binds_the_calls_that_send_it_as_a_json_boolean(
        client: AsyncTestClient, tag: str, book: str):
    cid = await _funded(client, tag, book)
    b = await _budget(client, customer_id=cid, window="month", metric="money", limit="1.00",
                      dimensions={"batch": "true", "tier": "2"})
    refused = await _reserve(client, cid, "b0", amount="2.00", dimensions={"batch": True, "tier": 2})
    assert refused.status_code == 429 and refused.json()["budget_id"] == b["id"], refused.text
    assert (await _reserve(client, cid, "b1", amount="2.00", dimensions={"batch": False, "tier": 2})).status_code == 201
    python_spelling = await _budget(client, customer_id=cid, window="month", metric="money", limit="1.00",
                                    dimensions={"batch": "True"})  # not how JSON spells it: binds nothing
    assert (await _reserve(client, cid, "b2", amount="2.00", dimensions={"batch": True})).status_code == 201
    assert (await client.get(f"/v1/budgets/{python_spelling['id']}")).json()["held"] == "0.00"


async def test_a_change_that_leaves_the_window_past_a_threshold_alerts_then_once(
        client: AsyncTestClient, db: Database, tag: str, book: str):
    """A limit lowered under what the window counts (or a threshold added below it) crossed no
    threshold by any hold: the window stood past 80 and 100 % of the new limit, and no alert ever
    came in that window."""
    cid = await _funded(client, tag, book)
    b = await _budget(client, customer_id=cid, window="month", metric="money", limit="10.00", mode="soft",
                      thresholds=[50, 80, 100])
    assert (await _reserve(client, cid, "t0", amount="6.00")).status_code == 201  # 60 %: 50 crossed

    async def alerts() -> list[tuple[int, str]]:
        rows = await db.read(lambda conn: conn.execute(text(
            "SELECT payload FROM outbox WHERE topic = 'budget.threshold_crossed' AND payload->>'budget_id' = :b "
            "ORDER BY id"), {"b": b["id"]}))
        return [(p["threshold"], p["limit"]) for (p,) in rows]

    assert await alerts() == [(50, "10.00")]
    assert (await client.patch(f"/v1/budgets/{b['id']}", json={"limit": "5.00"})).status_code == 200  # 120 %
    assert await alerts() == [(50, "10.00"), (80, "5.00"), (100, "5.00")]
    assert (await client.patch(f"/v1/budgets/{b['id']}", json={"thresholds": [50, 80, 100, 110]})).status_code == 200
    assert await alerts() == [(50, "10.00"), (80, "5.00"), (100, "5.00"), (110, "5.00")]
    for limit in ("10.00", "5.00"):  # back under, and past again: each threshold once per window
        assert (await client.patch(f"/v1/budgets/{b['id']}", json={"limit": limit})).status_code == 200
    assert len(await alerts()) == 4


async def test_a_limit_raised_alerts_its_thresholds_and_refusals_again_as_the_window_reaches_them(
        client: AsyncTestClient, db: Database, tag: str, book: str):
    """A threshold crossed, or a refusal written, at the old limit kept its outbox key for the rest
    of the window: a month cap raised from $10 to $20 after its 50 % alert never said 50 % of $20
    ($10 counted), and a hard cap raised from $10 to $15 after its refusal refused again at $15
    without a budget.exceeded. Each alert is once per window and limit."""
    cid = await _funded(client, tag, book)
    soft = await _budget(client, customer_id=cid, window="month", metric="money", limit="10.00", mode="soft",
                         thresholds=[50, 100], dimensions={"team": "a"})
    hard = await _budget(client, customer_id=cid, window="month", metric="money", limit="10.00",
                         dimensions={"team": "b"})

    async def alerts(topic: str, budget_id: str) -> list[tuple]:
        rows = await db.read(lambda conn: conn.execute(text(
            "SELECT payload FROM outbox WHERE topic = :t AND payload->>'budget_id' = :b ORDER BY id"),
            {"t": topic, "b": budget_id}))
        return [(p.get("threshold"), p["limit"], p["used"], p["held"]) for (p,) in rows]

    a, b = {"dimensions": {"team": "a"}}, {"dimensions": {"team": "b"}}
    crossed = "budget.threshold_crossed"
    assert (await _reserve(client, cid, "s1", amount="6.00", **a)).status_code == 201  # 6 of 10: 60 %, 50 crossed
    assert await alerts(crossed, soft["id"]) == [(50, "10.00", "0.00", "6.00")]
    assert (await client.patch(f"/v1/budgets/{soft['id']}", json={"limit": "20.00"})).status_code == 200  # 30 %
    assert (await _reserve(client, cid, "s2", amount="5.00", **a)).status_code == 201  # 11 of 20: 55 %, 50 crossed
    assert (await _reserve(client, cid, "s3", amount="9.00", **a)).status_code == 201  # 20 of 20: 100 % crossed
    assert await alerts(crossed, soft["id"]) == [(50, "10.00", "0.00", "6.00"), (50, "20.00", "0.00", "11.00"),
                                                 (100, "20.00", "0.00", "20.00")]

    exceeded = "budget.exceeded"
    assert (await _reserve(client, cid, "h1", amount="10.00", **b)).status_code == 201  # 10 of 10
    assert (await _reserve(client, cid, "h2", amount="1.00", **b)).status_code == 429  # 11 > 10
    assert (await client.patch(f"/v1/budgets/{hard['id']}", json={"limit": "15.00"})).status_code == 200
    assert (await _reserve(client, cid, "h3", amount="5.00", **b)).status_code == 201  # 15 of 15
    assert (await _reserve(client, cid, "h4", amount="1.00", **b)).status_code == 429  # 16 > 15
    assert (await _reserve(client, cid, "h5", amount="1.00", **b)).status_code == 429  # again: no new event
    assert await alerts(exceeded, hard["id"]) == [(None, "10.00", "0.00", "10.00"), (None, "15.00", "0.00", "15.00")]
    # lowered under a window already past both thresholds (20 of 20, now 20 of 10), then raised back:
    # nothing newly past, and nothing twice
    for limit in ("10.00", "20.00"):
        assert (await client.patch(f"/v1/budgets/{soft['id']}", json={"limit": limit})).status_code == 200
    assert len(await alerts(crossed, soft["id"])) == 3


async def test_a_refusal_answers_the_fields_its_budget_exceeded_event_carries_nulls_included(
        client: AsyncTestClient, db: Database, tag: str, book: str):
    """The README says the event carries "the 429's fields": the 429 left out what is null (a
    lifetime's or a request's window_start and resets_at, a minute's resets_at), which the event
    and the budget's own answer spell as null. None of these can wait (the minute counted nothing
    to lapse): no retry_after_seconds, in either."""
    cid = await _funded(client, tag, book)
    cases = {  # window: (limit, hold); each refuses a hold of 1.00 more than its limit, nothing else counted
        "lifetime": ("5.00", "6.00"), "request": ("1.00", "2.00"), "minute": ("3.00", "4.00")}
    for window, (limit, hold) in cases.items():
        b = await _budget(client, customer_id=cid, window=window, metric="money", limit=limit,
                          dimensions={"team": window})
        refused = await _reserve(client, cid, f"r-{window}", amount=hold, dimensions={"team": window})
        assert refused.status_code == 429, refused.text
        body = refused.json()
        rows = await db.read(lambda conn, b=b: conn.execute(text(
            "SELECT payload FROM outbox WHERE topic = 'budget.exceeded' AND payload->>'budget_id' = :b"),
            {"b": b["id"]}))
        (event,) = [p for (p,) in rows]
        expected = {"budget_id": b["id"], "budget_name": "", "metric": "money", "window": window,
                    "mode": "hard", "limit": limit, "used": "0.00", "held": "0.00", "requested": hold,
                    "currency": "USD", "window_start": None if window != "minute" else body["window_start"],
                    "resets_at": None}
        assert {k: event.get(k, "absent") for k in [*expected, "retry_after_seconds"]} == {
            **expected, "retry_after_seconds": "absent"}
        assert {k: body.get(k, "absent") for k in [*expected, "retry_after_seconds"]} == {
            **expected, "retry_after_seconds": "absent"}, window
        if window != "minute":  # a rolling minute's start moves on by the second
            assert (b["window_start"], b["resets_at"]) == (None, None)  # as the budget's own answer spells them


async def test_each_request_a_per_request_cap_refuses_writes_its_own_budget_exceeded_event(
        client: AsyncTestClient, db: Database, tag: str, book: str):
    """A per-request cap alerts once per request (README: "one request"): a refusal has no
    reservation, so its event was keyed by the clock minute, and a second request refused in that
    minute wrote none. Requests r1 and r2 of $2.00 under a $1.00 cap are 2 events; r1 sent again
    (the same request, refused again) no third."""
    cid = await _funded(client, tag, book)
    b = await _budget(client, customer_id=cid, window="request", metric="money", limit="1.00")
    for request_id in ("r1", "r2", "r1"):
        assert (await _reserve(client, cid, request_id, amount="2.00")).status_code == 429
    rows = await db.read(lambda conn: conn.execute(text(
        "SELECT payload FROM outbox WHERE topic = 'budget.exceeded' AND payload->>'budget_id' = :b ORDER BY id"),
        {"b": b["id"]}))
    assert [(p["requested"], p["limit"]) for (p,) in rows] == [("2.00", "1.00")] * 2


async def test_a_replayed_rolling_minute_refusal_keeps_the_retry_after_header_its_first_answer_had(
        client: AsyncTestClient, tag: str, book: str):
    """A budget refusal is the call's answer: its Idempotency-Key replays it. A rolling minute's
    carries its wait twice, in the body (retry_after_seconds) and as Retry-After; the replay answered
    the body alone (no header: the SDK's retry_after None), where the first answer had both."""
    cid = await _funded(client, tag, book)
    await _budget(client, customer_id=cid, window="minute", metric="requests", limit=1)
    assert (await _reserve(client, cid, "m0", amount="1.00")).status_code == 201  # the minute's 1 request
    body = {"customer_id": cid, "request_id": "m1", "model": "model-a", "amount": "1.00"}
    first = await client.post("/v1/reservations", json=body, headers={"Idempotency-Key": f"m1-{tag}"})
    again = await client.post("/v1/reservations", json=body, headers={"Idempotency-Key": f"m1-{tag}"})
    # by hand: 1 held + 1 asked > 1, freed when m0's request leaves the minute: 1 to 60 s
    assert (first.status_code, again.status_code, again.headers.get("idempotent-replayed")) == (429, 429, "true")
    assert again.json() == first.json()
    wait = first.json()["retry_after_seconds"]
    assert 1 <= wait <= 60
    assert (first.headers.get("retry-after"), again.headers.get("retry-after")) == (str(wait), str(wait))


@pytest.mark.parametrize("window", ["minute", "lifetime"])
async def test_a_budget_kept_under_its_key_before_time_zones_were_refused_on_its_window_replays_as_kept(
        client: AsyncTestClient, tag: str, book: str, monkeypatch, window: str):
    """Before e391396 a minute or lifetime budget took a time_zone (201, kept under its Idempotency-Key);
    sent again under that key with the same body, it was 422 where a replay answers what was kept."""
    cid = await _funded(client, tag, book)
    body = {"customer_id": cid, "window": window, "metric": "tokens", "limit": 1000, "time_zone": "Asia/Tokyo"}
    key = {"Idempotency-Key": f"tz-{window}-{tag}"}
    validate = rules.validate

    def before_e391396(window, metric, mode, limit, thresholds, time_zone, model=None):  # no time_zone rule
        validate(window, metric, mode, limit, thresholds, None, model)
        new_zone(time_zone)

    with monkeypatch.context() as old:
        old.setattr(rules, "validate", before_e391396)
        first = await client.post("/v1/budgets", json=body, headers=key)
    assert first.status_code == 201, first.text
    again = await client.post("/v1/budgets", json=body, headers=key)
    assert (again.status_code, again.headers.get("idempotent-replayed")) == (201, "true"), again.text
    assert again.json() == first.json()
    # guards: the body under another key, and another refused body under this key, are refused as before
    for headers, sent in (({"Idempotency-Key": f"tz2-{window}-{tag}"}, body), (key, {**body, "limit": 999})):
        refused = await client.post("/v1/budgets", json=sent, headers=headers)
        assert (refused.status_code, refused.json()["fields"][0]["field"]) == (422, "time_zone"), refused.text
    listed = (await client.get(f"/v1/budgets?customer_id={cid}")).json()["budgets"]
    assert [b["id"] for b in listed] == [first.json()["id"]]  # nothing more written

"""A re-drive `since` a time over more events than one call may queue, where more than that limit
share one `created_at` (the events of one transaction do: a close that finalizes many invoices):
the refusal's suggested page must move on, so that following it queues every event once."""
from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from api.app import create_app
from tests.integration.test_webhooks import ADMIN, FAST
from wallets.errors import TooManyEventsError
from wallets.webhooks import endpoints, log

AT = datetime(2001, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)  # no other test writes the outbox at this time


# The endpoints these tests make point at a host this machine cannot reach; left active, their
# queued deliveries held the shared database's dispatchers in later files (test_webhooks' retries
# never came: 1 of 6 deliveries in 60 s).
pytestmark = pytest.mark.usefixtures("no_endpoint_left")


def _wire(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def _events(db: Any, mark: str, times: list[datetime]) -> None:
    """Outbox rows planted at `times`, marked as gone out (`delivered_at`, as migration 0013's
    fan-out left those before it) so that no app's fan-out sends them on: unmarked, a later test's
    app fanned the earlier tests' events out to its own new endpoint (the shared database's fan-out
    cursor still behind them in the full run), beside what its re-drive queued."""
    await db.committed(lambda c: c.execute(text(
        "INSERT INTO outbox (topic, dedup_key, payload, created_at, delivered_at)"
        " SELECT 'invoice.finalized', :m || '-' || g, jsonb_build_object('id', 'evt_' || :m || '_' || g), t, t"
        " FROM unnest(CAST(:times AS timestamptz[])) WITH ORDINALITY AS x(t, g)"),
        {"m": mark, "times": times}))


async def _redrive(db: Any, endpoint: Any, since: datetime, until: datetime, limit: int,
                   **bounds: str | None) -> int:
    """log.redrive_since over [since, until), with the event id bounds given (None: left out)."""
    given = {k: v for k, v in bounds.items() if v is not None}
    return await db.committed(lambda c: log.redrive_since(c, endpoint.id, endpoint.topics, since, until, False,
                                                          limit=limit, **given))


async def _queued(db: Any, endpoint_id: str) -> list[str]:
    """The events queued for the endpoint, but for those of other files that its app's fan-out sent
    it (real events, created now: never in these tests' windows, in 2001)."""
    rows = await db.read(lambda c: c.execute(text(
        "SELECT event_id FROM webhook_deliveries WHERE endpoint_id = :e AND event_at < '2002-01-01'"
        " ORDER BY event_id"), {"e": endpoint_id}))
    return [r[0] for r in rows]


async def test_more_events_at_one_instant_than_the_limit_are_paged_through_by_the_refusals_bounds(db):
    """5 events at one microsecond T and 1 at T + 1 us, a limit of 2, a re-drive since T: the
    refusal's `until` was the time of the first event past the limit, T itself, so [T, T) queued
    nothing and the caller could never get past T. Now it names that event too (`until_event_id`):
    [T, (T, 3rd event)) holds exactly 2 events, and the next page starts at that event
    (`since_event_id`). Pages: 6 events / 2 = 3 calls queue 2, 2, 2 (the last needs no bound: 2 left
    <= 2), 6 deliveries, each event once."""
    mark = uuid.uuid4().hex[:10]
    await _events(db, mark, [AT] * 5 + [AT + timedelta(microseconds=1)])
    endpoint, _ = await db.committed(lambda c: endpoints.create(c, "https://x.example/h", ["invoice.*"], "", 1))
    until = AT + timedelta(seconds=1)  # keeps the window to this test's events
    since, since_event, scheduled = AT, None, []
    for _ in range(5):  # 3 pages are enough; more calls are a page that does not move on
        try:
            scheduled.append(await _redrive(db, endpoint, since, until, 2, since_event_id=since_event))
            break
        except TooManyEventsError as refused:
            page = refused.context
            assert (page["count"], page["limit"]) == (6 - sum(scheduled), 2)
            bound, bound_event = datetime.fromisoformat(page["until"]), page.get("until_event_id")
            scheduled.append(await _redrive(db, endpoint, since, bound, 2, since_event_id=since_event,
                                            until_event_id=bound_event))
            since, since_event = bound, bound_event
    assert scheduled == [2, 2, 2]
    assert await _queued(db, endpoint.id) == sorted(f"evt_{mark}_{g}" for g in range(1, 7))


async def test_an_event_id_bound_narrows_its_time_bound_to_the_events_past_or_before_that_id(db):
    """Three events at T (ids a < b < c, as the order of bounds compares them): since T from b
    holds b and c, 2; until T at b holds a, 1; since T from b until T at c holds b, 1; until T
    alone nothing, 0 (the bound is [since, until))."""
    mark = uuid.uuid4().hex[:10]
    at = AT + timedelta(minutes=1)
    await _events(db, mark, [at] * 3)
    a, b, c = (f"evt_{mark}_{g}" for g in (1, 2, 3))
    cases = [((None, b), (None, None), 2), ((None, None), (at, b), 1), ((None, b), (at, c), 1),
             ((None, None), (at, None), 0)]
    for (_, since_event), (until, until_event), expected in cases:
        endpoint, _ = await db.committed(lambda c: endpoints.create(c, "https://x.example/h", ["invoice.*"], "", 1))
        got = await _redrive(db, endpoint, at, until or at + timedelta(seconds=1), 10, since_event_id=since_event,
                             until_event_id=until_event)
        assert got == expected, (since_event, until, until_event)
    assert a < b < c


@pytest.mark.parametrize(("body", "field"), [
    ({"event_id": "evt_y", "since_event_id": "evt_x"}, "since_event_id"),
    ({"event_id": "evt_y", "until_event_id": "evt_x"}, "until_event_id"),
    ({"since": _wire(AT), "until_event_id": "evt_x"}, "until_event_id")])
async def test_an_event_id_bound_without_its_time_is_422_naming_it(database_url, body, field):
    """`since_event_id` narrows `since`, `until_event_id` narrows `until`: one without its time (or
    beside `event_id`) means nothing, and is refused naming it."""
    async with AsyncTestClient(app=create_app(FAST, database_url)) as client:
        client.headers.update(ADMIN)
        endpoint = (await client.post("/v1/webhook-endpoints", json={"url": "https://x.example/h",
                                                                     "topics": ["invoice.*"]})).json()
        refused = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/redrive", json=body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["fields"][0]["field"] == field, refused.text


async def test_the_http_refusal_names_the_event_to_page_from_and_the_bounds_it_names_page_through(database_url, db):
    """Over HTTP, a limit of 2 and 3 events at one microsecond T: `since` T is 422 with `until` T
    and `until_event_id`; up to that event queues 2, on from it 1: 2 + 1 = 3, each once."""
    mark = uuid.uuid4().hex[:10]
    at = AT + timedelta(minutes=2)
    await _events(db, mark, [at] * 3)
    async with AsyncTestClient(app=create_app(replace(FAST, webhook_redrive_limit=2), database_url)) as client:
        client.headers.update(ADMIN)
        endpoint = (await client.post("/v1/webhook-endpoints", json={"url": "https://x.example/h",
                                                                     "topics": ["invoice.*"]})).json()
        path = f"/v1/webhook-endpoints/{endpoint['id']}/redrive"
        window = {"since": _wire(at), "until": _wire(at + timedelta(seconds=1))}
        refused = await client.post(path, json=window)
        assert refused.status_code == 422, refused.text
        page = refused.json()
        assert (page["code"], page["count"], page["limit"], page["until_event_id"]) == (
            "too_many_events", 3, 2, f"evt_{mark}_3")
        assert datetime.fromisoformat(page["until"]) == at
        first = await client.post(path, json={"since": window["since"], "until": page["until"],
                                              "until_event_id": page["until_event_id"]})
        rest = await client.post(path, json={**window, "since": page["until"],
                                             "since_event_id": page["until_event_id"]})
        assert (first.status_code, rest.status_code) == (202, 202), (first.text, rest.text)
        assert (first.json()["scheduled"], rest.json()["scheduled"]) == (2, 1)
    assert await _queued(db, endpoint["id"]) == sorted(f"evt_{mark}_{g}" for g in (1, 2, 3))


@pytest.mark.parametrize(("bounds", "field"), [
    ({"since_event_id": "evt_b", "until_event_id": "evt_a"}, "until_event_id"),
    ({"since_event_id": "evt_b"}, "until"),
    ({"since_event_id": "evt_b", "until_event_id": "evt_b"}, None),
    ({"until_event_id": "evt_a"}, None)])
async def test_an_until_before_since_in_the_order_of_its_event_ids_is_422_naming_it(database_url, bounds, field):
    """The window is in the order (created_at, event id): at one time T, `until` T before `evt_a`
    is before `since` T from `evt_b` (a < b), as is `until` T alone (before every event of T), and
    a window ending before it starts is a 422 naming the bound, as an `until` before `since` is; it
    answered 202 with 0 scheduled, the caller's swapped ids taken for an empty window. Bounds at one
    place (`evt_b` to `evt_b`), or `until` T before `evt_a` from `since` T (from T's first event),
    are an empty or a forward window: 202."""
    at = _wire(AT + timedelta(minutes=3))
    async with AsyncTestClient(app=create_app(FAST, database_url)) as client:
        client.headers.update(ADMIN)
        endpoint = (await client.post("/v1/webhook-endpoints", json={"url": "https://x.example/h",
                                                                     "topics": ["invoice.*"]})).json()
        answer = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/redrive",
                                   json={"since": at, "until": at, **bounds})
    if field is None:
        assert answer.status_code == 202, answer.text
        return
    assert answer.status_code == 422, answer.text
    assert (answer.json()["code"], answer.json()["fields"][0]["field"]) == ("validation_error", field), answer.text


@pytest.mark.parametrize(("second", "bounds", "scheduled"), [
    (0, {"since": "Z-", "since_event_id": "b", "until": "T+1s"}, 3),
    (1, {"since": "Z", "until": "Z-", "until_event_id": "b"}, 1),
    (2, {"since": "Z-", "since_event_id": "b", "until": "Z-", "until_event_id": "a"}, 0)])
async def test_an_event_id_beside_a_bound_finer_than_a_microsecond_narrows_no_microsecond(database_url, db, second,
                                                                                           bounds, scheduled):
    """Event z at T - 1 us, events a < b < c at T (T = .789012, z at .789011), and a bound Z- =
    `.7890115Z`, half a microsecond before T: z lies before it, a, b and c past it, whatever the
    id beside it, in the window's order (created_at, event id) no event is at Z- itself. The bound
    is read as the next microsecond, T, and the event id was then applied to T's events, a
    microsecond the caller did not name: `since` Z- from b queued b, c (2) where a, b, c are past
    it (3); `until` Z- before b from Z queued z, a (2) where z alone is before it (1); and [Z- from
    b, Z- before a) is an empty window (one place), which was a 422 (`until_event_id` before
    `since_event_id` at one time, T) where it is 202, 0. (Each case at a second of its own.)"""
    mark = uuid.uuid4().hex[:10]
    at = AT + timedelta(minutes=4, seconds=second)
    await _events(db, mark, [at - timedelta(microseconds=1), at, at, at])
    z, a, b, c = (f"evt_{mark}_{g}" for g in (1, 2, 3, 4))
    spelled = {"Z-": _wire(at - timedelta(microseconds=1))[:-1] + "5Z", "Z": _wire(at - timedelta(microseconds=1)),
               "T+1s": _wire(at + timedelta(seconds=1)), "a": a, "b": b}
    assert spelled["Z-"] == f"2001-02-03T04:09:{6 + second:02d}.7890115Z" and z < a < b < c
    async with AsyncTestClient(app=create_app(FAST, database_url)) as client:
        client.headers.update(ADMIN)
        endpoint = (await client.post("/v1/webhook-endpoints", json={"url": "https://x.example/h",
                                                                     "topics": ["invoice.*"]})).json()
        answer = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/redrive",
                                   json={k: spelled[v] for k, v in bounds.items()})
    assert answer.status_code == 202, answer.text
    assert answer.json()["scheduled"] == scheduled
    assert await _queued(db, endpoint["id"]) == {3: [a, b, c], 1: [z], 0: []}[scheduled]


@pytest.mark.parametrize(("since", "until"), [("06.7890129", "06.7890121"), ("06.789013", "06.7890125")])
async def test_an_until_a_fraction_of_a_microsecond_before_since_is_422_naming_it(database_url, since, until):
    """.7890121 is before .7890129, and .7890125 before .789013, though each pair is read as one
    microsecond, .789013 (a bound finer than one is read as the next): the window ends before it
    starts, a 422 naming `until` as any `until` before `since` is; it answered 202 with 0 scheduled
    (the two bounds compared as read, equal)."""
    day = "2001-02-03T04:05:"
    async with AsyncTestClient(app=create_app(FAST, database_url)) as client:
        client.headers.update(ADMIN)
        endpoint = (await client.post("/v1/webhook-endpoints", json={"url": "https://x.example/h",
                                                                     "topics": ["invoice.*"]})).json()
        answer = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/redrive",
                                   json={"since": f"{day}{since}Z", "until": f"{day}{until}Z"})
    assert answer.status_code == 422, answer.text
    assert (answer.json()["code"], answer.json()["fields"][0]["field"]) == ("validation_error", "until"), answer.text


def _spelled(at: datetime, fraction: str, offset: str) -> str:
    """`at`'s whole second at `offset` (`Z`, `+05:30`, `-00:00`), with `fraction` as sent."""
    zone = UTC if offset in ("Z", "-00:00") else timezone(timedelta(hours=5, minutes=30))
    return at.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S") + fraction + offset


@pytest.mark.parametrize(("second", "since", "until", "scheduled"), [
    (0, (".7890120", "Z", "b"), None, "bc"),  # trailing zeros: .789012 itself, b narrows it
    (1, (".789012000", "+05:30", "b"), None, "bc"),
    (2, (".7890115", "+05:30", "b"), None, "abc"),  # between .789011 and .789012 at another offset: no id
    (3, (".789011", "-00:00", None), (".78901200", "-00:00", "b"), "za"),
    (4, (".789011", "Z", None), (".7890115", "+05:30", "b"), "z"),
    (5, (".7890115", "-00:00", "b"), (".7890120", "+05:30", "c"), "ab"),
    (6, (".7890115", "Z", "c"), (".7890115", "+05:30", "a"), ""),  # one place, both ids aside: empty, not 422
])
async def test_a_bound_is_read_to_its_digits_whatever_its_offset_or_trailing_zeros(database_url, db, second, since,
                                                                                    until, scheduled):
    """Events z at .789011 and a < b < c at T = .789012. A bound with trailing zeros (`.7890120`,
    `.789012000`, `.78901200`) is T itself, and its event id narrows T's events: since from b holds
    b, c (2); until before b from z's microsecond holds z, a (2). One finer than a microsecond
    (`.7890115`) lies between z and a, at any offset (`+05:30`: the same instant 5 h 30 min on the
    clock; `-00:00`: UTC), and its id is left aside: since from b holds a, b, c (3); until before b
    from z holds z (1); [.7890115, T before c) holds a, b (2); [.7890115, .7890115) nothing (0),
    whichever ids (202). An offset moves no event in or out."""
    mark = uuid.uuid4().hex[:10]
    at = AT + timedelta(minutes=5, seconds=second)
    await _events(db, mark, [at - timedelta(microseconds=1), at, at, at])
    ids = dict(zip("zabc", (f"evt_{mark}_{g}" for g in (1, 2, 3, 4)), strict=True))
    body: dict[str, str] = {"until": _wire(at + timedelta(seconds=1))}
    for name, bound in (("since", since), ("until", until)):
        if bound is not None:
            fraction, offset, event = bound
            body[name] = _spelled(at, fraction, offset)
            if event is not None:
                body[f"{name}_event_id"] = ids[event]
    async with AsyncTestClient(app=create_app(FAST, database_url)) as client:
        client.headers.update(ADMIN)
        endpoint = (await client.post("/v1/webhook-endpoints", json={"url": "https://x.example/h",
                                                                     "topics": ["invoice.*"]})).json()
        answer = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/redrive", json=body)
    assert answer.status_code == 202, (body, answer.text)
    assert answer.json()["scheduled"] == len(scheduled), body
    assert await _queued(db, endpoint["id"]) == [ids[e] for e in scheduled], body

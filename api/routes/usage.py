"""Post-hoc usage events (batches, idempotent per customer and event id) and the customer usage report."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import chain
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter

from api import renderings
from api.auth import key_dimensions, principal_of, require
from api.errors import ApiError, documented, unexpected
from api.routes.cursors import MAX_PAGE, PAGE, Cursor, decode_position, encode_position, invalid
from api.routes.formats import GROUP_BY, MAX_GROUP_BY, Identifier, free_text, matches
from api.routes.inputs import usage_or_kept, usage_tokens
from api.routes.schemas import Dimensions, json_body
from api.routes.wire import (
    COMPOSED,
    Hashes,
    bound_in,
    composed,
    ends_before,
    idempotency,
    instant_text,
    marked,
    respond,
    shaped,
    spellings,
    time_in,
    time_param,
    uniform_spellings,
    zone_spellings,
)
from ledger.db import Database, RetriesExhaustedError, is_unavailable
from ledger.errors import LedgerError
from ledger.model import request_hash
from pricing.errors import InvalidUsageError, PricingError
from wallets import reports, store
from wallets.commands import RecordUsage, UsageResult
from wallets.core.idempotency import IdemKey, Replayed
from wallets.core.state import wire_time
from wallets.errors import ConflictError, WalletValidationError
from wallets.periods import new_zone

MAX_EVENTS = 1000
FUTURE_SLACK_S = 300  # an event's time may be this far ahead of the server's clock (clocks differ)


class UsageEvent(msgspec.Struct, forbid_unknown_fields=True):  # a misspelt `dimensions`: 422, not unseen by budgets
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200), free_text()]
    customer_id: Identifier
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200), free_text()]
    timestamp: Annotated[str, msgspec.Meta(extra_json_schema={
        "description": "RFC 3339 with an offset; an event with another time is rejected, not the batch"})]
    usage: dict[str, Any] | None = None
    openai_usage: dict[str, Any] | None = None
    anthropic_usage: dict[str, Any] | None = None
    dimensions: Dimensions = {}
    gemini_usage: dict[str, Any] | None = None


UsageEvents = Annotated[list[UsageEvent], msgspec.Meta(max_length=MAX_EVENTS)]
UsageEventsBody = Annotated[list[Any], json_body(UsageEvents)]


class Rejected(msgspec.Struct):
    event_id: str
    code: str
    detail: str
    customer_id: str  # event ids are per customer: whose event this was
    index: Annotated[int, msgspec.Meta(description="The event's 0-based position in the request")]


class UsageEventsResponse(msgspec.Struct):
    accepted: int
    duplicates: int
    rejected: list[Rejected]


def _body(event: UsageEvent) -> dict[str, Any]:
    """The event as its request hash reads it: `hashed_as_before(msgspec.to_builtins(event))`,
    built directly (the fields are decoded JSON already, which to_builtins would only copy)."""
    body = {"event_id": event.event_id, "customer_id": event.customer_id, "model": event.model,
            "timestamp": event.timestamp, "usage": event.usage, "openai_usage": event.openai_usage,
            "anthropic_usage": event.anthropic_usage, "dimensions": event.dimensions}
    if event.gemini_usage is not None:
        body["gemini_usage"] = event.gemini_usage
    return body


# an event's time, read once (for the batch's key and the event's own hash): the instant and its
# text as the hashes read it (instant_text), or why it is no time (that event is refused alone)
Instant = tuple[datetime, str] | WalletValidationError


def _instants(events: list[UsageEvent]) -> list[Instant]:
    instants: list[Instant] = []
    for event in events:
        try:
            at = time_in(event.timestamp, "timestamp")
        except WalletValidationError as exc:
            instants.append(exc)
            continue
        assert at is not None  # a timestamp is a str
        instants.append((at, instant_text(at, event.timestamp)))
    return instants


async def _command(db: Database, event: UsageEvent, instant: Instant, latest: datetime,
                   dimensions: Mapping[str, Any]) -> RecordUsage:
    if isinstance(instant, WalletValidationError):
        raise instant
    occurred_at, text = instant
    if occurred_at > latest:  # it would be billed in a period not begun
        raise WalletValidationError("timestamp", f"must not be more than {FUTURE_SLACK_S} s in the future")
    read = await usage_or_kept(
        lambda: usage_tokens(event.usage, event.openai_usage, event.anthropic_usage, event.gemini_usage),
        lambda: _kept(db, event))
    tokens, stored = ({}, {}) if read is True else read
    # the hash reads the instant, not its spelling (z or Z, +00:00, .000, another offset): the same
    # event resent by a client whose serializer changed is a duplicate (_respelled: one kept before)
    body = _body(event)
    body["timestamp"] = text
    return RecordUsage(customer_id=event.customer_id, event_id=event.event_id,
                       request_hash=request_hash(body), model=event.model, occurred_at=occurred_at,
                       tokens=tokens, usage=stored, dimensions=dimensions, kept_only=read is True)


async def _kept(db: Database, event: UsageEvent) -> Literal[True] | None:
    """Whether an event is kept under this event's customer and id (its usage refused now: the
    lane answers it as that one, a duplicate or a conflict)."""
    pair = (event.customer_id, event.event_id)
    return True if await db.read(lambda conn: store.kept_events(conn, [pair])) else None


def _refused_usage(event: UsageEvent, conflict: Exception) -> Exception:
    """What an event's usage refused is told where its id is kept with another body: the refusal
    of its usage (422 validation_error, as the same event under a new id is told), not the conflict
    (validation first, as for a settle under another's key: 3a57a92). The event kept under the id
    with this very body is answered a duplicate before this (kept_only)."""
    try:
        usage_tokens(event.usage, event.openai_usage, event.anthropic_usage, event.gemini_usage)
    except InvalidUsageError as refused:
        return refused
    return conflict


def _respelled(command: RecordUsage, event: UsageEvent) -> Hashes:
    """For an event whose id was kept with another hash, at the same instant: the hashes of its
    body with the timestamp in each spelling an event kept before the hash read the instant may
    have been kept with (its text as sent then): the usual ones (`spellings`), then at every
    offset a zone keeps (`zone_spellings`), computed only until one is found."""
    body, at, sent = _body(event), command.occurred_at, event.timestamp
    return Hashes(lambda: marked(body),
                  lambda: ((text,) for text in chain(spellings(at, sent), zone_spellings(at, sent))))


def _at_instants(data: list[Any], instants: list[Instant]) -> list[Any]:
    """A batch as its Idempotency-Key's hash reads it: each event's timestamp as the instant
    (instant_text), as each event's own hash reads it; `data` itself where every one is so spelled
    (or is no time: that event is refused alone)."""
    batch = data
    for index, (item, instant) in enumerate(zip(data, instants, strict=True)):
        if isinstance(instant, tuple) and instant[1] != item["timestamp"]:
            batch = list(data) if batch is data else batch
            batch[index] = {**item, "timestamp": instant[1]}
    return batch


def _kept_before(request: Request, data: list[Any], instants: list[Instant]) -> Hashes:
    """The hashes a key kept before its hash read the batch as `_at_instants` does may have been
    kept with: before 8ef7fcc, of the batch as sent (tried as sent now, then each time in each
    uniform spelling, `uniform_spellings`: one serializer spells a batch alike); from 8ef7fcc to
    e8ee375, of each time as wire_time, to the microsecond (tried where a time is finer). Each
    computed only on a conflict (`_claimed`), until one is found."""
    times = [(instant[0], item["timestamp"]) for item, instant in zip(data, instants, strict=True)
             if isinstance(instant, tuple)]

    def texts() -> Any:
        yield tuple(sent for _, sent in times)
        if any(instant_text(at, sent) != wire_time(at) for at, sent in times):
            yield tuple(wire_time(at) for at, _ in times)
        yield from uniform_spellings(times)

    return Hashes(lambda: [request.method, request.url.path, [
        marked(item) if isinstance(instant, tuple) else item for item, instant in zip(data, instants, strict=True)]],
        texts)


async def _claimed(wallets: Any, db: Database, request: Request, idem: IdemKey, data: list[Any],
                   instants: list[Instant]) -> Replayed | None:
    """wallets.claim(idem). Where the key was kept with another hash (a conflict), that hash is
    read and looked for among those a key kept before may hold (`_kept_before`) here, not in the
    key's transaction, and the key claimed again with the one found (a kept answer is never
    changed: were it, the second claim would be a conflict again)."""
    try:
        return await wallets.claim(idem)
    except ConflictError:
        kept = await db.read(lambda conn: store.kept_key(conn, idem.scope, idem.key))
        # a key kept since 0080 holds the hash of its batch's instants: the batch's is another
        if kept is None or not kept[1] or not await _kept_before(request, data, instants).holds(kept[0]):
            raise
        return await wallets.claim(replace(idem, earlier=(kept[0],)))


@post("/v1/usage-events", guards=[require("inference")], tags=["usage"], status_code=200,
      **documented(body=True, idempotent=True))
async def post_usage_events(state: State, request: Request,
                            data: UsageEventsBody) -> Response[UsageEventsResponse]:
    """Rate and post each event exactly once, however often it is sent (by `customer_id` and
    `event_id`: two customers may use one event id, and neither learns of the other's); the same
    customer's id with another body is rejected as `idempotency_conflict`. With an
    Idempotency-Key, a replay answers what the first call answered."""
    events: list[UsageEvent] = shaped(data, UsageEvents)
    instants = _instants(events)
    idem = idempotency(request, _at_instants(data, instants))
    wallets = state.services.wallets
    replay = await _claimed(wallets, state.services.db, request, idem, data, instants) if idem is not None else None
    if replay is not None:
        return respond(request, replay, COMPOSED)
    try:
        response, faulted = await _recorded(wallets, state.services.db, request, events, instants)
    except Exception:  # no answer to keep: copies and retries under the key go ahead (WalletService.release)
        if idem is not None:
            await wallets.release(idem)
        raise
    if idem is not None and faulted:  # an event failed by a fault, not refused: the call may be sent again
        await wallets.release(idem)
    elif idem is not None:
        response = await wallets.remember(idem, response)
    return respond(request, response, COMPOSED)


async def _recorded(wallets: Any, db: Database, request: Request, events: list[UsageEvent],
                    instants: list[Instant]) -> tuple[Any, bool]:
    """Each event rated and posted once (the ones this key may post, well formed): the answer, and
    whether an event failed by a fault that is no refusal (its answer is not one to keep)."""
    principal = principal_of(request)
    rejected: list[Rejected] = []
    commands: list[RecordUsage] = []
    positions: list[int] = []  # each command's event's index in the request
    latest = wallets.clock() + timedelta(seconds=FUTURE_SLACK_S)
    for index, event in enumerate(events):
        if not principal.may_see(event.customer_id):
            rejected.append(Rejected(event.event_id, "forbidden", f"this key may not post for {event.customer_id}",
                                     event.customer_id, index))
            continue
        try:
            dimensions = key_dimensions(principal, event.dimensions)
            commands.append(await _command(db, event, instants[index], latest, dimensions))
            positions.append(index)
        except (LedgerError, PricingError, ApiError) as exc:
            rejected.append(Rejected(event.event_id, exc.code, str(exc), event.customer_id, index))
    outcomes = await wallets.submit_many(commands)
    conflicts = [n for n, outcome in enumerate(outcomes) if isinstance(outcome, ConflictError)]
    if conflicts:  # kept before the hash read the instant? (rare: asked again, not on every event)
        kept = await db.read(lambda conn: store.kept_events(
            conn, [(commands[n].customer_id, commands[n].event_id) for n in conflicts]))
        # only an event kept before 0080 (which may hold the hash of its text as sent) at the same
        # instant (to the microsecond, as kept) may be one; its spellings are hashed here, not in
        # the lane's transaction (up to 2,161 sha256 each, the event loop turning every wire.PACE
        # of them: Hashes.holds), and the one found is all the event carries again (a kept event's
        # hash never changes). One kept since is a conflict at once.
        found: dict[int, bytes] = {}
        for n in conflicts:
            at, digest, older = kept.get((commands[n].customer_id, commands[n].event_id), (None, b"", False))
            if older and at == commands[n].occurred_at \
                    and await _respelled(commands[n], events[positions[n]]).holds(digest):
                found[n] = digest
        again = await wallets.submit_many([replace(commands[n], earlier=(digest,)) for n, digest in found.items()]) \
            if found else []
        for n, outcome in zip(found, again, strict=True):
            outcomes[n] = outcome
        for n in conflicts:  # another body under an event id kept: one whose usage is refused is refused as such
            if commands[n].kept_only and isinstance(outcomes[n], ConflictError):
                outcomes[n] = _refused_usage(events[positions[n]], outcomes[n])
    accepted = duplicates = 0
    faulted = False
    for index, command, outcome in zip(positions, commands, outcomes, strict=True):
        if isinstance(outcome, UsageResult):
            accepted += not outcome.duplicate
            duplicates += outcome.duplicate
        elif isinstance(outcome, LedgerError | PricingError):
            rejected.append(Rejected(command.event_id, outcome.code, str(outcome), command.customer_id, index))
        elif is_unavailable(outcome) or isinstance(outcome, RetriesExhaustedError):
            raise outcome  # the call's 503: sent again, the events posted are duplicates
        else:  # a fault that is no refusal (a bug, a constraint), the lane's batch halved to find it:
            # this event's alone (logged); raised, it made the call a 500 with the others posted
            problem = unexpected(request, outcome, f"event {command.event_id!r} of customer {command.customer_id!r}, "
                                                   f"index {index}").content
            rejected.append(Rejected(command.event_id, problem["code"], problem["detail"], command.customer_id, index))
            faulted = faulted or problem["status"] >= 500
    rejected.sort(key=lambda r: r.index)  # in request order, whichever step refused each
    return composed(UsageEventsResponse(accepted, duplicates, rejected)), faulted


class UsageRow(msgspec.Struct):
    """A row's sums; beside them, its group keys (model, a usage dimension, …), always with
    token_type: `quantity` counts one token type (tokens, calls, seconds, pages), never several,
    and in a row of several kinds (not grouped by kind) the usage lines' only, not the discounts'
    that restate it."""

    quantity: int
    amount: Annotated[str, msgspec.Meta(description="A decimal string, in the customer's currency")]
    charges: int


UsageReport = msgspec.defstruct("UsageReport", [
    ("customer_id", str), ("from", str | None), ("to", str | None), ("group_by", list[str]),
    ("time_zone", str), ("currency", str), ("rows", list[UsageRow]), ("next_cursor", str | None)])


@get("/v1/customers/{customer_id:str}/usage", guards=[require("inference", "auditor", "customer")],
     tags=["usage"], opt={"media_types": (renderings.JSON, renderings.CSV)},
     **documented(400, 404, 422, ok=UsageReport, operation=renderings.rendered_as(renderings.CSV)))
async def get_usage(
    state: State, request: Request, customer_id: FromPath[str],
    start: Annotated[str | None, time_param("from")] = None,
    end: Annotated[str | None, time_param("to")] = None,
    group_by: Annotated[str, QueryParameter(name="group_by", max_length=MAX_GROUP_BY, pattern=GROUP_BY, description=(
        "Comma-separated group names, at most 16, each of 1 to 200 characters"))] = "model,token_type",
    time_zone: Annotated[str, QueryParameter(name="time_zone", max_length=64, description=(
        "The IANA time zone whose days and months `day` and `month` are"))] = "UTC",
    cursor: Cursor = None,
    limit: Annotated[int | None, QueryParameter(name="limit", ge=1, le=MAX_PAGE, description=(
        "Rows per page (1-1000); without it and a cursor, the whole report"))] = None,
) -> Response[Any]:
    """Quantity and amount per group over [from, to): group by model, token_type, kind, rule_id,
    price_version, day, month (of `time_zone`, UTC by default) or any usage dimension (feature,
    api_key, …; not one named `quantity`, `amount`, `charges` or `currency`, a row's own fields:
    422). Rows are always
    split by token type too (the answer's `group_by` lists it last when it was not asked), so a
    quantity never adds input tokens, output tokens and calls. As CSV for `Accept: text/csv`.
    With `limit` (or a `cursor`), a page of rows in the report's order and `next_cursor` (null on
    the last page; as CSV, the `Next-Cursor` header)."""
    if not matches(GROUP_BY, group_by):
        raise WalletValidationError("group_by", "comma-separated names of groups or usage dimensions, "
                                                "each of 1 to 200 characters")
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    since, until = bound_in(start, "from"), bound_in(end, "to")  # finer than a microsecond: the next one
    if ends_before(end, start, "to", "from"):  # to the 9th digit sent: not an empty range
        raise WalletValidationError("to", "must not be before from")
    new_zone(time_zone)
    filters = [customer_id, reports.when(since), reports.when(until), reports.unit_groups(groups), time_zone]
    after = None if cursor is None else _position(decode_position(cursor, "usage", filters), len(filters[3]))
    if limit is None and cursor is not None:
        limit = PAGE
    report = await state.services.db.read(
        lambda conn: reports.usage(conn, customer_id, since, until, groups, time_zone, limit, after))
    following = report.pop("next")
    report["next_cursor"] = None if following is None else encode_position("usage", filters, following)
    if renderings.wants_csv(request):
        headers = {} if report["next_cursor"] is None else {"Next-Cursor": report["next_cursor"]}
        return Response(renderings.usage_csv(report), media_type="text/csv", headers=headers)
    return Response(report)


def _position(position: list[Any], keys: int) -> list[str | None]:
    """The group keys of a usage cursor's last row, checked (a cursor is never trusted)."""
    if len(position) != keys or not all(v is None or isinstance(v, str) for v in position):
        raise invalid("not a cursor of this report")
    return position

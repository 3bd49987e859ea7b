"""Webhook endpoints (admin): create (the signing secret is shown once), list, read, update or
disable, rotate the secret, delete; each endpoint's delivery log, and re-drives."""
from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, Literal, Optional

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter
from sqlalchemy.ext.asyncio import AsyncConnection

from api.auth import bearer, require
from api.errors import documented
from api.routes import sealing
from api.routes.formats import DateTime, free_text
from api.routes.schemas import BIGINT, exactly_one, json_body
from api.routes.wire import Answer, bound_event_in, bound_in, ends_before, idempotency, respond, shaped, time_out
from api.webhooks import sendable
from ledger.db import lock_key
from wallets.core.idempotency import CREATED, OK
from wallets.errors import EndpointDisabledError, WalletValidationError
from wallets.service import run_once
from wallets.webhooks import endpoints, log
from wallets.webhooks.endpoints import Changes, Endpoint
from wallets.webhooks.rules import (
    MAX_TOPICS,
    MAX_URL,
    SECRET_PREFIX,
    TOPIC_PATTERN,
    URL_PATTERN,
    check_destination,
    check_topics,
    check_url,
)

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL, extra_json_schema={"pattern": URL_PATTERN})]
Topic = Annotated[str, msgspec.Meta(max_length=100, extra_json_schema={"pattern": TOPIC_PATTERN})]
Topics = Annotated[list[Topic], msgspec.Meta(min_length=1, max_length=MAX_TOPICS)]
Description = Annotated[str, msgspec.Meta(max_length=1000), free_text()]
InFlight = Annotated[int, msgspec.Meta(ge=1, le=64)]
# a log's one event (an empty one names none: its log was 200 with no items, as for one never sent)
EventIdQuery = Annotated[str | None, QueryParameter(name="event_id", min_length=1, max_length=200)]
TAGS = ["webhooks"]
PAGE = 100
GRACE_S = 86400


class CreateWebhookEndpointRequest(msgspec.Struct, forbid_unknown_fields=True):
    url: Url
    topics: Topics
    description: Description = ""
    max_in_flight: InFlight = 4


class UpdateWebhookEndpointRequest(msgspec.Struct, forbid_unknown_fields=True):
    # a field left out is left as it is; null means nothing here, so it is refused, naming the
    # field (it was taken as left out: `{"enabled": null}` answered 200), as a customer's PATCH does
    url: Url | msgspec.UnsetType = msgspec.UNSET
    topics: Topics | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    max_in_flight: InFlight | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET


class RotateSecretRequest(msgspec.Struct, forbid_unknown_fields=True):
    # how long the old secret keeps signing too (a second signature); 0: it stops at once
    previous_secret_valid_seconds: Annotated[int, msgspec.Meta(ge=0, le=7 * 86400)] = GRACE_S


class RedriveRequest(msgspec.Struct, forbid_unknown_fields=True):
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    since: DateTime | None = None
    until: DateTime | None = None
    failed_only: bool = False
    # a bound narrowed within its microsecond: its events from (since) or before (until) that event id
    since_event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    until_event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


RedriveBody = Annotated[dict[str, Any], json_body(Annotated[RedriveRequest, msgspec.Meta(
    extra_json_schema=exactly_one(event_id="string", since="string"))])]


class WebhookEndpointResponse(msgspec.Struct):
    id: str
    url: str
    topics: list[str]
    description: str
    status: str  # enabled | disabled
    disabled_reason: str | None
    max_in_flight: int
    previous_secret_until: str | None  # while a rotated-out secret still signs
    created_at: str
    updated_at: str


class CreatedWebhookEndpointResponse(WebhookEndpointResponse):
    secret: str  # whsec_…: shown in this response (and a rotation's) only


class RedriveResponse(msgspec.Struct):
    endpoint_id: str
    scheduled: int


CHANGED = Answer(lambda r: r, WebhookEndpointResponse, lambda _: OK)  # a change or a deletion: 200
SCHEDULED = "scheduled"  # a re-drive's outcome: 202 (errors.STATUS_BY_CODE)
REDRIVEN = Answer(lambda r: r, RedriveResponse, lambda _: SCHEDULED)


def _response(e: Endpoint) -> WebhookEndpointResponse:
    return WebhookEndpointResponse(e.id, e.url, list(e.topics), e.description, e.status, e.disabled_reason,
                                   e.max_in_flight, time_out(e.previous_secret_until), time_out(e.created_at) or "",
                                   time_out(e.updated_at) or "")


def _with_secret(e: Endpoint, secret: str) -> CreatedWebhookEndpointResponse:
    return CreatedWebhookEndpointResponse(**msgspec.structs.asdict(_response(e)), secret=secret)


@post("/v1/webhook-endpoints", guards=[require()], tags=TAGS,
      **documented(409, body=True, replay=CreatedWebhookEndpointResponse, idempotent=True))
async def create_webhook_endpoint(
        state: State, request: Request, data: Annotated[dict[str, Any], json_body(CreateWebhookEndpointRequest)]
) -> Response[CreatedWebhookEndpointResponse]:
    """Subscribe a URL to topics (`*`, `balance.*`, `invoice.finalized`, …); the signing secret
    is returned here and never again (but to a replay of the same Idempotency-Key by the same API
    key; another key sending it is 409 idempotency_conflict)."""
    body = shaped(data, CreateWebhookEndpointRequest)
    url = sendable(check_url(body.url))
    topics = check_topics(body.topics)

    return await _once_with_secret(state, request, data, CREATED, lambda conn: endpoints.create(
        conn, url, topics, body.description, body.max_in_flight), rules=_reachable(state, url))


@get("/v1/webhook-endpoints", guards=[require()], tags=TAGS, **documented())
async def list_webhook_endpoints(state: State) -> list[WebhookEndpointResponse]:
    return [_response(e) for e in await state.services.db.read(endpoints.list_all)]


@get("/v1/webhook-endpoints/{endpoint_id:str}", guards=[require()], tags=TAGS, **documented(404))
async def get_webhook_endpoint(state: State, endpoint_id: FromPath[str]) -> WebhookEndpointResponse:
    return _response(await state.services.db.read(lambda c: endpoints.get(c, endpoint_id)))


@patch("/v1/webhook-endpoints/{endpoint_id:str}", guards=[require()], tags=TAGS,
       **documented(404, 409, body=True, idempotent=True))
async def update_webhook_endpoint(
        state: State, request: Request, endpoint_id: FromPath[str],
        data: Annotated[dict[str, Any], json_body(UpdateWebhookEndpointRequest)]) -> Response[WebhookEndpointResponse]:
    """Change the URL, topics, description or concurrency limit (new topics replace the list, not
    merged with it, and cancel what is pending of the topics dropped); `"enabled": false` disables
    it (nothing is queued for it meanwhile), `true` enables it again. A replay of its
    Idempotency-Key answers what it first answered."""
    body = shaped(data, UpdateWebhookEndpointRequest)
    given = {name: value for name in UpdateWebhookEndpointRequest.__struct_fields__
             if (value := getattr(body, name)) is not msgspec.UNSET}
    if "url" in given:
        given["url"] = sendable(check_url(given["url"]))
    if "topics" in given:
        given["topics"] = check_topics(given["topics"])
    changes = Changes(**given)

    async def work(conn: AsyncConnection) -> WebhookEndpointResponse:
        return _response(await endpoints.update(conn, endpoint_id, changes))

    return await _once(state, request, data, work, CHANGED, committed=True,
                       rules=_reachable(state, given["url"]) if "url" in given else None)


def _reachable(state: State, url: str) -> Callable[[], None]:
    """The operator's address policy on `url` (TOKENTILL_WEBHOOK_ALLOWED_NETWORKS), as run_once's
    `rules`: checked once the Idempotency-Key is read, so a call kept before the policy refused its
    URL is answered as kept (its endpoint, its secret), and another body under the key is refused
    by it (422 naming url) before it is told it conflicts."""
    def check() -> None:
        check_destination(url, state.services.settings.webhook_addresses)

    return check


@delete("/v1/webhook-endpoints/{endpoint_id:str}", guards=[require()], status_code=200, tags=TAGS,
        **documented(404, 409, idempotent=True))
async def delete_webhook_endpoint(state: State, request: Request,
                                  endpoint_id: FromPath[str]) -> Response[WebhookEndpointResponse]:
    """Delete it: nothing more is sent to it and its secrets are erased; its delivery log stays.
    A replay of its Idempotency-Key answers what it first answered (the endpoint as deleted)."""

    async def work(conn: AsyncConnection) -> WebhookEndpointResponse:
        return _response(await endpoints.delete(conn, endpoint_id))

    return await _once(state, request, {}, work, CHANGED, committed=True)


@post("/v1/webhook-endpoints/{endpoint_id:str}/rotate-secret", guards=[require()], status_code=200, tags=TAGS,
      **documented(404, 409, body=True, idempotent=True))
async def rotate_webhook_secret(
        state: State, request: Request, endpoint_id: FromPath[str],
        # typing.Optional: Litestar's OpenAPI cannot name a `X | None` body (types.UnionType)
        data: Annotated[Optional[dict[str, Any]], json_body(RotateSecretRequest)] = None,  # noqa: UP045
) -> Response[CreatedWebhookEndpointResponse]:
    """A new signing secret, returned once (send an Idempotency-Key: a retried rotation would
    otherwise rotate again; its replay by another API key is 409 idempotency_conflict). For
    `previous_secret_valid_seconds` (a day unless given) deliveries carry a signature with each
    secret, so a receiver can switch over."""
    body = shaped(data or {}, RotateSecretRequest)
    grace = timedelta(seconds=body.previous_secret_valid_seconds)

    return await _once_with_secret(state, request, data or {}, OK,
                                   lambda conn: endpoints.rotate_secret(conn, endpoint_id, grace))


async def _once_with_secret(state: State, request: Request, data: Any, code: str,
                            make: Callable[[AsyncConnection], Awaitable[tuple[Endpoint, str]]], *,
                            rules: Callable[[], None] | None = None) -> Response:
    """An answer that shows a signing secret (a new endpoint, 201; a rotated secret, 200), once per
    Idempotency-Key. Every admin key shares the key's scope, so the answer is kept with the secret
    sealed to the calling key (api/routes/sealing.py): its replay shows the secret, the same call
    from another key is 409 idempotency_conflict (and does nothing)."""
    idem = idempotency(request, data)
    pad = None if idem is None else sealing.pad(bearer(request), idem.key, b"tokentill webhook secret")

    async def work(conn: AsyncConnection) -> CreatedWebhookEndpointResponse:
        endpoint, secret = await make(conn)
        return _with_secret(endpoint, secret if pad is None else sealing.sealed(secret, pad))

    def shown(made: CreatedWebhookEndpointResponse) -> CreatedWebhookEndpointResponse:
        if pad is None or idem is None:
            return made
        return msgspec.structs.replace(made, secret=sealing.unsealed(made.secret, pad, idem.key, SECRET_PREFIX,
                                                                      "a webhook secret"))

    return await _once(state, request, data, work, Answer(shown, CreatedWebhookEndpointResponse, lambda _: code),
                       rules=rules)


async def _once(state: State, request: Request, data: Any, work: Callable[[AsyncConnection], Awaitable[Any]],
                answer: Answer, *, committed: bool = False, rules: Callable[[], None] | None = None) -> Response:
    """Run `work` once per Idempotency-Key: a replay answers the first answer (before `rules`)."""
    idem = idempotency(request, data)
    locks = [] if idem is None else [lock_key(f"idempotency:{idem.scope}:{idem.key}")]
    outcome = await run_once(state.services.db, idem, work, locks, answer.code, committed=committed, rules=rules)
    return respond(request, outcome, answer)


@post("/v1/webhook-endpoints/{endpoint_id:str}/redrive", guards=[require()], status_code=202, tags=TAGS,
      **documented(404, 409, body=True, idempotent=True))
async def redrive_webhooks(
        state: State, request: Request, endpoint_id: FromPath[str], data: RedriveBody
) -> Response[RedriveResponse]:
    """Send again one event of the endpoint's topics (`event_id`; another topic's is 422 naming
    it), or every event of its topics written since `since` (and before `until`); `failed_only`
    skips those already delivered. A disabled endpoint is refused (409 `endpoint_disabled`):
    enable it first, as nothing is queued for it. A window holding more to queue than
    TOKENTILL_WEBHOOK_REDRIVE_LIMIT (10,000) queues nothing: 422 `too_many_events` with `count`,
    `limit` and the first event past the limit (`until`, `until_event_id`): a call up to it queues
    exactly the limit, the next starts from it (`since`, `since_event_id`)."""
    body = shaped(data, RedriveRequest)
    since, until = bound_in(body.since, "since"), bound_in(body.until, "until")  # finer than 1 us: the next
    if (body.event_id is None) == (since is None):
        raise WalletValidationError("body", "give either event_id or since")
    if body.event_id is not None and (until is not None or "failed_only" in data):  # false too: a window's field
        raise WalletValidationError("until" if until is not None else "failed_only", "goes with since, not event_id")
    if ends_before(body.until, body.since, "until", "since"):  # to the 9th digit sent
        raise WalletValidationError("until", "must not be before since")
    if body.since_event_id is not None and since is None:
        raise WalletValidationError("since_event_id", "narrows since: goes with since, not event_id")
    if body.until_event_id is not None and until is None:
        raise WalletValidationError("until_event_id", "narrows until: goes with since and until")
    # a bound finer than a microsecond lies between two microseconds' events: no id narrows it
    since_event_id = bound_event_in(body.since, body.since_event_id)
    until_event_id = bound_event_in(body.until, body.until_event_id)
    # in the window's order (created_at, event id), a bound without an id is before its time's
    # events ("": ids are never empty); ids compared by code point, as UTF-8 bytes are ("C")
    if since is not None and until == since and (until_event_id or "") < (since_event_id or ""):
        raise WalletValidationError("until_event_id" if until_event_id is not None else "until",
                                    "must not be before since and since_event_id")

    async def work(conn: AsyncConnection) -> RedriveResponse:
        # its row first, as a PATCH or DELETE of it locks it before its deliveries: one order (a
        # re-drive updating them in the window's order deadlocked with one in scan order), and its
        # status read once a disable racing it has committed (it queued for a disabled endpoint)
        await endpoints.lock_endpoint(conn, endpoint_id, fan_out=False)
        endpoint = await endpoints.get(conn, endpoint_id)
        if endpoint.status != "enabled":
            raise EndpointDisabledError(f"webhook endpoint {endpoint_id} is disabled ({endpoint.disabled_reason}): "
                                        "enable it (PATCH enabled: true), then re-drive")
        if body.event_id is not None:
            return RedriveResponse(endpoint_id, await log.redrive_event(conn, endpoint_id, endpoint.topics,
                                                                    body.event_id))
        return RedriveResponse(endpoint_id, await log.redrive_since(
            conn, endpoint_id, endpoint.topics, since, until, body.failed_only,
            limit=state.services.settings.webhook_redrive_limit, since_event_id=since_event_id,
            until_event_id=until_event_id))

    # READ COMMITTED, as the deliveries it queues are bookkeeping beside the ledger
    return await _once(state, request, data, work, REDRIVEN, committed=True)


def _page(name: str) -> Any:
    return QueryParameter(name=name, ge=1, le=1000)


DeliveryStatus = Literal["pending", "succeeded", "failed", "cancelled"]
Next = Annotated[int | None, msgspec.Meta(description="`before` of the next page; none on the last")]


class WebhookDelivery(msgspec.Struct):
    id: int
    event_id: str
    topic: str
    customer_id: str | None
    event_at: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: str | None
    last_attempt_at: str | None
    last_status_code: int | None
    last_latency_ms: int | None
    last_error: str | None
    succeeded_at: str | None


class WebhookAttempt(msgspec.Struct):
    id: int
    event_id: str
    attempt: int
    attempted_at: str
    status_code: int | None
    latency_ms: int
    error: str | None
    succeeded: bool


class WebhookDeliveries(msgspec.Struct):
    items: list[WebhookDelivery]
    next: Next


class WebhookAttempts(msgspec.Struct):
    items: list[WebhookAttempt]
    next: Next


@get("/v1/webhook-endpoints/{endpoint_id:str}/deliveries", guards=[require()], tags=TAGS,
     **documented(404, 422, ok=WebhookDeliveries))
async def list_webhook_deliveries(
        state: State, endpoint_id: FromPath[str],
        status: Annotated[DeliveryStatus | None, QueryParameter(name="status")] = None,
        event_id: EventIdQuery = None,
        before: Annotated[int | None, QueryParameter(name="before", ge=1, le=BIGINT - 1)] = None,
        limit: Annotated[int, _page("limit")] = PAGE) -> dict[str, Any]:
    """One row per event sent to the endpoint, newest first: its status, attempts, the last
    answer's status code and latency, when it is tried next. `before`: the previous page's `next`."""
    async def work(conn) -> list[log.Delivery]:
        await endpoints.get(conn, endpoint_id)
        return await log.deliveries(conn, endpoint_id, status=status, event_id=event_id, before=before, limit=limit)

    rows = await state.services.db.read(work)
    return _paged([_delivery(d) for d in rows], rows, limit)


@get("/v1/webhook-endpoints/{endpoint_id:str}/attempts", guards=[require()], tags=TAGS,
     **documented(404, 422, ok=WebhookAttempts))
async def list_webhook_attempts(
        state: State, endpoint_id: FromPath[str],
        event_id: EventIdQuery = None,
        before: Annotated[int | None, QueryParameter(name="before", ge=1, le=BIGINT - 1)] = None,
        limit: Annotated[int, _page("limit")] = PAGE) -> dict[str, Any]:
    """Every attempt, newest first: when, the status code (none if no answer), latency, error."""
    async def work(conn) -> list[log.Attempt]:
        await endpoints.get(conn, endpoint_id)
        return await log.attempts(conn, endpoint_id, event_id=event_id, before=before, limit=limit)

    rows = await state.services.db.read(work)
    return _paged([{**dataclasses.asdict(a), "attempted_at": time_out(a.attempted_at)} for a in rows], rows, limit)


def _delivery(d: log.Delivery) -> dict[str, Any]:
    times = ("event_at", "next_attempt_at", "last_attempt_at", "succeeded_at")
    return {k: (time_out(v) if k in times else v) for k, v in dataclasses.asdict(d).items()}


def _paged(items: list[dict[str, Any]], rows: list[Any], limit: int) -> dict[str, Any]:
    return {"items": items, "next": rows[-1].id if len(rows) == limit else None}


ROUTES = [create_webhook_endpoint, list_webhook_endpoints, get_webhook_endpoint, update_webhook_endpoint,
          delete_webhook_endpoint, rotate_webhook_secret, redrive_webhooks, list_webhook_deliveries,
          list_webhook_attempts]
